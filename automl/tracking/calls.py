"""How every tracking call is made: timed (the share of wall time spent tracking is
reported) and, for a trial's calls, retried while the store is away, which is said.

Callers outside this package catch ``TRACKING_ERRORS``: what a failing store raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from mlflow.exceptions import MlflowException
from requests.exceptions import RequestException
from sqlalchemy.exc import SQLAlchemyError

from automl.retry import retrying

P = ParamSpec("P")
R = TypeVar("R")


def _timed(method: Callable[P, R]) -> Callable[P, R]:
    """Add the call's duration to its tracker's ``seconds``."""

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        tracker = args[0]
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            tracker.seconds += time.perf_counter() - start  # type: ignore[attr-defined]

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


# What a failing tracking store raises: the server (MLflow errors, HTTP), a local store
# (its database or the artifact folder). Callers outside this package catch these.
TRACKING_ERRORS: tuple[type[BaseException], ...] = (
    MlflowException,
    RequestException,
    SQLAlchemyError,
    OSError,
)
TRANSIENT_WORDS = (
    "max retries exceeded",
    "connection",
    "timed out",
    "temporarily",
    " 502",
    " 503",
    " 504",
    "database is locked",
)


def is_transient(exc: BaseException) -> bool:
    """A server that is down or busy, not a request that is wrong."""
    if isinstance(exc, RequestException | ConnectionError):
        return True
    if isinstance(exc, MlflowException | SQLAlchemyError):
        return any(word in str(exc).lower() for word in TRANSIENT_WORDS)
    return False


def _resilient(method: Callable[P, R]) -> Callable[P, R]:
    """Retry a trial's tracking call while the server is away (bounded, and said)."""

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return retrying(
            lambda: method(*args, **kwargs),
            what=args[0].what,  # type: ignore[attr-defined]
            transient=is_transient,
            holding="run updates",
        )

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper
