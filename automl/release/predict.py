"""Predicting image files with a registered model: gather, decode safely, score, rank."""

from __future__ import annotations

import os
import stat
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
    """Files to predict: named files as given, folders walked for image files; each file
    once, however often it is named (a file and its folder).

    Only regular files are kept: a FIFO, a device or a socket would block or never end
    when read, so it is listed with the reason instead. Folders are walked without
    following symbolic links, so a link loop cannot trap us.
    """
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        why = not_regular(path)
        if why is not None:
            problems.append((path, why))
        elif (key := os.path.realpath(path)) not in seen:
            seen.add(key)
            files.append(path)

    for path in paths:
        if path.is_dir():
            for root, dirs, names in os.walk(path, followlinks=False):
                dirs.sort()
                for name in sorted(names):
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        add(Path(root, name))
        elif path.exists() or path.is_symlink():
            add(path)
        else:
            problems.append((path, "no such file or folder"))
    return files, problems


def not_regular(path: Path) -> str | None:
    """Why ``path`` is not a regular file to read (None when it is one)."""
    try:
        mode = path.stat().st_mode  # a link is judged by what it points to
    except OSError as exc:
        broken = path.is_symlink() and isinstance(exc, FileNotFoundError)
        return "a broken symbolic link" if broken else f"cannot read it: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a device",
             stat.S_ISBLK: "a device", stat.S_ISDIR: "a folder"}  # fmt: skip
    kind = next((name for test, name in kinds.items() if test(mode)), "a special file")
    return f"not a regular file ({kind}); only regular files are read"


def read_image(path: Path) -> np.ndarray:
    """Decode one file, opened without blocking and read only if it is (still) a
    regular file: a file swapped for a FIFO after it was listed cannot hang us."""
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    with os.fdopen(handle, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ImageInputError("not a regular file; only regular files are read")
        if info.st_size > MAX_FILE_BYTES:
            raise ImageInputError(
                f"file of {info.st_size:,} bytes is larger than {MAX_FILE_BYTES:,}"
            )
        return decode_image(file.read(MAX_FILE_BYTES + 1))


def shown(path: Path) -> str:
    """A path as valid UTF-8 text: bytes of a file name that are not UTF-8 are written as
    ``\\xNN`` escapes instead of the lone surrogates Python keeps them as."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


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
