"""Evaluating a registered model: metrics, fairness, calibration, robustness, saliency.

Everything is measured through the model as it is served (its own preprocessing and
network), on the test split recorded with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from automl.data import Split
from automl.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from automl.insight.metrics import ClassReport, classification_report
from automl.insight.saliency import SaliencyExample, integrated_gradients
from automl.serving.automl_serving import to_tensor
from automl.tracking import ImageModel
from automl.training.calibration import expected_calibration_error

MAX_ROBUSTNESS_IMAGES = 2000
SALIENCY_CLASSES = 10
SALIENCY_PER_KIND = 2  # correct and misclassified examples per class


@dataclass
class Evaluation:
    report: ClassReport
    robustness: dict[str, dict[int, float]]
    robustness_images: int
    saliency: list[SaliencyExample] = field(default_factory=list)
    groups: dict[str, ClassReport] = field(default_factory=dict)
    temperature: float | None = None  # the model's last temperature, if it carries one
    ece_uncalibrated: float | None = None  # the same split, that temperature undone

    @property
    def mean_corruption_accuracy(self) -> float:
        values = [acc for per in self.robustness.values() for acc in per.values()]
        return float(np.mean(values)) if values else float("nan")

    def metrics(self) -> dict[str, float]:
        """Flat figures for MLflow (sortable in the UI). Robustness is one figure, the mean:
        the accuracy per corruption and severity (18 figures) would bury the rest of the
        run's charts, and lives in ``robustness.csv`` / ``evaluation.json`` instead."""
        out = {f"test_{k}" if k == "accuracy" else k: v for k, v in self.report.summary().items()}
        out["mean_corruption_acc"] = self.mean_corruption_accuracy
        if self.ece_uncalibrated is not None:
            out["ece_uncalibrated"] = self.ece_uncalibrated
        for name, report in self.groups.items():
            out[f"group.{name}.accuracy"] = report.accuracy
            out[f"group.{name}.worst_class_recall"] = report.worst_recall
        if self.groups:
            accs = [r.accuracy for r in self.groups.values()]
            out["group_accuracy_gap"] = max(accs) - min(accs)
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "metrics": self.metrics(),
                "per_class": self.report.per_class(),
                "worst_class": self.report.worst_class,
                "reliability": self.report.reliability,
                "robustness": {
                    k: {str(s): a for s, a in v.items()} for k, v in self.robustness.items()
                },
                "robustness_images": self.robustness_images,
                "groups": {
                    k: {**r.summary(), "worst_class": r.worst_class} for k, r in self.groups.items()
                },
            },
            indent=2,
        )


def _probabilities(model: ImageModel, images: np.ndarray) -> np.ndarray:
    return np.stack(model.predict(images)["probabilities"].to_numpy())


def robustness(
    model: ImageModel, split: Split, labels: np.ndarray, seed: int = 0
) -> tuple[dict[str, dict[int, float]], int]:
    """Accuracy under each corruption and severity, on a seeded subset of the split."""
    index = np.arange(len(split))
    if len(index) > MAX_ROBUSTNESS_IMAGES:
        index = np.sort(
            np.random.default_rng(seed).choice(index, MAX_ROBUSTNESS_IMAGES, replace=False)
        )
    images, truth = split.images[index], labels[index]
    table: dict[str, dict[int, float]] = {}
    for name in CORRUPTIONS:
        table[name] = {}
        for severity in SEVERITIES:
            corrupted = corrupt(images, name, severity, seed).permute(0, 2, 3, 1).numpy()
            predicted = _probabilities(model, corrupted).argmax(axis=1)
            table[name][severity] = float((predicted == truth).mean())
    return table, len(index)


def saliency_examples(
    model: ImageModel, split: Split, probs: np.ndarray, report: ClassReport
) -> list[SaliencyExample]:
    """Up to two correct and two misclassified test images for the worst-recall classes."""
    labels = split.labels.numpy()
    predicted = probs.argmax(axis=1)
    order = np.argsort(report.recall + (report.support == 0) * 10)[:SALIENCY_CLASSES]
    chosen: list[int] = []
    for c in order:
        members = np.flatnonzero(labels == c)
        right = members[predicted[members] == c][:SALIENCY_PER_KIND]
        wrong = members[predicted[members] != c][:SALIENCY_PER_KIND]
        chosen += [*right.tolist(), *wrong.tolist()]
    if not chosen:
        return []
    network = torch.export.load(str(model.network_file())).module()
    images = split.images[chosen].permute(0, 2, 3, 1).numpy()
    x = to_tensor(images, model.preprocess)
    heat = integrated_gradients(network, x, torch.from_numpy(predicted[chosen]))
    classes = model.classes
    return [
        SaliencyExample(images[i], heat[i].numpy(), classes[labels[j]], classes[predicted[j]])
        for i, j in enumerate(chosen)
    ]


