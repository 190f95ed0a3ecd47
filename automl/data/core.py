"""Data sets as compact uint8 tensors with fixed, stratified train/val/test splits.

The split seed is fixed (not the search seed) so every search, and every later
evaluation of a registered model, sees the same test split. Normalisation statistics
come from the training split alone.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from automl.errors import ConfigError

SPLIT_SEED = 0
VAL_SHARE = 0.15
TEST_SHARE = 0.15
SPLITS = ("train", "val", "test")
SMALL_VALIDATION = 20  # images a class below which validation accuracy is too coarse to rank
CARVED_MINIMUM = 3  # images a class needs to reach train, val and test when they are carved


@dataclass(frozen=True)
class Split:
    images: Tensor  # uint8, (N, C, H, W)
    labels: Tensor  # int64, (N,)
    groups: Tensor | None = None  # int64 (N,) group index, for folders with a group level

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def hwc(self) -> np.ndarray:
        """Images as a uint8 ``(N, H, W, C)`` array: what a registered model takes."""
        return self.images.permute(0, 2, 3, 1).contiguous().numpy()


@dataclass
class DataReport:
    """What loading found and did: printed, saved as JSON and logged with the study."""

    source: str
    classes: list[str]
    files_found: int
    kept: int
    image_size: tuple[int, int]
    channels: int
    size_rule: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> n
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> files
    small_images: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cache: str = ""
    decoded: int = 0  # files decoded by this load: 0 when a cache was reused

    @property
    def imbalance(self) -> float:
        """Largest over smallest class, all splits together."""
        totals: Counter[str] = Counter()
        for per_class in self.counts.values():
            totals.update(per_class)
        values = [totals[c] for c in self.classes]
        return max(values) / max(min(values), 1) if values else 1.0

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["imbalance"] = round(self.imbalance, 3)
        data["dropped_total"] = sum(len(v) for v in self.dropped.values())
        return json.dumps(data, indent=2)


@dataclass(frozen=True)
class ImageData:
    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    source: str
    report: DataReport | None = None
    group_names: tuple[str, ...] = ()
    spec: str = ""  # what --dataset reloads it with: "digits", "imagefolder:/abs/path"

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def digest(self) -> str:
        """Content hash of all splits: runs on the same data share it."""
        return split_digest(self.train, self.val, self.test)

    def with_validation_in_training(self) -> ImageData:
        """Training on train + validation, for a refit once the validation split has made
        its choices. The statistics stay the training split's, so the preprocessing
        recorded with a model does not change."""
        train, val = self.train, self.val
        groups = None
        if train.groups is not None and val.groups is not None:
            groups = torch.cat([train.groups, val.groups])
        merged = Split(
            torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]), groups
        )
        return replace(self, train=merged)

    def describe(self) -> str:
        c, (h, w) = self.channels, self.image_size
        return (
            f"{self.name}: {self.num_classes} classes, {h}x{w}x{c}, "
            f"train {len(self.train)} / val {len(self.val)} / test {len(self.test)}"
        )


def split_digest(*splits: Split) -> str:
    """Content hash of images and labels; equal digests mean identical splits."""
    sha = hashlib.sha256()
    for split in splits:
        sha.update(np.ascontiguousarray(split.images.numpy()).data)
        sha.update(split.labels.numpy().tobytes())
    return sha.hexdigest()[:16]


def channel_stats(images: Tensor, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the [0, 1] scale, in chunks so no float copy is made."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / max(count, 1)
    std = (squares / max(count, 1) - mean * mean).clamp_min(1e-6).sqrt().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def stratified_indices(
    labels: np.ndarray, shares: tuple[float, ...], seed: int = SPLIT_SEED
) -> list[np.ndarray]:
    """Split indices into parts of the given shares (the first takes the rest), per class.

    Each class is shuffled with its own seeded generator and cut by rounding, so every
    class appears in every part in the same proportion, even for a handful of images.
    """
    parts: list[list[int]] = [[] for _ in range(len(shares) + 1)]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng = np.random.default_rng([seed, int(label)])
        members = members[rng.permutation(len(members))]
        start = 0
        for part, share in enumerate(shares, 1):
            take = round(share * len(members))
            if take == 0 and len(members) - start > 1 and share > 0:
                take = 1  # a class with few images still reaches every part when it can
            parts[part].extend(members[start : start + take].tolist())
            start += take
        parts[0].extend(members[start:].tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def take(images: np.ndarray | Tensor, labels: np.ndarray, index: np.ndarray) -> Split:
    x = images[index] if isinstance(images, Tensor) else torch.from_numpy(images[index])
    return Split(x.contiguous(), torch.from_numpy(np.asarray(labels)[index]).long())


def split_three(
    images: np.ndarray, labels: np.ndarray, *, seed: int = SPLIT_SEED
) -> tuple[Split, Split, Split]:
    """Carve train/val/test with every class in the same proportion in each."""
    train, val, test = stratified_indices(labels, (VAL_SHARE, TEST_SHARE), seed)
    return take(images, labels, train), take(images, labels, val), take(images, labels, test)


def simple_report(source: str, classes: tuple[str, ...], splits: dict[str, Split]) -> DataReport:
    """The report of a data set that needed no cleaning (built-in and torchvision sets)."""
    first = next(iter(splits.values()))
    counts = {
        name: {
            classes[i]: int(n)
            for i, n in enumerate(np.bincount(s.labels.numpy(), minlength=len(classes)))
        }
        for name, s in splits.items()
    }
    total = sum(len(s) for s in splits.values())
    return DataReport(
        source=source,
        classes=list(classes),
        files_found=total,
        kept=total,
        image_size=(int(first.images.shape[2]), int(first.images.shape[3])),
        channels=int(first.images.shape[1]),
        size_rule="native",
        counts=counts,
        notes=split_notes(counts, list(classes)),
    )


def split_notes(counts: dict[str, dict[str, int]], classes: list[str]) -> list[str]:
    """Warnings about splits too small to measure with: a validation split so small that
    one image moves accuracy by whole points, and classes absent from val or test (a class
    of one or two images, say), whose accuracy is then never measured there. Neither is
    refused: the data is the user's, and the search still runs."""
    notes = []
    val = sum(counts["val"].values())
    if 0 < val < SMALL_VALIDATION * len(classes):
        notes.append(
            f"validation holds {val} images ({val / len(classes):.0f} a class): one image is "
            f"worth {100 / val:.1f} accuracy points, so trials closer than that are not told "
            f"apart; at least {SMALL_VALIDATION} a class is advised"
        )
    absent: dict[tuple[str, ...], list[str]] = {}
    for name in classes:
        missing = tuple(s for s in ("val", "test") if not counts[s].get(name))
        if missing:
            absent.setdefault(missing, []).append(name)
    for missing, names in absent.items():
        notes.append(_absent_note(missing, names, counts))
    return notes


