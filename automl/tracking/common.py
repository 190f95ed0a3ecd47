"""MLflow set-up shared by the tracking modules: quiet, no telemetry, fast SQLite."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # and a get_run per end

import mlflow
from mlflow.tracking import MlflowClient

from automl.config import mask_url
from automl.stores import tune_sqlite

logging.getLogger("mlflow").setLevel(logging.WARNING)


def client_for(tracking_uri: str) -> MlflowClient:
    """A client for one store; fluent calls (model logging) go to the same store."""
    tune_sqlite()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return mask_url(text[0] if text else type(exc).__name__)
