"""Is new data still the data a model was trained on? The evidence before a retrain.

Three kinds of shift, each measured against the model's own recorded training data:
what is in the data (class shares), what the images look like (brightness, contrast,
sharpness) and how the model takes it (its confidence and, since new data is labelled, its
accuracy). A retrain is advised when any check passes its threshold.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import ks_2samp

from automl.data import ImageData, Split, load_recorded
from automl.data.adapt import load_like
from automl.errors import ConfigError
from automl.records import VersionTags
from automl.tracking import Registry, Tracker, VersionInfo, load_image_model
from automl.tracking.models import ImageModel

CLASS_TV = 0.10  # total variation distance between class shares
KS_STATISTIC = 0.10  # and p < KS_P: a real and large enough change of an image statistic
KS_P = 0.01
CONFIDENCE_DROP = 0.05  # mean top-1 probability
ACCURACY_DROP = 0.03
IMAGE_STATISTICS = ("brightness", "contrast", "sharpness")
SAMPLE = 5000  # images each side the model predicts (statistics use every image)


@dataclass(frozen=True)
class Check:
    name: str
    reference: float  # the figure on the training data (or its test split)
    new: float
    statistic: float  # what the threshold applies to
    threshold: float
    drifted: bool
    detail: str = ""


@dataclass
class DriftReport:
    model: str
    reference: str
    dataset: str
    reference_images: int
    new_images: int
    class_shares: dict[str, tuple[float, float]]  # class -> (training share, new share)
    checks: list[Check]
    notes: list[str] = field(default_factory=list)
    run_id: str = ""

    @property
    def advised(self) -> bool:
        return any(check.drifted for check in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["retrain_advised"] = self.advised
        data["reasons"] = self.reasons
        return data


def ks_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (no change: 0 and 1)."""
    if len(a) == 0 or len(b) == 0:
        return 0.0, 1.0
    result = ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


def image_statistics(images: torch.Tensor, chunk: int | None = None) -> dict[str, np.ndarray]:
    """Per image: mean brightness, contrast (pixel std) and sharpness (mean gradient), in [0, 1].

    Computed in chunks of about 16 M pixels, so large images never need a float copy of
    more than a chunk."""
    if chunk is None:
        chunk = max(1, (1 << 24) // max(1, images[0].numel() if len(images) else 1))
    out: dict[str, list[np.ndarray]] = {name: [] for name in IMAGE_STATISTICS}
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].float().div_(255).mean(dim=1)  # gray, (n, h, w)
        out["brightness"].append(x.mean(dim=(1, 2)).numpy())
        out["contrast"].append(x.flatten(1).std(dim=1).numpy())
        dx = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2))
        dy = (x[:, 1:, :] - x[:, :-1, :]).abs().mean(dim=(1, 2))
        out["sharpness"].append(((dx + dy) / 2).numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


class _Pool:
    """Every split of the new data as one sample, without copying the images."""

    def __init__(self, data: ImageData) -> None:
        self.splits = [data.train, data.val, data.test]
        self.labels = torch.cat([s.labels for s in self.splits])

    def __len__(self) -> int:
        return len(self.labels)

    def statistics(self) -> dict[str, np.ndarray]:
        parts = [image_statistics(s.images) for s in self.splits if len(s)]
        return {k: np.concatenate([p[k] for p in parts] or [np.zeros(0)]) for k in IMAGE_STATISTICS}

    def sample(self, seed: int = 0) -> Split:
        """Up to ``SAMPLE`` images drawn from all splits."""
        index = _pick(len(self), seed)
        images, labels, low = [], [], 0
        for split in self.splits:
            high = low + len(split)
            local = index[(index >= low) & (index < high)] - low
            images.append(split.images[local])
            labels.append(split.labels[local])
            low = high
        return Split(torch.cat(images), torch.cat(labels))


def _pick(count: int, seed: int) -> torch.Tensor:
    """Indices of up to ``SAMPLE`` of ``count`` images, seeded."""
    if count <= SAMPLE:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:SAMPLE]


def _sample(split: Split, seed: int = 0) -> Split:
    if len(split) <= SAMPLE:
        return split
    index = _pick(len(split), seed)
    return Split(split.images[index], split.labels[index])


def _class_check(
    reference: ImageData, new: ImageData, new_all: _Pool
) -> tuple[Check, dict[str, tuple[float, float]]]:
    ref_counts = Counter(reference.train.labels.tolist())
    new_counts = Counter(new_all.labels.tolist())
    names = list(reference.classes) + [c for c in new.classes if c not in reference.classes]
    ref_share = {reference.classes[i]: n / len(reference.train) for i, n in ref_counts.items()}
    new_share = {new.classes[i]: n / max(len(new_all), 1) for i, n in new_counts.items()}
    shares = {c: (ref_share.get(c, 0.0), new_share.get(c, 0.0)) for c in names}
    tv = 0.5 * sum(abs(a - b) for a, b in shares.values())
    absent = [c for c, (a, b) in shares.items() if a > 0 and b == 0]
    unknown = [c for c, (a, b) in shares.items() if a == 0 and b > 0]
    detail = f"total variation {tv:.3f} (threshold {CLASS_TV})"
    if absent:
        detail += f"; absent from the new data: {', '.join(absent[:10])}"
    if unknown:
        detail += f"; unknown to the model: {', '.join(unknown[:10])}"
    drifted = tv > CLASS_TV or bool(absent) or bool(unknown)
    check = Check("class distribution", 0.0, tv, tv, CLASS_TV, drifted, detail)
    return check, shares


