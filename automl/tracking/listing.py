"""Reading the Model Registry without importing MLflow, for commands that only list.

``import mlflow`` alone costs about two seconds on a small machine, longer than the whole
answer ``automl models`` should take. Listing needs three tables, so a local SQLite
store is read directly (read-only, so a typo never creates or migrates anything) and a
tracking server through its REST API. Anything unexpected (another database, a schema
this module does not know, a server answering oddly) returns None and the caller falls
back on MLflow's own client, which is slower but always right.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import os
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from automl.errors import ConfigError
from automl.stores import require_existing, sqlite_file

DEFAULT_WORKSPACE = "default"  # MLflow's single workspace when workspaces are off
DELETED_STAGE = "Deleted_Internal"  # MLflow keeps deleted versions' rows with this stage
PROMPT_TAG = "mlflow.prompt.is_prompt"  # prompts share the tables; MLflow lists them apart
PAGE = 1000
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class VersionInfo:
    """One registered version, as the CLI shows it."""

    name: str
    version: int
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)
    created: datetime | None = None
    run_id: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _created(millis: Any) -> datetime | None:
    return datetime.fromtimestamp(int(millis) / 1000, tz=UTC) if millis else None


def missing_model(name: str, known: list[str]) -> ConfigError:
    """The same words as the MLflow path, so both answer a typo alike."""
    hint = f" (registered: {', '.join(known)})" if known else " (none registered yet)"
    return ConfigError(f"no registered model named '{name}'{hint}")


def list_versions(tracking_uri: str, name: str | None = None) -> list[VersionInfo] | None:
    """Every version of ``name`` (of every model when None), oldest first per model; None
    when this store cannot be read without MLflow."""
    require_existing(tracking_uri, "--tracking-uri", "MLflow tracking store")
    if sqlite_file(tracking_uri) is not None:
        return _from_sqlite(tracking_uri, name)
    if tracking_uri.startswith(("http://", "https://")):
        return _from_server(tracking_uri, name)
    return None


# --- a local SQLite store ---------------------------------------------------------------


def _from_sqlite(tracking_uri: str, name: str | None) -> list[VersionInfo] | None:
    path = sqlite_file(tracking_uri)
    assert path is not None
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        return _read_sqlite(connection, name)
    except (sqlite3.Error, ValueError):
        return None  # not migrated yet, locked, or a schema we do not know
    finally:
        connection.close()


@functools.cache
def _schema_head() -> str | None:
    """The newest schema revision of the installed MLflow, read from its migration
    scripts without importing it (a store at another revision is MLflow's to migrate, or
    to refuse in one line)."""
    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "store/db_migrations/versions"
    revisions, parents = set(), set()
    for script in folder.glob("*.py"):
        text = script.read_text(encoding="utf-8", errors="replace")
        revision = re.search(r"^revision\s*=\s*['\"](\w+)['\"]", text, re.M)
        parent = re.search(r"^down_revision\s*=\s*['\"](\w+)['\"]", text, re.M)
        if revision:
            revisions.add(revision.group(1))
        if parent:
            parents.add(parent.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _read_sqlite(db: sqlite3.Connection, name: str | None) -> list[VersionInfo]:
    [(revision,)] = db.execute("SELECT version_num FROM alembic_version").fetchall()
    if revision != _schema_head():
        raise sqlite3.OperationalError(f"schema revision {revision}, not the installed head")
    columns = {row[1] for row in db.execute("PRAGMA table_info(registered_models)")}
    if not columns:
        raise sqlite3.OperationalError("no registry tables")
    scoped = "workspace" in columns
    where = " AND workspace = :ws" if scoped else ""
    args: dict[str, Any] = {"ws": DEFAULT_WORKSPACE}
    prompts = {
        row[0]
        for row in db.execute(
            f"SELECT name FROM registered_model_tags WHERE key = :key "
            f"AND lower(value) = 'true'{where}",
            {**args, "key": PROMPT_TAG},
        )
    }
    models = sorted(
        row[0]
        for row in db.execute(f"SELECT name FROM registered_models WHERE 1=1{where}", args)
        if row[0] not in prompts
    )
    if name is not None and name not in models:
        raise missing_model(name, models)
    wanted = [name] if name is not None else models
    aliases: dict[tuple[str, int], list[str]] = {}
    for model, alias, version in db.execute(
        f"SELECT name, alias, version FROM registered_model_aliases WHERE 1=1{where}", args
    ):
        aliases.setdefault((model, int(version)), []).append(alias)
    tags: dict[tuple[str, int], dict[str, str]] = {}
    for model, version, key, value in db.execute(
        f"SELECT name, version, key, value FROM model_version_tags WHERE 1=1{where}", args
    ):
        tags.setdefault((model, int(version)), {})[key] = value
    found = []
    for model in wanted:
        rows = db.execute(
            "SELECT version, creation_time, run_id FROM model_versions "
            f"WHERE name = :name AND current_stage != :deleted{where} ORDER BY version",
            {**args, "name": model, "deleted": DELETED_STAGE},
        )
        for version, created, run_id in rows:
            key = (model, int(version))
            found.append(
                VersionInfo(
                    name=model,
                    version=int(version),
                    aliases=tuple(sorted(aliases.get(key, ()))),
                    tags=tags.get(key, {}),
                    created=_created(created),
                    run_id=run_id,
                )
            )
    return found


# --- a tracking server ------------------------------------------------------------------


class _Unreadable(Exception):
    """The server did not answer as MLflow's REST API does."""


