"""Data sets as compact uint8 tensors with fixed, stratified train/val/test splits.

The split seed is fixed (not the search seed) so every search, and every later
evaluation of a registered model, sees the same test split. Normalisation statistics
come from the training split alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor

from automl.errors import ConfigError, unknown_name

SPLIT_SEED = 0
VAL_SHARE = 0.15
TEST_SHARE = 0.15


@dataclass(frozen=True)
class Split:
    images: Tensor  # uint8, (N, C, H, W)
    labels: Tensor  # int64, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def hwc(self) -> np.ndarray:
        """Images as a uint8 ``(N, H, W, C)`` array: what a registered model takes."""
        return self.images.permute(0, 2, 3, 1).contiguous().numpy()


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
        sha.update(split.images.numpy().tobytes())
        sha.update(split.labels.numpy().tobytes())
    return sha.hexdigest()[:16]


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def split_stratified(
    images: np.ndarray, labels: np.ndarray, *, seed: int = SPLIT_SEED
) -> tuple[Split, Split, Split]:
    """Carve train/val/test with every class in the same proportion in each."""
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=TEST_SHARE, stratify=labels, random_state=seed)
    val_share = VAL_SHARE / (1.0 - TEST_SHARE)
    train, val = train_test_split(
        rest, test_size=val_share, stratify=labels[rest], random_state=seed
    )

    def take(ix: np.ndarray) -> Split:
        ix = np.sort(ix)
        return Split(torch.from_numpy(images[ix]).contiguous(), torch.from_numpy(labels[ix]).long())

    return take(train), take(val), take(test)


def _digits(data_dir: Path) -> ImageData:
    """scikit-learn's 1,797 real 8x8 handwritten digits, shipped with the package."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; stretch to the usual 0..255 range of an 8-bit image.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    train, val, test = split_stratified(images, labels)
    mean, std = channel_stats(train.images)
    classes = tuple(str(c) for c in bunch.target_names)
    return ImageData("digits", classes, train, val, test, mean, std, "sklearn.datasets.load_digits")


DATASETS: dict[str, Callable[[Path], ImageData]] = {"digits": _digits}


def check_dataset_name(name: str) -> None:
    if name not in DATASETS:
        raise ConfigError(f"--dataset: {unknown_name('dataset', name, DATASETS)}")


def load_dataset(name: str, data_dir: Path | None = None) -> ImageData:
    check_dataset_name(name)
    return DATASETS[name](data_dir or Path.home() / ".cache" / "automl" / "data")
