"""Riding out a database or tracking server that goes away for a while.

A call that fails with a connection-level error is tried again with exponential backoff
(1, 2, 4 ... 30 s between tries) until its budget runs out, saying each time what is
unreachable; then the last error is raised. Budgets: ``AUTOML_STORE_RETRY_SECONDS``
(Optuna storage, default 600) and ``AUTOML_TRACKING_RETRY_SECONDS`` (MLflow, default 300).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from automl.stores import mask_url

T = TypeVar("T")
log = logging.getLogger("automl")
STORE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    ConnectionError,
)
MAX_DELAY = 30.0


def budget(kind: str) -> float:
    defaults = {"store": 600.0, "tracking": 300.0}
    return float(os.environ.get(f"AUTOML_{kind.upper()}_RETRY_SECONDS", defaults[kind]))


def _notify(message: str) -> None:
    if not LISTENERS:
        log.warning(message)
    for listener in list(LISTENERS):
        listener(message)


LISTENERS: list[Callable[[str], None]] = []  # the console adds one: "retrying" is never silent


def is_transient_store_error(exc: BaseException) -> bool:
    """A lost or refused connection, also when Optuna wraps it (``StorageInternalError``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, STORE_ERRORS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def retrying(
    call: Callable[[], T],
    *,
    what: str,
    kind: str = "store",
    transient: Callable[[BaseException], bool] = is_transient_store_error,
) -> T:
    """``call()``, tried again on transient errors until the ``kind`` budget is spent."""
    deadline = time.monotonic() + budget(kind)
    delay = 1.0
    while True:
        try:
            return call()
        except Exception as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            _notify(f"{what} unreachable ({mask_url(first)[:200]}); retrying in {delay:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
