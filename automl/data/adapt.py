"""Fitting new data to an existing model: its image size, its channels and its class order.

Retraining, drift checks and promotion on a named split all score a registered model on
data it was not trained on; the data must then look like what the model takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from automl.data.core import SPLITS, ImageData, channel_stats
from automl.data.load import FOLDER_PREFIX, load_dataset
from automl.errors import ConfigError
from automl.records import VersionTags

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, what PIL's convert("L") uses


def _convert(images: Tensor, channels: int, chunk: int = 4096) -> Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor(LUMA).view(1, 3, 1, 1)
    out = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):  # no float copy of the whole split
        part = (images[start : start + chunk].float() * weights).sum(1, keepdim=True)
        out[start : start + chunk] = part.round().clamp(0, 255).to(torch.uint8)
    return out


def with_channels(data: ImageData, channels: int) -> ImageData:
    """Gray images repeated to RGB, or RGB reduced to gray; statistics recomputed."""
    if data.channels == channels:
        return data
    splits = {
        name: replace(getattr(data, name), images=_convert(getattr(data, name).images, channels))
        for name in SPLITS
    }
    mean, std = channel_stats(splits["train"].images)
    return replace(data, mean=mean, std=std, **splits)


def in_class_order(data: ImageData, classes: Sequence[str]) -> ImageData:
    """The same classes renumbered in ``classes``' order (which must hold them all)."""
    if data.classes == tuple(classes):
        return data
    order = list(classes)
    index = torch.tensor([order.index(name) for name in data.classes], dtype=torch.int64)
    splits = {
        name: replace(getattr(data, name), labels=index[getattr(data, name).labels])
        for name in SPLITS
    }
    return replace(data, classes=tuple(order), **splits)


def load_like(dataset: str, preprocess: dict[str, Any], data_dir: Path | None = None) -> ImageData:
    """``dataset`` loaded at the size and channels of the model ``preprocess`` describes."""
    height, width = (int(v) for v in preprocess["image_size"])
    size = height if dataset.startswith(FOLDER_PREFIX) and height == width else None
    data = load_dataset(dataset, data_dir, image_size=size)
    if data.image_size != (height, width):
        h, w = data.image_size
        raise ConfigError(
            f"--dataset {dataset}: its images are {h}x{w}; the model takes {height}x{width}"
        )
    return with_channels(data, int(preprocess["channels"]))


def class_change(data: ImageData, classes: Sequence[str]) -> str | None:
    """How the data's classes differ from a model's (None when they are the same set)."""
    missing = [c for c in classes if c not in data.classes]
    new = [c for c in data.classes if c not in classes]
    if not missing and not new:
        return None
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    if new:
        parts.append(f"new {', '.join(new[:10])}" + (" ..." if len(new) > 10 else ""))
    return "; ".join(parts)


def load_recorded(tags: dict[str, str], data_dir: Path | None = None) -> ImageData:
    """The data a registered version was trained on, from its ``dataset`` and
    ``dataset_options`` tags, loaded the same way (same size, group level, channels and
    class order)."""
    recorded = VersionTags.of(tags)
    if recorded.dataset is None:
        raise ConfigError("the version does not record the data it was trained on (tag 'dataset')")
    options = recorded.dataset_options
    data = load_dataset(
        recorded.dataset,
        data_dir,
        image_size=options.get("image_size"),
        group_level=bool(options.get("group_level", False)),
    )
    if options.get("channels"):  # a retrain adapted the data to its parent model
        data = with_channels(data, int(options["channels"]))
    classes = options.get("classes")
    if classes and sorted(classes) == sorted(data.classes):
        data = in_class_order(data, classes)
    return data
