# The automl worker image: CUDA PyTorch plus automl. `docker compose up --scale worker=N`
# starts N of them; each joins the study named by AUTOML_STUDY and runs its queued trials.
FROM pytorch/pytorch:2.9.0-cuda13.0-cudnn9-runtime
ENV PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /opt/automl
COPY pyproject.toml README.md ./
COPY search_spaces ./search_spaces
COPY automl ./automl
RUN pip install --no-cache-dir . && automl --version
COPY deploy/secrets.sh deploy/worker-entrypoint.sh /usr/local/lib/automl/
# An unprivileged user (uid 10001) owning its home, the cache folders the compose volumes
# mount on (a new named volume starts with the owner of the folder it is mounted on) and
# the working folder; the installed code and the scripts stay root's, read-only to it.
RUN useradd --uid 10001 --user-group --home-dir /home/automl --create-home \
        --shell /usr/sbin/nologin automl \
    && mkdir -p /home/automl/.cache/automl/data /home/automl/.cache/torch/hub /work \
    && chown -R automl:automl /home/automl /work \
    && chmod 0755 /usr/local/lib/automl/secrets.sh /usr/local/lib/automl/worker-entrypoint.sh
ENV HOME=/home/automl
USER 10001:10001
WORKDIR /work
# Builds AUTOML_STORAGE from the password secret, then runs `automl "$@"`.
ENTRYPOINT ["/usr/local/lib/automl/worker-entrypoint.sh"]
CMD ["worker", "--wait", "86400"]
