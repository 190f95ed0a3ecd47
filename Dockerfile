# The automl worker image: CUDA PyTorch plus automl. `docker compose up --scale worker=N`
# starts N of them; each joins the study named by AUTOML_STUDY and runs its queued trials.
FROM pytorch/pytorch:2.9.0-cuda13.0-cudnn9-runtime
ENV PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /opt/automl
COPY pyproject.toml README.md ./
COPY search_spaces ./search_spaces
COPY automl ./automl
RUN pip install --no-cache-dir . && automl --version
WORKDIR /work
ENTRYPOINT ["automl"]
CMD ["worker", "--wait", "86400"]
