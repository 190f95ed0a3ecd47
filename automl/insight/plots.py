"""Pictures of an evaluation (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from automl.insight.metrics import ClassReport
from automl.insight.saliency import SaliencyExample

DPI = 110


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def confusion(report: ClassReport, path: Path) -> Path:
    n = len(report.classes)
    size = min(14.0, 3 + 0.45 * n)
    figure, axes = plt.subplots(figsize=(size, size))
    rows = report.confusion / np.maximum(report.confusion.sum(axis=1, keepdims=True), 1)
    image = axes.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    if n <= 30:
        axes.set_xticks(range(n), report.classes, rotation=90)
        axes.set_yticks(range(n), report.classes)
        for i in range(n):
            for j in range(n):
                if report.confusion[i, j]:
                    color = "white" if rows[i, j] > 0.5 else "black"
                    axes.text(
                        j,
                        i,
                        str(report.confusion[i, j]),
                        ha="center",
                        va="center",
                        color=color,
                        fontsize=7,
                    )
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"Confusion matrix (accuracy {report.accuracy:.4f})")
    return _save(figure, path)


def reliability(report: ClassReport, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(5, 5))
    bins = [b for b in report.reliability if b["count"]]
    centers = [(b["low"] + b["high"]) / 2 for b in bins]
    width = report.reliability[0]["high"] - report.reliability[0]["low"]
    axes.bar(
        centers, [b["accuracy"] for b in bins], width=width * 0.9, color="#4c72b0", label="accuracy"
    )
    axes.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    axes.plot(
        centers, [b["confidence"] for b in bins], "o", color="#dd8452", label="mean confidence"
    )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(f"Reliability diagram (ECE {report.ece:.4f})")
    axes.legend(loc="upper left")
    return _save(figure, path)


def robustness(table: dict[str, dict[int, float]], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4))
    for name, per in table.items():
        axes.plot(list(per), list(per.values()), "o-", label=name)
    axes.set_xticks([1, 2, 3])
    axes.set_xlabel("severity")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, 1.02)
    mean = np.mean([a for per in table.values() for a in per.values()])
    axes.set_title(f"Accuracy under corruptions (mean {mean:.4f})")
    axes.legend(fontsize=8, ncol=2)
    return _save(figure, path)


def saliency(examples: list[SaliencyExample], path: Path) -> Path:
    """Pairs of (image, attribution overlay); correct ones in green titles, errors in red."""
    columns = 8
    rows = int(np.ceil(len(examples) * 2 / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.6), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for k, example in enumerate(examples):
        image = example.image[..., 0] if example.image.shape[2] == 1 else example.image
        left, right = grid.flat[2 * k], grid.flat[2 * k + 1]
        left.imshow(image, cmap="gray" if image.ndim == 2 else None)
        right.imshow(image, cmap="gray" if image.ndim == 2 else None, alpha=0.5)
        right.imshow(example.heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        color = "green" if example.correct else "red"
        left.set_title(f"true {example.true}", fontsize=7, color=color)
        right.set_title(f"pred {example.predicted}", fontsize=7, color=color)
    figure.suptitle("Integrated gradients: correct (green) and misclassified (red)", fontsize=9)
    return _save(figure, path)


def groups(reports: dict[str, ClassReport], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(max(5, len(reports) * 0.8), 4))
    names = list(reports)
    x = np.arange(len(names))
    axes.bar(x - 0.2, [reports[n].accuracy for n in names], 0.4, label="accuracy")
    axes.bar(x + 0.2, [reports[n].worst_recall for n in names], 0.4, label="worst class recall")
    axes.set_xticks(x, names, rotation=45, ha="right")
    axes.set_ylim(0, 1.02)
    axes.set_title("Quality per group")
    axes.legend()
    return _save(figure, path)
