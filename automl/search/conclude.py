"""Concluding a study: the best trial's network (its logged weights, or rebuilt from its
params), tested once, registered as ``candidate`` (``evaluation`` evaluates it after)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch

from automl.data import ImageData
from automl.release.publish import preprocessing, publish
from automl.search.strategy.pruners import epochs_trained
from automl.tracking import Registry, Tracker, figure, mirror_tags
from automl.training.calibration import calibrate
from automl.training.config import TrialConfig
from automl.training.ensemble import Ensemble, Mirrored, mirror_if_better
from automl.training.loop import Normalizer, measure
from automl.training.recipe import build_network, fit_config, seeded_network, trial_seed

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
    trial: optuna.trial.FrozenTrial,
    data: ImageData,
    tracker: Tracker,
    device: torch.device,
    weights_dir: Path | None = None,
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
    return retrained(trial, data, device, weights_dir), reason


def retrained(
    trial: optuna.trial.FrozenTrial,
    data: ImageData,
    device: torch.device,
    weights_dir: Path | None = None,
) -> torch.nn.Module:
    """The trial's configuration trained again on ``data``: same seed, same epochs, the
    same pretrained weights to start from (``--weights-dir``)."""
    config = trial_config(trial)
    seed = trial_seed(int(trial.user_attrs.get("seed", 0)), trial.number)
    model = seeded_network(config, data, seed, weights_dir)
    fit_config(model, config, data, device=device, seed=seed, epochs=trial_epochs(trial))
    return model.to(CPU)


def trial_epochs(trial: optuna.trial.FrozenTrial) -> int:
    """The epochs of its schedule the trial's weights had trained, those before a resumed
    checkpoint included (a refit or a rebuild trains them all from scratch)."""
    config = trial_config(trial)
    cap = int(trial.user_attrs.get("epochs_cap", config.train.epochs))
    return epochs_trained(trial) or min(config.train.epochs, cap)


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
    weights_dir: Path | None = None,
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
    members: list[optuna.trial.FrozenTrial] = []
    short = ""
    if multi:
        trials = sorted(study.best_trials, key=_rank)[:MAX_PARETO]
    else:  # ties by number, as everywhere (a database returns tied rows in any order)
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        ranked = sorted(complete, key=_rank)
        trials = ranked[:1]
        members = ranked[:ensemble] if ensemble > 1 else []
        if ensemble > 1 and len(members) < ensemble:  # say so: the version's tags alone would not
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
            weights_dir=weights_dir,
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


def _rank(trial: optuna.trial.FrozenTrial) -> tuple[float, int]:
    """Most accurate first; of equal accuracy, the earlier trial."""
    return -float(trial.values[0]), trial.number


def _identity(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    *,
    refit: bool,
    members: list[optuna.trial.FrozenTrial],
    mirror: bool,
) -> dict[str, str]:
    """The tags that make two registrations the same model: the trial, and how it was
    concluded (refit, the ensemble's members, test-time mirroring asked for). A search
    resumed with nothing better reuses its version; one concluded otherwise registers anew."""
    how = [
        "refit" if refit else "",
        "ensemble " + ",".join(str(t.number) for t in members) if len(members) > 1 else "",
        "tta" if mirror else "",
    ]
    return {
        "study": study.study_name,
        "trial_number": str(trial.number),
        "conclusion": " + ".join(filter(None, how)) or "single",
    }


def _reused(
    registry: Registry, model_name: str, number: int, trial: optuna.trial.FrozenTrial, run: str
) -> Registration:
    """An existing version, with the figures recorded on it (not the trial's own)."""
    tags = registry.version(model_name, number).tags
    members = tuple(int(n) for n in tags.get("ensemble", "").split(",") if n)
    single = tags.get("test_acc_single")
    return Registration(
        model_name, number, f"models:/{model_name}/{number}", trial.number,
        float(tags.get("val_acc", trial.values[0])), float(tags.get("test_acc", "nan")), None,
        True, "", run, members=members, test_acc_single=None if single is None else float(single),
    )  # fmt: skip


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
    weights_dir: Path | None,
    on_stage: Callable[[str], None],
) -> Registration:
    trial_run = str(trial.user_attrs.get("mlflow_run_id") or "")
    if trial_run and tracker.experiment_of(trial_run) is None:  # its run was deleted
        trial_run = ""
    identity = _identity(study, trial, refit=refit, members=members, mirror=mirror)
    with tracker.timed():
        existing = registry.find_version(model_name, identity)
    if existing is not None:  # checked first: nothing to load or retrain
        return _reused(registry, model_name, existing, trial, trial_run)
    model, note = trained_model(trial, data, tracker, device, weights_dir)
    model = model.to(CPU).eval()
    _, test_acc = measure(model, data.test, Normalizer(data.mean, data.std), device)
    val_acc = float(trial.values[0])
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
            trial, model, data, device, test_acc, mirror=mirror, weights_dir=weights_dir
        )
        tags.update(change)
        tags["test_acc"] = figure(test_acc)
        said = f"refit: test_acc {change['test_acc_search']}"
        note = "; ".join(filter(None, [note, f"{said} -> {test_acc:.4f}"]))
    ensembled: dict[str, Any] = {}
    if len(members) > 1:
        on_stage(f"averaging the {len(members)} best trials")
        single = test_acc
        model, test_acc, val_acc = _ensemble(
            model, members[1:], data, tracker, device, weights_dir=weights_dir
        )
        numbers = tuple(t.number for t in members)
        tags.update(ensemble=",".join(map(str, numbers)), test_acc_single=tags["test_acc"])
        tags.update(test_acc=figure(test_acc), val_acc=figure(val_acc))
        ensembled = {"members": numbers, "test_acc_single": single}
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
    weights_dir: Path | None = None,
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
    model = retrained(trial, data.with_validation_in_training(), device, weights_dir).eval()
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
    *,
    weights_dir: Path | None = None,
) -> tuple[torch.nn.Module, float, float]:
    """The best trial's network and the next ones' (their logged weights, or retrained),
    each calibrated on the validation split, averaged; with its test and validation
    accuracy. The ensemble is calibrated once more as a whole when it is published."""
    networks = [best, *(trained_model(t, data, tracker, device, weights_dir)[0] for t in others)]
    model = Ensemble([calibrate(n, data, device=device)[0] for n in networks]).eval()
    norm = Normalizer(data.mean, data.std)
    _, test_acc = measure(model, data.test, norm, device)
    _, val_acc = measure(model, data.val, norm, device)
    return model, test_acc, val_acc
