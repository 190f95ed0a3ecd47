"""Data sets: built-in, torchvision formats and the user's own image folders.

``load_dataset(name)`` gives an ``ImageData``: uint8 train/val/test splits, class names,
training-split statistics and a ``DataReport`` of what loading found and did;
``load_recorded`` reloads the data a registered version was trained on.
"""

from automl.data.adapt import load_recorded
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
from automl.data.load import (
    DATASET_NAMES,
    DEFAULT_DATA_DIR,
    FOLDER_PREFIX,
    check_dataset_name,
    load_dataset,
)

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_DATA_DIR",
    "FOLDER_PREFIX",
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
