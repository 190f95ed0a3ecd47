"""Retraining a registered model on new data, so a deployed model improves without a search.

The version's exact configuration is rebuilt from its recorded params (never re-sampled),
started from its weights (fine-tuning) or from scratch, and trained with the one training
loop. The result is registered as a new version holding the alias ``candidate``, tagged with
its lineage, and scored beside its parent on the old and the new test split so that
forgetting is visible before anyone promotes it.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from automl.data import FOLDER_PREFIX, ImageData, load_recorded, split_digest
from automl.data.adapt import class_change, in_class_order, load_like
from automl.errors import AutomlError, ConfigError
from automl.records import VersionTag, VersionTags
from automl.records.version import figure, mirror_tags
from automl.release.promote import score
from automl.release.publish import NewVersion, preprocessing, publish
from automl.tracking import Registry, Tracker, VersionInfo, load_image_model
from automl.tracking.models import ImageModel
from automl.tracking.runs import TrialRun
from automl.training.config import TrialConfig
from automl.training.device import resolve_device
from automl.training.ensemble import Mirrored, mirror_if_better
from automl.training.loop import Callbacks, EpochResult, Normalizer, evaluate, measure
from automl.training.networks import replace_head
from automl.training.train import Overrides, build_network, fit_config


@dataclass(frozen=True)
class RetrainOptions:
    dataset: str
    data_dir: Path | None = None
    epochs: int | None = None  # default: the configuration's own epochs
    from_scratch: bool = False
    new_head: bool = False
    lr_scale: float | None = None  # default: 0.1 from weights, 1.0 from scratch
    alias: str = "candidate"
    device: str = "auto"
    seed: int = 0
    weights_dir: Path | None = None  # pretrained backbones, when starting from scratch
    experiment: str | None = None  # default: the experiment of the source version's run

    def check(self) -> RetrainOptions:
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs: must be at least 1, got {self.epochs}")
        if self.lr_scale is not None and not 0 < self.lr_scale <= 100:
            raise ConfigError(f"--lr-scale: must lie in (0, 100], got {self.lr_scale}")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", self.alias) or re.fullmatch(
            r"latest|v\d+", self.alias, flags=re.IGNORECASE
        ):
            raise ConfigError(
                f"--alias {self.alias!r}: letters, digits, '_' and '-' only, and not 'latest' "
                "or v<number> (MLflow keeps those)"
            )
        if self.alias == "champion":
            raise ConfigError(
                "--alias champion: a retrained model becomes champion only through the gate: "
                "automl promote NAME --version V --dataset ..."
            )
        resolve_device(self.device)
        return self


@dataclass(frozen=True)
class Comparison:
    """Parent and candidate on one test split."""

    split: str
    images: int
    parent_acc: float
    candidate_acc: float


@dataclass
class RetrainOutcome:
    source: VersionInfo
    version: int
    run_id: str
    dataset: str
    start: str  # "weights" or "scratch"
    epochs: int
    lr_scale: float
    start_val_acc: float  # before the first step: the parent's accuracy when from weights
    history: list[EpochResult]
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    alias: str = "candidate"

    @property
    def uri(self) -> str:
        return f"models:/{self.source.name}/{self.version}"


def recorded_params(version: VersionInfo, model: ImageModel) -> dict[str, Any]:
    """The flat params a version was trained with: in its model's metadata (``params.json``
    beside the network holds the same), or the ``params`` tag of versions registered before."""
    recorded = model.preprocess.get("params")
    raw = json.dumps(recorded) if recorded is not None else VersionTags.of(version.tags).params
    if not raw:
        raise ConfigError(
            f"{version.uri}: the version has no recorded params (model metadata or tag "
            "'params'), so its configuration cannot be rebuilt; register it with this "
            "automl version"
        )
    try:
        params = json.loads(raw)
        TrialConfig.from_params(params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{version.uri}: its recorded params are not usable: {exc}") from None
    return dict(params)


@dataclass
class _Plan:
    """What a retrain trains: checked and loaded before any run is opened."""

    source: VersionInfo
    params: dict[str, Any]
    config: TrialConfig
    parent: ImageModel
    data: ImageData
    model: torch.nn.Module
    notes: list[str]
    from_weights: bool
    lr_scale: float
    epochs: int
    device: torch.device

    @property
    def norm(self) -> Normalizer:
        return Normalizer(self.data.mean, self.data.std)

    @property
    def new_head(self) -> bool:
        return self.data.classes != tuple(self.parent.classes)

    @property
    def lineage(self) -> dict[str, str]:
        recorded = VersionTags.of(self.source.tags)
        members = recorded.ensemble
        return {
            VersionTag.PARENT_MODEL: self.source.name,
            VersionTag.PARENT_VERSION: str(self.source.version),
            VersionTag.PARENT_DATASET: recorded.dataset or "unknown",
            VersionTag.DATASET: self.data.spec or self.data.name,
            VersionTag.RETRAIN_START: "weights" if self.from_weights else "scratch",
            VersionTag.RETRAIN_NEW_HEAD: str(self.new_head).lower(),
            **({VersionTag.PARENT_ENSEMBLE: members} if members else {}),
        }


def plan(model_uri: str, tracking_uri: str, options: RetrainOptions) -> _Plan:
    """Everything that can be wrong with the request fails here, before anything is logged."""
    options.check()
    source = Registry(tracking_uri).resolve(model_uri)
    if source is None:
        raise ConfigError(f"{model_uri}: name a registered version (models:/NAME@ALIAS or /V)")
    parent = load_image_model(source.uri, tracking_uri)
    params = recorded_params(source, parent)
    config = TrialConfig.from_params(params)
    data, notes = _new_data(parent, options)
    if members := VersionTags.of(source.tags).ensemble:  # one network trains on: say which
        best = members.split(",")[0]
        notes.append(
            f"version {source.version} averages trials {members}: the candidate is its best "
            f"member, trial {best}, retrained alone (compared with the whole ensemble)"
        )
    from_weights = not options.from_scratch
    if from_weights:  # the weights expect the normalisation they were trained with
        mean, std = parent.preprocess["mean"], parent.preprocess["std"]
        data = replace(data, mean=tuple(mean), std=tuple(std))
    torch.manual_seed(options.seed)
    model = _network(config, data, parent, from_weights, options)
    scale = options.lr_scale or (0.1 if from_weights else 1.0)
    epochs = options.epochs or config.train.epochs
    device = resolve_device(options.device)
    return _Plan(
        source, params, config, parent, data, model, notes, from_weights, scale, epochs, device
    )


def retrain(
    model_uri: str,
    tracking_uri: str,
    options: RetrainOptions,
    *,
    on_stage: Callable[[str], None] = lambda message: None,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
) -> RetrainOutcome:
    """Train ``model_uri``'s configuration on ``options.dataset`` and register a candidate."""
    started = time.perf_counter()
    on_stage(f"loading the model and {options.dataset}")
    job = plan(model_uri, tracking_uri, options)
    source, data, device = job.source, job.data, job.device
    job.model.to(device)
    _, start_acc = evaluate(job.model, data.val, job.norm.to(device), device)
    tracker = Tracker(tracking_uri, options.experiment or _experiment(tracking_uri, source))
    run = TrialRun(
        tracker,
        tracker.start_run(
            f"retrain-{source.name}-v{source.version}",
            {**job.params, "retrain.epochs": job.epochs, "retrain.lr_scale": job.lr_scale,
             "retrain.seed": options.seed, "device": str(device)},
            {"kind": "retrain", "parent_run_id": source.run_id or "", **job.lineage},
        ),
    )  # fmt: skip
    try:
        tracker.log_dataset(
            run.run_id, name=data.name, digest=data.digest(), source=data.source,
            profile={"classes": len(data.classes), "train": len(data.train),
                     "test": len(data.test)},
        )  # fmt: skip
        run.log_epoch(0, {"val_acc": start_acc})
        on_stage(f"training {job.epochs} epochs from {job.lineage[VersionTag.RETRAIN_START]}")
        history = _train(job, options.seed, run, on_epoch)
        on_stage("registering the candidate")
        version = _register(job, run.run_id, Registry(tracking_uri), options.alias, history)
        on_stage("comparing parent and candidate on both test splits")
        candidate = load_image_model(f"models:/{source.name}/{version}", tracking_uri)
        comparisons, notes = _compare(job.parent, candidate, source, data, options.data_dir)
        _record(Registry(tracking_uri), tracker, run.run_id, (source.name, version), comparisons)
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        run.finish("FAIL", reason=str(exc) or type(exc).__name__, status=status)
        raise
    run.finish("COMPLETE", registered_version=str(version))
    return RetrainOutcome(
        source, version, run.run_id, data.spec or data.name, job.lineage[VersionTag.RETRAIN_START],
        job.epochs, job.lr_scale, start_acc, history, comparisons, job.notes + notes,
        time.perf_counter() - started, options.alias,
    )  # fmt: skip


