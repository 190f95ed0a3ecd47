"""The study runner: opens the stores, runs the Optuna study, then registers its best model.

Data flows one way: settings and space in, an Optuna study driving the objective, and a
``SearchOutcome`` out. Stores are opened and checked before anything is written, so a
bad URL costs nothing.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.backbones import describe_weights
from automl.config import SearchSettings, resolve_device
from automl.data import ImageData, load_dataset
from automl.final import Registration, register_best
from automl.hooks import Hooks
from automl.objective import Objective, TrialFailed
from automl.space import SearchSpace, load_space
from automl.stores import open_storage
from automl.tracking import Tracker


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the study; args: the outcome so far and the original signal."""


@dataclass
class SearchOutcome:
    settings: SearchSettings
    study: optuna.Study
    data: ImageData
    parent_run_id: str
    tracker: Tracker
    wall_seconds: float
    optimize_seconds: float
    objective_seconds: float
    optuna_seconds_in_objective: float
    trials_run: list[FrozenTrial]
    registration: Registration | None = None
    registration_seconds: float = 0.0
    interrupted: bool = False
    tracking_seconds_search: float = 0.0  # MLflow calls up to the end of the last trial

    @property
    def states(self) -> Counter[str]:
        return Counter(t.state.name for t in self.study.get_trials(deepcopy=False))

    @property
    def epochs_run(self) -> int:
        return sum(len(t.intermediate_values) for t in self.trials_run)

    @property
    def optuna_seconds(self) -> float:
        """Optuna's share: ask/tell and sampling outside the objective, plus calls inside it."""
        return self.optimize_seconds - self.objective_seconds + self.optuna_seconds_in_objective


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "cmaes":  # CMA-ES handles numbers; categorical choices go to TPE
            return optuna.samplers.CmaEsSampler(
                seed=seed,
                independent_sampler=optuna.samplers.TPESampler(seed=seed),
                warn_independent_sampling=False,
            )
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        # Conditional parameters (per-stage widths, SGD momentum) need the group option.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs, reduction_factor=3
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(
    settings: SearchSettings,
    storage: optuna.storages.BaseStorage,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    return optuna.create_study(
        study_name=settings.study,
        storage=storage,
        sampler=make_sampler(settings.sampler, settings.seed),
        pruner=pruner or make_pruner(settings.pruner, settings.max_epochs),
        direction="maximize",
        load_if_exists=True,
    )


def run_search(
    settings: SearchSettings,
    *,
    hooks: Hooks | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> SearchOutcome:
    """Run ``settings.trials`` new trials, then evaluate and register the study's best model.

    ``pruner`` replaces the one ``settings`` names (tests use one with a fixed answer).
    """
    start = time.perf_counter()
    hooks = hooks or Hooks()
    settings.check()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space: SearchSpace = load_space(settings.space)
    device = resolve_device(settings.device)
    hooks.on_stage(f"loading data set {settings.dataset}")
    data = load_dataset(
        settings.dataset,
        settings.data_dir,
        image_size=settings.image_size,
        progress=hooks.on_progress,
    )
    if data.report is not None:
        hooks.on_data(data.report)
    hooks.on_stage("opening the Optuna storage and the MLflow tracking store")
    storage = open_storage(settings.storage)
    tracker = Tracker(settings.tracking_uri, settings.experiment_name)
    study = open_study(settings, storage, pruner)
    parent = tracker.start_study_run(
        settings.study,
        params={**settings.public(), "data": data.describe(), "device_resolved": str(device)},
        tags={"dataset": settings.dataset, "data_digest": data.digest(), "kind": "study"},
    )
    tracker.log_study_artifacts(parent, {"search_space.yaml": settings.space})
    if data.report is not None:
        tracker.log_study_text(parent, "data_report.json", data.report.to_json())
    tracker.log_dataset(
        parent,
        name=data.name,
        digest=data.digest(),
        source=data.source,
        profile={"classes": data.num_classes, "shape": [data.channels, *data.image_size],
                 "train": len(data.train), "val": len(data.val), "test": len(data.test)},
    )  # fmt: skip
    study.set_user_attr("mlflow_parent_run_id", parent)
    study.set_user_attr("dataset", settings.dataset)
    objective = Objective(
        space=space,
        data=data,
        tracker=tracker,
        parent_run_id=parent,
        study_name=settings.study,
        device=device,
        max_epochs=settings.max_epochs,
        seed=settings.seed,
        weights_dir=settings.weights_dir,
        hooks=hooks,
    )
    for backbone in space.choices("arch.backbone"):
        if backbone != "none":
            source = describe_weights(str(backbone), settings.weights_dir)
            if source.startswith("random"):
                detail = source.removeprefix("random").strip(" ()")
                hooks.on_note(f"{backbone} starts from random weights ({detail})")
    before = {t.number for t in study.get_trials(deepcopy=False)}
    optimize_start = time.perf_counter()
    interrupted: KeyboardInterrupt | None = None
    try:
        study.optimize(
            objective,
            n_trials=settings.trials,
            timeout=settings.timeout,
            catch=(TrialFailed,),
            callbacks=[hooks.on_trial_end],
        )
    except KeyboardInterrupt as stop:
        interrupted = stop
    optimize_seconds = time.perf_counter() - optimize_start
    trials_run = [t for t in study.get_trials(deepcopy=False) if t.number not in before]
    outcome = SearchOutcome(
        settings=settings,
        study=study,
        data=data,
        parent_run_id=parent,
        tracker=tracker,
        wall_seconds=0.0,
        optimize_seconds=optimize_seconds,
        objective_seconds=objective.timings.objective,
        optuna_seconds_in_objective=objective.timings.optuna,
        trials_run=trials_run,
        interrupted=interrupted is not None,
        tracking_seconds_search=tracker.seconds,
    )
    if interrupted:
        _finish(outcome, "KILLED", start)
        raise Interrupted(outcome, interrupted)
    if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        hooks.on_stage("evaluating the best trial on the test split and registering it")
        registration_start = time.perf_counter()
        outcome.registration = register_best(
            study,
            data,
            tracker=tracker,
            parent_run_id=parent,
            model_name=settings.registered_model,
            device=device,
        )
        outcome.registration_seconds = time.perf_counter() - registration_start
    _finish(outcome, "FINISHED", start)
    return outcome


def _finish(outcome: SearchOutcome, status: str, start: float) -> None:
    states = outcome.states
    metrics: dict[str, float] = {
        "trials_complete": states.get("COMPLETE", 0),
        "trials_pruned": states.get("PRUNED", 0),
        "trials_failed": states.get("FAIL", 0),
        "epochs_run": outcome.epochs_run,
    }
    tags = {"state": "INTERRUPTED" if outcome.interrupted else "DONE"}
    try:
        best = outcome.study.best_trial
        metrics["best_val_acc"] = float(best.value or 0.0)
        tags["best_trial"] = str(best.number)
    except ValueError:
        pass
    if outcome.registration is not None:
        metrics["test_acc"] = outcome.registration.test_acc
        tags["registered_model"] = outcome.registration.uri
    outcome.wall_seconds = time.perf_counter() - start
    metrics["wall_seconds"] = outcome.wall_seconds
    outcome.tracker.finish_study_run(outcome.parent_run_id, status, metrics, tags)
