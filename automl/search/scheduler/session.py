"""A search session: everything checked, the data loaded, the stores open, the parent run.

``prepare`` starts a new search (or resumes one); ``join`` rebuilds a session from a
study's recipe, so a worker process or another machine runs its trials exactly as the
search that created it would.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field, replace

import optuna
import torch
from optuna.trial import FrozenTrial

from automl import provenance
from automl.data import ImageData, load_dataset
from automl.errors import ConfigError
from automl.records import RunArtifact, RunTag, StudyAttr, StudyRecord, StudyRunTags, TrialRecord
from automl.records.run import StudyState
from automl.records.study import RecipeKey
from automl.search.hooks import Hooks
from automl.search.scheduler import owners
from automl.search.scheduler.queue import fail_stale
from automl.search.settings import SearchSettings
from automl.search.space import SearchSpace, load_space, parse_space
from automl.search.space.warmstart import WarmStart, warm_start
from automl.search.strategy.study import open_study
from automl.search.trial.checkpoints import Store, forget_exhausted, open_store
from automl.search.trial.objective import Objective
from automl.stores import open_storage
from automl.stores.clock import OptunaClock
from automl.stores.compat import StudyStorage
from automl.tracking import Tracker, ended_tags
from automl.training.device import make_deterministic, resolve_device

ABANDONED = "closed the parent run {} of a search that stopped without it"
CRASHED = "the process running it died (its heartbeat went silent)"


def crashed_tags() -> dict[str, str]:
    """The tags that close the run of a trial whose worker died."""
    return ended_tags("FAIL", "crashed", 0, **{RunTag.MESSAGE: CRASHED})


@dataclass
class Session:
    """What a prepared search holds: the study, its data, its tracker, its stores."""

    settings: SearchSettings
    space: SearchSpace
    data: ImageData
    device: torch.device
    tracker: Tracker
    study: optuna.Study
    parent_run_id: str
    hooks: Hooks
    clock: OptunaClock
    started: float = field(default_factory=time.perf_counter)
    warm: WarmStart | None = None  # configurations of an earlier study to run first

    def objective(self, device: torch.device | None = None) -> Objective:
        """The objective that runs this study's trials on ``device`` (the session's own)."""
        return Objective(
            self.settings, self.space, self.data, self.tracker, self.parent_run_id,
            device or self.device, self.clock, self.hooks,
        )  # fmt: skip

    def close_abandoned(self) -> None:
        """Close the parent runs of other searches killed meanwhile (``close_abandoned``)."""
        checkpoints = open_store(self.settings, self.tracker)
        for run_id in close_abandoned(
            self.study, self.tracker, checkpoints, besides=self.parent_run_id
        ):
            self.hooks.on_note(ABANDONED.format(run_id))

    def with_hooks(self, hooks: Hooks) -> Session:
        return replace(self, hooks=hooks)

    def close_stale(self, trial: FrozenTrial) -> None:
        """Close the MLflow run a dead worker left open (status FAILED); drop its
        checkpoints if its retries are used up."""
        run_id = TrialRecord.of(trial).run_id
        if run_id:
            self.tracker.close_run(run_id, "FAILED", crashed_tags())
        forget_exhausted(open_store(self.settings, self.tracker), self.study, trial)


def _load_data(settings: SearchSettings, hooks: Hooks) -> ImageData:
    hooks.on_stage(f"loading data set {settings.dataset}")
    return load_dataset(
        settings.dataset,
        settings.data_dir,
        image_size=settings.image_size,
        progress=hooks.on_progress,
        group_level=settings.group_level,
    )


def _open(
    settings: SearchSettings,
    store: optuna.storages.RDBStorage | optuna.storages.GrpcStorageProxy,
    pruner: optuna.pruners.BasePruner | None = None,
    *,
    seed_offset: int = 0,
    parallel: bool = True,
) -> tuple[optuna.Study, OptunaClock]:
    """The study on a timed, retried storage that reads queued trials once."""
    clock = OptunaClock()
    storage = StudyStorage(store, clock)
    study = open_study(settings, storage, pruner, seed_offset=seed_offset, parallel=parallel)
    return study, clock


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
    settings = settings.resolve().check()
    if settings.deterministic:
        make_deterministic()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = load_space(settings.space_file)
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
    store = open_storage(settings.storage)  # first: a bad URL fails before MLflow is touched
    tracker = Tracker(settings.tracking_uri, settings.experiment_name)
    study, clock = _open(settings, store, pruner, parallel=not settings.alone)
    _same_data(study, data)  # before anything is written for this search
    _same_space(study, space, settings)
    for abandoned in close_abandoned(study, tracker, open_store(settings, tracker)):
        hooks.on_note(ABANDONED.format(abandoned))
    parent = _start_parent_run(study, settings, data, device=device, tracker=tracker, mode=mode)
    study.set_user_attr(StudyAttr.PARENT_RUN_ID, parent)
    recipe = replace(settings, dataset=data.spec or settings.dataset).to_recipe()
    recipe.update({RecipeKey.DATA_DIGEST: data.digest(), RecipeKey.PARENT_RUN_ID: parent})
    study.set_user_attr(StudyAttr.RECIPE, recipe)
    for backbone in space.choices("arch.backbone"):
        if backbone == "none":
            continue
        from automl.training.backbones import describe_weights  # torchvision: only when needed

        source = describe_weights(str(backbone), settings.weights_dir)
        if source.startswith("random"):
            detail = source.removeprefix("random").strip(" ()")
            hooks.on_note(f"{backbone} starts from random weights ({detail})")
    return Session(
        settings, space, data, device, tracker, study, parent, hooks, clock, started, warm
    )


def _same_data(study: optuna.Study, data: ImageData) -> None:
    """A study resumes on the data it was searched on: its trials were scored on that
    validation split, and their weights fit that data's shape and preprocessing."""
    searched_on = StudyRecord.of(study).data_digest
    if searched_on and searched_on != data.digest() and study.get_trials(deepcopy=False):
        raise ConfigError(
            f"--dataset: study '{study.study_name}' was searched on other data (digest "
            f"{searched_on}, here {data.digest()}: other files, folder or --image-size); "
            "resume it on the same data, or use another --study-name"
        )


