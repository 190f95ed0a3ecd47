"""The objective joins one Optuna trial to the data, the builder, the loop and the tracker.

It turns epoch reports into ``trial.report`` and pruning decisions, records why a trial
ended (``reason`` user attribute and run tag), and keeps a trial's problem inside that
trial: the study goes on.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import optuna
import torch

from automl import pruning
from automl.augment import Augment
from automl.data import ImageData
from automl.errors import AutomlError, TrialError
from automl.hooks import Hooks
from automl.models import build_model, count_params
from automl.params import TrialConfig
from automl.retry import retrying
from automl.space import SearchSpace
from automl.tracking import TRACKING_ERRORS, Tracker, TrialRun
from automl.train import EpochResult, Normalizer, evaluate, fit, out_of_memory_as_trial_error


class TrialFailed(Exception):
    """Raised to Optuna so it marks the trial FAIL; its reason is already recorded."""


@dataclass
class Timings:
    """Seconds spent in Optuna calls made from inside the objective."""

    optuna: float = 0.0
    objective: float = 0.0


WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial
T = TypeVar("T")


def trial_seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number) % (2**31)


def build_network(
    config: TrialConfig, data: ImageData, weights_dir: Path | None = None
) -> torch.nn.Module:
    return build_model(
        config.arch, data.channels, data.image_size, data.num_classes, weights_dir=weights_dir
    )


@dataclass
class Objective:
    space: SearchSpace
    data: ImageData
    tracker: Tracker
    parent_run_id: str
    study_name: str
    device: torch.device
    max_epochs: int
    seed: int = 0
    weights_dir: Path | None = None
    objectives: tuple[str, ...] = ("accuracy",)
    max_params: int | None = None
    max_latency_ms: float | None = None
    compile: bool = False
    hooks: Hooks = field(default_factory=Hooks)
    timings: Timings = field(default_factory=Timings)

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        start = time.perf_counter()
        try:
            return self._run(trial)
        finally:
            self.timings.objective += time.perf_counter() - start

    def _run(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        params, run = self._start(trial)
        model: torch.nn.Module | None = None
        try:
            self.hooks.on_trial_begin(trial.number, params)
            torch.manual_seed(trial_seed(self.seed, trial.number))
            config = TrialConfig.from_params(params)
            with out_of_memory_as_trial_error(config.train.batch_size):  # a huge network, too
                model = build_network(config, self.data, self.weights_dir)
            return self._train(trial, run, config, model)
        except optuna.TrialPruned as exc:
            self._end(trial, run, "PRUNED", "pruned", message=str(exc))
            raise
        except TrialError as exc:
            self._end(trial, run, "PRUNED", exc.reason, message=str(exc))
            raise optuna.TrialPruned(f"{exc.reason}: {exc}") from None
        except KeyboardInterrupt:  # the user stopped the search: the run was killed
            self._end(trial, run, "FAIL", "interrupted", status="KILLED")
            raise
        except ArtifactWriteFailed as exc:
            self._end(trial, run, "FAIL", "artifacts", message=str(exc))
            raise TrialFailed(str(exc)) from None
        except AutomlError as exc:  # fatal for the whole study
            self._end(trial, run, "FAIL", "error", message=str(exc))
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            self._end(trial, run, "FAIL", "error", message=message)
            raise TrialFailed(message) from exc
        finally:
            del model  # a full gc.collect() here costs ~0.3 s a trial; refcounting frees it
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _start(self, trial: optuna.Trial) -> tuple[dict[str, Any], TrialRun]:
        """Sample the configuration and open the trial's run (both retried while away)."""
        params = self._db(lambda: self.space.sample(trial, caps={"train.epochs": self.max_epochs}))
        try:
            run = self.tracker.start_trial_run(
                self.parent_run_id, self.study_name, trial.number, params
            )
        except TRACKING_ERRORS as exc:  # still away after the retries: nothing trained yet
            self._db(lambda: trial.set_user_attr("reason", "tracking"))
            raise TrialFailed(f"the MLflow tracking store is unreachable: {exc}") from None

        def record() -> None:
            for key, value in (("mlflow_run_id", run.run_id), ("params", params),
                               ("seed", self.seed), ("worker", WORKER)):  # fmt: skip
                trial.set_user_attr(key, value)

        self._db(record)
        origin = trial.user_attrs.get("origin")
        if origin:  # a warm-start or baseline configuration: say where it came from
            run.set_tags({"origin": str(origin)})
        return params, run

    def _train(
        self, trial: optuna.Trial, run: TrialRun, config: TrialConfig, model: torch.nn.Module
    ) -> float | tuple[float, ...]:
        size = self._check_size(trial, run, model)
        source = getattr(model, "weights_source", None)
        if source is not None:  # a backbone: say which weights it started from
            run.set_tags({"weights": source})
            self._db(lambda: trial.set_user_attr("weights", source))
        history = fit(
            model,
            self.data.train,
            self.data.val,
            optim=config.optim,
            schedule=config.train,
            augment=Augment(config.aug),
            norm=Normalizer(self.data.mean, self.data.std),
            device=self.device,
            seed=trial_seed(self.seed, trial.number),
            on_epoch=lambda result: self._on_epoch(trial, run, result, config.train.epochs),
            compile=self.compile,
        )
        values = self._values(history[-1].val_acc, size, model)
        run.log_epoch(len(history), dict(zip(self.objectives, values, strict=True)))
        if self._beats_best(trial, values):
            self._save_weights(trial, run, model)
        try:
            run.finish("COMPLETE", epochs=str(len(history)))
        except TRACKING_ERRORS as exc:  # the Optuna result is kept all the same
            self._tracking_lost(trial, exc)
        return values if self.multi else values[0]

    def _save_weights(self, trial: optuna.Trial, run: TrialRun, model: torch.nn.Module) -> None:
        """A write that fails (disk full, no permission) fails the trial, not the study; a
        tracking server still away after the retries leaves the trial without weights (a
        registration retrains it from its params)."""
        try:
            run.log_weights(model)
        except OSError as exc:
            raise ArtifactWriteFailed(f"saving the weights failed: {exc}") from None
        except TRACKING_ERRORS as exc:
            self._tracking_lost(trial, exc)

    def _tracking_lost(self, trial: optuna.Trial, exc: BaseException) -> None:
        message = f"MLflow unreachable after retries; the trial's record is incomplete ({exc})"
        self._db(lambda: trial.set_user_attr("tracking_error", message[:2000]))
        self.hooks.on_note(f"trial {trial.number}: {message}")

    def _db(self, call: Callable[[], T]) -> T:
        """An Optuna storage call: timed, and retried while the database is away."""
        with self._optuna():
            return retrying(call, what="the Optuna storage")

    def _check_size(
        self, trial: optuna.Trial, run: TrialRun, model: torch.nn.Module
    ) -> dict[str, float]:
        """Parameters and latency of the untrained network; oversized ones stop here."""
        size: dict[str, float] = {"params": float(count_params(model))}
        if "latency" in self.objectives or self.max_latency_ms is not None:
            size["latency"] = measure_latency(model, self.data, self.device)
        run.log_epoch(
            0,
            {
                "n_params": size["params"],
                **({"latency_ms": size["latency"]} if "latency" in size else {}),
            },
        )
        problems = []
        if self.max_params is not None and size["params"] > self.max_params:
            problems.append(f"{size['params']:,.0f} parameters > --max-params {self.max_params:,}")
        if self.max_latency_ms is not None and size["latency"] > self.max_latency_ms:
            problems.append(f"{size['latency']:.2f} ms > --max-latency-ms {self.max_latency_ms}")
        if problems:  # recorded as constraints, so samplers learn to avoid the region

            def constrain() -> None:
                if self.max_params is not None:
                    trial.set_constraint("params", size["params"] - self.max_params)
                if self.max_latency_ms is not None:
                    trial.set_constraint("latency_ms", size["latency"] - self.max_latency_ms)

            self._db(constrain)
            raise ConstraintViolated("; ".join(problems))
        return size

    def _values(
        self, accuracy: float, size: dict[str, float], model: torch.nn.Module
    ) -> tuple[float, ...]:
        values = []
        for name in self.objectives:
            if name == "accuracy":
                values.append(accuracy)
            elif name == "robust_accuracy":
                values.append(robust_accuracy(model, self.data, self.device))
            else:
                values.append(size[name])
        return tuple(values)

    def _on_epoch(
        self, trial: optuna.Trial, run: TrialRun, result: EpochResult, total: int
    ) -> None:
        run.log_epoch(result.epoch, result.metrics())
        self.hooks.on_epoch_end(trial.number, result, total)

        def decide() -> bool:
            if self.multi:  # Optuna's pruners serve one objective: prune on the accuracy curve
                pruning.record(trial, result.epoch, result.val_acc)
                return pruning.should_prune(trial, result.epoch, result.val_acc)
            trial.report(result.val_acc, result.epoch)
            return trial.should_prune()

        prune = self._db(decide)
        if prune:
            raise optuna.TrialPruned(
                f"val_acc {result.val_acc:.4f} at epoch {result.epoch} fell behind"
            )

    def _end(
        self,
        trial: optuna.Trial,
        run: TrialRun,
        state: str,
        reason: str,
        *,
        message: str = "",
        status: str | None = None,
    ) -> None:

        def record() -> None:
            trial.set_user_attr("reason", reason)
            if message:
                trial.set_user_attr("message", message[:2000])

        self._db(record)
        extra = {"message": message[:5000]} if message else {}
        try:
            run.finish(state, reason=reason, status=status, **extra)
        except TRACKING_ERRORS as exc:
            self._tracking_lost(trial, exc)

    def _beats_best(self, trial: optuna.Trial, values: tuple[float, ...]) -> bool:
        """Better than every earlier trial (one objective) or on the Pareto front (several)."""

        def best() -> float | None:
            try:
                return float(trial.study.best_value)
            except ValueError:  # no completed trial yet
                return None

        if not self.multi:
            current = self._db(best)
            return current is None or values[0] > current
        front = self._db(lambda: trial.study.best_trials)
        directions = trial.study.directions
        return not any(_dominates(t.values, values, directions) for t in front)

    def _optuna(self) -> _Timer:
        return _Timer(self.timings)


