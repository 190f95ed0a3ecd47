"""Trial checkpoints: where a running trial keeps its training state, and how the trial
that retries it continues from there instead of from epoch 0.

A trial's checkpoint lives in the ``--checkpoint-dir`` folder (shared by every worker) or,
by default, as an artifact of the trial's own MLflow run, named by the trial's run id, so
no two trials of any study share one. A retry (the ticket ``requeue`` or ``fail_stale``
queued) looks for the checkpoint of the trial it retries, then of that trial's own
predecessor, and so on; it resumes from the first it finds whose configuration is its
own, and says so: ``resumed_from`` (the run id) and ``resumed_at_epoch`` (the first epoch
it trains). Checkpoints end with their trial: a trial that completes, is pruned or fails
for good deletes its own and those of the trials it continues; one that is handed back
(Ctrl-C, SIGTERM) or dies keeps its own for its retry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial

from automl.records import TrialRecord
from automl.search.scheduler.queue import MAX_RETRY
from automl.search.settings import SearchSettings
from automl.tracking import TRACKING_ERRORS, RunCheckpoints, Tracker
from automl.training.state import CheckpointUnreadable, TrainingState

GENERATIONS = 8  # predecessors looked at for a checkpoint (a retry of a retry of ...)
# What makes a checkpoint unusable: unreadable, or its store away.
PROBLEMS: tuple[type[BaseException], ...] = (CheckpointUnreadable, *TRACKING_ERRORS)


@dataclass(frozen=True)
class Slot:
    """Where one trial's checkpoint is kept."""

    study: str
    number: int
    run_id: str


class Store(Protocol):
    def write(self, slot: Slot, state: TrainingState) -> None: ...
    def read(self, slot: Slot) -> TrainingState | None: ...
    def delete(self, slot: Slot) -> None: ...


@dataclass(frozen=True)
class FolderStore:
    """``--checkpoint-dir``: one file a trial, written atomically (temporary file, rename)."""

    root: Path

    def path(self, slot: Slot) -> Path:
        return self.root.expanduser() / slot.study / f"trial-{slot.number:05d}-{slot.run_id}.pt"

    def write(self, slot: Slot, state: TrainingState) -> None:
        state.save(self.path(slot))

    def read(self, slot: Slot) -> TrainingState | None:
        path = self.path(slot)
        return TrainingState.load(path) if path.exists() else None

    def delete(self, slot: Slot) -> None:
        """The checkpoint, and any draft a worker killed mid-write left beside it."""
        path = self.path(slot)
        for stale in (path, *TrainingState.drafts(path)):
            stale.unlink(missing_ok=True)


@dataclass(frozen=True)
class RunStore:
    """The default: artifacts of the trial's MLflow run (``checkpoint/state-EEEEEE.pt``, the
    newest whole one counts; see ``tracking/run_checkpoints.py``)."""

    runs: RunCheckpoints

    def write(self, slot: Slot, state: TrainingState) -> None:
        self.runs.write(slot.run_id, state.epoch, state.to_bytes())

    def read(self, slot: Slot) -> TrainingState | None:
        problem: CheckpointUnreadable | None = None
        for artifact in self.runs.saved(slot.run_id):
            try:
                return TrainingState.from_bytes(self.runs.read(slot.run_id, artifact))
            except CheckpointUnreadable as exc:  # torn by a kill mid-copy: the one before
                problem = problem or exc
        if problem is not None:
            raise problem
        return None

    def delete(self, slot: Slot) -> None:
        self.runs.delete(slot.run_id)


def open_store(settings: SearchSettings, tracker: Tracker) -> Store:
    if settings.checkpoint_dir is not None:
        return FolderStore(Path(settings.checkpoint_dir))
    return RunStore(RunCheckpoints(tracker))


def slot_of(study: str, trial: FrozenTrial) -> Slot | None:
    run_id = TrialRecord.of(trial).run_id
    return Slot(study, trial.number, run_id) if run_id else None


def ancestors(study: optuna.Study, trial: FrozenTrial) -> list[FrozenTrial]:
    """The trials ``trial`` retries, nearest first."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    found: list[FrozenTrial] = []
    number = TrialRecord.of(trial).predecessor
    while number is not None and number in by_number and len(found) < GENERATIONS:
        found.append(by_number[number])
        number = TrialRecord.of(by_number[number]).predecessor
    return found


def fingerprint(params: dict[str, Any]) -> str:
    """The configuration a checkpoint was trained with, to refuse one of another."""
    return json.dumps(params, sort_keys=True, default=str)


@dataclass
class Resumed:
    """A retry's starting point: the state, and whose checkpoint it was."""

    state: TrainingState
    run_id: str
    number: int

    @property
    def first_epoch(self) -> int:
        return self.state.epoch + 1


