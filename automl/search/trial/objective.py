"""The objective: one Optuna trial becomes a sampled configuration, a network, a check of
its size, a training run and its measured objectives.

How a trial ends is decided in one place, ``ending_of``: pruned by the pruner, stopped by
a problem of its own (``TrialError``: out of memory, diverged, too large, unwritable
artifacts), failed by any other exception; the study goes on. Only an interrupt or a
fatal ``AutomlError`` escapes, after the trial's record is closed: an interrupt hands the
trial back with a checkpoint of its last epoch (``trial/checkpoints.py``), which its retry
resumes from. Storage calls are timed and retried by the study's storage
(``stores.cached.StudyStorage``); the trial's MLflow run is owned by a ``TrialRecorder``.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from automl.data import ImageData
from automl.errors import AutomlError, Terminated, TrialError, stop_if_asked
from automl.records import RunTag, TrialAttr, TrialRecord
from automl.records.ranking import place
from automl.search.hooks import Hooks
from automl.search.scheduler.queue import TrialResult
from automl.search.settings import SearchSettings
from automl.search.space import SearchSpace
from automl.search.strategy import pruners
from automl.search.strategy.objectives import OBJECTIVES, Measurements, dominates, unrecorded
from automl.search.trial.checkpoints import (
    Slot,
    Store,
    TrialCheckpoints,
    find_resumable,
    fingerprint,
    open_store,
)
from automl.stores.clock import OptunaClock
from automl.stores.compat import flush
from automl.tracking import Tracker, TrialRecorder
from automl.training.config import TrialConfig
from automl.training.loop import Callbacks, EpochResult
from automl.training.train import Overrides, fit_config, seeded_network, trial_seed

WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial


@dataclass(frozen=True)
class Ending:
    """How an exception ends a trial: its state, reason and message; ``fatal`` ones stop
    the search as well, ``status`` overrides the run's (an interrupt is KILLED)."""

    state: TrialState
    reason: str
    message: str = ""
    fatal: bool = False
    status: str | None = None


class ConstraintViolated(TrialError):
    def __init__(self, message: str) -> None:
        super().__init__("constraint", message)


def _forget(trial: optuna.Trial, kept: TrialCheckpoints) -> None:
    """Drop a finished trial's checkpoints, and the epoch its attributes said one reached:
    nothing is left to resume (Optuna cannot delete an attribute; None reads as none)."""
    kept.forget()
    if trial.user_attrs.get(TrialAttr.CHECKPOINT_EPOCH):
        trial.set_user_attr(TrialAttr.CHECKPOINT_EPOCH, None)


def ending_of(exc: BaseException) -> Ending:
    """The one translation from what went wrong to how the trial ends."""
    if isinstance(exc, optuna.TrialPruned):
        return Ending(TrialState.PRUNED, "pruned", str(exc))
    if isinstance(exc, TrialError):
        return Ending(TrialState[exc.state], exc.reason, str(exc))
    if isinstance(exc, Terminated):  # SIGTERM: a spot machine reclaimed, a pod evicted
        return Ending(TrialState.FAIL, "preempted", fatal=True, status="KILLED")
    if isinstance(exc, KeyboardInterrupt):  # the user stopped the search: the run was killed
        return Ending(TrialState.FAIL, "interrupted", fatal=True, status="KILLED")
    if isinstance(exc, AutomlError):  # fatal for the whole study
        return Ending(TrialState.FAIL, "error", str(exc), fatal=True)
    if isinstance(exc, Exception):
        return Ending(TrialState.FAIL, "error", f"{type(exc).__name__}: {exc}")
    return Ending(TrialState.FAIL, "error", type(exc).__name__, fatal=True)