def _same_space(study: optuna.Study, space: SearchSpace, settings: SearchSettings) -> None:
    """A study resumes in the space it was searched in: its trials were drawn from it, its
    sampler learns from their distributions, and Optuna cannot mix two (a parameter's
    choices that changed fail the first new trial). Checked before anything is written."""
    recipe = StudyRecord.of(study).recipe or {}
    text = recipe.get(RecipeKey.SPACE_YAML)
    if not text or not study.get_trials(deepcopy=False):
        return
    try:
        searched = parse_space(text, f"study {study.study_name}")
    except ConfigError:  # recorded by an older automl: nothing to compare with
        return
    changed = _changed_params(searched, space)
    if not changed:
        return
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    was = recipe.get(RecipeKey.SPACE) or recipe.get(RecipeKey.SPACE_NAME) or "another space"
    raise ConfigError(
        f"--space: study '{study.study_name}' was searched in {was}; "
        f"{settings.space_file.name} draws {shown} otherwise. Resume it with that space, "
        f"or use another --study-name (--warm-start {study.study_name} starts from its best)"
    )


def _changed_params(before: SearchSpace, after: SearchSpace) -> list[str]:
    """The parameters two spaces draw differently (added, removed or redefined)."""
    old = {p.name: p for p in (*before.params, *before.stage_params)}
    new = {p.name: p for p in (*after.params, *after.stage_params)}
    return sorted(n.replace("{}", "N") for n in old.keys() | new.keys() if old.get(n) != new.get(n))


