"""The MLflow Model Registry: versions, aliases and the tags that record their history."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from automl.errors import ConfigError
from automl.stores import absolute_sqlite, taking_turns
from automl.tracking.common import REGISTERED, client_for, first_line, store_errors
from automl.tracking.integrity import digest_tags
from automl.tracking.listing import VersionInfo, missing_model

HISTORY_TAG = "automl.alias_history.{alias}"


def _info(version: object, aliases: dict[str, str] | None = None) -> VersionInfo:
    """``aliases`` (alias -> version) fills in what version searches leave out."""
    created = getattr(version, "creation_timestamp", None)
    number = int(getattr(version, "version", 0))
    held = set(getattr(version, "aliases", None) or ())
    held |= {alias for alias, v in (aliases or {}).items() if int(v) == number}
    return VersionInfo(
        name=str(getattr(version, "name", "")),
        version=number,
        aliases=tuple(sorted(held)),
        tags=dict(getattr(version, "tags", None) or {}),
        created=datetime.fromtimestamp(created / 1000, tz=UTC) if created else None,
        run_id=getattr(version, "run_id", None),
    )


@store_errors
class Registry:
    """Registered models in one tracking store; every failure is a one-line ``ConfigError``."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = client_for(tracking_uri, create=False)  # its models are in it already

    def register(
        self, name: str, model_uri: str, tags: dict[str, str], description: str = ""
    ) -> int:
        """A new version of ``name``, tagged with the SHA-256 of each of its files, so
        that loading it later can prove nobody changed them in the artifact store."""
        with tempfile.TemporaryDirectory(prefix="automl-register-") as folder:
            local = mlflow.artifacts.download_artifacts(model_uri, dst_path=folder)
            tags = {**tags, **digest_tags(Path(local))}
        with contextlib.redirect_stderr(io.StringIO()):  # it prints "Successfully registered"
            version = mlflow.register_model(model_uri, name, tags=tags)
        if description:
            self.client.update_model_version(name, version.version, description=description)
        self.client.set_registered_model_tag(name, "task", "image-classification")
        return int(version.version)

    def model_names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def versions(self, name: str) -> list[VersionInfo]:
        aliases = self._require_model(name)
        found = self.client.search_model_versions(f"name = '{_quote(name)}'")
        return sorted((_info(v, aliases) for v in found), key=lambda v: v.version)

    def version(self, name: str, version: int) -> VersionInfo:
        self._require_model(name)
        try:
            return _info(self.client.get_model_version(name, str(version)))
        except MlflowException:
            raise ConfigError(f"model '{name}' has no version {version}") from None

    def by_alias(self, name: str, alias: str) -> VersionInfo | None:
        self._require_model(name)
        try:
            return _info(self.client.get_model_version_by_alias(name, alias))
        except MlflowException:
            return None

    def resolve(self, uri: str) -> VersionInfo | None:
        """The version a ``models:/NAME@ALIAS``, ``models:/NAME/V`` or ``models:/NAME/latest``
        URI names (latest: the highest number, as loading it takes), else None."""
        match = REGISTERED.fullmatch(uri)
        if not match:
            return None
        name, alias, number = match.groups()
        if number == "latest":
            versions = self.versions(name)
            if not versions:
                raise ConfigError(f"model '{name}' has no version")
            return versions[-1]
        if number:
            return self.version(name, int(number))
        found = self.by_alias(name, alias)
        if found is None:
            raise ConfigError(f"model '{name}' has no version with the alias '{alias}'")
        return found

    def find_version(self, name: str, tags: dict[str, str]) -> int | None:
        """The newest version whose tags include ``tags`` (None when the model is new)."""
        try:
            found = self.client.search_model_versions(f"name = '{_quote(name)}'")
        except MlflowException:
            return None
        matching = [
            int(v.version) for v in found if all(v.tags.get(k) == val for k, val in tags.items())
        ]
        return max(matching, default=None)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def tag_version(self, name: str, version: int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, value)

    def model_id(self, name: str, version: int) -> str | None:
        """The logged model behind a version (``models:/m-...`` source), if any."""
        source = str(self.client.get_model_version(name, str(version)).source)
        return source.removeprefix("models:/") if source.startswith("models:/m-") else None

    def log_to_version(
        self, name: str, version: int, folder: Path, artifact_path: str, metrics: dict[str, float]
    ) -> None:
        """Attach files and metrics to a version's logged model (its page in the UI)."""
        info = self.version(name, version)
        model_id = self.model_id(name, version)
        if model_id is None:
            return
        self.client.log_model_artifacts(model_id, str(folder), artifact_path)
        if info.run_id:
            now = int(time.time() * 1000)
            batch = [Metric(k, float(v), now, 0, model_id=model_id) for k, v in metrics.items()]
            for start in range(0, len(batch), 1000):
                self.client.log_batch(info.run_id, metrics=batch[start : start + 1000])

    @contextlib.contextmanager
    def moving_aliases(self) -> Iterator[None]:
        """Hold the store's alias lock: a move reads who holds an alias and its history,
        then writes both, so two moves at once would each act on what the other is
        changing (a promotion recorded twice, a rollback to the version rolled back)."""
        with taking_turns(absolute_sqlite(self.tracking_uri), "aliases"):
            yield

    def alias_history(self, name: str, alias: str) -> list[int]:
        """Versions that held ``alias``, oldest first, as automl moved it; a version
        written twice in a row (by moves that raced before they took turns) counts once."""
        model = self.client.get_registered_model(name)
        raw = (model.tags or {}).get(HISTORY_TAG.format(alias=alias), "[]")
        try:
            versions = [int(v) for v in json.loads(raw)]
        except (ValueError, TypeError):
            return []
        return [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]

    def set_alias_history(self, name: str, alias: str, history: list[int]) -> None:
        self.client.set_registered_model_tag(
            name, HISTORY_TAG.format(alias=alias), json.dumps(history[-200:])
        )

    def _require_model(self, name: str) -> dict[str, str]:
        """The model's aliases (alias -> version); a one-line error when it does not exist."""
        try:
            return dict(self.client.get_registered_model(name).aliases or {})
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc):
                raise missing_model(name, self.model_names()) from None
            raise ConfigError(f"cannot read model '{name}': {first_line(exc)}") from None


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


def now() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="seconds")