def evaluate_model(
    model: ImageModel,
    split: Split,
    *,
    groups: tuple[np.ndarray, list[str]] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] = lambda stage: None,
) -> Evaluation:
    """``groups``: a group index per test image and the group names (image folders)."""
    labels = split.labels.numpy()
    progress("scoring the test split")
    probs = _probabilities(model, split.hwc())
    report = classification_report(labels, probs, model.classes)
    per_group = {}
    if groups is not None:
        index, names = groups
        for g, name in enumerate(names):
            members = index == g
            if members.any():
                per_group[name] = classification_report(
                    labels[members], probs[members], model.classes
                )
    temperature = model.temperature
    before = None
    if temperature is not None:
        before = expected_calibration_error(labels, uncalibrated(probs, temperature))[0]
    progress("measuring robustness to corruptions")
    table, used = robustness(model, split, labels, seed)
    progress("computing saliency maps")
    examples = saliency_examples(model, split, probs, report)
    return Evaluation(report, table, used, examples, per_group, temperature, before)


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities before the logits were divided by ``temperature``: softmax(z / T)
    gives log p = z / T - c per image, so softmax(T log p) = softmax(z)."""
    logits = temperature * np.log(np.clip(probs.astype(np.float64), 1e-300, None))
    logits -= logits.max(axis=1, keepdims=True)
    exp: np.ndarray = np.exp(logits)
    out: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return out


def write_evaluation(evaluation: Evaluation, folder: Path) -> list[Path]:
    """PNG pictures, CSV tables and a JSON summary in ``folder``."""
    from automl.insight import plots

    folder.mkdir(parents=True, exist_ok=True)
    report = evaluation.report
    written = [
        plots.confusion(report, folder / "confusion_matrix.png"),
        plots.reliability(report, folder / "reliability_diagram.png"),
        plots.robustness(evaluation.robustness, folder / "robustness.png"),
    ]
    if evaluation.saliency:
        written.append(plots.saliency(evaluation.saliency, folder / "saliency.png"))
    if evaluation.groups:
        written.append(plots.groups(evaluation.groups, folder / "groups.png"))
    header = ",".join(["true \\\\ predicted", *report.classes])
    rows = [
        ",".join([c, *map(str, row)])
        for c, row in zip(report.classes, report.confusion, strict=True)
    ]
    (folder / "confusion_matrix.csv").write_text("\n".join([header, *rows]) + "\n")
    lines = ["class,precision,recall,f1,support"] + [
        f"{r['class']},{r['precision']:.6f},{r['recall']:.6f},{r['f1']:.6f},{r['support']}"
        for r in report.per_class()
    ]
    (folder / "per_class.csv").write_text("\n".join(lines) + "\n")
    lines = ["corruption,severity,accuracy"] + [
        f"{name},{s},{acc:.6f}"
        for name, per in evaluation.robustness.items()
        for s, acc in per.items()
    ]
    (folder / "robustness.csv").write_text("\n".join(lines) + "\n")
    (folder / "evaluation.json").write_text(evaluation.to_json())
    written += [
        folder / n
        for n in ("confusion_matrix.csv", "per_class.csv", "robustness.csv", "evaluation.json")
    ]
    return written


def summary_rows(evaluation: Evaluation) -> list[tuple[str, str]]:
    r = evaluation.report
    rows: list[tuple[str, Any]] = [
        ("accuracy", f"{r.accuracy:.4f}"),
        ("macro F1", f"{r.macro_f1:.4f}"),
        ("worst class recall", f"{r.worst_recall:.4f} ({r.worst_class})"),
        ("best - worst class recall", f"{r.recall_gap:.4f}"),
        ("expected calibration error", f"{r.ece:.4f}"),
        *(
            [("ECE before temperature scaling", f"{before:.4f} (T = {evaluation.temperature:.3g})")]
            if (before := evaluation.ece_uncalibrated) is not None
            else []
        ),
        (
            "mean corruption accuracy",
            f"{evaluation.mean_corruption_accuracy:.4f} ({evaluation.robustness_images} images)",
        ),
    ]
    for name, report in evaluation.groups.items():
        rows.append(
            (
                f"group {name}",
                f"accuracy {report.accuracy:.4f}, worst recall {report.worst_recall:.4f}",
            )
        )
    return rows