def join(local: SearchSettings, *, job: int = 0, hooks: Hooks | None = None) -> Session:
    """A worker's session on the existing study ``local.study_name``, its settings rebuilt
    from the study's recipe with this process's stores, device and folders (``local``).

    Its parent run is the study's; its data must be the data the study was created on
    (same digest), else the worker refuses to run.
    """
    hooks = hooks or Hooks()
    name = local.study_name
    if not name:
        raise ConfigError("--study: name the study to join")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    store = open_storage(local.storage, create=False)
    try:
        existing = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(store)) or "none"
        raise ConfigError(f"--study: no study named '{name}' (studies: {names})") from None
    recipe = StudyRecord.of(existing).recipe
    if not recipe:
        raise ConfigError(f"--study: '{name}' was not created by automl (it has no recipe)")
    settings = SearchSettings.from_recipe(recipe, local)
    if settings.deterministic:
        make_deterministic()
    space = parse_space(recipe[RecipeKey.SPACE_YAML], f"study {name}")
    device = resolve_device(settings.device)
    data = _load_data(settings, hooks)
    if data.digest() != recipe[RecipeKey.DATA_DIGEST]:
        raise ConfigError(
            f"--data-dir: the {settings.dataset} data here (digest {data.digest()}) is not the "
            f"data study '{name}' was created on ({recipe[RecipeKey.DATA_DIGEST]})"
        )
    tracker = Tracker(settings.tracking_uri, recipe[RecipeKey.EXPERIMENT])
    study, clock = _open(settings, store, seed_offset=1000 * job)
    parent = recipe[RecipeKey.PARENT_RUN_ID]
    return Session(settings, space, data, device, tracker, study, parent, hooks, clock)


def close_abandoned(
    study: optuna.Study, tracker: Tracker, checkpoints: Store, *, besides: str = ""
) -> list[str]:
    """A killed search leaves its parent run RUNNING: close, as FAILED, every one whose
    search's heartbeat has stopped and under which nothing runs any more (dead trials are
    failed and queued again first). Every search that ever ran on the study left its
    heartbeat there, so one killed while a later search still ran is found too; the
    latest parent is looked at even without one (killed before its first beat).
    ``besides``: the calling search's own run. Returns the runs closed."""

    def close(trial: FrozenTrial) -> None:
        run_id = TrialRecord.of(trial).run_id
        if run_id:
            tracker.close_run(run_id, "FAILED", crashed_tags())
        forget_exhausted(checkpoints, study, trial)

    fail_stale(study, close)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    busy = {TrialRecord.of(t).owner for t in running}
    suspects = owners.silent(study) | {StudyRecord.of(study).parent_run_id or ""}
    closed = []
    for previous in sorted(suspects - busy - {"", besides}):
        if owners.alive(study, {previous}):  # still concluding: registering, evaluating
            continue
        if _close_parent(tracker, previous):
            closed.append(previous)
        owners.forget(study, previous)  # looked at once: its run is closed or not ours
    return closed


def _close_parent(tracker: Tracker, run_id: str) -> bool:
    """Close a search's parent run left RUNNING (True), or leave any other run alone."""
    try:
        info = tracker.run_info(run_id)
    except Exception:  # deleted, or in another store: nothing to close
        return False
    if info["status"] != "RUNNING" or StudyRunTags.of(info["tags"]).mode != "search":
        return False
    tracker.close_run(run_id, "FAILED", {RunTag.STATE: StudyState.ABANDONED})
    return True


def _start_parent_run(
    study: optuna.Study,
    settings: SearchSettings,
    data: ImageData,
    *,
    device: torch.device,
    tracker: Tracker,
    mode: str,
) -> str:
    parent = tracker.start_study_run(
        study.study_name,
        params={**settings.public(), "data": data.describe(), "device_resolved": str(device)},
        tags={
            RunTag.DATASET: data.spec or settings.dataset,
            RunTag.DATA_DIGEST: data.digest(),
            RunTag.KIND: "study",
            RunTag.MODE: mode,
        },
    )
    tracker.log_study_artifacts(parent, {RunArtifact.SPACE: settings.space_file})
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
    tracker.log_study_text(parent, RunArtifact.RESOLVED_CONFIG, json.dumps(resolved, indent=2))
    tags = {f"{RunTag.VERSION_PREFIX}{name}": version for name, version in versions.items()}
    if commit:
        tags[RunTag.GIT_COMMIT] = commit
    tags.update({RunTag.SOURCE_NAME: "automl", RunTag.SEED: str(settings.seed)})
    tracker.set_run_tags(parent, tags)
    if data.report is not None:
        tracker.log_study_text(parent, RunArtifact.DATA_REPORT, data.report.to_json())
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