UNMEASURED = {  # what a class missing from these splits loses: said of one, of several
    ("val", "test"): ("its accuracy is never measured", "their accuracy is never measured"),
    ("val",): ("it is never validated", "they are never validated"),
    ("test",): ("it is never tested", "they are never tested"),
}


def _absent_note(
    missing: tuple[str, ...], names: list[str], counts: dict[str, dict[str, int]]
) -> str:
    one, several = UNMEASURED[missing]
    advice = f"a class needs at least {CARVED_MINIMUM} images when val and test are carved from it"
    where = " or ".join(missing)
    if len(names) == 1:
        total = sum(counts[s].get(names[0], 0) for s in SPLITS)
        images = "image" if total == 1 else "images"
        return (
            f"class '{names[0]}' has no image in {where} ({total} {images} in all): {one}; {advice}"
        )
    shown = ", ".join(f"'{n}'" for n in names[:5]) + (" ..." if len(names) > 5 else "")
    return f"{len(names)} classes have no image in {where} ({shown}): {several}; {advice}"


def check_split_sizes(
    source: str, labels: Mapping[str, Collection[str]], classes: list[str]
) -> None:
    """Refuse, before anything is trained, data that cannot be split: an empty split, or a
    class with no training image (``labels``: each split's labels, or their counts).
    Carving val and test from train stratified takes one image of each class for each, so
    a class needs at least 3."""
    empty = [name for name in SPLITS if not labels[name]]
    if empty:
        raise ConfigError(
            f"--dataset {source}: too few images to split: the {' and '.join(empty)} "
            f"split{'s' if len(empty) > 1 else ''} would be empty; a class needs at least "
            "3 images when val and test are carved from train (or give train/, val/ and "
            "test/ folders)"
        )
    counts = Counter(labels["train"])
    untrained = [name for name in classes if not counts[name]]
    if untrained:
        raise ConfigError(
            f"--dataset {source}: class '{untrained[0]}' has no training image "
            f"({len(untrained)} such classes); every class needs images in train"
        )
