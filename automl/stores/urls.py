"""Store URLs: checked before anything is written, and masked wherever they are shown or
recorded (a database URL may hold a password)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from automl import environment
from automl.errors import ConfigError, StoreError

DEFAULT_STORAGE = environment.STORAGE.default
DEFAULT_TRACKING = environment.TRACKING_URI.default


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