def _train(
    job: _Plan,
    seed: int,
    run: TrialRun,
    on_epoch: Callable[[EpochResult], None],
) -> list[EpochResult]:
    def log(result: EpochResult) -> None:
        run.log_epoch(result.epoch, result.metrics())
        on_epoch(result)

    # Fine-tuning trained weights: no frozen warm-up, unless the head is new.
    freeze = job.config.train.freeze_epochs if not job.from_weights or job.new_head else 0
    overrides = Overrides(
        epochs=job.epochs, lr_scale=job.lr_scale, freeze_epochs=freeze, norm=job.norm
    )
    return fit_config(
        job.model,
        job.config,
        job.data,
        device=job.device,
        seed=seed,
        overrides=overrides,
        callbacks=Callbacks(on_epoch=log),
    )


def _register(
    job: _Plan,
    run_id: str,
    registry: Registry,
    alias: str,
    history: list[EpochResult],
) -> int:
    """A new version of the parent's model, holding ``alias``, tagged with its lineage;
    mirrored at test time where the new validation split says so, as a search decides."""
    data = job.data
    model, plain, both = mirror_if_better(job.model.cpu().eval(), data, job.device)
    _, test_acc = measure(model, data.test, job.norm, job.device)
    # The validation accuracy of the model registered, as served (float32, mirrored or
    # not), as a search records it; the last epoch's without a validation split.
    val_acc = both if isinstance(model, Mirrored) else plain
    if math.isnan(val_acc):
        val_acc = history[-1].val_acc
    folder = (data.spec or "").startswith(FOLDER_PREFIX)
    tags = {
        **job.lineage,
        VersionTag.DATA_DIGEST: data.digest(),
        VersionTag.TEST_DIGEST: split_digest(data.test),
        # How to reload exactly these splits: size, and the channels and class order the
        # data was adapted to (see load_like), so promote, evaluate and drift see them too.
        VersionTag.DATASET_OPTIONS: json.dumps(
            {
                "image_size": data.image_size[0] if folder else None,
                "channels": data.channels,
                "classes": list(data.classes),
            }
        ),
        VersionTag.VAL_ACC: figure(val_acc),
        VersionTag.TEST_ACC: figure(test_acc),
        VersionTag.RETRAIN_RUN_ID: run_id,
        **mirror_tags(isinstance(model, Mirrored), plain, both),
    }
    new = NewVersion(
        model_name=job.source.name, run_id=run_id, params=job.params, tags=tags,
        preprocess=preprocessing(data),
    )  # fmt: skip
    version, _ = publish(model, data, new, registry=registry, device=job.device)
    registry.set_alias(job.source.name, alias, version)
    return version