def _image_checks(reference: ImageData, new_all: _Pool) -> list[Check]:
    ref_stats, new_stats = image_statistics(reference.train.images), new_all.statistics()
    checks = []
    for name in ref_stats:
        d, p = ks_test(ref_stats[name], new_stats[name])
        ref_mean, new_mean = float(ref_stats[name].mean()), float(new_stats[name].mean())
        detail = f"mean {ref_mean:.3f} -> {new_mean:.3f}, KS {d:.3f} (p={p:.2g})"
        checks.append(
            Check(name, ref_mean, new_mean, d, KS_STATISTIC, d > KS_STATISTIC and p < KS_P, detail)
        )
    return checks


def _model_checks(
    model: ImageModel, reference: ImageData, new: ImageData, new_all: _Pool
) -> list[Check]:
    """Confidence and accuracy on the held-out reference test split and on the new data."""
    ref, fresh = _sample(reference.test), new_all.sample()
    ref_frame, new_frame = model.predict(ref.hwc()), model.predict(fresh.hwc())
    ref_conf = ref_frame["probability"].to_numpy()
    new_conf = new_frame["probability"].to_numpy()
    d, p = ks_test(ref_conf, new_conf)
    drop = float(ref_conf.mean() - new_conf.mean())
    confidence = Check(
        "confidence", float(ref_conf.mean()), float(new_conf.mean()), drop, CONFIDENCE_DROP,
        drop > CONFIDENCE_DROP,
        f"mean top-1 probability {ref_conf.mean():.3f} -> {new_conf.mean():.3f} "
        f"(KS {d:.3f}, p={p:.2g})",
    )  # fmt: skip
    ref_names = np.asarray([reference.classes[i] for i in ref.labels.tolist()], dtype=str)
    new_names = np.asarray([new.classes[i] for i in fresh.labels.tolist()], dtype=str)
    ref_acc = float((ref_frame["label"].astype(str).to_numpy() == ref_names).mean())
    new_acc = float((new_frame["label"].astype(str).to_numpy() == new_names).mean())
    accuracy = Check(
        "accuracy", ref_acc, new_acc, ref_acc - new_acc, ACCURACY_DROP,
        ref_acc - new_acc > ACCURACY_DROP, f"{ref_acc:.4f} on its test split -> {new_acc:.4f}",
    )  # fmt: skip
    return [confidence, accuracy]


def check_drift(
    model_uri: str,
    dataset: str,
    tracking_uri: str,
    *,
    data_dir: Path | None = None,
    on_stage: Callable[[str], None] = lambda message: None,
) -> DriftReport:
    """Compare ``dataset`` with the data ``model_uri`` was trained on; log the figures."""
    registry = Registry(tracking_uri)
    version = registry.resolve(model_uri)
    if version is None:
        raise ConfigError(f"{model_uri}: name a registered version (models:/NAME@ALIAS or /V)")
    trained_on = VersionTags.of(version.tags).dataset
    if trained_on is None:
        raise ConfigError(f"{version.uri}: the version does not record its training data")
    model = load_image_model(version.uri, tracking_uri)
    on_stage(f"loading the training data ({trained_on})")
    reference = load_recorded(version.tags, data_dir)
    on_stage(f"loading {dataset}")
    new = load_like(dataset, model.preprocess, data_dir)
    new_all = _Pool(new)
    on_stage("comparing classes, images and the model's confidence")
    class_check, shares = _class_check(reference, new, new_all)
    checks = [class_check, *_image_checks(reference, new_all)]
    checks += _model_checks(model, reference, new, new_all)
    report = DriftReport(
        model=version.uri,
        reference=trained_on,
        dataset=new.spec or dataset,
        reference_images=len(reference.train),
        new_images=len(new_all),
        class_shares=shares,
        checks=checks,
    )
    on_stage("logging the drift check to MLflow")
    report.run_id = _log(tracking_uri, registry, version, report)
    return report


def _log(tracking_uri: str, registry: Registry, version: VersionInfo, report: DriftReport) -> str:
    experiment = version.run_id and Tracker(tracking_uri, None).experiment_of(version.run_id)
    tracker = Tracker(tracking_uri, experiment or f"{version.name}-drift")
    run_id = tracker.start_run(
        f"drift-{version.name}-v{version.version}",
        {"model": version.uri, "dataset": report.dataset, "reference": report.reference},
        {"kind": "drift", "model_name": version.name, "model_version": str(version.version),
         "retrain_advised": str(report.advised).lower()},
    )  # fmt: skip
    metrics = {f"drift.{c.name.replace(' ', '_')}": c.statistic for c in report.checks}
    metrics |= {
        f"new.{c.name}": c.new for c in report.checks if c.name in ("confidence", "accuracy")
    }
    metrics["drift.retrain_advised"] = float(report.advised)
    try:
        tracker.log_study_text(run_id, "drift.json", json.dumps(report.to_dict(), indent=2))
        tracker.finish_study_run(run_id, "FINISHED", metrics, {})
    except BaseException:  # not left RUNNING; the store may be away, so best effort
        with contextlib.suppress(Exception):
            tracker.finish_study_run(run_id, "FAILED", {}, {})
        raise
    registry.tag_version(
        version.name, version.version,
        {"drift.last_run_id": run_id, "drift.last_dataset": report.dataset,
         "drift.retrain_advised": str(report.advised).lower()},
    )  # fmt: skip
    return run_id
