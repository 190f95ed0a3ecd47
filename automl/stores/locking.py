"""Changes to a store that must take turns across processes and machines.

A read-then-write on a store (read who holds an alias, then move it and append to its
history) is only right when no other process does the same in between. A local store is
locked with a file beside it; a PostgreSQL store with an advisory lock held on its own
connection, which the server frees if the process dies. Other stores (an MLflow server
over HTTP) offer no lock to a client: their changes are not serialised here.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from automl.stores.sqlite import sqlite_file, store_lock


@contextmanager
def taking_turns(url: str, purpose: str) -> Iterator[None]:
    """Hold the store's lock named ``purpose`` while the block runs; waits for it."""
    if sqlite_file(url) is not None:
        with store_lock(url, purpose):
            yield
        return
    if url.split("://", 1)[0].split("+", 1)[0].lower() in ("postgresql", "postgres"):
        with _advisory_lock(url, purpose):
            yield
        return
    yield


@contextmanager
def _advisory_lock(url: str, purpose: str) -> Iterator[None]:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    key = zlib.crc32(f"automl:{purpose}".encode())  # a stable 32-bit key per purpose
    server = url.replace("postgres://", "postgresql://", 1)
    engine = sqlalchemy.create_engine(server, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()