@dataclass
class TrialCheckpoints:
    """One running trial's checkpoints: ``keep`` is the training loop's checkpoint hook,
    ``hand_back`` saves the latest state on an interrupt, ``forget`` deletes them all."""

    store: Store
    slot: Slot
    every: float  # seconds: a checkpoint after an epoch at most this often
    fingerprint: str
    on_saved: Callable[[int], None] = lambda epoch: None
    on_problem: Callable[[str], None] = lambda message: None
    older: list[Slot] = field(default_factory=list)  # the trials this one continues
    resumed: Resumed | None = None
    saved: int = 0  # epoch of this trial's own latest checkpoint
    pending: TrainingState | None = None  # the latest epoch's state, saved or not
    last: float = field(default_factory=time.monotonic)
    failed: bool = False

    def keep(self, state: TrainingState) -> None:
        self.pending = state
        if time.monotonic() - self.last >= self.every:
            self.save()

    def save(self) -> int:
        """Write the latest epoch's state if it is newer than the last written one;
        returns the epoch a retry would resume after (0: none)."""
        state = self.pending
        if state is None or state.epoch <= self.saved:
            return self.saved or (self.resumed.state.epoch if self.resumed else 0)
        state.meta.update(
            study=self.slot.study, trial=self.slot.number, run_id=self.slot.run_id,
            params=self.fingerprint,
        )  # fmt: skip
        try:
            self.store.write(self.slot, state)
        except TRACKING_ERRORS as exc:  # the trial goes on; a retry starts further back
            if not self.failed:
                self.on_problem(f"its checkpoint at epoch {state.epoch} was not saved: {exc}")
            self.failed = True
            return self.saved
        self.saved, self.last = state.epoch, time.monotonic()
        self.on_saved(state.epoch)
        self._delete(self.older)  # superseded by this trial's own
        self.older = []
        return self.saved

    def hand_back(self) -> int:
        """On Ctrl-C or SIGTERM: save what the last epoch reached, for the retry."""
        return self.save()

    def forget(self) -> None:
        """The trial is over for good: no retry will need any of its checkpoints."""
        written = self.saved or self.failed  # a write that failed may have left a part
        self._delete([self.slot, *self.older] if written else self.older)

    def _delete(self, slots: list[Slot]) -> None:
        for slot in slots:
            try:
                self.store.delete(slot)
            except TRACKING_ERRORS as exc:
                self.on_problem(f"the checkpoint of trial {slot.number} was not deleted: {exc}")


def find_resumable(
    store: Store,
    study: optuna.Study,
    trial: FrozenTrial,
    *,
    fingerprint: str,
    epochs: int,
    on_problem: Callable[[str], None],
) -> tuple[Resumed | None, list[Slot]]:
    """The nearest predecessor's usable checkpoint, and the slots of the predecessors
    looked at (deleted once this trial has a checkpoint of its own)."""
    slots: list[Slot] = []
    for before in ancestors(study, trial):
        slot = slot_of(study.study_name, before)
        if slot is None:
            continue
        slots.append(slot)
        try:
            state = store.read(slot)
        except PROBLEMS as exc:
            on_problem(f"the checkpoint of trial {before.number} cannot be read: {exc}")
            continue
        if state is None:
            continue
        if state.meta.get("params") != fingerprint or state.epochs != epochs:
            on_problem(f"the checkpoint of trial {before.number} is of another configuration")
            return None, slots
        return Resumed(state, slot.run_id, before.number), slots
    return None, slots


def forget_exhausted(store: Store, study: optuna.Study, trial: FrozenTrial) -> None:
    """A dead worker's trial that gets no retry (its retries are used up): its
    checkpoints, and those it continued, are of no use any more."""
    if len(TrialRecord.of(trial).retry_history) < MAX_RETRY:
        return  # retried: the retry resumes from them
    chain = [trial, *ancestors(study, trial)]
    for slot in filter(None, (slot_of(study.study_name, t) for t in chain)):
        try:
            store.delete(slot)
        except TRACKING_ERRORS:
            continue  # left behind; nothing depends on it
