"""Predicting image files with a registered model: gather, decode safely, score, rank."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automl.serving.automl_serving import ImageInputError, decode_image
from automl.tracking import ImageModel

IMAGE_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
}  # fmt: skip
MAX_FILE_BYTES = 200 * 1024 * 1024
BATCH = 256


@dataclass(frozen=True)
class Prediction:
    path: Path
    top: list[tuple[str, float]]  # (label, probability), most likely first


def collect_files(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to predict: named files as given, folders walked for image files.

    Folders are walked without following symbolic links, so a link loop cannot trap us.
    """
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            for root, dirs, names in os.walk(path, followlinks=False):
                dirs.sort()
                for name in sorted(names):
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        files.append(Path(root, name))
        elif path.is_file():
            files.append(path)
        else:
            problems.append((path, "no such file or folder"))
    return files, problems


def read_image(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ImageInputError(f"file of {size:,} bytes is larger than {MAX_FILE_BYTES:,}")
    return decode_image(path.read_bytes())


def _decoded(
    files: list[Path], skipped: list[tuple[Path, str]]
) -> Iterator[tuple[Path, np.ndarray]]:
    for path in files:
        try:
            yield path, read_image(path)
        except (ImageInputError, OSError) as exc:
            skipped.append((path, str(exc)))


def predict_files(
    model: ImageModel, files: list[Path], top_k: int = 1
) -> tuple[list[Prediction], list[tuple[Path, str]]]:
    """Top-k classes per readable file; unreadable files come back with the reason."""
    skipped: list[tuple[Path, str]] = []
    predictions: list[Prediction] = []
    classes = model.classes
    k = max(1, min(top_k, len(classes)))
    batch: list[tuple[Path, np.ndarray]] = []

    def flush() -> None:
        frame = model.predict([image for _, image in batch])
        for (path, _), probs in zip(batch, frame["probabilities"], strict=True):
            order = np.argsort(-np.asarray(probs))[:k]
            predictions.append(Prediction(path, [(classes[i], float(probs[i])) for i in order]))
        batch.clear()

    for item in _decoded(files, skipped):
        batch.append(item)
        if len(batch) == BATCH:
            flush()
    if batch:
        flush()
    return predictions, skipped
