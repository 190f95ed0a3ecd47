"""Local stores (SQLite files): made safely, tuned for many small writes, refused in one
line when broken.

SQLite's defaults (rollback journal, a full fsync per commit) cost several milliseconds a
write; a search writes thousands of times. Write-ahead logging with ``synchronous=NORMAL``
keeps each commit safe from a crash of the process (only a power cut can lose the last
commits) and lets the MLflow UI read while a search writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from automl.errors import StoreError
from automl.stores.urls import mask_url

_tuned = False


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for servers and in-memory databases)."""
    match = re.fullmatch(r"sqlite:///(.+?)(\?.*)?", url)
    if not match or match.group(1) == ":memory:":
        return None
    return Path(match.group(1)).expanduser()


def absolute_sqlite(url: str) -> str:
    """A local store's URL with its file's absolute path (other URLs unchanged)."""
    path = sqlite_file(url)
    if path is None or path.is_absolute():
        return url
    query = url.partition("?")[2]
    return f"sqlite:///{path.resolve()}" + (f"?{query}" if query else "")


@contextmanager
def store_lock(url: str, purpose: str = "") -> Iterator[None]:
    """Hold a lock beside a local store (``FILE.lock``) while it is created or migrated:
    searches started at the same moment on a new store then take turns instead of racing
    in its schema migration. Servers serialise this themselves. ``purpose`` names another
    lock of the same store (``FILE.PURPOSE.lock``), for changes that must take turns too."""
    path = sqlite_file(url)
    if path is None or not path.parent.is_dir():
        yield
        return
    suffix = f".{purpose}.lock" if purpose else ".lock"
    with open(path.with_name(path.name + suffix), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_beside(url: str, build: Callable[[str], None]) -> None:
    """Create a new local store beside its file, then rename it into place: a process
    killed while building it leaves a stray ``.FILE.new-PID``, never a half-made store.
    Call it under ``store_lock``; an existing store is left alone."""
    path = sqlite_file(url)
    if path is None or path.exists():
        return
    draft = path.with_name(f".{path.name}.new-{os.getpid()}")
    try:
        build(f"sqlite:///{draft}")
        os.replace(draft, path)
    finally:
        for leftover in (draft, Path(f"{draft}-wal"), Path(f"{draft}-shm")):
            leftover.unlink(missing_ok=True)


def check_sqlite_file(url: str) -> None:
    """Read an existing local store's schema once: a file that is no database fails here
    at once, not after MLflow's minute of retries (it raises ``sqlite3.DatabaseError``)."""
    path = sqlite_file(url)
    if path is None or not path.is_file():
        return
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        connection.execute("select count(*) from sqlite_master").fetchone()


def check_writable(url: str, wait: float = 1.0) -> None:
    """Take and give back an existing local store's write lock, waiting ``wait`` seconds
    at most: a store another program holds locked (an open ``BEGIN EXCLUSIVE``) raises
    ``sqlite3.OperationalError`` ("database is locked") now, where a write would only
    fail after MLflow's own 20 s wait, as a traceback."""
    path = sqlite_file(url)
    if path is None or not path.is_file():
        return
    with contextlib.closing(sqlite3.connect(path, timeout=wait, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")


def is_locked(exc: BaseException) -> bool:
    """SQLite's answer while another connection holds the lock a write needs, also when
    SQLAlchemy or MLflow wraps it."""
    seen: BaseException | None = exc
    while seen is not None:
        if "database is locked" in str(seen) or "database table is locked" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def broken_store(url: str, option: str, what: str, problem: str) -> StoreError:
    """One line for a store that cannot be opened: which file, what failed, what to do."""
    path = sqlite_file(url)
    hint = ""
    if path is not None and path.exists():
        hint = (
            f"; if a process was killed while it was first made, move it aside "
            f"(mv {path} {path}.broken) and run again: a new one is made"
        )
    return StoreError(f"{option} {mask_url(url)}: cannot open {what}: {mask_url(problem)}{hint}")


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
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "connect", _sqlite_pragmas)
        _tuned = True


def require_existing(url: str, option: str, what: str) -> None:
    """A command that only reads a local store must not make an empty one where a typo
    or the wrong folder points: say there is none, and write nothing."""
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise StoreError(
            f"{option} {mask_url(url)}: no {what} there ({path} does not exist); "
            "run automl search first, or name the store with " + option
        )
