"""Classification metrics from labels and predicted probabilities.

Fairness across classes is read from per-class recall: the worst class and the gap
between the best and the worst. Calibration is the expected calibration error over
equal-width confidence bins, computed where temperatures are fitted
(``training.calibration``), so registration and evaluation measure it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from automl.training.calibration import expected_calibration_error


@dataclass
class ClassReport:
    """Metrics of one set of predictions; per-class arrays follow ``classes``."""

    classes: list[str]
    accuracy: float
    macro_f1: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    confusion: np.ndarray  # rows: true class, columns: predicted class
    ece: float
    reliability: list[dict[str, float]] = field(default_factory=list)

    @property
    def worst_class(self) -> str:
        return self.classes[int(np.argmin(self._present(self.recall)))]

    @property
    def worst_recall(self) -> float:
        return float(np.min(self._present(self.recall)))

    @property
    def recall_gap(self) -> float:
        """Best minus worst class recall, over classes present in the labels."""
        present = self.recall[self.support > 0]
        return float(present.max() - present.min()) if present.size else 0.0

    def _present(self, values: np.ndarray) -> np.ndarray:
        return np.where(self.support > 0, values, np.inf)

    def summary(self) -> dict[str, float]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "worst_class_recall": self.worst_recall,
            "class_recall_gap": self.recall_gap,
            "ece": self.ece,
        }

    def per_class(self) -> list[dict[str, Any]]:
        return [
            {
                "class": name,
                "precision": float(self.precision[i]),
                "recall": float(self.recall[i]),
                "f1": float(self.f1[i]),
                "support": int(self.support[i]),
            }
            for i, name in enumerate(self.classes)
        ]


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def classification_report(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> ClassReport:
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n = len(classes)
    predicted = probs.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, n)
    true_positive = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_count > 0, true_positive / predicted_count, 0.0)
        recall = np.where(support > 0, true_positive / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    ece, reliability = expected_calibration_error(labels, probs)
    present = support > 0
    return ClassReport(
        classes=list(classes),
        accuracy=float((predicted == labels).mean()) if len(labels) else 0.0,
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        confusion=matrix,
        ece=ece,
        reliability=reliability,
    )
