"""MLflow set-up shared by the tracking modules: quiet, no telemetry, fast SQLite."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # and a get_run per end

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from requests.exceptions import RequestException
from sqlalchemy.exc import SQLAlchemyError

from automl.errors import AutomlError, StoreError
from automl.stores import mask_url, tune_sqlite

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


T = TypeVar("T")


@contextmanager
def store_errors_in(
    tracking_uri: str, also: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """A tracking-store failure inside the block (unreachable server, refused credentials,
    ...) becomes one line naming the store instead of a traceback; ``also``: more error
    types that mean the store here. The search has its own retries instead."""
    errors: tuple[type[BaseException], ...] = (
        MlflowException,
        RequestException,
        SQLAlchemyError,
        *also,
    )
    try:
        yield
    except AutomlError:
        raise
    except errors as exc:
        raise StoreError(f"--tracking-uri {mask_url(tracking_uri)}: {first_line(exc)}") from None


def store_errors(cls: type[T]) -> type[T]:
    """Class decorator: an MLflow store failure in any public method becomes one line
    naming the store (unreachable server, refused credentials, ...) instead of a traceback."""
    for name, method in list(vars(cls).items()):
        if name.startswith("_") or not callable(method):
            continue

        def wrapped(self: Any, *args: Any, __method: Any = method, **kwargs: Any) -> Any:
            with store_errors_in(self.tracking_uri, also=(OSError,)):  # artifact downloads
                return __method(self, *args, **kwargs)

        functools.update_wrapper(wrapped, method)
        setattr(cls, name, wrapped)
    return cls
