"""A trial's record in the Optuna study: the user attributes automl writes on it, and a
typed view that reads them back.

Optuna keeps a trial's attributes as a bag of JSON values; every key automl puts in that
bag is declared in ``TrialAttr``, and every reader goes through ``TrialRecord``, so a key
is spelled once and a missing one always reads as the same default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class TrialAttr:
    """The user attributes of a trial."""

    RUN_ID = "mlflow_run_id"  # the trial's MLflow run
    PARAMS = "params"  # every flat parameter it trained with, fixed ones of the space included
    SEED = "seed"  # the search's seed (the trial's own follows from it and its number)
    WORKER = "worker"  # host:pid of the process that ran it
    ORIGIN = "origin"  # where a fixed configuration came from: "baseline", "STUDY#N"
    TICKET = "ticket"  # why it was queued (``Ticket``)
    OWNER = "owner"  # the search that queued it ("" for the shared queue)
    RETRY_OF = "retry_of"  # the interrupted trial a retry runs again
    RETRY_REASON = "retry_reason"  # why that trial stopped: interrupted, preempted
    CHECKPOINT_EPOCH = "checkpoint_epoch"  # a retry can resume after this epoch
    RESUMED_FROM = "resumed_from"  # run id of the trial whose checkpoint a retry resumed
    RESUMED_AT = "resumed_at_epoch"  # the first epoch a retry trained itself
    EPOCHS_CAP = "epochs_cap"  # --max-epochs, when it cut the sampled schedule
    CUT = "cut"  # the budget ended before the schedule did
    WEIGHTS = "weights"  # the pretrained weights a backbone started from
    REASON = "reason"  # a short word for how it ended: pruned, oom, crashed ...
    MESSAGE = "message"  # the longer why
    TRACKING_ERROR = "tracking_error"  # MLflow stayed away: the run's record is incomplete
    CURVE = "curve"  # validation accuracy by progress step (multi-objective studies)


class OptunaAttr:
    """System attributes Optuna itself writes, which automl reads."""

    RETRY_HISTORY = "retry_history"  # the trials a dead worker's retry continues
    FAILED_TRIAL = "failed_trial"  # the dead trial a retry was queued for


class Ticket:
    """The values of ``TrialAttr.TICKET``."""

    NEW = "new"
    FIXED = "fixed"  # a given configuration: the space's baseline, a warm start
    RETRY = "retry"  # a trial that was stopped or died, queued again


SHARED = ""  # the owner of the shared queue that ``automl worker`` processes run


@dataclass(frozen=True)
class TrialRecord:
    """A typed read of what a trial recorded."""

    trial: Any  # optuna.trial.FrozenTrial or optuna.Trial

    @classmethod
    def of(cls, trial: Any) -> TrialRecord:
        return cls(trial)

    def _get(self, key: str, default: Any = None) -> Any:
        return self.trial.user_attrs.get(key, default)

    @property
    def run_id(self) -> str | None:
        value = self._get(TrialAttr.RUN_ID)
        return str(value) if value else None

    @property
    def params(self) -> dict[str, Any]:
        """The exact configuration it trained, fixed values of the space included."""
        return dict(self._get(TrialAttr.PARAMS) or self.trial.params)

    @property
    def seed(self) -> int:
        return int(self._get(TrialAttr.SEED, 0))

    @property
    def worker(self) -> str | None:
        value = self._get(TrialAttr.WORKER)
        return str(value) if value else None

    @property
    def origin(self) -> str | None:
        value = self._get(TrialAttr.ORIGIN)
        return str(value) if value else None

    @property
    def ticket(self) -> str | None:
        return self._get(TrialAttr.TICKET)  # type: ignore[no-any-return]

    @property
    def owner(self) -> str:
        return str(self._get(TrialAttr.OWNER, SHARED))

    @property
    def retry_of(self) -> int | None:
        value = self._get(TrialAttr.RETRY_OF)
        return int(value) if value is not None else None

    @property
    def checkpoint_epoch(self) -> int:
        """The epoch its (or its predecessor's) checkpoint reached; 0: none."""
        return int(self._get(TrialAttr.CHECKPOINT_EPOCH) or 0)

    @property
    def resumed_at(self) -> int:
        """The first epoch it trained itself (1 unless it resumed a checkpoint)."""
        return int(self._get(TrialAttr.RESUMED_AT, 1))

    @property
    def epochs_cap(self) -> int | None:
        value = self._get(TrialAttr.EPOCHS_CAP)
        return int(value) if value is not None else None

    @property
    def weights(self) -> str | None:
        value = self._get(TrialAttr.WEIGHTS)
        return str(value) if value is not None else None

    @property
    def reason(self) -> str | None:
        value = self._get(TrialAttr.REASON)
        return str(value) if value is not None else None

    @property
    def message(self) -> str | None:
        value = self._get(TrialAttr.MESSAGE)
        return str(value) if value else None

    @property
    def curve(self) -> dict[str, float]:
        return dict(self._get(TrialAttr.CURVE) or {})

    @property
    def retry_history(self) -> list[int]:
        return list(self.trial.system_attrs.get(OptunaAttr.RETRY_HISTORY) or [])

    @property
    def failed_trial(self) -> int | None:
        value = self.trial.system_attrs.get(OptunaAttr.FAILED_TRIAL)
        return int(value) if value is not None else None

    @property
    def predecessor(self) -> int | None:
        """The trial this one retries: Optuna's retry history for a dead worker's trial
        (its user attributes are copies of the dead trial's), else the interrupted one it
        names."""
        history = self.retry_history
        return int(history[-1]) if history else self.retry_of

    @property
    def epochs_trained(self) -> int:
        """Epochs of its schedule its weights trained, those a retry resumed from a
        checkpoint included: one report (or curve point) an epoch."""
        return max(len(self.trial.intermediate_values), len(self.curve))

    @property
    def epochs_run(self) -> int:
        """Epochs it trained itself, whichever way its curve was recorded: a retry that
        resumed a checkpoint reports the epochs before it too, which it did not train."""
        return max(0, self.epochs_trained - self.resumed_at + 1)
