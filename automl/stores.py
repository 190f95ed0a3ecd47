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

import os
import re
import sqlite3
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl.errors import ConfigError, StoreError

if TYPE_CHECKING:
    import optuna

DEFAULT_STORAGE = "sqlite:///automl.db"
DEFAULT_TRACKING = "sqlite:///mlflow.db"
HEARTBEAT_SECONDS = int(os.environ.get("AUTOML_HEARTBEAT_SECONDS", "30"))
GRACE_SECONDS = int(os.environ.get("AUTOML_GRACE_SECONDS", "90"))  # silence before a trial is dead
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
    """A URL SQLAlchemy understands; a SQLite file must be creatable where it points."""
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


def open_storage(url: str, option: str = "--storage") -> optuna.storages.RDBStorage:
    """The Optuna RDB storage with heartbeats, so a crashed worker's trial is failed later."""
    import optuna

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
