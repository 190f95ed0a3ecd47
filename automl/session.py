"""A search session: everything checked, the data loaded, the stores open, the parent run.

``prepare`` starts a new search (or resumes one); ``join`` rebuilds a session from a
study's recipe, so a worker process or another machine runs its trials exactly as the
search that created it would.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from automl import provenance
from automl.config import SearchSettings, make_deterministic, resolve_device
from automl.data import ImageData, load_dataset
from automl.errors import ConfigError
from automl.hooks import Hooks
from automl.objective import Objective
from automl.space import SearchSpace, load_space, parse_space
from automl.stores import open_storage
from automl.study import open_study
from automl.tracking import Tracker
from automl.trials import fail_stale
from automl.warmstart import WarmStart, warm_start

RECIPE = "automl"  # study user attribute: how to run this study's trials anywhere


@dataclass
class Session:
    """What a prepared search holds: the study, its data, its tracker and the objective."""

    settings: SearchSettings
    space: SearchSpace
    data: ImageData
    device: torch.device
    tracker: Tracker
    study: optuna.Study
    parent_run_id: str
    objective: Objective
    hooks: Hooks
    started: float = field(default_factory=time.perf_counter)
    warm: WarmStart | None = None  # configurations of an earlier study to run first

    def close_stale(self, trial: FrozenTrial) -> None:
        """Close the MLflow run a dead worker left open (status FAILED)."""
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            self.tracker.close_run(run_id, "FAILED", {"state": "FAIL", "reason": "crashed"})


def _objective(
    settings: SearchSettings,
    space: SearchSpace,
    data: ImageData,
    *,
    tracker: Tracker,
    parent: str,
    device: torch.device,
    hooks: Hooks,
) -> Objective:
    return Objective(
        space=space,
        data=data,
        tracker=tracker,
        parent_run_id=parent,
        study_name=settings.study,
        device=device,
        max_epochs=settings.max_epochs,
        seed=settings.seed,
        weights_dir=settings.weights_dir,
        objectives=settings.objectives,
        max_params=settings.max_params,
        max_latency_ms=settings.max_latency_ms,
        compile=settings.compile,
        hooks=hooks,
    )


def _load_data(settings: SearchSettings, hooks: Hooks) -> ImageData:
    hooks.on_stage(f"loading data set {settings.dataset}")
    return load_dataset(
        settings.dataset,
        settings.data_dir,
        image_size=settings.image_size,
        progress=hooks.on_progress,
        group_level=settings.group_level,
    )


def prepare(
    settings: SearchSettings,
    hooks: Hooks,
    pruner: optuna.pruners.BasePruner | None = None,
    *,
    mode: str = "search",
) -> Session:
    """Check everything, load the data, open the stores, create the parent run.

    ``mode`` "workers": the study is created for ``automl worker`` processes, whose trials
    nest under this parent run until ``automl study finish`` closes it.
    """
    started = time.perf_counter()
    settings.check()
    if settings.deterministic:
        make_deterministic()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = load_space(settings.space)
    warm = None
    if settings.warm_start:
        hooks.on_stage(f"reading the warm-start study {settings.warm_start}")
        warm = warm_start(
            settings.warm_start, settings.warm_start_storage or settings.storage, space
        )
    device = resolve_device(settings.device)
    data = _load_data(settings, hooks)
    if data.report is not None:
        hooks.on_data(data.report)
    hooks.on_stage("opening the Optuna storage and the MLflow tracking store")
    storage = open_storage(settings.storage)  # first: a bad URL fails before MLflow is touched
    tracker = Tracker(settings.tracking_uri, settings.experiment_name)
    # A database server means workers elsewhere; SQLite with one job means this process alone.
    alone = settings.jobs == 1 and settings.storage.startswith("sqlite")
    study = open_study(settings, storage, pruner, parallel=not alone)
    abandoned = _close_abandoned(study, tracker)
    if abandoned:
        hooks.on_note(f"closed the parent run {abandoned} of a search that stopped without it")
    parent = _start_parent_run(settings, data, device, tracker, mode)
    study.set_user_attr("mlflow_parent_run_id", parent)
    study.set_user_attr(RECIPE, _recipe(settings, data, parent))
    for backbone in space.choices("arch.backbone"):
        if backbone == "none":
            continue
        from automl.backbones import describe_weights  # torchvision: only when needed

        source = describe_weights(str(backbone), settings.weights_dir)
        if source.startswith("random"):
            detail = source.removeprefix("random").strip(" ()")
            hooks.on_note(f"{backbone} starts from random weights ({detail})")
    objective = _objective(
        settings, space, data, tracker=tracker, parent=parent, device=device, hooks=hooks
    )
    return Session(
        settings, space, data, device, tracker, study, parent, objective, hooks, started, warm
    )


def _recipe(settings: SearchSettings, data: ImageData, parent: str) -> dict[str, Any]:
    return {
        "space_yaml": settings.space.read_text(),
        "space_name": settings.space.name,
        "dataset": data.spec or settings.dataset,
        "data_digest": data.digest(),
        "image_size": settings.image_size,
        "group_level": settings.group_level,
        "max_epochs": settings.max_epochs,
        "seed": settings.seed,
        "sampler": settings.sampler,
        "pruner": settings.pruner,
        "objectives": list(settings.objectives),
        "max_params": settings.max_params,
        "max_latency_ms": settings.max_latency_ms,
        "compile": settings.compile,
        "deterministic": settings.deterministic,
        "warm_start": settings.warm_start,
        "experiment": settings.experiment_name,
        "model_name": settings.registered_model,
        "parent_run_id": parent,
    }


def join(
    study_name: str,
    *,
    storage: str,
    tracking_uri: str,
    device: str = "auto",
    data_dir: Path | None = None,
    weights_dir: Path | None = None,
    job: int = 0,
    hooks: Hooks | None = None,
) -> Session:
    """A worker's session on an existing study, rebuilt from the study's recipe.

    Its parent run is the study's; its data must be the data the study was created on
    (same digest), else the worker refuses to run.
    """
    hooks = hooks or Hooks()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    store = open_storage(storage)
    try:
        existing = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(store)) or "none"
        raise ConfigError(f"--study: no study named '{study_name}' (studies: {names})") from None
    recipe = existing.user_attrs.get(RECIPE)
    if not recipe:
        raise ConfigError(f"--study: '{study_name}' was not created by automl (it has no recipe)")
    settings = SearchSettings(
        trials=1,
        space=Path(recipe["space_name"]),
        dataset=recipe["dataset"],
        study_name=study_name,
        storage=storage,
        tracking_uri=tracking_uri,
        experiment=recipe["experiment"],
        model_name=recipe["model_name"],
        sampler=recipe["sampler"],
        pruner=recipe["pruner"],
        max_epochs=recipe["max_epochs"],
        device=device,
        seed=recipe["seed"],
        data_dir=data_dir,
        image_size=recipe["image_size"],
        weights_dir=weights_dir,
        group_level=recipe["group_level"],
        objectives=tuple(recipe["objectives"]),
        max_params=recipe["max_params"],
        max_latency_ms=recipe["max_latency_ms"],
        compile=recipe["compile"],
        deterministic=recipe.get("deterministic", False),
    )
    if settings.deterministic:
        make_deterministic()
    space = parse_space(recipe["space_yaml"], f"study {study_name}")
    resolved = resolve_device(device)
    data = _load_data(settings, hooks)
    if data.digest() != recipe["data_digest"]:
        raise ConfigError(
            f"--data-dir: the {settings.dataset} data here (digest {data.digest()}) is not the "
            f"data study '{study_name}' was created on ({recipe['data_digest']})"
        )
    store = open_storage(storage)
    tracker = Tracker(tracking_uri, recipe["experiment"])
    study = open_study(settings, store, seed_offset=1000 * job)
    parent = recipe["parent_run_id"]
    objective = _objective(
        settings, space, data, tracker=tracker, parent=parent, device=resolved, hooks=hooks
    )
    return Session(settings, space, data, resolved, tracker, study, parent, objective, hooks)


def _close_abandoned(study: optuna.Study, tracker: Tracker) -> str | None:
    """A killed search leaves its parent run RUNNING: close it as FAILED when nothing runs
    under it any more (its dead trials are failed and queued again first)."""
    previous = study.user_attrs.get("mlflow_parent_run_id")
    if not previous:
        return None

    def close(trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            tracker.close_run(run_id, "FAILED", {"state": "FAIL", "reason": "crashed"})

    fail_stale(study, close)
    if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        return None
    try:
        info = tracker.run_info(previous)
    except Exception:  # deleted, or in another store: nothing to close
        return None
    if info["status"] != "RUNNING" or info["tags"].get("mode", "search") != "search":
        return None
    tracker.close_run(previous, "FAILED", {"state": "ABANDONED"})
    return str(previous)


def _start_parent_run(
    settings: SearchSettings, data: ImageData, device: torch.device, tracker: Tracker, mode: str
) -> str:
    parent = tracker.start_study_run(
        settings.study,
        params={**settings.public(), "data": data.describe(), "device_resolved": str(device)},
        tags={
            "dataset": data.spec or settings.dataset,
            "data_digest": data.digest(),
            "kind": "study",
            "mode": mode,
        },
    )
    tracker.log_study_artifacts(parent, {"search_space.yaml": settings.space})
    versions, commit = provenance.versions(), provenance.git_commit()
    resolved = {
        **settings.public(),
        "data": data.describe(),
        "data_digest": data.digest(),
        "device_resolved": str(device),
        "versions": versions,
        "git_commit": commit,
        "platform": platform.platform(),
    }
    tracker.log_study_text(parent, "resolved_config.json", json.dumps(resolved, indent=2))
    tags = {f"version.{name}": version for name, version in versions.items()}
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tracker.set_run_tags(
        parent, {**tags, "mlflow.source.name": "automl", "seed": str(settings.seed)}
    )
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
