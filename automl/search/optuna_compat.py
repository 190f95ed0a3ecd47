"""The one module that touches Optuna's internals, and the one door to its storage.

Optuna's public API has no atomic "take a queued trial or nothing", no list of dead
workers' trials, and a storage cache that reads every queued trial again at each sampling
and pruning call. automl needs all three, so they live here, pinned to Optuna 5 by
``pyproject.toml`` and by ``tests/search/test_optuna_compat.py``, which checks each
behaviour relied on: an Optuna release that changes one fails there, not in a search.

``StudyStorage`` is the storage every study of a search is opened on. Around Optuna's own
cached storage it adds three things:

- every call is timed (``OptunaClock``, nested calls counted once), so a search can say
  what share of its time Optuna takes;
- reads and idempotent writes are retried while the database is away (``automl.retry``);
  creating a trial and changing a trial's state are not, since a retry after a lost reply
  could do them twice (the queue retries those with their own guards);
- queued (WAITING) trials are read once, not at every call: a cheap query of the ids
  still waiting tells which tickets were claimed since, and only those are read again.
  A study with 100 tickets queued thus costs what a study with none costs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState

from automl.retry import retrying

T = TypeVar("T")
STORE = "the Optuna storage"


class OptunaClock:
    """Seconds spent inside Optuna, from any thread; a call made inside a timed call (a
    storage read during sampling) is not counted twice."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._local = threading.local()
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._lock:
                    self.seconds += time.perf_counter() - start


# Storage calls that are safe to repeat after an error whose reply may have been lost.
RETRIED = (
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies", "get_trial",
    "get_all_trials", "get_best_trial", "get_n_trials", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_params", "get_trial_user_attrs",
    "get_trial_system_attrs", "set_study_user_attr", "set_study_system_attr", "set_trial_param",
    "set_trial_user_attr", "set_trial_system_attr", "set_trial_intermediate_value",
    "_get_stale_trial_ids", "get_heartbeat_interval",
)  # fmt: skip
# Timed, never repeated: a second attempt could create a trial or change a state twice.
ONCE = ("create_new_study", "delete_study", "create_new_trial", "set_trial_state_values")


class StudyStorage(_CachedStorage):
    """Optuna's cached RDB storage, timed, retried, and reading queued trials once."""

    def __init__(self, backend: RDBStorage, clock: OptunaClock | None = None) -> None:
        super().__init__(backend)
        self.clock = clock or OptunaClock()
        self._queued: dict[int, set[int]] = {}  # study id -> ids read as WAITING
        self._highest: dict[int, int] = {}  # study id -> the highest trial id read

    @property
    def backend(self) -> RDBStorage:
        return self._backend

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        with self._lock:
            study = self._studies.setdefault(study_id, _StudyInfo())
            queued = self._queued.setdefault(study_id, set())
            still = self._waiting_ids(study_id) if queued else set()
            claimed = queued - still  # left the queue since we looked: read them again
            queued &= still
            highest = self._highest.get(study_id, -1)
            trials = self._backend._get_trials(
                study_id,
                states=None,
                included_trial_ids=(study.unfinished_trial_ids - queued) | claimed,
                trial_id_greater_than=highest,
            )
            if not trials:
                return
            self._add_trials_to_cache(study_id, trials)
            for trial in trials:
                trial_id = trial._trial_id
                self._highest[study_id] = max(self._highest.get(study_id, -1), trial_id)
                if trial.state == TrialState.WAITING:
                    queued.add(trial_id)
                if trial.state.is_finished():
                    study.unfinished_trial_ids.discard(trial_id)
                else:
                    study.unfinished_trial_ids.add(trial_id)

    def _waiting_ids(self, study_id: int) -> set[int]:
        """The ids of the study's queued trials: one light query, no attributes read."""
        with _create_scoped_session(self._backend.scoped_session) as session:
            rows = (
                session.query(models.TrialModel.trial_id)
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.state == TrialState.WAITING)
                .all()
            )
        return {int(row[0]) for row in rows}


def _timed(name: str, *, retried: bool) -> Callable[..., Any]:
    method = getattr(_CachedStorage, name)

    def call(self: StudyStorage, *args: Any, **kwargs: Any) -> Any:
        with self.clock():
            if retried:
                return retrying(lambda: method(self, *args, **kwargs), what=STORE)
            return method(self, *args, **kwargs)

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


for _name in RETRIED:
    setattr(StudyStorage, _name, _timed(_name, retried=True))
for _name in ONCE:
    setattr(StudyStorage, _name, _timed(_name, retried=False))


def study_storage(storage: RDBStorage, clock: OptunaClock | None = None) -> StudyStorage:
    return StudyStorage(storage, clock)


@contextmanager
def timed(study: optuna.Study) -> Iterator[None]:
    """Count the block as time in Optuna (sampling at a claim, the sampler's and pruner's
    work at a tell) when the study is opened on a ``StudyStorage``."""
    storage = study._storage
    if isinstance(storage, StudyStorage):
        with storage.clock():
            yield
    else:
        yield


# ---------------------------------------------------------------------------- the queue


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    return int(trial._trial_id)


def forget_cached_trials(study: optuna.Study) -> None:
    """Make the study's next read see every worker's latest trials (Optuna keeps a
    per-thread list of trials between ``ask`` and ``tell``)."""
    study._thread_local.cached_all_trials = None


def _rdb(study: optuna.Study) -> RDBStorage:
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, RDBStorage):
        raise TypeError(f"automl runs studies on Optuna's RDB storage, not {type(backend)}")
    return backend


def transition(study: optuna.Study, trial_id: int, before: TrialState, after: TrialState) -> bool:
    """Move a trial from ``before`` to ``after`` if it is still in ``before``; True if this
    call moved it.

    One conditional UPDATE, atomic on every database. Optuna's own ``set_trial_state_values``
    reads the row, then writes it: on SQLite, whose driver starts the transaction only at
    the write, two workers can both see a ticket WAITING and both take it (seen in 20-ticket
    tests with three workers), or both fail one dead trial and queue it twice.
    """
    now = datetime.now(UTC).replace(tzinfo=None)  # Optuna stores naive UTC
    changes: dict[Any, Any] = {models.TrialModel.state: after}
    if after == TrialState.RUNNING:
        changes[models.TrialModel._datetime_start_utc] = now
    if after.is_finished():
        changes[models.TrialModel._datetime_complete_utc] = now
    with _create_scoped_session(_rdb(study).scoped_session) as session:
        result = session.execute(
            sqlalchemy.update(models.TrialModel)
            .where(models.TrialModel.trial_id == trial_id)
            .where(models.TrialModel.state == before)
            .values(changes)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def pop_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Take the oldest queued trial and make it RUNNING, or None when none is queued.

    Unlike ``ask``, an empty queue creates no trial; unlike Optuna's own pop, two workers
    never take the same ticket (``transition``).
    """
    with timed(study):  # a new Trial samples its relative params (TPE's multivariate model)
        forget_cached_trials(study)
        for ticket in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if transition(study, ticket._trial_id, TrialState.WAITING, TrialState.RUNNING):
                return optuna.Trial(study, ticket._trial_id)
        return None


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """Running trials whose heartbeat stopped for the storage's grace period."""
    return list(study._storage._get_stale_trial_ids(study._study_id))  # type: ignore[attr-defined]


def heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    """Seconds between heartbeats, or None for storages without them."""
    interval: int | None = getattr(storage, "get_heartbeat_interval", lambda: None)()
    return interval


def record_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
