"""Where a search keeps its studies: store URLs (checked, masked), local SQLite files,
opening the Optuna storage, and the adapter over Optuna's internals that every study of a
search runs on (``compat``, ``cached``, ``sql``), the storage proxy (``proxy``) included.

The names below load nothing heavy: the tracking layer and the CLI use the URL helpers
without paying for Optuna or SQLAlchemy, which are imported when a store is opened.
"""

from automl.stores.locking import taking_turns
from automl.stores.opening import (
    OPTUNA_TABLES,
    check_study_tables,
    close_storage,
    open_database,
    open_storage,
)
from automl.stores.sqlite import (
    absolute_sqlite,
    broken_store,
    build_beside,
    check_sqlite_file,
    check_writable,
    is_locked,
    require_existing,
    sqlite_file,
    store_lock,
    tune_sqlite,
)
from automl.stores.urls import (
    DEFAULT_STORAGE,
    DEFAULT_TRACKING,
    PROXY_PORT,
    check_proxy,
    check_storage_url,
    check_tracking_uri,
    mask_url,
    proxy_address,
)

__all__ = [
    "DEFAULT_STORAGE",
    "DEFAULT_TRACKING",
    "OPTUNA_TABLES",
    "PROXY_PORT",
    "absolute_sqlite",
    "broken_store",
    "build_beside",
    "check_proxy",
    "check_sqlite_file",
    "check_storage_url",
    "check_study_tables",
    "check_tracking_uri",
    "check_writable",
    "close_storage",
    "is_locked",
    "mask_url",
    "open_database",
    "open_storage",
    "proxy_address",
    "require_existing",
    "sqlite_file",
    "store_lock",
    "taking_turns",
    "tune_sqlite",
]
