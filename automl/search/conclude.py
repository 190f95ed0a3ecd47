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
from automl.tracking import Registry, Tracker, figure, load_image_model, mirror_tags
from automl.training.calibration import calibrate
from automl.training.config import TrialConfig
from automl.training.ensemble import Ensemble, Mirrored, mirror_if_better
from automl.training.loop import Normalizer, measure
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
    members: tuple[int, ...] = ()  # an ensemble's trials, best first (empty: one trial)
    test_acc_single: float | None = None  # an ensemble's best member alone


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
    return retrained(trial, data, device), reason


def retrained(
    trial: optuna.trial.FrozenTrial, data: ImageData, device: torch.device
) -> torch.nn.Module:
    """The trial's configuration trained again on ``data``: same seed, same epochs."""
    config = trial_config(trial)
    seed = trial_seed(int(trial.user_attrs.get("seed", 0)), trial.number)
    model = seeded_network(config, data, seed)
    fit_config(model, config, data, device=device, seed=seed, epochs=trial_epochs(trial))
    return model.to(CPU)


def trial_epochs(trial: optuna.trial.FrozenTrial) -> int:
    config = trial_config(trial)
    cap = int(trial.user_attrs.get("epochs_cap", config.train.epochs))
    return epochs_run(trial) or min(config.train.epochs, cap)


def register_best(
    study: optuna.Study,
    data: ImageData,
    *,
    tracker: Tracker,
    parent_run_id: str,
    model_name: str,
    device: torch.device,
    dataset_options: dict[str, Any] | None = None,
    refit: bool = False,
    ensemble: int = 1,
    mirror: bool = False,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> list[Registration]:
    """Register the best trial, or the Pareto front's trials (most accurate first) when the
    study has several objectives; the first gets the alias ``candidate``.

    ``dataset_options``: how the data was loaded (image size, group level), recorded so
    promotion and evaluation reload exactly the same test split. ``refit``: register the
    winning configuration retrained on train + validation (see ``_refit``). ``ensemble``:
    register the K best complete trials as one model (see ``_ensemble``). ``mirror``:
    average each image with its mirror image when that answers more validation images
    right (``training.ensemble.mirror_if_better``; one objective only: it doubles latency).
    """
    multi = len(study.directions) > 1
    if multi:
        front = sorted(study.best_trials, key=lambda t: (-t.values[0], t.number))
        trials = front[:MAX_PARETO]
    else:
        trials = [study.best_trial]
    members: list[optuna.trial.FrozenTrial] = []
    short = ""
    if ensemble > 1 and not multi:
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        members = sorted(complete, key=lambda t: (-t.values[0], t.number))[:ensemble]
        if len(members) < ensemble:  # say so: the version's tags alone would not
            kept = "the best is registered alone" if len(members) < 2 else "it averages those"
            done = f"{len(members)} trial{'' if len(members) == 1 else 's'} completed"
            short = f"--ensemble {ensemble}: {done}, so {kept}"
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
            refit=refit,
            members=members,
            mirror=mirror and not multi,
            on_stage=on_stage,
        )
        for trial in trials
    ]
    with tracker.timed():
        registry.set_alias(model_name, "candidate", registrations[0].version)
    first = registrations[0]
    note = "; ".join(filter(None, [short, first.note]))
    candidate = replace(first, uri=f"models:/{model_name}@candidate", note=note)
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
    refit: bool,
    members: list[optuna.trial.FrozenTrial],
    mirror: bool,
    on_stage: Callable[[str], None],
) -> Registration:
    model, note = trained_model(trial, data, tracker, device)
    model = model.to(CPU).eval()
    _, test_acc = measure(model, data.test, Normalizer(data.mean, data.std), device)
    val_acc = float(trial.values[0])
    trial_run = str(trial.user_attrs.get("mlflow_run_id") or "")
    if trial_run and tracker.experiment_of(trial_run) is None:  # its run was deleted
        trial_run = ""
    identity = {"study": study.study_name, "trial_number": str(trial.number)}
    if refit:
        identity["refit"] = "true"
    if len(members) > 1:
        identity["ensemble"] = ",".join(str(t.number) for t in members)
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
    tags.update(_objective_tags(study, trial))
    if "weights" in trial.user_attrs:  # a fine-tuned backbone: which weights it started from
        tags["weights"] = str(trial.user_attrs["weights"])
        preprocess["weights"] = tags["weights"]
    params = dict(trial.user_attrs.get("params", trial.params))
    temperature = None
    if refit:
        on_stage(f"refitting trial {trial.number} on train + validation")
        model, temperature, test_acc, change = _refit(
            trial, model, data, device, test_acc, mirror=mirror
        )
        tags.update(change)
        tags["test_acc"] = figure(test_acc)
        said = f"refit: test_acc {change['test_acc_search']}"
        note = "; ".join(filter(None, [note, f"{said} -> {test_acc:.4f}"]))
    ensembled: dict[str, Any] = {}
    if len(members) > 1:
        on_stage(f"averaging the {len(members)} best trials")
        single = test_acc
        model, test_acc, val_acc = _ensemble(model, members[1:], data, tracker, device)
        tags.update(ensemble=identity["ensemble"], test_acc_single=tags["test_acc"])
        tags.update(test_acc=figure(test_acc), val_acc=figure(val_acc))
        ensembled = {"members": tuple(t.number for t in members), "test_acc_single": single}
    if mirror and not refit:  # a refit model has trained on validation: _refit decided
        on_stage("trying each validation image with its mirror image")
        model, test_acc, val_acc, note = _mirror(
            model, data, device, tags=tags, test_acc=test_acc, val_acc=val_acc, note=note
        )
    with tracker.timed():
        # The trial's run is the source run: its page lists the registered version, and
        # the version's page names the trial. The parent stands in for a trial without one.
        version, reloaded = publish(
            model, data, params, registry=registry, run_id=trial_run or parent_run_id,
            model_name=model_name, tags=tags, preprocess=preprocess, temperature=temperature,
            device=device,
        )  # fmt: skip
    if trial_run:
        tracker.set_run_tags(trial_run, {"registered_model": f"{model_name}/{version}"})
    uri = f"models:/{model_name}/{version}"
    return Registration(
        model_name, version, uri, trial.number, val_acc, test_acc, reloaded, False, note,
        trial_run, **ensembled,
    )  # fmt: skip


