"""Images for the benchmarks and how a plain model is scored on them, with nothing of automl
imported: CIFAR-10's JPEG photos unpacked once and cut to stratified subsets (the data of
cifar_budget.py and photo_goal.py), and the accuracy of a PyTorch model (the hand-written
references of photo_goal.py and time_to_quality.py). A reference process that imports this
module runs as a user's own script would, without automl's settings.

Scripts import it as a sibling module: ``from _photos import ARCHIVE, subset, unpack``.
"""

from __future__ import annotations

import os
import random
import tarfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parent.parent
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def unpack(scratch: Path, source: Path = ARCHIVE) -> Path:
    """The archive's folder under ``scratch``, unpacked on the first call only: its 60,000
    files take a while to write, and every later run reuses them."""
    root = scratch / "cifar10-jpg"
    if not (root / "test").is_dir():
        scratch.mkdir(parents=True, exist_ok=True)
        with tarfile.open(source) as archive:
            archive.extractall(scratch, filter="data")
    return root


def subset(root: Path, per_class: int, test_per_class: int, seed: int = 0) -> Path:
    """A stratified subset as a folder of hard links (the same files, no copies)."""
    if per_class == 0 and test_per_class == 0:
        return root
    folder = root.parent / f"cifar10-{per_class or 'all'}-{test_per_class or 'all'}"
    if folder.is_dir():
        return folder
    rng = random.Random(seed)
    for split, keep in (("train", per_class), ("test", test_per_class)):
        for class_dir in sorted((root / split).iterdir()):
            files = sorted(class_dir.iterdir())
            rng.shuffle(files)
            target = folder / split / class_dir.name
            target.mkdir(parents=True)
            for file in files[: keep or None]:
                os.link(file, target / file.name)
    return folder


def accuracy(model: nn.Module, dataset: TensorDataset) -> float:
    """The share of ``dataset`` the model classifies right, measured the way a user's own
    loop would (eval mode, a DataLoader, no automl), for the hand-written references."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=512):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / len(dataset)
