"""Store URLs and the Optuna storage: checking a URL before anything is written, masking
its password wherever it is shown or recorded, and opening the storage fast and safely.

SQLite's defaults (rollback journal, a full fsync per commit) cost several milliseconds a
write; a search writes thousands of times. Write-ahead logging with ``synchronous=NORMAL``
keeps each commit safe from a crash of the process (only a power cut can lose the last
commits) and lets the MLflow UI read while a search writes.

Optuna and SQLAlchemy are imported when a store is opened, not when this module is: the
tracking layer and the CLI use the URL helpers without paying for them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl import environment
from automl.errors import ConfigError, StoreError

if TYPE_CHECKING:
    import optuna

DEFAULT_STORAGE = environment.STORAGE.default
DEFAULT_TRACKING = environment.TRACKING_URI.default
_tuned = False


# Query keys that carry a credential, in any case (password, passwd, pwd, secret, token,
# key, access_key, sslpassword, api_key, client_secret, X-Amz-Credential...).
SECRET_KEY = re.compile(
    r"(?i)([?&;][^=&;#\s?]*(?:pass|pwd|secret|token|key|credential)[^=&;#\s]*=)[^&;#\s]*"
)


def mask_url(url: str) -> str:
    """Hide every credential in a URL, or in a text that holds one (an error message):
    the password of ``scheme://user:password@host`` and the value of any query key that
    names a secret. Every display and record of a store URL goes through here."""
    masked = re.sub(r"(://[^/:@\s]*:)[^@/\s]*@", r"\1***@", url)
    return SECRET_KEY.sub(r"\1***", masked)


def check_storage_url(url: str, option: str) -> None:
    """A URL SQLAlchemy understands; a SQLite file must be creatable where it points; a
    storage proxy (``grpc://``) must answer."""
    if proxy_address(url, option) is not None:
        check_proxy(url, option)
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"{option}: '{mask_url(url)}' is not a database URL") from None
    try:
        parsed.get_dialect()  # an unknown scheme or a driver that is not installed
    except (NoSuchModuleError, ImportError):
        raise ConfigError(
            f"{option}: '{mask_url(url)}': no database driver for '{parsed.drivername}://' "
            "(use sqlite:///FILE or postgresql+psycopg2://USER@HOST/DB)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_path(parsed.database, option)


PROXY_PORT = 13000  # automl storage-proxy's default port
PROXY_URL = re.compile(r"(?i)grpc://(\[[0-9a-f:.]+\]|[^\s/:@?#\[\]]+)(?::(\d{1,5}))?/?")


def proxy_address(url: str, option: str) -> tuple[str, int] | None:
    """Host and port of a storage proxy's ``grpc://HOST[:PORT]``; None for a database URL."""
    if not url.lower().startswith("grpc:"):
        return None
    match = PROXY_URL.fullmatch(url)
    if match is None:
        raise ConfigError(
            f"{option}: '{mask_url(url)}' is not a storage proxy address "
            f"(grpc://HOST:PORT, e.g. grpc://127.0.0.1:{PROXY_PORT})"
        )
    port = int(match.group(2) or PROXY_PORT)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{option}: '{url}': the port must be 1..65535")
    return match.group(1), port


def check_proxy(url: str, option: str) -> tuple[str, int]:
    """A storage proxy that answers within ``AUTOML_PROXY_WAIT_SECONDS`` (2 s): a wrong
    address or a proxy not started is one line, not a worker waiting for ever."""
    address = proxy_address(url, option)
    assert address is not None
    host, port = address
    wait = environment.PROXY_WAIT_SECONDS.get()
    try:
        import grpc
    except ImportError:
        raise ConfigError(f"{option}: grpc:// needs grpcio (pip install grpcio)") from None
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=wait)
        except grpc.FutureTimeoutError:
            raise StoreError(
                f"{option} {url}: no storage proxy answers there within "
                f"{wait:g} s (start one with automl storage-proxy --storage "
                f"DATABASE_URL --host HOST --port {port})"
            ) from None
    return host, port


TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's database stores


def check_tracking_uri(uri: str) -> None:
    if uri.startswith(("http://", "https://", "databricks")):
        return
    if uri.startswith("file:") or "://" not in uri:
        raise ConfigError(
            f"--tracking-uri: '{mask_url(uri)}' is a file store, which MLflow 3 refuses; "
            "use sqlite:///mlflow.db or http://HOST:PORT"
        )
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(
            f"--tracking-uri: '{mask_url(uri)}': MLflow has no store for '{scheme}://' "
            "(use sqlite:///FILE, postgresql://..., or http(s)://HOST:PORT)"
        )
    check_storage_url(uri, "--tracking-uri")


def _check_sqlite_path(database: str | None, option: str) -> None:
    if not database or database == ":memory:":
        return
    path = Path(database).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(f"{option}: the file {path} is not writable")
        return
    if not folder.is_dir():
        raise ConfigError(f"{option}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{option}: the folder {folder} is not writable")


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
def store_lock(url: str) -> Iterator[None]:
    """Hold a lock beside a local store (``FILE.lock``) while it is created or migrated:
    searches started at the same moment on a new store then take turns instead of racing
    in its schema migration. Servers serialise this themselves."""
    path = sqlite_file(url)
    if path is None or not path.parent.is_dir():
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
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

    def storage(at: str) -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                at,
                engine_kwargs=kwargs,
                heartbeat_interval=environment.HEARTBEAT_SECONDS.get(),
                grace_period=environment.GRACE_SECONDS.get(),
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
