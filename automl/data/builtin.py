"""Named data sets: scikit-learn's digits and the classic torchvision sets.

The torchvision sets are read from their own on-disk formats (idx files, CIFAR pickle
batches, SVHN .mat files) under ``--data-dir``, in the folders torchvision uses. When the
files are missing, torchvision downloads them if the network allows; offline, the error
names the data set and the folder that was searched. The official test split is the
test split; validation is carved from the training split, stratified and seeded.
"""

from __future__ import annotations

import pickle
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from automl.data.core import (
    ImageData,
    Split,
    channel_stats,
    simple_report,
    split_three,
    stratified_indices,
    take,
)
from automl.errors import ConfigError

TORCHVISION_VAL_SHARE = 0.1
DOWNLOAD_TIMEOUT = 30.0


def digits(data_dir: Path) -> ImageData:
    """scikit-learn's 1,797 real 8x8 handwritten digits, shipped with the package."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; stretch to the usual 0..255 range of an 8-bit image.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    classes = tuple(str(c) for c in bunch.target_names)
    return _assemble("digits", classes, split_three(images, labels), "sklearn.datasets.load_digits")


def _assemble(
    name: str, classes: tuple[str, ...], splits: tuple[Split, Split, Split], source: str
) -> ImageData:
    train, val, test = splits
    mean, std = channel_stats(train.images)
    report = simple_report(source, classes, {"train": train, "val": val, "test": test})
    return ImageData(name, classes, train, val, test, mean, std, source, report)


def _from_official(
    name: str,
    classes: tuple[str, ...],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    source: str,
) -> ImageData:
    """Official train/test arrays (N, C, H, W); validation carved from train."""
    for part, (_, labels) in (("train", train), ("test", test)):
        _check_labels(name, labels, len(classes), f"the {part} split ({source})")
    images, labels = train
    keep, val = stratified_indices(labels, (TORCHVISION_VAL_SHARE,))
    splits = (
        take(images, labels, keep),
        take(images, labels, val),
        take(test[0], test[1], np.arange(len(test[1]))),
    )
    return _assemble(name, classes, splits, source)


def _check_labels(name: str, labels: np.ndarray, classes: int, where: str) -> None:
    """Every label must name a class: one beyond them would fail deep inside training."""
    bad = labels[(labels < 0) | (labels >= classes)]
    if bad.size:
        raise ConfigError(
            f"--dataset {name}: label {int(bad[0])} in {where}, beyond the {classes} classes"
        )


def _download(name: str, folder: Path, fetch: Callable[[], Any]) -> None:
    """Let torchvision fetch the files; offline this fails fast and says where we looked."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        fetch()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"--dataset {name}: its files are not in {folder} and downloading them failed "
            f"({reason}); copy the files there or run once with network access"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


# ---------------------------------------------------------------- MNIST family (idx files)

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _mnist_like(
    name: str, folder_name: str, classes: tuple[str, ...]
) -> Callable[[Path], ImageData]:
    def load(data_dir: Path) -> ImageData:
        import torchvision.datasets as tvd
        from torchvision.datasets.mnist import read_image_file, read_label_file

        raw = data_dir / folder_name / "raw"
        needed = [raw / f for pair in MNIST_FILES.values() for f in pair]
        if not all(p.exists() for p in needed):
            dataset = getattr(tvd, folder_name)
            _download(
                name,
                raw,
                lambda: [dataset(str(data_dir), train=t, download=True) for t in (True, False)],
            )
        arrays = {}
        for split, (image_file, label_file) in MNIST_FILES.items():
            try:
                images = read_image_file(str(raw / image_file)).numpy()[:, None]
                labels = read_label_file(str(raw / label_file)).numpy().astype(np.int64)
            except (OSError, AssertionError, ValueError, RuntimeError) as exc:
                raise ConfigError(
                    f"--dataset {name}: cannot read {raw / image_file}: {exc}"
                ) from None
            arrays[split] = (np.ascontiguousarray(images), labels)
        return _from_official(
            name, classes, arrays["train"], arrays["test"], f"torchvision {folder_name} ({raw})"
        )

    return load


# ---------------------------------------------------------------- CIFAR (pickle batches)


