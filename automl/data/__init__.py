"""Data sets: built-in, torchvision formats and the user's own image folders.

``load_dataset(name)`` gives an ``ImageData``: uint8 train/val/test splits, class names,
training-split statistics and a ``DataReport`` of what loading found and did.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from automl.data.builtin import BUILTIN
from automl.data.core import (
    SPLITS,
    DataReport,
    ImageData,
    Split,
    channel_stats,
    split_digest,
    split_three,
    stratified_indices,
)
from automl.errors import ConfigError, unknown_name

FOLDER_PREFIX = "imagefolder:"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "automl" / "data"
DATASET_NAMES = (*BUILTIN, f"{FOLDER_PREFIX}PATH")

__all__ = [
    "DATASET_NAMES",
    "SPLITS",
    "DataReport",
    "ImageData",
    "Split",
    "channel_stats",
    "check_dataset_name",
    "load_dataset",
    "load_recorded",
    "split_digest",
    "split_three",
    "stratified_indices",
]


def load_recorded(tags: dict[str, str], data_dir: Path | None = None) -> ImageData:
    """The data a registered version was trained on, from its ``dataset`` and
    ``dataset_options`` tags, loaded the same way (same size, group level, channels and
    class order)."""
    from automl.data.adapt import in_class_order, with_channels  # adapt builds on this module

    options = json.loads(tags.get("dataset_options") or "{}")
    data = load_dataset(
        tags["dataset"],
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


def check_dataset_name(name: str) -> None:
    """A name we know, or ``imagefolder:PATH``; the closest name is suggested for typos."""
    if name.startswith(FOLDER_PREFIX):
        if not name[len(FOLDER_PREFIX) :].strip():
            raise ConfigError("--dataset: imagefolder needs a path: imagefolder:PATH")
        return
    if name not in BUILTIN:
        if name == "imagefolder":
            raise ConfigError("--dataset: give the folder as imagefolder:PATH")
        raise ConfigError(f"--dataset: {unknown_name('dataset', name, DATASET_NAMES)}")


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    *,
    image_size: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    group_level: bool = False,
) -> ImageData:
    """``group_level``: an image folder laid out as ``<group>/<class>/...`` (fairness by group)."""
    check_dataset_name(name)
    folder = (data_dir or DEFAULT_DATA_DIR).expanduser()
    if name.startswith(FOLDER_PREFIX):
        from automl.data.folder import load_folder

        root = Path(name[len(FOLDER_PREFIX) :]).expanduser()
        data = load_folder(root, folder, image_size, progress, group_level=group_level)
        return replace(data, spec=f"{FOLDER_PREFIX}{root.resolve()}")
    if group_level:
        raise ConfigError("--group-level: applies to image folders (imagefolder:PATH) only")
    data = replace(BUILTIN[name](folder), spec=name)
    if image_size is not None and data.image_size != (image_size, image_size):
        raise ConfigError(
            f"--image-size: {name} images are {data.image_size[0]}x{data.image_size[1]}; "
            "resizing applies to image folders only"
        )
    return data
