"""Opening the Optuna storage, and making every SQLite store this process opens fast.

SQLite's defaults (rollback journal, a full fsync per commit) cost several milliseconds a
write; a search writes thousands of times. Write-ahead logging with ``synchronous=NORMAL``
keeps each commit safe from a crash of the process (only a power cut can lose the last
commits) and lets the MLflow UI read while a search writes.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from typing import Any

import optuna
from sqlalchemy import event
from sqlalchemy.engine import Engine

from automl.config import mask_url
from automl.errors import StoreError

HEARTBEAT_SECONDS = int(os.environ.get("AUTOML_HEARTBEAT_SECONDS", "30"))
GRACE_SECONDS = int(os.environ.get("AUTOML_GRACE_SECONDS", "90"))  # silence before a trial is dead
_tuned = False


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    if isinstance(connection, sqlite3.Connection):
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def tune_sqlite() -> None:
    """Apply the pragmas to every SQLite connection opened from now on (idempotent)."""
    global _tuned  # noqa: PLW0603
    if not _tuned:
        event.listen(Engine, "connect", _sqlite_pragmas)
        _tuned = True


def open_storage(url: str, option: str = "--storage") -> optuna.storages.RDBStorage:
    """The Optuna RDB storage with heartbeats, so a crashed worker's trial is failed later."""
    tune_sqlite()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    else:  # a server may drop idle connections; a file cannot
        kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
            )
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StoreError(
            f"{option} {mask_url(url)}: cannot open the Optuna storage: {mask_url(first)}"
        ) from None
