"""The one place that touches Optuna's internals for a study: an atomic "take a queued
trial or nothing", the list of dead workers' trials, conditional state and attribute
changes, heartbeats, and the study's ``StudyStorage`` (``cached``).

Optuna's public API has none of these, so they live here, pinned to Optuna 5 by
``pyproject.toml`` and by ``tests/stores/test_compat.py``, which checks each behaviour
relied on: an Optuna release that changes one fails there.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.records.trial import TrialAttr
from automl.stores.cached import FLUSH_SECONDS, LOOK_SECONDS, StudyStorage

__all__ = [
    "FLUSH_SECONDS",
    "LOOK_SECONDS",
    "StudyStorage",
    "change_owner",
    "flush",
    "heartbeat_interval",
    "pop_waiting",
    "record_heartbeat",
    "release",
    "stale_trial_ids",
    "storage_of",
    "study_id",
    "timed",
    "transition",
    "trial_id",
]


def _storage(study: optuna.Study) -> StudyStorage:
    storage = study._storage
    if not isinstance(storage, StudyStorage):
        raise TypeError(f"a search's study runs on a StudyStorage, not {type(storage)}")
    return storage


def timed(study: optuna.Study) -> AbstractContextManager[None]:
    """Count the block as time in Optuna (sampling at a claim, the sampler's and pruner's
    work at a tell)."""
    return _storage(study).clock()


def flush(study: optuna.Study) -> None:
    """Send the pending writes of the trials this process runs (after sampling, so a
    worker that dies in its first epoch leaves its configuration and run id behind)."""
    _storage(study).flush()


def release(study: optuna.Study, trial: optuna.Trial) -> None:
    """Before telling a trial's result: send its writes and read it from the database."""
    _storage(study).release(trial._trial_id)


# ---------------------------------------------------------------------------- the queue


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return int(trial._trial_id)


def transition(study: optuna.Study, trial_id: int, before: TrialState, after: TrialState) -> bool:
    """Move a trial from ``before`` to ``after`` if it is still in ``before``; True if this
    call moved it.

    One conditional UPDATE, atomic on every database. Optuna's own ``set_trial_state_values``
    reads the row, then writes it: on SQLite, whose driver starts the transaction only at
    the write, two workers can both see a ticket WAITING and both take it (seen in 20-ticket
    tests with three workers), or both fail one dead trial and queue it twice.
    """
    return _storage(study).transition(trial_id, before, after)


def pop_waiting(
    study: optuna.Study, mine: Callable[[FrozenTrial], bool] = lambda trial: True
) -> optuna.Trial | None:
    """Take the oldest queued trial that is ``mine`` and make it RUNNING, or None.

    Unlike ``ask``, an empty queue creates no trial; unlike Optuna's own pop, two workers
    never take the same ticket (``transition``).
    """
    storage = _storage(study)
    with storage.clock():  # a new Trial samples its relative params (TPE's multivariate)
        study._thread_local.cached_all_trials = None  # see every worker's latest trials
        for ticket in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if mine(ticket) and storage.take(study._study_id, ticket._trial_id):
                return optuna.Trial(study, ticket._trial_id)
        return None


def change_owner(study: optuna.Study, ticket: FrozenTrial, before: str, after: str) -> bool:
    """Give a queued ticket to another owner if it still has ``before``; True if this call
    did (one conditional write: two searches never adopt the same ticket)."""
    return _storage(study).change_user_attr(ticket._trial_id, TrialAttr.OWNER, before, after)


def study_id(study: optuna.Study) -> int:
    return int(study._study_id)


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """Running trials whose heartbeat stopped for the storage's grace period."""
    return list(study._storage._get_stale_trial_ids(study._study_id))  # type: ignore[attr-defined]


def heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    """Seconds between heartbeats, or None for storages without them."""
    interval: int | None = getattr(storage, "get_heartbeat_interval", lambda: None)()
    return interval


def record_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