def _new_data(parent: ImageModel, options: RetrainOptions) -> tuple[ImageData, list[str]]:
    data = load_like(options.dataset, parent.preprocess, options.data_dir)
    change = class_change(data, parent.classes)
    if change is None:
        return in_class_order(data, parent.classes), []
    if not options.new_head:
        raise ConfigError(
            f"--dataset {options.dataset}: its classes differ from the model's ({change}); "
            "--new-head rebuilds the head for the new classes"
        )
    return data, [f"the head was rebuilt for the new classes ({change})"]


def _network(
    config: TrialConfig,
    data: ImageData,
    parent: ImageModel,
    from_weights: bool,
    options: RetrainOptions,
) -> torch.nn.Module:
    """The configuration's network: the parent's weights (head rebuilt when the classes
    changed), or fresh as the search built it."""
    if not from_weights:
        return build_network(config, data, options.weights_dir)
    model = build_network(config, replace(data, classes=tuple(parent.classes)))
    try:
        model.load_state_dict(parent.state_dict(), strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"{parent.uri}: its weights do not fit its recorded configuration "
            f"({_first_mismatch(exc)}); --from-scratch trains the configuration anew"
        ) from None
    if data.classes != tuple(parent.classes):
        replace_head(model, data.num_classes)
    return model


def _first_mismatch(exc: RuntimeError) -> str:
    """The first missing, unexpected or misshapen weight in a ``load_state_dict`` error."""
    text = str(exc)
    for marker in ("Missing key(s)", "Unexpected key(s)", "size mismatch"):
        at = text.find(marker)
        if at >= 0:
            return text[at:].splitlines()[0].strip().rstrip(".,")[:200]
    return text.strip().splitlines()[0][:200] if text.strip() else "unknown difference"


def _experiment(tracking_uri: str, source: VersionInfo) -> str:
    """The experiment of the run that produced the version, so the retrain sits beside it."""
    if source.run_id:
        found = Tracker(tracking_uri, None).experiment_of(source.run_id)
        if found:
            return found
    return f"{source.name}-retrain"


def _compare(
    parent: ImageModel,
    candidate: ImageModel,
    source: VersionInfo,
    new: ImageData,
    data_dir: Path | None,
) -> tuple[list[Comparison], list[str]]:
    """Both models on the parent's recorded test split and on the new test split."""
    splits: list[tuple[str, ImageData]] = []
    notes: list[str] = []
    try:
        old = load_recorded(source.tags, data_dir)  # as the parent was tested: size, groups
        if split_digest(old.test) != split_digest(new.test):
            splits.append((f"old test ({VersionTags.of(source.tags).dataset})", old))
        else:
            notes.append("the new data's test split is the parent's own: one comparison")
    except (AutomlError, KeyError) as exc:
        notes.append(f"the parent's test split could not be loaded: {exc}")
    splits.append((f"new test ({new.spec or new.name})", new))
    comparisons = [
        Comparison(label, len(data.test), score(parent, data), score(candidate, data))
        for label, data in splits
    ]
    return comparisons, notes


def _record(
    registry: Registry,
    tracker: Tracker,
    run_id: str,
    version: tuple[str, int],
    comparisons: list[Comparison],
) -> None:
    metrics: dict[str, float] = {}
    for comparison in comparisons:
        key = comparison.split.split(" (")[0].replace(" ", "_")  # old_test / new_test
        metrics[f"{key}_acc.parent"] = comparison.parent_acc
        metrics[f"{key}_acc.candidate"] = comparison.candidate_acc
    tracker.log_metrics(run_id, metrics)
    registry.tag_version(*version, {f"compare.{k}": figure(v) for k, v in metrics.items()})
