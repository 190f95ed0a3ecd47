"""The statements ``StudyStorage`` sends to an RDB storage beyond Optuna's own: the atomic
claim, the batched writes of own trials, the light look for changes.

``SqlQueries`` runs them on an ``RDBStorage``; the storage proxy's client
(``proxy.client.ProxyClient``) has the same methods and has ``automl storage-proxy`` run these very
statements on its own connections, so a worker behaves the same either way. A batch
travels to the proxy as JSON (``Batch.to_json``/``from_json``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy
from optuna import distributions
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState

UNFINISHED = (TrialState.WAITING, TrialState.RUNNING)

# The tables a batch writes, each with the column that keys a trial's row, and its name
# in the JSON form of a batch.
_KEYS = {
    models.TrialParamModel: "param_name",
    models.TrialUserAttributeModel: "key",
    models.TrialSystemAttributeModel: "key",
    models.TrialIntermediateValueModel: "step",
}
_NAMES = {
    models.TrialParamModel: "params",
    models.TrialUserAttributeModel: "user_attrs",
    models.TrialSystemAttributeModel: "system_attrs",
    models.TrialIntermediateValueModel: "intermediate_values",
}
_MODELS = {name: model for model, name in _NAMES.items()}
_KIND = models.TrialIntermediateValueModel.TrialIntermediateValueType


class Batch:
    """Writes of own trials waiting to be sent: the last value of each key, then one
    DELETE and one INSERT a table (idempotent, so a retry after a lost reply is safe)."""

    def __init__(self) -> None:
        self.rows: dict[Any, dict[tuple[int, Any], dict[str, Any]]] = {}
        self.checked: list[tuple[Any, ...]] = []  # params of a name new to this process

    def __bool__(self) -> bool:
        return bool(self.rows or self.checked)

    def add(self, model: Any, trial_id: int, key: Any, row: dict[str, Any]) -> None:
        self.rows.setdefault(model, {})[trial_id, key] = {"trial_id": trial_id, **row}

    def before(self, newer: Batch) -> Batch:
        """This batch (which could not be sent) followed by ``newer``: its later values win."""
        for model, rows in newer.rows.items():
            self.rows.setdefault(model, {}).update(rows)
        self.checked += newer.checked
        return self

    def write(self, backend: RDBStorage) -> None:
        with _create_scoped_session(backend.scoped_session) as session:
            for args in self.checked:  # Optuna's own write checks the name's distribution
                backend._set_trial_param_without_commit(session, *args)
            for model, rows in self.rows.items():
                column = _KEYS[model]
                for trial_id in {trial_id for trial_id, _ in rows}:
                    keys = [key for owner, key in rows if owner == trial_id]
                    session.execute(
                        sqlalchemy.delete(model)
                        .where(model.trial_id == trial_id)
                        .where(getattr(model, column).in_(keys))
                    )
                session.execute(sqlalchemy.insert(model), list(rows.values()))

    def to_json(self) -> dict[str, Any]:
        tables = {}
        for model, rows in self.rows.items():
            listed = [dict(row) for row in rows.values()]
            if model is models.TrialIntermediateValueModel:
                for row in listed:
                    row["intermediate_value_type"] = row["intermediate_value_type"].name
            tables[_NAMES[model]] = listed
        checked = [
            [trial_id, name, value, distributions.distribution_to_json(distribution)]
            for trial_id, name, value, distribution, _ in self.checked
        ]
        return {"tables": tables, "checked": checked}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Batch:
        batch = cls()
        for name, rows in data["tables"].items():
            model = _MODELS[name]
            for row in rows:
                if model is models.TrialIntermediateValueModel:
                    row["intermediate_value_type"] = _KIND.__members__[
                        row["intermediate_value_type"]
                    ]
                trial_id = row.pop("trial_id")
                batch.add(model, trial_id, row[_KEYS[model]], row)
        for trial_id, name, value, text in data["checked"]:
            distribution = distributions.json_to_distribution(text)
            batch.checked.append((trial_id, name, value, distribution, None))
        return batch


class Queries(Protocol):
    """What ``StudyStorage`` asks of the database beyond Optuna's storage API."""

    def transition(self, trial_id: int, before: TrialState, after: TrialState) -> bool: ...
    def write(self, batch: Batch) -> None: ...
    def change_user_attr(self, trial_id: int, key: str, before: Any, after: Any) -> bool: ...
    def state_of(self, trial_id: int) -> TrialState: ...
    def states(self, study_id: int, highest: int) -> dict[int, TrialState]: ...


class SqlQueries:
    """The statements on the database itself (a worker's own connections, or the proxy's)."""

    def __init__(self, backend: RDBStorage) -> None:
        self.backend = backend

    def transition(self, trial_id: int, before: TrialState, after: TrialState) -> bool:
        """One conditional UPDATE, atomic on every database (see ``compat.transition``)."""
        now = datetime.now(UTC).replace(tzinfo=None)  # Optuna stores naive UTC
        changes: dict[Any, Any] = {models.TrialModel.state: after}
        if after == TrialState.RUNNING:
            changes[models.TrialModel._datetime_start_utc] = now
        if after.is_finished():
            changes[models.TrialModel._datetime_complete_utc] = now
        with _create_scoped_session(self.backend.scoped_session) as session:
            result = session.execute(
                sqlalchemy.update(models.TrialModel)
                .where(models.TrialModel.trial_id == trial_id)
                .where(models.TrialModel.state == before)
                .values(changes)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def write(self, batch: Batch) -> None:
        batch.write(self.backend)

    def change_user_attr(self, trial_id: int, key: str, before: Any, after: Any) -> bool:
        """One conditional UPDATE of a trial's attribute: of two processes at most one
        changes it."""
        table = models.TrialUserAttributeModel
        with _create_scoped_session(self.backend.scoped_session) as session:
            result = session.execute(
                sqlalchemy.update(table)
                .where(table.trial_id == trial_id, table.key == key)
                .where(table.value_json == json.dumps(before))
                .values(value_json=json.dumps(after))
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def state_of(self, trial_id: int) -> TrialState:
        table = models.TrialModel
        with _create_scoped_session(self.backend.scoped_session) as session:
            row = session.query(table.state).filter(table.trial_id == trial_id).one()
        return TrialState(row[0])

    def states(self, study_id: int, highest: int) -> dict[int, TrialState]:
        """Ids and states of the study's unfinished trials and of any trial newer than
        ``highest``: one query, no attributes read."""
        table = models.TrialModel
        with _create_scoped_session(self.backend.scoped_session) as session:
            rows = (
                session.query(table.trial_id, table.state)
                .filter(table.study_id == study_id)
                .filter(sqlalchemy.or_(table.state.in_(UNFINISHED), table.trial_id > highest))
                .all()
            )
        return {int(trial_id): state for trial_id, state in rows}