class ArtifactWriteFailed(Exception):
    """An artifact could not be written (disk full, say): the trial fails, not the study."""


class ConstraintViolated(TrialError):
    def __init__(self, message: str) -> None:
        super().__init__("constraint", message)


def _dominates(
    a: list[float], b: tuple[float, ...], directions: list[optuna.study.StudyDirection]
) -> bool:
    sign = [1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in directions]
    better_or_equal = all(s * x >= s * y for s, x, y in zip(sign, a, b, strict=True))
    return better_or_equal and any(s * x > s * y for s, x, y in zip(sign, a, b, strict=True))


def measure_latency(
    model: torch.nn.Module, data: ImageData, device: torch.device, runs: int = 20
) -> float:
    """Median milliseconds to classify one image on ``device``, as the network is served."""
    model = model.to(device).eval()
    x = torch.zeros(1, data.channels, *data.image_size, device=device)
    cuda = device.type == "cuda"
    times = []
    with torch.inference_mode():
        for index in range(runs + 3):
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(device)
            if index >= 3:  # the first calls warm up kernels and caches
                times.append(time.perf_counter() - start)
    model.train()
    return 1000.0 * float(sorted(times)[len(times) // 2])


def robust_accuracy(model: torch.nn.Module, data: ImageData, device: torch.device) -> float:
    """Mean accuracy over every corruption and severity, on (up to 500 of) the validation split."""
    from automl.data import Split
    from automl.insight.corruptions import CORRUPTIONS, SEVERITIES, corrupt

    images, labels = data.val.images[:500], data.val.labels[:500]
    norm = Normalizer(data.mean, data.std)
    scores = []
    for name in CORRUPTIONS:
        for severity in SEVERITIES:
            split = Split(corrupt(images, name, severity), labels)
            scores.append(evaluate(model, split, norm, device)[1])
    return float(sum(scores) / len(scores))


class _Timer:
    def __init__(self, timings: Timings) -> None:
        self.timings = timings

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings.optuna += time.perf_counter() - self.start