ARRAY_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _ArrayUnpickler(pickle.Unpickler):
    """Reads CIFAR batches while refusing every class but numpy arrays: no code runs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_batch(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        data = _ArrayUnpickler(handle, encoding="latin1").load()
    if not isinstance(data, dict):
        raise ValueError(f"expected a dictionary, found a {type(data).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


BATCH_ERRORS = (OSError, KeyError, ValueError, TypeError, pickle.UnpicklingError, EOFError)


def _class_names(batch: dict[str, Any], key: str) -> tuple[str, ...]:
    names = batch[key]
    if not isinstance(names, list | tuple) or not names:
        raise ValueError(f"{key} is not a list of names")
    if not all(isinstance(c, str | bytes) for c in names):
        raise ValueError(f"{key} is not a list of names")
    return tuple(c.decode() if isinstance(c, bytes) else c for c in names)


def _cifar(
    name: str, folder_name: str, files: tuple[list[str], str, str], keys: tuple[str, str]
) -> Callable[[Path], ImageData]:
    """``files``: train batches, test batch, meta file; ``keys``: label key, class-name key."""
    train_files, test_file, meta_file = files
    label_key, names_key = keys

    def load(data_dir: Path) -> ImageData:
        import torchvision.datasets as tvd

        folder = data_dir / folder_name
        if not all((folder / f).exists() for f in [*train_files, test_file, meta_file]):
            dataset = tvd.CIFAR100 if name == "cifar100" else tvd.CIFAR10
            _download(name, folder, lambda: dataset(str(data_dir), train=True, download=True))
        try:
            classes = _class_names(_read_batch(folder / meta_file), names_key)
        except BATCH_ERRORS as exc:
            raise ConfigError(
                f"--dataset {name}: cannot read {folder / meta_file}: {exc}"
            ) from None

        def read(batches: list[str]) -> tuple[np.ndarray, np.ndarray]:
            images, labels = [], []
            for file in batches:
                try:
                    batch = _read_batch(folder / file)
                    images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                    labels.append(np.asarray(batch[label_key], dtype=np.int64).reshape(-1))
                    if len(labels[-1]) != len(images[-1]):
                        raise ValueError(f"{len(images[-1])} images, {len(labels[-1])} labels")
                except BATCH_ERRORS as exc:
                    raise ConfigError(
                        f"--dataset {name}: cannot read {folder / file}: {exc}"
                    ) from None
                _check_labels(name, labels[-1], len(classes), file)
            return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)

        return _from_official(
            name, classes, read(train_files), read([test_file]), f"{folder_name} ({folder})"
        )

    return load


# ---------------------------------------------------------------- SVHN (.mat files)


def svhn(data_dir: Path) -> ImageData:
    import torchvision.datasets as tvd
    from scipy.io import loadmat

    folder = data_dir / "svhn"
    files = {"train": folder / "train_32x32.mat", "test": folder / "test_32x32.mat"}
    if not all(p.exists() for p in files.values()):
        _download(
            "svhn",
            folder,
            lambda: [tvd.SVHN(str(folder), split=s, download=True) for s in ("train", "test")],
        )
    arrays = {}
    for split, path in files.items():
        try:
            mat = loadmat(str(path))
        except (OSError, ValueError, NotImplementedError) as exc:
            raise ConfigError(f"--dataset svhn: cannot read {path}: {exc}") from None
        images = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.uint8))
        labels = mat["y"].astype(np.int64).reshape(-1) % 10  # the digit 0 is stored as 10
        arrays[split] = (images, labels)
    classes = tuple(str(i) for i in range(10))
    return _from_official("svhn", classes, arrays["train"], arrays["test"], f"SVHN ({folder})")


FASHION = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
KMNIST = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
DIGIT_NAMES = tuple(str(i) for i in range(10))

BUILTIN: dict[str, Callable[[Path], ImageData]] = {
    "digits": digits,
    "mnist": _mnist_like("mnist", "MNIST", DIGIT_NAMES),
    "fashion-mnist": _mnist_like("fashion-mnist", "FashionMNIST", FASHION),
    "kmnist": _mnist_like("kmnist", "KMNIST", KMNIST),
    "cifar10": _cifar(
        "cifar10", "cifar-10-batches-py",
        ([f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta"),
        ("labels", "label_names"),
    ),
    "cifar100": _cifar(
        "cifar100", "cifar-100-python", (["train"], "test", "meta"),
        ("fine_labels", "fine_label_names"),
    ),
    "svhn": svhn,
}  # fmt: skip