def _refit(
    trial: optuna.trial.FrozenTrial,
    searched: torch.nn.Module,
    data: ImageData,
    device: torch.device,
    searched_test_acc: float,
    *,
    mirror: bool = False,
) -> tuple[torch.nn.Module, float, float, dict[str, str]]:
    """The winning configuration retrained on train + validation for the epochs it used.

    The validation split has made its choices (configuration, epochs, and the temperature,
    fitted here on the search's own model, since the refit model trains on that split);
    after that, its images are worth more as training data. ``mirror``: whether to mirror
    at test time is decided there too, on the search's model. Returns the model, the
    temperature, its test accuracy and the tags that record the refit.
    """
    chosen: dict[str, str] = {}
    if mirror:
        searched, plain, both = mirror_if_better(searched, data, device)
        chosen = mirror_tags(isinstance(searched, Mirrored), plain, both)
    _, figures = calibrate(searched, data, device=device)
    model = retrained(trial, data.with_validation_in_training(), device).eval()
    if isinstance(searched, Mirrored):
        model = Mirrored(model).eval()
    _, test_acc = measure(model, data.test, Normalizer(data.mean, data.std), device)
    tags = {
        "refit": "train+val",
        "refit_epochs": str(trial_epochs(trial)),
        "test_acc_search": f"{searched_test_acc:.4f}",
        **chosen,
    }
    return model, figures.get("temperature", 1.0), test_acc, tags


def _objective_tags(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    """A Pareto front's trial: its figure on every objective (none for one objective)."""
    if len(study.directions) == 1:
        return {}
    names = study.metric_names or [f"objective{i}" for i in range(len(trial.values))]
    values = (round(float(v), 4) for v in trial.values)
    return {"objectives": json.dumps(dict(zip(names, values, strict=True))), "pareto": "true"}


def _mirror(
    model: torch.nn.Module,
    data: ImageData,
    device: torch.device,
    *,
    tags: dict[str, str],
    test_acc: float,
    val_acc: float,
    note: str,
) -> tuple[torch.nn.Module, float, float, str]:
    """The model, mirrored at test time if the validation split says so, with its test and
    validation accuracy and note; ``tags`` get what was measured."""
    model, plain, both = mirror_if_better(model, data, device)
    tags.update(mirror_tags(isinstance(model, Mirrored), plain, both))
    if not isinstance(model, Mirrored):
        return model, test_acc, val_acc, note
    _, mirrored = measure(model, data.test, Normalizer(data.mean, data.std), device)
    tags.update(test_acc=figure(mirrored), val_acc=figure(both))
    tags["test_acc_unmirrored"] = figure(test_acc)
    said = f"mirrored: test_acc {test_acc:.4f} -> {mirrored:.4f}"
    return model, mirrored, both, "; ".join(filter(None, [note, said]))


def _ensemble(
    best: torch.nn.Module,
    others: list[optuna.trial.FrozenTrial],
    data: ImageData,
    tracker: Tracker,
    device: torch.device,
) -> tuple[torch.nn.Module, float, float]:
    """The best trial's network and the next ones' (their logged weights, or retrained),
    each calibrated on the validation split, averaged; with its test and validation
    accuracy. The ensemble is calibrated once more as a whole when it is published."""
    networks = [best, *(trained_model(t, data, tracker, device)[0] for t in others)]
    model = Ensemble([calibrate(n, data, device=device)[0] for n in networks]).eval()
    norm = Normalizer(data.mean, data.std)
    _, test_acc = measure(model, data.test, norm, device)
    _, val_acc = measure(model, data.val, norm, device)
    return model, test_acc, val_acc


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
