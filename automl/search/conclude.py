"""Concluding a study: the best trial's network (its logged weights, or rebuilt from its
params), tested once, registered as ``candidate``; then evaluated and plotted."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch

from automl.data import ImageData
from automl.release.publish import preprocessing, publish
from automl.search.pruning import epochs_run
from automl.tracking import Registry, Tracker, figure, load_image_model
from automl.training.config import TrialConfig
from automl.training.loop import Normalizer, evaluate
from automl.training.recipe import build_network, fit_config, seeded_network, trial_seed

if TYPE_CHECKING:
    from automl.insight.evaluate import Evaluation

CPU = torch.device("cpu")
MAX_PARETO = 10  # the most accurate models of a Pareto front that are registered


@dataclass(frozen=True)
class Registration:
    name: str
    version: int
    uri: str
    trial_number: int
    val_acc: float
    test_acc: float
    reloaded_test_acc: float | None
    reused: bool
    note: str = ""
    run_id: str = ""  # the trial's run: the version's source run, and it names the version


def trial_config(trial: optuna.trial.FrozenTrial) -> TrialConfig:
    """The exact configuration a trial trained, fixed values of the space included."""
    return TrialConfig.from_params(trial.user_attrs.get("params", trial.params))


def trained_model(
    trial: optuna.trial.FrozenTrial, data: ImageData, tracker: Tracker, device: torch.device
) -> tuple[torch.nn.Module, str]:
    """The trial's network with its logged weights; retrained from its params if none exist.

    The text says why it was retrained ("" when the logged weights were used).
    """
    config = trial_config(trial)
    model = build_network(config, data)
    run_id = trial.user_attrs.get("mlflow_run_id")
    try:
        if run_id is None:
            raise FileNotFoundError("the trial has no MLflow run")
        model.load_state_dict(tracker.load_weights(run_id))
        return model, ""
    except Exception as exc:  # missing or unreadable weights: the params still rebuild it
        reason = f"retrained trial {trial.number}: its weights could not be loaded ({exc})"
    seed = trial_seed(int(trial.user_attrs.get("seed", 0)), trial.number)
    model = seeded_network(config, data, seed)
    cap = int(trial.user_attrs.get("epochs_cap", config.train.epochs))
    epochs = epochs_run(trial) or min(config.train.epochs, cap)
    fit_config(model, config, data, device=device, seed=seed, epochs=epochs)
    return model.to(CPU), reason


def register_best(
    study: optuna.Study,
    data: ImageData,
    *,
    tracker: Tracker,
    parent_run_id: str,
    model_name: str,
    device: torch.device,
    dataset_options: dict[str, Any] | None = None,
) -> list[Registration]:
    """Register the best trial, or the Pareto front's trials (most accurate first) when the
    study has several objectives; the first gets the alias ``candidate``.

    ``dataset_options``: how the data was loaded (image size, group level), recorded so
    promotion and evaluation reload exactly the same test split.
    """
    multi = len(study.directions) > 1
    if multi:
        front = sorted(study.best_trials, key=lambda t: (-t.values[0], t.number))
        trials = front[:MAX_PARETO]
    else:
        trials = [study.best_trial]
    with tracker.timed():
        registry = Registry(tracker.tracking_uri)
    registrations = [
        _register_trial(
            trial,
            study,
            data,
            tracker=tracker,
            registry=registry,
            parent_run_id=parent_run_id,
            model_name=model_name,
            device=device,
            dataset_options=dataset_options or {},
        )
        for trial in trials
    ]
    with tracker.timed():
        registry.set_alias(model_name, "candidate", registrations[0].version)
    candidate = replace(registrations[0], uri=f"models:/{model_name}@candidate")
    return [candidate, *registrations[1:]]


def _register_trial(
    trial: optuna.trial.FrozenTrial,
    study: optuna.Study,
    data: ImageData,
    *,
    tracker: Tracker,
    registry: Registry,
    parent_run_id: str,
    model_name: str,
    device: torch.device,
    dataset_options: dict[str, Any],
) -> Registration:
    model, note = trained_model(trial, data, tracker, device)
    model = model.to(CPU).eval()
    _, test_acc = evaluate(model, data.test, Normalizer(data.mean, data.std), CPU)
    val_acc = float(trial.values[0])
    trial_run = str(trial.user_attrs.get("mlflow_run_id") or "")
    if trial_run and tracker.experiment_of(trial_run) is None:  # its run was deleted
        trial_run = ""
    identity = {"study": study.study_name, "trial_number": str(trial.number)}
    with tracker.timed():
        existing = registry.find_version(model_name, identity)
    if existing is not None:
        uri = f"models:/{model_name}/{existing}"
        return Registration(
            model_name, existing, uri, trial.number, val_acc, test_acc, None, True, note, trial_run
        )
    preprocess = preprocessing(data)
    tags = {
        **identity,
        "dataset": preprocess["dataset"],
        "data_digest": preprocess["data_digest"],
        "test_digest": preprocess["test_digest"],
        "val_acc": figure(val_acc),
        "test_acc": figure(test_acc),
        "trial_run_id": trial_run,
        "dataset_options": json.dumps(dataset_options),
    }
    if len(study.directions) > 1:
        names = study.metric_names or [f"objective{i}" for i in range(len(trial.values))]
        values = (round(float(v), 4) for v in trial.values)
        tags["objectives"] = json.dumps(dict(zip(names, values, strict=True)))
        tags["pareto"] = "true"
    if "weights" in trial.user_attrs:  # a fine-tuned backbone: which weights it started from
        tags["weights"] = str(trial.user_attrs["weights"])
        preprocess["weights"] = tags["weights"]
    params = dict(trial.user_attrs.get("params", trial.params))
    with tracker.timed():
        # The trial's run is the source run: its page lists the registered version, and
        # the version's page names the trial. The parent stands in for a trial without one.
        version, reloaded = publish(
            model, data, params, registry=registry, run_id=trial_run or parent_run_id,
            model_name=model_name, tags=tags, preprocess=preprocess,
        )  # fmt: skip
    if trial_run:
        tracker.set_run_tags(trial_run, {"registered_model": f"{model_name}/{version}"})
    uri = f"models:/{model_name}/{version}"
    return Registration(
        model_name, version, uri, trial.number, val_acc, test_acc, reloaded, False, note, trial_run
    )


def evaluate_and_record(
    registration: Registration,
    data: ImageData,
    *,
    tracker: Tracker,
    parent_run_id: str,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> Evaluation:
    """Evaluate the registered version as served; record figures and pictures on the parent
    run and on the version's logged model."""
    from automl.insight.evaluate import evaluate_model, write_evaluation

    model = load_image_model(f"models:/{registration.name}/{registration.version}")
    groups = None
    if data.group_names and data.test.groups is not None:
        groups = (data.test.groups.numpy(), list(data.group_names))
    evaluation = evaluate_model(model, data.test, groups=groups, progress=on_stage)
    with tempfile.TemporaryDirectory() as folder:
        files = Path(folder, "evaluation")
        write_evaluation(evaluation, files)
        metrics = evaluation.metrics()
        tracker.log_folder(parent_run_id, files, "evaluation")
        tracker.log_metrics(parent_run_id, metrics)
        with tracker.timed():
            Registry(tracker.tracking_uri).log_to_version(
                registration.name, registration.version, files, "evaluation", metrics
            )
    return evaluation


def record_study_plots(study: optuna.Study, tracker: Tracker, parent_run_id: str) -> dict[str, str]:
    """Study plots on the parent run; returns the plots skipped and why."""
    from automl.insight.study_plots import study_plots  # matplotlib: only when drawing

    with tempfile.TemporaryDirectory() as folder:
        files, skipped = study_plots(study, Path(folder, "study_plots"))
        if files:
            tracker.log_folder(parent_run_id, Path(folder, "study_plots"), "study_plots")
    return skipped