@dataclass
class Objective:
    """Runs one trial; holds nothing between trials but what it was built with."""

    settings: SearchSettings
    space: SearchSpace
    data: ImageData
    tracker: Tracker
    parent_run_id: str
    device: torch.device
    clock: OptunaClock
    hooks: Hooks
    deadline: float | None = None  # time.monotonic() when the budget ends: cut the trial

    @property
    def multi(self) -> bool:
        return len(self.settings.objectives) > 1

    @functools.cached_property
    def checkpoints(self) -> Store:
        return open_store(self.settings, self.tracker)

    def __call__(self, trial: optuna.Trial) -> TrialResult:
        record: TrialRecorder | None = None
        kept: TrialCheckpoints | None = None
        try:
            params = self._sample(trial)
            record = self._record(trial, params)
            kept = self._checkpoints(trial, params, record)
            result = TrialResult(TrialState.COMPLETE, self._run(trial, params, record, kept))
            _forget(trial, kept)
            return result
        except BaseException as exc:
            ending = ending_of(exc)
            handed_back = None
            if kept is not None and isinstance(exc, KeyboardInterrupt):
                handed_back = self._hand_back(trial, record, kept)
            elif kept is not None:
                _forget(trial, kept)
            self._close(trial, record, ending)
            if handed_back is not None:  # said once the records are closed: a terminal
                self.hooks.on_note(handed_back)  # gone (a pipe closed) cannot keep them open
            if ending.fatal:
                raise
            return TrialResult(ending.state)

    def _sample(self, trial: optuna.Trial) -> dict[str, Any]:
        with self.clock():
            return self.space.sample(trial)

    def _record(self, trial: optuna.Trial, params: dict[str, Any]) -> TrialRecorder:
        record = TrialRecorder(
            self.tracker, parent_run_id=self.parent_run_id, study=trial.study.study_name,
            number=trial.number, params=params, on_lost=lambda text: self._lost(trial, text),
        )  # fmt: skip
        attrs = {TrialAttr.RUN_ID: record.run_id, TrialAttr.PARAMS: params,
                 TrialAttr.SEED: self.settings.seed, TrialAttr.WORKER: WORKER}  # fmt: skip
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        flush(trial.study)  # a worker dying in its first epoch leaves its configuration behind
        origin = TrialRecord.of(trial).origin
        if origin:  # a warm-start or baseline configuration: say where it came from
            record.set_tags({RunTag.ORIGIN: origin})
        return record

    def _checkpoints(
        self, trial: optuna.Trial, params: dict[str, Any], record: TrialRecorder
    ) -> TrialCheckpoints:
        """The trial's checkpoints; a retry finds the one of the trial it continues."""
        note = functools.partial(self._note, trial)
        kept = TrialCheckpoints(
            self.checkpoints, Slot(trial.study.study_name, trial.number, record.run_id),
            self.settings.checkpoint_seconds, fingerprint(params),
            on_saved=lambda epoch: trial.set_user_attr(TrialAttr.CHECKPOINT_EPOCH, epoch),
            on_problem=note,
        )  # fmt: skip
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        if TrialRecord.of(frozen).predecessor is None:
            return kept  # a first try: nothing to continue
        epochs = min(TrialConfig.from_params(params).train.epochs, self.settings.epoch_limit)
        kept.resumed, kept.older = find_resumable(
            self.checkpoints, trial.study, frozen, fingerprint=kept.fingerprint, epochs=epochs,
            on_problem=note,
        )  # fmt: skip
        resumed = kept.resumed
        # Set on every retry: a dead worker's retry carries copies of its attributes.
        trial.set_user_attr(TrialAttr.CHECKPOINT_EPOCH, resumed.state.epoch if resumed else 0)
        trial.set_user_attr(TrialAttr.RESUMED_AT, resumed.first_epoch if resumed else 1)
        if resumed is not None:
            trial.set_user_attr(TrialAttr.RESUMED_FROM, resumed.run_id)
            record.set_tags(
                {RunTag.RESUMED_FROM: resumed.run_id, RunTag.RESUMED_AT: str(resumed.first_epoch)}
            )
            self.hooks.on_note(
                f"trial {trial.number} resumes trial {resumed.number} at epoch "
                f"{resumed.first_epoch} of {epochs}, from its checkpoint"
            )
        flush(trial.study)  # where it resumed is known at once, even if this worker dies
        return kept

    def _hand_back(
        self, trial: optuna.Trial, record: TrialRecorder | None, kept: TrialCheckpoints
    ) -> str:
        """Ctrl-C or SIGTERM: save the last epoch's state for the retry; returns what to say."""
        epoch = kept.hand_back()
        if record is not None and epoch:
            record.set_tags({RunTag.CHECKPOINT_EPOCH: str(epoch)})
        where = f"from its checkpoint after epoch {epoch}" if epoch else "from the start"
        return f"trial {trial.number} handed back: its retry resumes {where}"

    def _run(
        self,
        trial: optuna.Trial,
        params: dict[str, Any],
        record: TrialRecorder,
        kept: TrialCheckpoints,
    ) -> tuple[float, ...]:
        self.hooks.on_trial_begin(trial.number, params)
        config = TrialConfig.from_params(params)
        epochs = min(config.train.epochs, self.settings.epoch_limit)
        if epochs < config.train.epochs:  # the sampled value stays in the params, as drawn
            trial.set_user_attr(TrialAttr.EPOCHS_CAP, self.settings.epoch_limit)
            record.set_tags({RunTag.EPOCHS_CAP: str(self.settings.epoch_limit)})
        seed = trial_seed(self.settings.seed, trial.number)
        model = seeded_network(config, self.data, seed, self.settings.weights_dir)
        try:
            measured = Measurements(model, self.data, self.device)
            self._check_size(trial, record, measured)
            source = getattr(model, "weights_source", None)
            if source is not None:  # a backbone: say which weights it started from
                record.set_tags({RunTag.WEIGHTS: source})
                trial.set_user_attr(TrialAttr.WEIGHTS, source)
            resume = kept.resumed.state if kept.resumed else None
            for result in resume.history if resume else []:  # the curve so far, reported again
                self._report(trial, record, EpochResult(**result), epochs)
            history = fit_config(
                model, config, self.data, device=self.device, seed=seed,
                overrides=Overrides(epochs=epochs, compile=self.settings.compile, resume=resume),
                callbacks=Callbacks(
                    on_epoch=lambda result: self._on_epoch(trial, record, result, epochs),
                    on_checkpoint=kept.keep,
                ),
            )  # fmt: skip
            ended = {RunTag.EPOCHS: str(len(history))}
            if len(history) < epochs:  # the budget ended: its last epoch is its result
                cut = f"budget ended after epoch {len(history)}"
                trial.set_user_attr(TrialAttr.CUT, cut)
                ended[RunTag.CUT] = f"{cut} of {epochs}"  # its description says so too
                record.set_tags({RunTag.CUT: ended[RunTag.CUT]})
            measured.accuracy = history[-1].val_acc
            objectives = self.settings.objectives
            values = tuple(OBJECTIVES[name].measure(measured) for name in objectives)
            record.log_epoch(len(history), unrecorded(objectives, values))
            if self._keeps_weights(trial, values):
                record.save_weights(model)
            record.finish("COMPLETE", **ended)
            return values
        finally:
            # No gc.collect() here: it costs a share of a short trial; refcounting frees it.
            del model
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _check_size(
        self, trial: optuna.Trial, record: TrialRecorder, measured: Measurements
    ) -> None:
        """Parameters and latency of the untrained network; oversized ones stop here."""
        max_params, max_latency = self.settings.max_params, self.settings.max_latency_ms
        sizes = {"n_params": measured.params}
        if "latency" in self.settings.objectives or max_latency is not None:
            sizes["latency_ms"] = measured.latency
        record.log_epoch(0, sizes)
        problems, limits = [], {}
        if max_params is not None:
            limits["params"] = measured.params - max_params
            if measured.params > max_params:
                problems.append(f"{measured.params:,.0f} parameters > --max-params {max_params:,}")
        if max_latency is not None:
            limits["latency_ms"] = measured.latency - max_latency
            if measured.latency > max_latency:
                problems.append(f"{measured.latency:.2f} ms > --max-latency-ms {max_latency}")
        if not problems:
            return
        for name, excess in limits.items():  # so samplers learn to avoid the region
            trial.set_constraint(name, excess)
        raise ConstraintViolated("; ".join(problems))

    def _on_epoch(
        self, trial: optuna.Trial, record: TrialRecorder, result: EpochResult, total: int
    ) -> bool:
        """Records the epoch, then prunes (raises), stops at the budget's end (True: the
        trial completes with the epochs it ran) or goes on (False)."""
        stop_if_asked()  # a Ctrl-C whose own raise was lost stops the trial here
        step = self._report(trial, record, result, total)
        self.hooks.on_epoch_end(trial.number, result, total)
        # Pruned in the first half of its schedule only; never at its last epoch.
        last = result.epoch >= total
        prune = False
        if not last and pruners.prunable(step, max(self.settings.progress_grid, total)):
            with self.clock():
                if self.multi:  # Optuna's pruners serve one objective: prune on the curve
                    prune = pruners.should_prune(trial, step, result.val_acc)
                else:
                    prune = trial.should_prune()
        if prune:
            why = pruners.pruned_why(result.val_acc, self._chance.chance)
            raise optuna.TrialPruned(
                f"val_acc {result.val_acc:.4f} at epoch {result.epoch} of {total} {why}"
            )
        if not last and self.settings.pruner != "none":
            self._chance.check(trial, result.epoch, total, result.val_acc)
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _report(
        self, trial: optuna.Trial, record: TrialRecorder, result: EpochResult, total: int
    ) -> int:
        """Record an epoch on the run and report it to the pruner, as a share of the
        trial's own schedule (see ``strategy.pruners``); returns the step it was reported at."""
        record.log_epoch(result.epoch, result.metrics())
        step = pruners.progress_step(result.epoch, total, self.settings.progress_grid)
        with self.clock():
            if self.multi:
                pruners.record(trial, step, result.val_acc)
            else:
                trial.report(result.val_acc, step)
        return step

    @functools.cached_property
    def _chance(self) -> pruners.ChanceRule:
        return pruners.ChanceRule.of(self.data)

    def _keeps_weights(self, trial: optuna.Trial, values: tuple[float, ...]) -> bool:
        """Among the ``--ensemble`` best so far (one objective: ties go to the earlier
        trial, as the registration ranks them) or on the Pareto front (several): the
        trials the conclusion may register, which then need no retraining."""
        study = trial.study
        if not self.multi:
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            return place(values[0], complete) < self.settings.members
        directions = [d.name.lower() for d in study.directions]
        return not any(dominates(t.values, values, directions) for t in study.best_trials)

    def _close(self, trial: optuna.Trial, record: TrialRecorder | None, ending: Ending) -> None:
        """Record why the trial ended, on the Optuna trial and on its run."""
        trial.set_user_attr(TrialAttr.REASON, ending.reason)
        if ending.message:
            trial.set_user_attr(TrialAttr.MESSAGE, ending.message[:2000])
        if record is not None:
            extra = {RunTag.MESSAGE: ending.message[:5000]} if ending.message else {}
            record.finish(ending.state.name, reason=ending.reason, status=ending.status, **extra)

    def _note(self, trial: optuna.Trial, message: str) -> None:
        self.hooks.on_note(f"trial {trial.number}: {message}")

    def _lost(self, trial: optuna.Trial, message: str) -> None:
        trial.set_user_attr(TrialAttr.TRACKING_ERROR, message[:2000])
        self._note(trial, message)
