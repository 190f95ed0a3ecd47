"""The study runner: prepare the stores and data, run the trials, conclude.

Data flows one way: settings and space in, an Optuna study driving the objective, and a
``SearchOutcome`` out. Everything that can be wrong with the settings, the space, the
data or a store fails in ``prepare``, before any trial, so a bad URL costs nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from automl.backbones import describe_weights
from automl.config import SearchSettings, resolve_device
from automl.data import ImageData, load_dataset
from automl.final import Registration, evaluate_and_record, record_study_plots, register_best
from automl.hooks import Hooks
from automl.insight.evaluate import Evaluation
from automl.objective import Objective, TrialFailed
from automl.space import load_space
from automl.stores import open_storage
from automl.study import open_study
from automl.tracking import Tracker


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the study; args: the outcome so far and the original signal."""


@dataclass
class Session:
    """What a prepared search holds: the study, its data, its tracker and the objective."""

    settings: SearchSettings
    data: ImageData
    device: torch.device
    tracker: Tracker
    study: optuna.Study
    parent_run_id: str
    objective: Objective
    hooks: Hooks
    started: float = field(default_factory=time.perf_counter)


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
    evaluation: Evaluation | None = None
    insight_seconds: float = 0.0
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


def prepare(
    settings: SearchSettings, hooks: Hooks, pruner: optuna.pruners.BasePruner | None = None
) -> Session:
    """Check everything, load the data, open the stores, create the parent run."""
    started = time.perf_counter()
    settings.check()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = load_space(settings.space)
    device = resolve_device(settings.device)
    hooks.on_stage(f"loading data set {settings.dataset}")
    data = load_dataset(
        settings.dataset,
        settings.data_dir,
        image_size=settings.image_size,
        progress=hooks.on_progress,
        group_level=settings.group_level,
    )
    if data.report is not None:
        hooks.on_data(data.report)
    hooks.on_stage("opening the Optuna storage and the MLflow tracking store")
    storage = open_storage(settings.storage)
    tracker = Tracker(settings.tracking_uri, settings.experiment_name)
    study = open_study(settings, storage, pruner)
    parent = _start_parent_run(settings, data, device, tracker)
    study.set_user_attr("mlflow_parent_run_id", parent)
    study.set_user_attr("dataset", settings.dataset)
    for backbone in space.choices("arch.backbone"):
        source = describe_weights(str(backbone), settings.weights_dir) if backbone != "none" else ""
        if source.startswith("random"):
            detail = source.removeprefix("random").strip(" ()")
            hooks.on_note(f"{backbone} starts from random weights ({detail})")
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
    return Session(settings, data, device, tracker, study, parent, objective, hooks, started)


def _start_parent_run(
    settings: SearchSettings, data: ImageData, device: torch.device, tracker: Tracker
) -> str:
    parent = tracker.start_study_run(
        settings.study,
        params={**settings.public(), "data": data.describe(), "device_resolved": str(device)},
        tags={"dataset": settings.dataset, "data_digest": data.digest(), "kind": "study"},
    )
    tracker.log_study_artifacts(parent, {"search_space.yaml": settings.space})
    if data.report is not None:
        tracker.log_study_text(parent, "data_report.json", data.report.to_json())
    profile = {
        "classes": data.num_classes,
        "shape": [data.channels, *data.image_size],
        "train": len(data.train),
        "val": len(data.val),
        "test": len(data.test),
    }
    tracker.log_dataset(
        parent, name=data.name, digest=data.digest(), source=data.source, profile=profile
    )
    return parent


def run_trials(session: Session) -> SearchOutcome:
    """Run the new trials; an interrupt closes the runs and raises ``Interrupted``."""
    study, settings = session.study, session.settings
    before = {t.number for t in study.get_trials(deepcopy=False)}
    start = time.perf_counter()
    interrupted: KeyboardInterrupt | None = None
    try:
        study.optimize(
            session.objective,
            n_trials=settings.trials,
            timeout=settings.timeout,
            catch=(TrialFailed,),
            callbacks=[session.hooks.on_trial_end],
        )
    except KeyboardInterrupt as stop:
        interrupted = stop
    outcome = SearchOutcome(
        settings=settings,
        study=study,
        data=session.data,
        parent_run_id=session.parent_run_id,
        tracker=session.tracker,
        wall_seconds=0.0,
        optimize_seconds=time.perf_counter() - start,
        objective_seconds=session.objective.timings.objective,
        optuna_seconds_in_objective=session.objective.timings.optuna,
        trials_run=[t for t in study.get_trials(deepcopy=False) if t.number not in before],
        interrupted=interrupted is not None,
        tracking_seconds_search=session.tracker.seconds,
    )
    if interrupted is not None:
        _finish(session, outcome, "KILLED")
        raise Interrupted(outcome, interrupted)
    return outcome


def conclude(session: Session, outcome: SearchOutcome) -> SearchOutcome:
    """Register the best trial's model, evaluate it, draw the study plots, close the run."""
    hooks, tracker, parent = session.hooks, session.tracker, session.parent_run_id
    trials = session.study.get_trials(deepcopy=False)
    if any(t.state == TrialState.COMPLETE for t in trials):
        hooks.on_stage("evaluating the best trial on the test split and registering it")
        start = time.perf_counter()
        outcome.registration = register_best(
            session.study,
            session.data,
            tracker=tracker,
            parent_run_id=parent,
            model_name=session.settings.registered_model,
            device=session.device,
            dataset_options={
                "image_size": session.settings.image_size,
                "group_level": session.settings.group_level,
            },
        )
        outcome.registration_seconds = time.perf_counter() - start
    start = time.perf_counter()
    if session.settings.evaluate and outcome.registration is not None:
        hooks.on_stage("evaluating the registered model (metrics, robustness, saliency)")
        outcome.evaluation = evaluate_and_record(
            outcome.registration, session.data, tracker=tracker, parent_run_id=parent,
            on_stage=hooks.on_stage,
        )  # fmt: skip
    if session.settings.evaluate:
        hooks.on_stage("drawing the study plots")
        for plot, why in record_study_plots(session.study, tracker, parent).items():
            hooks.on_note(f"study plot '{plot}' skipped: {why}")
    outcome.insight_seconds = time.perf_counter() - start
    _finish(session, outcome, "FINISHED")
    return outcome


def run_search(
    settings: SearchSettings,
    *,
    hooks: Hooks | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> SearchOutcome:
    """Run ``settings.trials`` new trials, then register, evaluate and plot the best model.

    ``pruner`` replaces the one ``settings`` names (tests use one with a fixed answer).
    """
    session = prepare(settings, hooks or Hooks(), pruner)
    return conclude(session, run_trials(session))


def _finish(session: Session, outcome: SearchOutcome, status: str) -> None:
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
    outcome.wall_seconds = time.perf_counter() - session.started
    metrics["wall_seconds"] = outcome.wall_seconds
    outcome.tracker.finish_study_run(outcome.parent_run_id, status, metrics, tags)
