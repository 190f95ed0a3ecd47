"""Riding out a database or tracking server that goes away for a while.

A call that fails with a connection-level error is tried again with exponential backoff
(1, 2, 4 ... 30 s between tries) until its service's budget runs out; then the last error
is raised. Each ``Service`` names its budget (``AUTOML_STORE_RETRY_SECONDS`` for the Optuna
storage, ``AUTOML_TRACKING_RETRY_SECONDS`` for MLflow) and is the key of its outage, so
the lines that say an outage began and ended always pair up, however it is worded.

An outage is never silent: the first failed call says when the service stopped answering,
each retry says how long it has been away, and the first call that gets through says it
is back, after how long, and what was held meanwhile (``hold`` counts it) and now sent.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from automl.environment import STORE_RETRY_SECONDS, TRACKING_RETRY_SECONDS, Variable
from automl.errors import AutomlError
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


@dataclass(frozen=True)
class Service:
    """A service whose outages are ridden out: ``key`` identifies it (its outages are
    kept by key), ``name`` is how the lines on screen call it, ``budget`` how long a call
    to it is retried."""

    key: str
    name: str = field(compare=False)
    budget: Variable[float] = field(compare=False)

    def __str__(self) -> str:
        return self.name


STORE = Service("optuna-storage", "the Optuna storage", STORE_RETRY_SECONDS)


def tracking_service(uri: str, name: str) -> Service:
    """The MLflow store at ``uri``, called ``name`` on screen."""
    return Service(f"mlflow:{uri}", name, TRACKING_RETRY_SECONDS)


def tell(message: str) -> None:
    """Say something about a store that the user should read now (an outage, a store
    that writes somewhere unexpected): to the listeners on screen, else as a warning."""
    if not LISTENERS:
        log.warning(message)
    for listener in list(LISTENERS):
        listener(message)


LISTENERS: list[Callable[[str], None]] = []  # the console adds one: "retrying" is never silent


class DiskFull(AutomlError):
    """A store's disk is full: waiting does not free it, so it is said at once."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, outermost first."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


# What a database says when its disk is full: SQLite (SQLITE_FULL), PostgreSQL (53100).
FULL_DISK_WORDS = ("database or disk is full", "no space left on device", "could not extend file")


def is_disk_full(exc: BaseException) -> bool:
    """The disk under a store is full (``ENOSPC``), however the error is wrapped."""
    for seen in _chain(exc):
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if any(word in str(seen).lower() for word in FULL_DISK_WORDS):
            return True
    return False


def is_transient_store_error(exc: BaseException) -> bool:
    """A lost or refused connection, also when Optuna wraps it (``StorageInternalError``),
    and a storage proxy (gRPC) that is away or whose database is; never a full disk."""
    if is_disk_full(exc):
        return False
    for seen in _chain(exc):
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, STORE_ERRORS) or _unavailable(seen):
            return True
    return False


def _unavailable(exc: BaseException) -> bool:
    """A gRPC call answered UNAVAILABLE (grpc is imported only by a proxy's client)."""
    code = getattr(exc, "code", None)
    return callable(code) and getattr(code(), "name", None) == "UNAVAILABLE"


@dataclass
class _Outage:
    since: float = field(default_factory=time.monotonic)
    held: Counter[str] = field(default_factory=Counter)


_OUTAGES: dict[Service, _Outage] = {}  # services away now
_LOCK = threading.Lock()


# How a database server that restarts ends its connections, and answers meanwhile.
RESTART_WORDS = (
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
)


def _first_line(exc: BaseException) -> str:
    """What went wrong, in one line: the database's own words, not a wrapper's (Optuna
    wraps a failed commit as "... invalid data in the commit, e.g. exceeding max length")."""
    told = next((e for e in _chain(exc) if type(e).__name__ != "StorageInternalError"), exc)
    line = mask_url((str(told).strip().splitlines() or [type(told).__name__])[0])[:200]
    if any(word in line.lower() for word in RESTART_WORDS):
        return f"the database server is restarting or stopped: {line}"
    return line


def went_away(what: Service, exc: BaseException) -> bool:
    """Record that ``what`` stopped answering; said once per outage. True when it is new."""
    with _LOCK:
        if what in _OUTAGES:
            return False
        _OUTAGES[what] = _Outage()
    clock = time.strftime("%H:%M:%S")
    tell(
        f"{what} stopped answering at {clock} ({_first_line(exc)}); what it should record is "
        "held and retried, nothing is lost"
    )
    return True


def is_away(what: Service) -> bool:
    return what in _OUTAGES


def hold(what: Service, thing: str, count: int = 1) -> None:
    """Count ``count`` ``thing``s kept back while ``what`` is away (said when it is back)."""
    with _LOCK:
        outage = _OUTAGES.get(what)
        if outage is not None and count > 0:
            outage.held[thing] += count


def came_back(what: Service) -> None:
    """``what`` answered: if it was away, say so, for how long, and what was held."""
    with _LOCK:
        outage = _OUTAGES.pop(what, None)
    if outage is None:
        return
    away = time.monotonic() - outage.since
    held = ", ".join(f"{n} {thing}" for thing, n in outage.held.items())
    sent = f"; sending what was held meanwhile: {held}" if held else ""
    tell(f"{what} answers again after {away:.0f} s away{sent}")


def retrying(
    call: Callable[[], T],
    *,
    what: Service,
    transient: Callable[[BaseException], bool] = is_transient_store_error,
    holding: str = "",
) -> T:
    """``call()``, tried again on transient errors until ``what``'s budget is spent.

    ``holding`` names what the call carries (a trial's result, a run update): counted as
    held when it had to wait for the service."""
    deadline = time.monotonic() + what.budget.get()
    delay = 1.0
    while True:
        try:
            result = call()
        except Exception as exc:
            if is_disk_full(exc):
                if isinstance(exc, OSError):
                    raise  # a file's write: its caller says which (an artifact, a cache)
                raise DiskFull(
                    f"{what}: the disk is full ({_first_line(exc)}); free space on it, then "
                    "run the same command again to go on"
                ) from exc
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            if delay == 1.0:  # this call's first failure
                went_away(what, exc)
                if holding:
                    hold(what, holding)
            outage = _OUTAGES.get(what)
            away = f"away {time.monotonic() - outage.since:.0f} s; " if outage else ""
            tell(f"{what} unreachable ({away}{_first_line(exc)}); retrying in {delay:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
        else:
            if _OUTAGES:
                came_back(what)
            return result
