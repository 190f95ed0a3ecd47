"""MLflow set-up shared by the tracking modules: quiet, no telemetry, fast SQLite."""

from __future__ import annotations

import functools
import logging
import os
import re
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
from automl.stores import (
    absolute_sqlite,
    broken_store,
    build_beside,
    check_sqlite_file,
    mask_url,
    require_existing,
    sqlite_file,
    store_lock,
    tune_sqlite,
)

# A registered version: models:/NAME@ALIAS, models:/NAME/V or models:/NAME/latest.
REGISTERED = re.compile(r"models:/([^/@]+)(?:@([^/]+)|/(\d+|latest))/?")

logging.getLogger("mlflow").setLevel(logging.WARNING)
# It logs a store it cannot open with a traceback, then raises: the one line is ours.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

# MLflow's own HTTP retries (7, with backoff: minutes) would hide a server that is away
# inside one silent call; a few quick ones here, then ours, which say so on screen.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def client_for(tracking_uri: str, *, create: bool = True) -> MlflowClient:
    """A client for one store; fluent calls (model logging) go to the same store.

    A local store is made (built beside its file, then renamed into place) and migrated
    under a lock beside it, so processes starting at once on a new store take turns and
    one killed meanwhile leaves no half-made store behind. ``create`` False (commands
    that only read): a local store that does not exist is refused, not made.
    """
    if not create:
        require_existing(tracking_uri, "--tracking-uri", "MLflow tracking store")
    tune_sqlite()
    if tracking_uri.startswith(("http://", "https://")):
        for name, value in HTTP_DEFAULTS.items():  # the user's own settings win
            os.environ.setdefault(name, value)
    # MLflow keeps one store per URI string for the life of the process: a relative
    # sqlite:///mlflow.db would stay bound to the folder it was first opened in.
    uri = absolute_sqlite(tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if sqlite_file(uri) is None or uri in _OPENED:
        return MlflowClient(uri, registry_uri=uri)
    try:
        check_sqlite_file(uri)
        with store_lock(uri):
            build_beside(uri, _new_store)
            client = MlflowClient(uri, registry_uri=uri)  # migrates it
            client.search_experiments(max_results=1)
    except Exception as exc:
        raise broken_store(
            tracking_uri, "--tracking-uri", "the MLflow tracking store", first_line(exc)
        ) from None
    _OPENED.add(uri)
    return client


_OPENED: set[str] = set()  # local stores this process opened (MLflow keeps one per URI)


def _new_store(uri: str) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(uri, "./mlruns")  # type: ignore[no-untyped-call]  # as MLflow would
    store.engine.dispose()


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
