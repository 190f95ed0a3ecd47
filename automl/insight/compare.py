"""Two registered models side by side on one test split: per-class accuracy, calibration,
the images one gets right and the other wrong, and whether the difference is real.

Two accuracies a point apart on a few hundred images say little by themselves: both
models see the same images, so what tells them apart is only the images on which they
disagree about being right. McNemar's test asks whether those discordant images split
evenly, as they would between two equally good models; with few of them the exact
binomial form is the honest one (the chi-squared approximation needs many).
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from automl.insight.metrics import ClassReport, classification_report
from automl.tracking import ImageModel

ALPHA = 0.05  # a difference is called real below this two-sided p-value
MAX_THUMBNAILS = 300  # images drawn per direction in the HTML page (all are counted)
THUMBNAIL_SIDE = 96  # pixels: small images are scaled up without smoothing


def mcnemar_p(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value: the chance that a fair coin tossed once per
    discordant image splits at least as unevenly as ``only_first`` to ``only_second``."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_first, only_second) + 1))
    return min(1.0, 2 * tail / (1 << n))  # whole numbers: exact for any n


@dataclass(frozen=True)
class Side:
    """One model's answers on the test split."""

    name: str  # as the person named it (models:/NAME@champion)
    probabilities: np.ndarray
    report: ClassReport

    @property
    def predicted(self) -> np.ndarray:
        predicted: np.ndarray = self.probabilities.argmax(axis=1)
        return predicted


@dataclass(frozen=True)
class Comparison:
    """Two models on the same test images (``images``: uint8 N x H x W x C)."""

    classes: list[str]
    images: np.ndarray
    labels: np.ndarray
    first: Side
    second: Side

    @cached_property
    def only_first(self) -> np.ndarray:
        """Indices of the images the first model gets right and the second wrong."""
        return self._only(self.first, self.second)

    @cached_property
    def only_second(self) -> np.ndarray:
        return self._only(self.second, self.first)

    def _only(self, right: Side, wrong: Side) -> np.ndarray:
        hits = (right.predicted == self.labels) & (wrong.predicted != self.labels)
        found: np.ndarray = np.flatnonzero(hits)
        return found

    @property
    def p_value(self) -> float:
        return mcnemar_p(len(self.only_first), len(self.only_second))

    def verdict(self) -> str:
        """One line: which is better, or that the split cannot tell them apart."""
        a, b = len(self.only_first), len(self.only_second)
        p, n = self.p_value, len(self.labels)
        evidence = f"McNemar exact p = {p:.3g} on {a + b} discordant of {n} test images"
        if p >= ALPHA or a == b:
            return (
                f"no significant difference: {self.first.name} alone is right on {a} images, "
                f"{self.second.name} alone on {b} ({evidence})"
            )
        better, worse = (self.first, self.second) if a > b else (self.second, self.first)
        return (
            f"{better.name} is better than {worse.name}: right on {max(a, b)} images the "
            f"other gets wrong, against {min(a, b)} ({evidence})"
        )

    def per_class(self) -> list[tuple[str, int, float, float]]:
        """Class, test images, accuracy of the first and of the second on them."""
        first, second = self.first.report, self.second.report
        return [
            (name, int(first.support[i]), float(first.recall[i]), float(second.recall[i]))
            for i, name in enumerate(self.classes)
        ]


def compare_models(
    models: tuple[ImageModel, ImageModel],
    images: np.ndarray,
    labels: np.ndarray,
    names: tuple[str, str] | None = None,
) -> Comparison:
    """Both models on ``images`` (uint8 N x H x W x C) whose true classes are ``labels``,
    indices into the models' (shared) classes; ``names``: how to call them (their URIs)."""
    first, second = models
    sides = []
    for model, name in zip(models, names or (first.uri, second.uri), strict=True):
        probs = np.stack(model.predict(images)["probabilities"].to_numpy())
        sides.append(Side(name, probs, classification_report(labels, probs, model.classes)))
    return Comparison(first.classes, images, labels, sides[0], sides[1])


def _thumbnail(image: np.ndarray) -> str:
    picture = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    scale = max(1, THUMBNAIL_SIDE // max(picture.size))
    picture = picture.resize(
        (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _answer(side: Side, index: int, classes: list[str]) -> str:
    guess = int(side.predicted[index])
    confidence = float(side.probabilities[index, guess])
    return f"{html.escape(side.name)}: {html.escape(classes[guess])} ({confidence:.2f})"


def _gallery(comparison: Comparison, indices: np.ndarray, title: str) -> str:
    c = comparison
    shown = indices[:MAX_THUMBNAILS]
    more = f" (the first {len(shown)} shown)" if len(shown) < len(indices) else ""
    figures = [
        f'<figure><img alt="test image {i}" src="data:image/png;base64,{_thumbnail(c.images[i])}">'
        f"<figcaption>#{i} truth {html.escape(c.classes[int(c.labels[i])])}<br>"
        f"{_answer(c.first, i, c.classes)}<br>{_answer(c.second, i, c.classes)}</figcaption>"
        "</figure>"
        for i in shown.tolist()
    ]
    return f"<h2>{html.escape(title)}: {len(indices)}{more}</h2><div>{''.join(figures)}</div>"


def _class_table(comparison: Comparison) -> str:
    a, b = html.escape(comparison.first.name), html.escape(comparison.second.name)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{n}</td><td>{x:.4f}</td><td>{y:.4f}</td></tr>"
        for name, n, x, y in comparison.per_class()
    )
    first, second = comparison.first.report, comparison.second.report
    rows += (
        f"<tr><th>all</th><td>{len(comparison.labels)}</td><td>{first.accuracy:.4f}</td>"
        f"<td>{second.accuracy:.4f}</td></tr><tr><th>ECE</th><td></td>"
        f"<td>{first.ece:.4f}</td><td>{second.ece:.4f}</td></tr>"
    )
    return f"<table><tr><th>class</th><th>images</th><th>{a}</th><th>{b}</th></tr>{rows}</table>"


STYLE = (
    "body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:right}"
    "figure{display:inline-block;margin:.4em;font-size:.75em;width:12em;vertical-align:top}"
    "img{image-rendering:pixelated;width:96px}"
)


def write_html(comparison: Comparison, path: Path) -> Path:
    """One self-contained page: the verdict, per-class accuracy and calibration of both,
    and the discordant test images as thumbnails with both models' answers."""
    a, b = comparison.first.name, comparison.second.name
    body = (
        f"<h1>{html.escape(a)} against {html.escape(b)}</h1>"
        f"<p>{html.escape(comparison.verdict())}</p>{_class_table(comparison)}"
        + _gallery(comparison, comparison.only_first, f"{a} right, {b} wrong")
        + _gallery(comparison, comparison.only_second, f"{b} right, {a} wrong")
    )
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(a)} against '
        f"{html.escape(b)}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )
    path.write_text(page)
    return path
