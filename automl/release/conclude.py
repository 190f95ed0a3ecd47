"""Concluding a search: its best trial (or its Pareto front) registered as ``candidate``.

The winner becomes a ``Candidate`` (its network, figures and the version's tags so far),
which passes through the steps a search asks for, each taking and returning a
``Candidate``: ``refit`` (trained again on train + validation), ``ensemble`` (averaged
with the next best trials), ``mirror`` (each image answered with its mirror image too,
when the validation split says it helps), and ``register`` (published as a new version).
A search resumed with nothing better finds its version already registered and reuses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch

from automl.data import ImageData
from automl.records import RunTag, TrialRecord, VersionTag, VersionTags, by_merit
from automl.records.ranking import merit
from automl.records.version import figure, mirror_tags
from automl.release.publish import NewVersion, preprocessing, publish
from automl.release.rebuild import CPU, retrained, trained_model, trial_config, trial_epochs
from automl.tracking import Registry, Tracker
from automl.training.calibration import Calibrated, calibrate, helpful_temperature
from automl.training.ensemble import Ensemble, Mirrored, mirror_if_better, select_members
from automl.training.loop import Normalizer, measure, served_logits
from automl.training.train import build_network

MAX_PARETO = 10  # the most accurate models of a Pareto front that are registered
POOL = 12  # the best trials an ensemble is chosen among (those whose weights were kept)
CANDIDATE = "candidate"  # the alias a search's registered model takes


@dataclass(frozen=True)
class Concluding:
    """How a search concludes: where its model is registered and what is done to the
    winner first."""

    model_name: str
    parent_run_id: str  # stands in as the source run of a trial whose run is gone
    dataset_options: dict[str, Any] = field(default_factory=dict)  # how the data was loaded
    refit: bool = False
    ensemble: int = 1  # trials averaged (1: the best alone)
    mirror: bool = False  # test-time mirroring, when the validation split says it helps
    weights_dir: Path | None = None  # pretrained backbones, for a trial trained again


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
    run_id: str = ""  # the best trial's run (a single trial's is the version's source run)
    members: tuple[int, ...] = ()  # an ensemble's trials, best first (empty: one trial)
    test_acc_single: float | None = None  # an ensemble's best member alone
    weights: tuple[float, ...] = ()  # each member's weight in the average, as ``members``


@dataclass(frozen=True)
class Candidate:
    """The model a search is about to register, as the steps leave it."""

    trial: optuna.trial.FrozenTrial
    model: torch.nn.Module
    val_acc: float
    test_acc: float
    tags: dict[str, str]  # the version's tags so far
    run_id: str  # the trial's run ("" when it has none)
    notes: tuple[str, ...] = ()
    temperature: float | None = None  # fitted already (a refit model trained on validation)
    members: tuple[int, ...] = ()
    test_acc_single: float | None = None

    def but(
        self, *, note: str = "", tags: dict[str, str] | None = None, **changes: Any
    ) -> Candidate:
        """A copy with ``changes``, ``tags`` added and ``note`` said."""
        notes = (*self.notes, note) if note else self.notes
        return replace(self, tags={**self.tags, **(tags or {})}, notes=notes, **changes)


@dataclass(frozen=True)
class Context:
    """What every step reads: the data, the stores, the device, what to say meanwhile."""

    data: ImageData
    tracker: Tracker
    registry: Registry
    device: torch.device
    on_stage: Callable[[str], None]

    def test_acc(self, model: torch.nn.Module) -> float:
        return measure(
            model, self.data.test, Normalizer(self.data.mean, self.data.std), self.device
        )[1]

    def val_acc(self, model: torch.nn.Module) -> float:
        return measure(
            model, self.data.val, Normalizer(self.data.mean, self.data.std), self.device
        )[1]


def register_best(
    study: optuna.Study,
    data: ImageData,
    how: Concluding,
    *,
    tracker: Tracker,
    device: torch.device,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> list[Registration]:
    """Register the best trial, or the Pareto front's trials (most accurate first) when the
    study has several objectives; the first gets the alias ``candidate``."""
    multi = len(study.directions) > 1
    ranked = by_merit(study.get_trials(deepcopy=False)) if not multi else []
    trials = sorted(study.best_trials, key=merit)[:MAX_PARETO] if multi else ranked[:1]
    members = ranked[: max(POOL, how.ensemble)] if how.ensemble > 1 else []
    with tracker.timed():
        registry = Registry(tracker.tracking_uri)
    context = Context(data, tracker, registry, device, on_stage)
    if multi:
        how = replace(how, mirror=False)  # it doubles latency, one of the objectives
    registrations = [conclude_trial(trial, study, members, how, context) for trial in trials]
    with tracker.timed():
        registry.set_alias(how.model_name, CANDIDATE, registrations[0].version)
    first = registrations[0]
    short = "" if multi else _short_ensemble(how.ensemble, members)
    note = "; ".join(filter(None, [short, first.note]))
    candidate = replace(first, uri=f"models:/{how.model_name}@{CANDIDATE}", note=note)
    return [candidate, *registrations[1:]]


def _short_ensemble(asked: int, members: list[optuna.trial.FrozenTrial]) -> str:
    """Said when fewer trials completed than ``--ensemble`` asked for (the version's tags
    alone would not say it)."""
    if asked <= 1 or len(members) >= asked:
        return ""
    kept = "the best is registered alone" if len(members) < 2 else "it averages those"
    done = f"{len(members)} trial{'' if len(members) == 1 else 's'} completed"
    return f"--ensemble {asked}: {done}, so {kept}"


def conclude_trial(
    trial: optuna.trial.FrozenTrial,
    study: optuna.Study,
    members: list[optuna.trial.FrozenTrial],
    how: Concluding,
    context: Context,
) -> Registration:
    """One trial through the steps: reused if registered so already, else refit, ensemble,
    mirror (each when asked for) and register."""
    run_id = TrialRecord.of(trial).run_id or ""
    if run_id and context.tracker.experiment_of(run_id) is None:  # its run was deleted
        run_id = ""
    identity = _identity(study, trial, how, members)
    with context.tracker.timed():
        existing = context.registry.find_version(how.model_name, identity)
    if existing is not None:  # checked first: nothing to load or retrain
        return _reused(context.registry, how.model_name, existing, trial, run_id)
    candidate = first_candidate(trial, study, how, context, identity=identity, run_id=run_id)
    if how.refit:
        candidate = refit(candidate, how, context)
    if len(members) > 1:
        candidate = ensemble(candidate, members[1:], how, context)
    if how.mirror and not how.refit:  # a refit model has trained on validation: refit decided
        candidate = mirror(candidate, context)
    return register(candidate, how, context)


def _identity(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    how: Concluding,
    members: list[optuna.trial.FrozenTrial],
) -> dict[str, str]:
    """The tags that make two registrations the same model: the trial, and how it was
    concluded (refit, the trials an ensemble of at most K is chosen among, test-time
    mirroring asked for). A search resumed with nothing better reuses its version; one
    concluded otherwise registers anew."""
    among = ",".join(str(t.number) for t in members)
    steps = [
        "refit" if how.refit else "",
        f"ensemble of {how.ensemble} among {among}" if len(members) > 1 else "",
        "tta" if how.mirror else "",
    ]
    return {
        VersionTag.STUDY: study.study_name,
        VersionTag.TRIAL_NUMBER: str(trial.number),
        VersionTag.CONCLUSION: " + ".join(filter(None, steps)) or "single",
    }


def _reused(
    registry: Registry, model_name: str, number: int, trial: optuna.trial.FrozenTrial, run: str
) -> Registration:
    """An existing version, with the figures recorded on it (not the trial's own)."""
    tags = VersionTags.of(registry.version(model_name, number).tags)
    val_acc = tags.val_acc if tags.val_acc is not None else float(trial.values[0])
    test_acc = tags.test_acc if tags.test_acc is not None else float("nan")
    return Registration(
        model_name, number, f"models:/{model_name}/{number}", trial.number, val_acc, test_acc,
        None, True, "", run, members=tags.members, test_acc_single=tags.test_acc_single,
        weights=_weights(tags),
    )  # fmt: skip


def _weights(tags: VersionTags) -> tuple[float, ...]:
    return tuple(tags.member_weights[n] for n in tags.members)


def first_candidate(
    trial: optuna.trial.FrozenTrial,
    study: optuna.Study,
    how: Concluding,
    context: Context,
    *,
    identity: dict[str, str],
    run_id: str,
) -> Candidate:
    """The trial's network as it trained (its logged weights, or retrained), tested once."""
    model, retrained_why = trained_model(
        trial, context.data, context.tracker, context.device, how.weights_dir
    )
    model = model.to(CPU).eval()
    test_acc, val_acc = context.test_acc(model), float(trial.values[0])
    preprocess = preprocessing(context.data)
    tags = {
        **identity,
        VersionTag.DATASET: preprocess["dataset"],
        VersionTag.DATA_DIGEST: preprocess["data_digest"],
        VersionTag.TEST_DIGEST: preprocess["test_digest"],
        VersionTag.VAL_ACC: figure(val_acc),
        VersionTag.TEST_ACC: figure(test_acc),
        VersionTag.TRIAL_RUN_ID: run_id,
        VersionTag.DATASET_OPTIONS: json.dumps(how.dataset_options),
        **_objective_tags(study, trial),
    }
    weights = TrialRecord.of(trial).weights
    if weights is not None:  # a fine-tuned backbone: which weights it started from
        tags[VersionTag.WEIGHTS] = weights
    notes = (retrained_why,) if retrained_why else ()
    return Candidate(trial, model, val_acc, test_acc, tags, run_id, notes)


def _objective_tags(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    """A Pareto front's trial: its figure on every objective (none for one objective)."""
    if len(study.directions) == 1:
        return {}
    names = study.metric_names or [f"objective{i}" for i in range(len(trial.values))]
    values = (round(float(v), 4) for v in trial.values)
    return {
        VersionTag.OBJECTIVES: json.dumps(dict(zip(names, values, strict=True))),
        VersionTag.PARETO: "true",
    }


def refit(candidate: Candidate, how: Concluding, context: Context) -> Candidate:
    """The winning configuration retrained on train + validation for the epochs it used.

    The validation split has made its choices (configuration, epochs, and the temperature,
    fitted here on the search's own model, since the refit model trains on that split);
    after that, its images are worth more as training data. With ``mirror``, whether to
    mirror at test time is decided there too, on the search's model.
    """
    trial, data, device = candidate.trial, context.data, context.device
    context.on_stage(f"refitting trial {trial.number} on train + validation")
    searched, chosen = candidate.model, {}
    if how.mirror:
        searched, plain, both = mirror_if_better(searched, data, device)
        chosen = mirror_tags(isinstance(searched, Mirrored), plain, both)
    _, figures = calibrate(searched, data, device=device)
    model = retrained(trial, data.with_validation_in_training(), device, how.weights_dir).eval()
    if isinstance(searched, Mirrored):
        model = Mirrored(model).eval()
    test_acc = context.test_acc(model)
    searched_test = f"{candidate.test_acc:.4f}"
    tags = {
        VersionTag.REFIT: "train+val",
        VersionTag.REFIT_EPOCHS: str(trial_epochs(trial)),
        VersionTag.TEST_ACC_SEARCH: searched_test,
        **chosen,
        VersionTag.TEST_ACC: figure(test_acc),
    }
    return candidate.but(
        model=model, test_acc=test_acc, temperature=figures.get("temperature", 1.0), tags=tags,
        note=f"refit: test_acc {searched_test} -> {test_acc:.4f}",
    )  # fmt: skip


def ensemble(
    candidate: Candidate,
    others: list[optuna.trial.FrozenTrial],
    how: Concluding,
    context: Context,
) -> Candidate:
    """The best trial's network and those of the next trials whose weights were kept, each
    calibrated on the validation split, chosen and weighted by greedy forward selection on
    that split (at most ``how.ensemble`` of them), averaged. A trial joins only if it makes
    the ensemble answer more validation images right (or as many, more surely); when none
    does, the best trial is registered alone and the note says so. The ensemble is
    calibrated once more as a whole when it is published."""
    data, device = context.data, context.device
    context.on_stage(f"choosing an ensemble among the {len(others) + 1} best trials")
    pool = [(candidate.trial, candidate.model), *_kept_networks(others, context)]
    networks, probabilities = [], []
    for _, network in pool:  # each calibrated on the split its probabilities are chosen on
        logits = served_logits(network, data.val.images, Normalizer(data.mean, data.std), device)
        temperature = helpful_temperature(logits, data.val.labels)
        networks.append(Calibrated(network, temperature).eval())
        probabilities.append((logits / temperature).softmax(1))
    counts = select_members(probabilities, data.val.labels, most=how.ensemble)
    chosen = sorted(
        (i for i, count in enumerate(counts) if count), key=lambda i: (i != 0, -counts[i], i)
    )
    if len(chosen) < 2:
        return candidate.but(note=f"ensemble: none of the next {len(pool) - 1} trials helped "
                             "on validation, the best is registered alone")  # fmt: skip
    model = Ensemble([networks[i] for i in chosen], [float(counts[i]) for i in chosen]).eval()
    test_acc, val_acc = context.test_acc(model), context.val_acc(model)
    numbers = tuple(pool[i][0].number for i in chosen)
    weights = {str(pool[i][0].number): round(counts[i] / sum(counts), 4) for i in chosen}
    tags = {
        VersionTag.ENSEMBLE: ",".join(map(str, numbers)),
        VersionTag.ENSEMBLE_WEIGHTS: json.dumps(weights),
        VersionTag.TEST_ACC_SINGLE: candidate.tags[VersionTag.TEST_ACC],
        VersionTag.TEST_ACC: figure(test_acc),
        VersionTag.VAL_ACC: figure(val_acc),
    }
    return candidate.but(
        model=model, test_acc=test_acc, val_acc=val_acc, members=numbers,
        test_acc_single=candidate.test_acc, tags=tags,
    )  # fmt: skip


def _kept_networks(
    trials: list[optuna.trial.FrozenTrial], context: Context
) -> list[tuple[optuna.trial.FrozenTrial, torch.nn.Module]]:
    """The trials whose logged weights load, with their networks: an ensemble is chosen
    among the networks the search trained, none retrained for it."""
    kept = []
    for trial in trials:
        run_id = TrialRecord.of(trial).run_id
        if run_id is None:
            continue
        network = build_network(trial_config(trial), context.data)
        try:
            network.load_state_dict(context.tracker.load_weights(run_id))
        except Exception:  # not kept, or unreadable: not a candidate member
            continue
        kept.append((trial, network.to(CPU).eval()))
    return kept


def mirror(candidate: Candidate, context: Context) -> Candidate:
    """Mirrored at test time if the validation split says so; the tags say what was
    measured either way."""
    context.on_stage("trying each validation image with its mirror image")
    model, plain, both = mirror_if_better(candidate.model, context.data, context.device)
    tags = mirror_tags(isinstance(model, Mirrored), plain, both)
    if not isinstance(model, Mirrored):
        return candidate.but(tags=tags)
    mirrored = context.test_acc(model)
    tags.update({
        VersionTag.TEST_ACC: figure(mirrored),
        VersionTag.VAL_ACC: figure(both),
        VersionTag.TEST_ACC_UNMIRRORED: figure(candidate.test_acc),
    })  # fmt: skip
    return candidate.but(
        model=model, test_acc=mirrored, val_acc=both, tags=tags,
        note=f"mirrored: test_acc {candidate.test_acc:.4f} -> {mirrored:.4f}",
    )  # fmt: skip


def register(candidate: Candidate, how: Concluding, context: Context) -> Registration:
    """Publish the candidate as a new version. A single trial's run is the source run: its
    page lists the registered version, and the version's page names the trial. An
    ensemble's source run is the search's (its figures, and the evaluation logged on the
    version, are no member's own); so is a trial's without a run."""
    preprocess = preprocessing(context.data)
    if VersionTag.WEIGHTS in candidate.tags:
        preprocess["weights"] = candidate.tags[VersionTag.WEIGHTS]
    params = TrialRecord.of(candidate.trial).params
    source = "" if candidate.members else candidate.run_id
    with context.tracker.timed():
        new = NewVersion(
            model_name=how.model_name, run_id=source or how.parent_run_id,
            params=params, tags=candidate.tags, preprocess=preprocess,
            temperature=candidate.temperature,
        )  # fmt: skip
        version, reloaded = publish(
            candidate.model, context.data, new, registry=context.registry, device=context.device
        )
    if candidate.run_id:
        registered = {RunTag.REGISTERED_MODEL: f"{how.model_name}/{version}"}
        context.tracker.set_run_tags(candidate.run_id, registered)
    return Registration(
        how.model_name, version, f"models:/{how.model_name}/{version}", candidate.trial.number,
        candidate.val_acc, candidate.test_acc, reloaded, False, "; ".join(candidate.notes),
        candidate.run_id, candidate.members, candidate.test_acc_single,
        _weights(VersionTags.of(candidate.tags)),
    )  # fmt: skip
