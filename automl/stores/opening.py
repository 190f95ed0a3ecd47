"""Opening the Optuna storage: a database with heartbeats (created safely when new), or a
storage proxy's client; and refusing in one line a database that is not Optuna's.

Optuna and SQLAlchemy are imported when a store is opened, not when this module is: the
tracking layer and the CLI use the URL helpers without paying for them.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

from automl import environment
from automl.errors import StoreError
from automl.stores.sqlite import (
    broken_store,
    build_beside,
    check_sqlite_file,
    require_existing,
    sqlite_file,
    store_lock,
    tune_sqlite,
)
from automl.stores.urls import check_proxy, mask_url, proxy_address

if TYPE_CHECKING:
    import optuna

OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})


def check_study_tables(url: str, option: str) -> None:
    """A database that holds tables must hold Optuna's: the MLflow store named by mistake
    is refused in one line, untouched. A new or empty database is fine (Optuna makes its
    tables); a local file is only read."""
    import sqlalchemy

    path = sqlite_file(url)
    if path is not None and not path.is_file():
        return
    try:
        check_sqlite_file(url)
        args = {"connect_timeout": 10} if url.startswith("postgresql") else {}
        engine = sqlalchemy.create_engine(url, connect_args=args)
        try:
            tables = set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise broken_store(url, option, "the Optuna storage", first) from None
    if tables and not OPTUNA_TABLES.issubset(tables):
        raise StoreError(
            f"{option} {mask_url(url)}: the database holds tables but not Optuna's (is it "
            "the MLflow store? studies are in automl.db, or the optuna database, by default)"
        )


def open_storage(
    url: str, option: str = "--storage", *, create: bool = True
) -> optuna.storages.RDBStorage | optuna.storages.GrpcStorageProxy:
    """The Optuna RDB storage with heartbeats, so a crashed worker's trial is failed later;
    for ``grpc://HOST:PORT``, Optuna's client of the storage proxy there, which must answer
    (a search's ``StudyStorage`` adds automl's own calls to it).
    ``create`` False: a local store that does not exist is refused, not made."""
    import optuna

    if proxy_address(url, option) is not None:
        host, port = check_proxy(url, option)
        with warnings.catch_warnings():  # experimental since Optuna 4.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.GrpcStorageProxy(host=host, port=port)
    return open_database(url, option, create=create)


def close_storage(store: optuna.storages.BaseStorage) -> None:
    """Let go of a storage's connections (a pool, or a proxy's channel)."""
    engine = getattr(store, "engine", None)
    if engine is not None:
        engine.dispose()
    close = getattr(store, "close", None)
    if callable(close):
        close()


def open_database(
    url: str, option: str = "--storage", *, create: bool = True
) -> optuna.storages.RDBStorage:
    """The RDB storage itself (what ``automl storage-proxy`` serves)."""
    import optuna

    if not create:
        require_existing(url, option, "Optuna storage")

    tune_sqlite()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    else:  # a server may drop idle connections; a file cannot
        kwargs["pool_pre_ping"] = True

    # Read before the store is opened: a bad value is named as such, not as a bad store.
    heartbeat, grace = environment.HEARTBEAT_SECONDS.get(), environment.GRACE_SECONDS.get()

    def storage(at: str) -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                at, engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=grace
            )

    for attempt in range(CREATE_TRIES):
        try:
            with store_lock(url):
                build_beside(url, lambda draft: storage(draft).engine.dispose())
                return storage(url)
        except Exception as exc:
            if attempt + 1 < CREATE_TRIES and _lost_creation_race(exc):
                time.sleep(0.2 * (attempt + 1))  # another process made the tables: use them
                continue
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise broken_store(url, option, "the Optuna storage", first) from None
    raise AssertionError("unreachable")


CREATE_TRIES = 5


def _lost_creation_race(exc: BaseException) -> bool:
    """Two processes creating a database server's tables at once: one of them gets a
    unique-constraint error from the catalogue (PostgreSQL: ``pg_type_typname_nsp_index``)
    or "already exists"; trying again finds the tables made."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).lower()
        if isinstance(seen, IntegrityError | ProgrammingError) and (
            "duplicate key" in text or "already exists" in text
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
