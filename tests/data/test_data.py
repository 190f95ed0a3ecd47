"""Data loading for real: image folders with every kind of flaw, the cache, torchvision formats."""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from automl.data import load_dataset, split_digest
from automl.errors import ConfigError
from automl.serving.automl_serving import prepare, to_tensor


def image(seed: int, size=(16, 16), mode="L") -> Image.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array).convert(mode)


def seed_of(label: str, index: int) -> int:
    """A distinct seed for each (label, index), the same in every process (``hash`` of a
    string is salted per process, and its remainders collided now and then: duplicates)."""
    return int.from_bytes(label.encode()) * 1000 + index


def save(img: Image.Image, path: Path, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """Three classes with a corrupt file, a non-image, a duplicate across classes, an exact
    duplicate, a file outside any class, and mixed sizes and modes."""
    root = tmp_path / "messy"
    for i in range(5):
        save(image(i), root / "cat" / f"c{i}.png")
        save(image(100 + i), root / "dog" / f"d{i}.png")
        save(image(200 + i), root / "fish" / f"f{i}.png")
    save(image(2, (20, 12), "RGB"), root / "cat" / "c2.png", "JPEG")  # other size and mode
    save(image(3, (16, 16), "RGBA"), root / "cat" / "c3.png")
    save(image(4, (24, 24), "P"), root / "cat" / "c4.png")
    good = (root / "cat" / "c0.png").read_bytes()
    (root / "cat" / "broken.png").write_bytes(good[: len(good) // 2])
    (root / "dog" / "readme.txt").write_text("not an image")
    shared = save(image(999), root / "cat" / "dup-x.png").read_bytes()
    (root / "dog" / "dup-x.png").write_bytes(shared)
    (root / "fish" / "f0-copy.png").write_bytes((root / "fish" / "f0.png").read_bytes())
    (root / "notes.txt").write_text("loose")
    return root


@pytest.mark.hostile("data")
def test_messy_folder_report(messy, tmp_path):
    data = load_dataset(f"imagefolder:{messy}", tmp_path / "cache")
    report = data.report
    assert data.classes == ("cat", "dog", "fish")
    assert report.files_found == 21
    assert report.kept == 15
    dropped = report.dropped
    assert dropped["outside class folders"] == ["notes.txt"]
    assert dropped["not an image"] == ["dog/readme.txt"]
    assert dropped["label conflict"] == [
        "cat/dup-x.png (also under dog)",
        "dog/dup-x.png (also under cat)",
    ]
    assert dropped["duplicate"] == ["fish/f0-copy.png (same as fish/f0.png)"]
    assert len(dropped["damaged"]) == 1 and dropped["damaged"][0].startswith("cat/broken.png (")
    assert report.image_size == (16, 16) and report.size_rule.startswith("median")
    assert report.channels == 3  # a color image is present: every image gets 3 channels
    totals = {c: sum(report.counts[s][c] for s in report.counts) for c in data.classes}
    assert totals == {"cat": 5, "dog": 5, "fish": 5}
    for split in ("val", "test"):
        assert all(n >= 1 for n in report.counts[split].values())
    assert len(data.train) + len(data.val) + len(data.test) == 15
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 16, 16)


def test_given_splits_are_kept_and_a_duplicate_never_sits_in_two(tmp_path):
    root = tmp_path / "split"
    for i in range(4):
        save(image(i), root / "train" / "cat" / f"a{i}.png")
        save(image(50 + i), root / "train" / "dog" / f"b{i}.png")
    leak = save(image(77), root / "train" / "cat" / "leak.png").read_bytes()
    (root / "test" / "cat").mkdir(parents=True)
    (root / "test" / "cat" / "leak-again.png").write_bytes(leak)
    save(image(78), root / "test" / "cat" / "t-cat1.png")
    save(image(79), root / "test" / "dog" / "t-dog0.png")
    report = load_dataset(f"imagefolder:{root}", tmp_path / "cache").report
    assert report.counts == {
        "train": {"cat": 3, "dog": 3},
        "val": {"cat": 1, "dog": 1},
        "test": {"cat": 2, "dog": 1},
    }
    assert report.dropped == {"duplicate": ["train/cat/leak.png (same as test/cat/leak-again.png)"]}
    assert report.size_rule.startswith("native")
    assert report.channels == 1


def test_splits_are_identical_across_loads_and_the_cache_is_reused(messy, tmp_path):
    first = load_dataset(f"imagefolder:{messy}", tmp_path / "cache")
    assert first.report.decoded == 16  # 15 kept + the broken one, found while decoding
    second = load_dataset(f"imagefolder:{messy}", tmp_path / "cache")
    assert second.report.decoded == 0
    assert second.digest() == first.digest()
    assert split_digest(second.test) == split_digest(first.test)
    assert mapped_from(second.train.images.data_ptr()).endswith("images.npy"), (
        "the split is a view of the memory-mapped cache file, not a copy"
    )


def mapped_from(address: int) -> str:
    """The file mapped at ``address`` in this process (Linux), or ''."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps")
    for line in maps.read_text().splitlines():
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) > 5 else ""
    return ""


def test_a_changed_file_or_size_invalidates_the_cache(messy, tmp_path):
    first = load_dataset(f"imagefolder:{messy}", tmp_path / "cache")
    save(image(4242), messy / "dog" / "d1.png")
    os.utime(messy / "dog" / "d1.png", ns=(1, 1))
    changed = load_dataset(f"imagefolder:{messy}", tmp_path / "cache")
    assert changed.report.decoded > 0
    assert changed.digest() != first.digest()
    resized = load_dataset(f"imagefolder:{messy}", tmp_path / "cache", image_size=8)
    assert resized.report.decoded > 0 and resized.image_size == (8, 8)
    assert resized.report.size_rule == "--image-size 8"


def test_cached_pixels_are_exactly_what_the_served_model_computes(tmp_path):
    root = tmp_path / "one"
    sizes = {"a": (30, 22), "b": (16, 16)}
    for label, size in sizes.items():
        for i in range(3):
            save(image(seed_of(label, i), size, "RGB"), root / label / f"{i}.jpg", "JPEG")
    data = load_dataset(f"imagefolder:{root}", tmp_path / "cache", image_size=12)
    decoded = np.asarray(Image.open(root / "a" / "0.jpg").convert("RGB"))
    stored = prepare(decoded, 3, (12, 12))
    everything = torch.cat([data.train.images, data.val.images, data.test.images])
    assert any(torch.equal(torch.from_numpy(stored), img) for img in everything)
    pre = {"channels": 3, "image_size": [12, 12], "mean": [0.0] * 3, "std": [1.0] * 3}
    served = to_tensor([decoded], pre)[0] * 255.0
    torch.testing.assert_close(served, torch.from_numpy(stored).float(), atol=1e-3, rtol=0)


@pytest.mark.hostile("data")
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "no class folder holds any file"),
        (lambda root: save(image(1), root / "only" / "a.png"), "needs at least two class folders"),
        (
            lambda root: (save(image(1), root / "a" / "x.png"), (root / "b").mkdir(),
                          (root / "b" / "y.png").write_text("junk")),
            "class folder 'b' has no readable image",
        ),
        (
            lambda root: (save(image(1, (2, 2)), root / "a" / "x.png"),
                          save(image(2, (2, 2)), root / "b" / "y.png")),
            "too small to learn from",
        ),
        (
            lambda root: (save(image(1), root / "train" / "a" / "x.png"),
                          save(image(2), root / "b" / "y.png")),
            "mixes split folders",
        ),
    ],
)  # fmt: skip
def test_bad_folders_are_one_clear_config_error(tmp_path, make, message):
    root = tmp_path / "bad"
    make(root)
    with pytest.raises(ConfigError, match=message) as info:
        load_dataset(f"imagefolder:{root}", tmp_path / "cache")
    assert str(info.value).startswith(f"--dataset imagefolder:{root}")


@pytest.mark.hostile("data")
def test_symlink_loops_are_walked_once(tmp_path):
    root = tmp_path / "loop"
    for label in ("a", "b"):
        for i in range(4):
            save(image(seed_of(label, i)), root / label / f"{i}.png")
    (root / "a" / "again").symlink_to(root / "a", target_is_directory=True)
    (root / "b" / "up").symlink_to(root, target_is_directory=True)
    report = load_dataset(f"imagefolder:{root}", tmp_path / "cache").report
    assert report.kept == 8


@pytest.mark.hostile("data")
@pytest.mark.slow
def test_a_folder_of_20k_tiny_files_fails_fast_and_clearly(tmp_path):
    root = tmp_path / "tiny"
    for label in ("a", "b"):
        folder = root / label
        folder.mkdir(parents=True)
        for i in range(10_000):
            (folder / f"{i}.png").write_bytes(b"\0")
    with pytest.raises(ConfigError, match="class folder 'a' has no readable image"):
        load_dataset(f"imagefolder:{root}", tmp_path / "cache")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cifar-10", "did you mean 'cifar10'?"),
        ("imagefolder", "imagefolder:PATH"),
        ("mnst", "'mnist'"),
    ],
)
def test_dataset_typos_suggest_the_closest_name(name, message):
    with pytest.raises(ConfigError, match=message):
        load_dataset(name)


# ---------------------------------------------------------------- torchvision formats


def write_idx(folder: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
    for split, (image_file, label_file) in names.items():
        x, y = images[split], labels[split]
        (folder / image_file).write_bytes(struct.pack(">IIII", 2051, len(x), 28, 28) + x.tobytes())
        (folder / label_file).write_bytes(
            struct.pack(">II", 2049, len(y)) + y.astype(np.uint8).tobytes()
        )


def fake_split(n: int, shape: tuple[int, ...], seed: int, classes: int = 10):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8), np.arange(n) % classes


@pytest.mark.parametrize(
    ("name", "folder", "first_class"),
    [
        ("mnist", "MNIST", "0"),
        ("fashion-mnist", "FashionMNIST", "T-shirt/top"),
        ("kmnist", "KMNIST", "o"),
    ],
)
def test_mnist_family_from_idx_files(tmp_path, name, folder, first_class):
    train, test = fake_split(40, (28, 28), 0), fake_split(20, (28, 28), 1)
    write_idx(
        tmp_path / folder / "raw",
        {"train": train[0], "test": test[0]},
        {"train": train[1], "test": test[1]},
    )
    data = load_dataset(name, tmp_path)
    assert data.classes[0] == first_class and data.num_classes == 10
    assert data.image_size == (28, 28) and data.channels == 1
    assert len(data.train) + len(data.val) == 40 and len(data.val) == 10
    assert torch.equal(data.test.images[:, 0], torch.from_numpy(test[0]))
    assert data.test.labels.tolist() == test[1].tolist()


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def test_cifar10_from_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        x, y = fake_split(10, (3072,), i)
        write_pickle(folder / f"data_batch_{i}", {"data": x, "labels": y.tolist()})
    tx, ty = fake_split(10, (3072,), 9)
    write_pickle(folder / "test_batch", {"data": tx, "labels": ty.tolist()})
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    write_pickle(folder / "batches.meta", {"label_names": names})
    data = load_dataset("cifar10", tmp_path)
    assert list(data.classes) == names
    assert data.image_size == (32, 32) and data.channels == 3
    assert len(data.train) + len(data.val) == 50 and len(data.test) == 10
    assert torch.equal(data.test.images.reshape(10, -1), torch.from_numpy(tx))


@pytest.mark.hostile("security")
def test_cifar100_from_pickle_files_and_no_code_runs(tmp_path):
    folder = tmp_path / "cifar-100-python"
    x, y = fake_split(200, (3072,), 0, classes=100)
    write_pickle(folder / "train", {"data": x, "fine_labels": y.tolist()})
    tx, ty = fake_split(100, (3072,), 1, classes=100)
    write_pickle(folder / "test", {"data": tx, "fine_labels": ty.tolist()})
    write_pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    data = load_dataset("cifar100", tmp_path)
    assert data.num_classes == 100 and len(data.test) == 100

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    write_pickle(folder / "test", {"data": Exploit(), "fine_labels": []})
    with pytest.raises(ConfigError, match="refusing to load"):
        load_dataset("cifar100", tmp_path)
    assert not Path("pwned").exists()


def test_svhn_from_mat_files(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "svhn"
    folder.mkdir()
    for split, n, seed in (("train", 30, 0), ("test", 10, 1)):
        x, y = fake_split(n, (32, 32, 3), seed)
        labels = np.where(y == 0, 10, y)  # SVHN stores the digit 0 as 10
        savemat(
            folder / f"{split}_32x32.mat",
            {"X": np.transpose(x, (1, 2, 3, 0)), "y": labels[:, None]},
        )
    data = load_dataset("svhn", tmp_path)
    assert data.test.labels.tolist() == (np.arange(10) % 10).tolist()
    assert data.image_size == (32, 32) and data.channels == 3


def test_missing_files_offline_name_the_data_set_and_folder(tmp_path):
    import socket

    try:
        socket.getaddrinfo("ossci-datasets.s3.amazonaws.com", 443)
        pytest.skip("the network is reachable here: the data set would be downloaded")
    except OSError:
        pass
    with pytest.raises(ConfigError) as info:
        load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert message.startswith("--dataset mnist: its files are not in")
    assert str(tmp_path / "MNIST" / "raw") in message


def test_encoded_png_roundtrip_helper():
    buffer = io.BytesIO()
    image(5).save(buffer, format="PNG")
    assert buffer.getvalue()[:4] == b"\x89PNG"


@pytest.mark.hostile("data")
@pytest.mark.parametrize(
    ("per_class", "message"), [(1, "the val and test splits"), (2, "the test split")]
)
def test_a_folder_too_small_to_split_is_refused_before_decoding(tmp_path, per_class, message):
    root = tmp_path / "few"
    for label in ("a", "b", "c"):
        for i in range(per_class):
            save(image(ord(label) * 10 + i), root / label / f"{i}.png")
    with pytest.raises(ConfigError, match=f"too few images to split: {message}"):
        load_dataset(f"imagefolder:{root}", tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("folder-*"))  # nothing decoded or cached


def test_three_images_a_class_is_enough_to_split(tmp_path):
    root = tmp_path / "three"
    for label in ("a", "b"):
        for i in range(3):
            save(image(ord(label) * 10 + i), root / label / f"{i}.png")
    data = load_dataset(f"imagefolder:{root}", tmp_path / "cache")
    assert (len(data.train), len(data.val), len(data.test)) == (2, 2, 2)
