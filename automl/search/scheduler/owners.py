"""Who a queued trial belongs to, so searches sharing a study never take each other's.

Every ticket carries the ``owner`` user attribute: the id of the search that queued it
(its parent run), or "" for the shared queue that ``automl study create`` fills for
``automl worker`` processes. A search (and its ``--jobs`` processes) claims its own
tickets only, so ``--trials N`` runs exactly N trials whatever else runs on the study.

A live search says so with a heartbeat in the study (``StudyAttr.SEARCH_BEAT``). Tickets left
by a search that is gone (stopped, or silent for the grace period) are orphans: the next
search adopts as many as it asks for, each with one conditional write, so two searches
starting at once never adopt the same ticket; the others stay queued for the one after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.environment import GRACE_SECONDS
from automl.records.study import search_beat_key
from automl.records.trial import SHARED, Ticket, TrialRecord
from automl.stores import compat


@dataclass(frozen=True)
class Owner:
    """The tickets a process may claim: a search's own, or the shared queue."""

    id: str = SHARED

    def holds(self, trial: FrozenTrial) -> bool:
        return TrialRecord.of(trial).owner == self.id


WORKERS = Owner(SHARED)  # the shared queue of `automl study create`, run by `automl worker`


def owner_of(trial: FrozenTrial) -> str:
    return TrialRecord.of(trial).owner


def alive(study: optuna.Study, owners: set[str]) -> set[str]:
    """Which of the searches ``owners`` still run (their heartbeat is recent)."""
    records = compat.storage_of(study).get_study_system_attrs(compat.study_id(study))
    now, grace = time.time(), GRACE_SECONDS.get()
    beats = {o: records.get(search_beat_key(o)) for o in owners}
    return {o for o, r in beats.items() if isinstance(r, dict) and now - r["beat"] <= grace}


def silent(study: optuna.Study) -> set[str]:
    """The searches that stopped beating without saying they were gone (killed): their
    last heartbeat is older than the grace period and was never set to 0."""
    records = compat.storage_of(study).get_study_system_attrs(compat.study_id(study))
    prefix, now, grace = search_beat_key(""), time.time(), GRACE_SECONDS.get()
    return {
        key.removeprefix(prefix)
        for key, record in records.items()
        if key.startswith(prefix) and isinstance(record, dict)
        and 0 < record.get("beat", 0) < now - grace
    }  # fmt: skip


def forget(study: optuna.Study, owner: str) -> None:
    """Mark the search ``owner`` as gone and dealt with (its heartbeat 0, as on a clean
    exit), so it is not looked at again."""
    storage = compat.storage_of(study)
    storage.set_study_system_attr(compat.study_id(study), search_beat_key(owner), {"beat": 0.0})


def adopt(study: optuna.Study, owner: Owner, wanted: int) -> int:
    """Take up to ``wanted`` tickets left by searches that are gone; returns how many."""
    if wanted <= 0:
        return 0
    taken = 0
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    owned = {owner_of(t) for t in queued} - {SHARED, owner.id}
    gone = owned - alive(study, owned)
    # An interrupted trial's configuration first: it resumes what the user stopped.
    queued = sorted(queued, key=lambda t: (TrialRecord.of(t).ticket != Ticket.RETRY, t.number))
    for ticket in queued:
        if taken == wanted:
            break
        previous = owner_of(ticket)
        if previous in gone and compat.change_owner(study, ticket, previous, owner.id):
            taken += 1
    return taken