def _headers() -> dict[str, str]:
    """The credentials MLflow's own client would send (its documented variables)."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = (os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD"))
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}


def _get(base: str, path: str, query: dict[str, str]) -> dict[str, Any]:
    url = f"{base.rstrip('/')}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers=_headers())
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            body = json.loads(response.read() or b"{}")
    except (OSError, ValueError, urllib.error.URLError) as exc:
        raise _Unreadable(str(exc)) from None
    if not isinstance(body, dict):
        raise _Unreadable("not a JSON object")
    return body


def _pages(base: str, path: str, query: dict[str, str], key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        paging = {"max_results": str(PAGE)} | ({"page_token": token} if token else {})
        page = _get(base, path, {**query, **paging})
        items.extend(page.get(key) or [])
        token = str(page.get("next_page_token") or "")
        if not token:
            return items


def _from_server(base: str, name: str | None) -> list[VersionInfo] | None:
    try:
        models = [
            m
            for m in _pages(base, "registered-models/search", {}, "registered_models")
            if not any(
                t.get("key") == PROMPT_TAG and str(t.get("value")).lower() == "true"
                for t in m.get("tags") or ()
            )
        ]
        names = sorted(str(m["name"]) for m in models)
        # version searches leave aliases out; the model's own record holds them
        held: dict[tuple[str, int], list[str]] = {}
        for m in models:
            for a in m.get("aliases") or ():
                held.setdefault((str(m["name"]), int(a["version"])), []).append(str(a["alias"]))
        if name is not None and name not in names:
            raise missing_model(name, names)
        found: list[VersionInfo] = []
        for model in [name] if name is not None else names:
            quoted = model.replace("'", "\\'")
            versions = _pages(
                base, "model-versions/search", {"filter": f"name='{quoted}'"}, "model_versions"
            )
            found.extend(_server_version(v, held) for v in versions)
    except (_Unreadable, KeyError, TypeError, ValueError):
        return None
    return sorted(found, key=lambda v: (v.name, v.version))


def _server_version(version: dict[str, Any], held: dict[tuple[str, int], list[str]]) -> VersionInfo:
    name, number = str(version["name"]), int(version["version"])
    aliases = set(version.get("aliases") or ()) | set(held.get((name, number), ()))
    return VersionInfo(
        name=name,
        version=number,
        aliases=tuple(sorted(aliases)),
        tags={str(t["key"]): str(t.get("value", "")) for t in version.get("tags") or ()},
        created=_created(version.get("creation_timestamp")),
        run_id=version.get("run_id") or None,
    )
