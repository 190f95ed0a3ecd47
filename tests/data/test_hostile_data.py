"""Data tried as a hostile user would: every pixel depth and mode, special files, a cache
built twice at once, a full or read-only --data-dir, rotated photos, broken CIFAR files,
classes too small to measure."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pickle
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from automl.cli.display import print_data_report
from automl.data import ImageData, load_dataset
from automl.data.cache import scratch, write_rows
from automl.data.folder import load_folder
from automl.errors import ConfigError
from automl.serving.automl_serving import ImageInputError, decode_image

HOSTILE_DATA = pytest.mark.hostile("data")


def noise(seed: int, size: tuple[int, int] = (12, 12), mode: str = "L") -> Image.Image:
    """Random pixels: every image distinct, and poorly compressed (truncation hurts it)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(
        mode
    )


def folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 12)) -> Path:
    """``root/<class>/<i>.png`` with ``counts[class]`` distinct noise images each."""
    for n, (label, count) in enumerate(counts.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            noise(1000 * n + i, size).save(root / label / f"{i}.png")
    return root


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def cache_folders(data_dir: Path) -> list[str]:
    """What lies in the cache folder besides the manifests: caches, and any temporary."""
    return sorted(p.name for p in (data_dir / "cache").iterdir() if "manifest" not in p.name)


def everything(data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.cat([data.train.images, data.val.images, data.test.images])
    labels = torch.cat([data.train.labels, data.val.labels, data.test.labels])
    return images, labels


# ---------------------------------------------------------------- pixel depths and modes


@HOSTILE_DATA
def test_16_bit_gray_images_are_rescaled_not_clipped_to_white(tmp_path):
    root = tmp_path / "depth"
    rng = np.random.default_rng(0)
    for label, (low, high) in {"dim": (1000, 20000), "bright": (40000, 65000)}.items():
        (root / label).mkdir(parents=True)
        for i in range(4):
            values = rng.integers(low, high, (10, 10)).astype(np.uint16)
            Image.fromarray(values).save(root / label / f"{i}.png")  # mode I;16
    data = load_folder(root, tmp_path / "data")
    images, labels = everything(data)
    dim, bright = data.classes.index("dim"), data.classes.index("bright")
    assert images[labels == dim].max() <= round(20000 / 257) + 1
    assert images[labels == dim].min() >= round(1000 / 257) - 1
    assert images[labels == bright].min() >= round(40000 / 257) - 1
    assert (images != 255).any(), "every pixel clipped to white"


HIGH_DEPTH = {
    # (PIL mode, numpy dtype, format, the value range of the file, the range that maps to 0..255)
    "16-bit PNG": ("I;16", np.uint16, "PNG", (0, 65535), 65535),
    "16-bit big-endian TIFF": ("I;16B", ">u2", "TIFF", (300, 60000), 65535),
    "16-bit PGM (read as 32-bit)": ("I;16", np.uint16, "PPM", (0, 65535), 65535),
    "32-bit integer TIFF": ("I", np.int32, "TIFF", (1000, 65000), 65535),
    "float TIFF 0..1": ("F", np.float32, "TIFF", (0.0, 1.0), 1.0),
    "float TIFF 0..255": ("F", np.float32, "TIFF", (0.0, 255.0), 255.0),
}


@HOSTILE_DATA
@pytest.mark.parametrize("case", sorted(HIGH_DEPTH))
def test_every_high_depth_gray_mode_is_rescaled_by_its_depth(case):
    mode, dtype, fmt, (low, high), top = HIGH_DEPTH[case]
    values = np.linspace(low, high, 48).reshape(6, 8).astype(dtype)
    image = Image.fromarray(values) if mode != "I;16B" else Image.frombytes(
        mode, (8, 6), values.tobytes()
    )  # fmt: skip
    decoded = decode_image(encoded(image, fmt))
    expected = np.rint(values.astype(np.float64) * (255.0 / top))
    assert decoded.dtype == np.uint8 and decoded.shape == (6, 8, 1)
    assert np.abs(decoded[..., 0].astype(np.int64) - expected).max() <= 1


@HOSTILE_DATA
@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([[-5, 100], [200, 300]], dtype=np.int32), r"-5\.\.300, outside 0\.\.65535"),
        (np.array([[0, 70000], [5, 9]], dtype=np.int32), r"0\.\.70000, outside 0\.\.65535"),
        (np.array([[0.0, 300.5], [1, 2]], dtype=np.float32), r"0\.\.300\.5, outside 0\.\.255"),
        (np.array([[-0.5, 0.5], [0, 1]], dtype=np.float32), r"outside 0\.\.1"),
        (np.array([[np.nan, 0.5], [0, 1]], dtype=np.float32), "not numbers"),
    ],
)
def test_pixels_beyond_their_depth_are_refused_in_one_line(values, message):
    with pytest.raises(ImageInputError, match=message) as info:
        decode_image(encoded(Image.fromarray(values), "TIFF"))
    assert "\n" not in str(info.value)


SAVABLE_MODES = [  # every mode Pillow writes, in a format that keeps it
    ("1", "PNG"), ("L", "PNG"), ("P", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"),
    ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("YCbCr", "TIFF"), ("LAB", "TIFF"), ("PA", "TIFF"),
    ("I", "TIFF"), ("F", "TIFF"), ("I;16", "PNG"), ("I;16B", "TIFF"), ("I;16L", "TIFF"),
    ("RGBX", "TIFF"), ("P", "GIF"), ("RGB", "WEBP"), ("L", "JPEG"), ("RGB", "BMP"),
]  # fmt: skip


@HOSTILE_DATA
@pytest.mark.parametrize(("mode", "fmt"), SAVABLE_MODES)
def test_every_pil_mode_decodes_to_8_bit_gray_or_color_without_losing_the_picture(mode, fmt):
    """A half-bright image stays half bright, whatever the mode that stores it."""
    gray = np.full((6, 8), 128, dtype=np.uint8)
    gray[:, :4] = 0
    source = Image.fromarray(gray)
    if mode == "1":
        source = source.point(lambda v: 255 if v else 0).convert("1")
    elif mode == "I":
        source = Image.fromarray(gray.astype(np.int32) * 257)
    elif mode.startswith("I;16"):
        order = ">" if mode == "I;16B" else "<"
        source = Image.frombytes(mode, (8, 6), (gray.astype(f"{order}u2") * 257).tobytes())
    elif mode == "F":
        source = Image.fromarray(gray.astype(np.float32) / 255.0)
    else:
        source = source.convert(mode)
    decoded = decode_image(encoded(source, fmt))
    assert decoded.dtype == np.uint8 and decoded.shape[:2] == (6, 8)
    brightness = decoded.astype(np.float64).mean(axis=2)
    assert brightness[:, 4:].mean() > brightness[:, :4].mean() + 60, mode


@HOSTILE_DATA
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_in_training_and_prediction(tmp_path, orientation):
    """A phone photo stored sideways with an orientation tag is seen upright, at the
    upright size, by the cache and by prediction alike."""
    upright = np.zeros((8, 12), dtype=np.uint8)  # 12 wide, 8 high: white top half
    upright[:4] = 255
    stored = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
              8: Image.Transpose.ROTATE_270}[orientation]  # fmt: skip
    exif = Image.Exif()
    exif[0x0112] = orientation
    raw = Image.fromarray(upright).transpose(stored)
    decoded = decode_image(encoded(raw, "JPEG", exif=exif, quality=95))
    assert decoded.shape == (8, 12, 1)
    assert decoded[:4].mean() > 200 and decoded[4:].mean() < 50
    root = tmp_path / "photos"
    for n, label in enumerate(("a", "b")):
        (root / label).mkdir(parents=True)
        for i in range(3):
            darker = np.clip(upright.astype(int) - 10 * i - 40 * n, 0, 255).astype(np.uint8)
            shifted = Image.fromarray(darker)
            shifted.transpose(stored).save(root / label / f"{i}.jpg", exif=exif, quality=95)
    data = load_folder(root, tmp_path / "data")
    assert data.image_size == (8, 12)  # the upright size, not the stored one
    images, _ = everything(data)
    assert images[:, :, :4].float().mean() > 180 and images[:, :, 4:].float().mean() < 60


# ---------------------------------------------------------------- special files


@HOSTILE_DATA
def test_a_broken_link_in_a_class_folder_is_skipped_and_listed(tmp_path):
    root = folder(tmp_path / "links", {"a": 3, "b": 3})
    (root / "a" / "gone.png").symlink_to(tmp_path / "deleted.png")
    (root / "b" / "self.png").symlink_to(root / "b" / "self.png")  # a link to itself
    data = load_folder(root, tmp_path / "data")
    assert data.report.dropped["broken link"] == [f"a/gone.png (points to {tmp_path}/deleted.png)"]
    assert [f.split(" (")[0] for f in data.report.dropped["unreadable"]] == ["b/self.png"]
    assert data.report.kept == 6


@HOSTILE_DATA
@pytest.mark.timeout(20)
def test_fifos_and_sockets_in_a_class_folder_are_listed_never_read(tmp_path):
    """Reading a FIFO blocks until a writer comes: only regular files are ever opened."""
    root = folder(tmp_path / "special", {"a": 3, "b": 3})
    os.mkfifo(root / "a" / "pipe.png")
    (root / "b" / "link-to-pipe.png").symlink_to(root / "a" / "pipe.png")
    listener = socket.socket(socket.AF_UNIX)
    with contextlib.closing(listener):
        listener.bind(str(root / "b" / "sock.png"))
        data = load_folder(root, tmp_path / "data")
    assert sorted(data.report.dropped["not a regular file"]) == [
        "a/pipe.png (a FIFO)", "b/link-to-pipe.png (a FIFO)", "b/sock.png (a socket)",
    ]  # fmt: skip
    assert data.report.kept == 6


# ---------------------------------------------------------------- the cache, built twice at once


@HOSTILE_DATA
def test_two_loads_building_one_cache_at_the_same_time_both_get_it(tmp_path):
    """A second search starts on the same new folder while the first is decoding; before,
    both wrote one temporary file and one died (a bus error, or the file gone)."""
    root = folder(tmp_path / "shared", {"a": 4, "b": 4})
    data_dir = tmp_path / "data"
    other: list[ImageData] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "decoding images" and not other:
            other.append(load_folder(root, data_dir))  # the other search, start to finish

    first = load_folder(root, data_dir, progress=progress)
    assert other, "the second load never ran while the first was decoding"
    assert first.digest() == other[0].digest()
    assert first.report.cache == other[0].report.cache
    assert cache_folders(data_dir) == [Path(first.report.cache).name], "a temporary was left"
    assert load_folder(root, data_dir).report.decoded == 0


@HOSTILE_DATA
@pytest.mark.slow
def test_two_processes_building_one_cache_at_once_both_succeed(tmp_path):
    root = folder(tmp_path / "shared", {"a": 40, "b": 40}, size=(48, 48))
    data_dir = tmp_path / "data"
    script = (
        "import sys; from pathlib import Path; from automl.data.folder import load_folder; "
        "d = load_folder(Path(sys.argv[1]), Path(sys.argv[2]), 96); print(d.digest())"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(root), str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], [err for _, err in results]
    assert len({out for out, _ in results}) == 1


# ---------------------------------------------------------------- a class lost in decoding


@HOSTILE_DATA
def test_a_class_whose_every_file_fails_to_decode_is_refused(tmp_path):
    root = folder(tmp_path / "three", {"cat": 4, "dog": 4, "fish": 4}, size=(24, 24))
    for path in (root / "fish").iterdir():
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) * 2 // 3])  # the header is still readable
    with pytest.raises(ConfigError, match="class folder 'fish' has no image that decodes") as info:
        load_folder(root, tmp_path / "data")
    assert "4 damaged, e.g. fish/0.png" in str(info.value)


# ---------------------------------------------------------------- a full, read-only, odd --data-dir


class FullDisk(io.RawIOBase):
    """A file on a full disk: every write fails as the kernel would say it."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@HOSTILE_DATA
def test_a_full_disk_while_writing_the_cache_is_one_line_and_leaves_no_temporary(tmp_path):
    cache = tmp_path / "data" / "cache" / "folder-abc"
    rows = (np.zeros((1, 4, 4), dtype=np.uint8) for _ in range(3))
    with pytest.raises(ConfigError) as info, scratch(cache, "imagefolder:/photos", 48) as work:
        (work / "labels.npy").write_bytes(b"written before the disk filled")
        write_rows(FullDisk(), (3, 1, 4, 4), rows)
    assert str(info.value) == (
        f"--data-dir {tmp_path / 'data'}: no space left for the image cache of "
        "imagefolder:/photos (48 bytes); free some or pass another --data-dir"
    )
    assert list(cache.parent.iterdir()) == [], "the temporary was left behind"


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Files may not grow beyond ``limit`` bytes (``ulimit -f``): a real write error."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@HOSTILE_DATA
def test_a_cache_that_cannot_be_written_whole_is_one_line_and_leaves_no_temporary(tmp_path):
    root = folder(tmp_path / "big", {"a": 3, "b": 3})
    data_dir = tmp_path / "data"
    with file_size_limit(16_000), pytest.raises(ConfigError) as info:
        load_folder(root, data_dir, image_size=64)  # 6 x 64 x 64 = 24,576 bytes of pixels
    assert str(info.value).startswith(f"--data-dir {data_dir}: the image cache of")
    assert "file-size limit" in str(info.value)
    assert cache_folders(data_dir) == []


@HOSTILE_DATA
def test_a_cache_larger_than_the_free_space_is_refused_before_decoding(tmp_path):
    root = folder(tmp_path / "huge", {"a": 3, "b": 3})
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    free = shutil.disk_usage(data_dir).free
    side = int((free / 6) ** 0.5) + 1000  # 6 gray images of side x side bytes: more than free
    with pytest.raises(ConfigError, match="no space left for the image cache") as info:
        load_folder(root, data_dir, image_size=side)
    assert re.search(r"\(\d+\.\d GB\), \d+\.\d GB free; ", str(info.value))
    assert cache_folders(data_dir) == []


@HOSTILE_DATA
def test_a_data_dir_that_is_a_file_is_one_line(tmp_path):
    root = folder(tmp_path / "ok", {"a": 3, "b": 3})
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("a file")
    for data_dir in (not_a_folder, not_a_folder / "below"):
        with pytest.raises(ConfigError, match=f"--data-dir {data_dir}: not a folder"):
            load_dataset(f"imagefolder:{root}", data_dir)


@HOSTILE_DATA
def test_the_search_stops_with_exit_2_on_a_data_dir_that_is_a_file(tmp_path, capsys, monkeypatch):
    from automl.cli import main

    root = folder(tmp_path / "ok", {"a": 3, "b": 3})
    (tmp_path / "data.txt").write_text("a file")
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--dataset", f"imagefolder:{root}", "--data-dir", "data.txt"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "--data-dir data.txt: not a folder" in err and "Traceback" not in err


@contextlib.contextmanager
def read_only(tree: Path) -> Iterator[None]:
    """``tree`` made unwritable for real: permissions, and for root (whom permissions do not
    stop) the immutable attribute."""
    paths = [tree, *tree.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~0o222)
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "-R", "+i", str(tree)], capture_output=True)
        if done.returncode:
            pytest.skip("cannot make a folder unwritable for root here (chattr)")
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-R", "-i", str(tree)], check=True)
        for path in paths:
            path.chmod(path.stat().st_mode | 0o200)


@HOSTILE_DATA
def test_a_read_only_data_dir_is_one_line_and_an_existing_cache_there_is_read(tmp_path):
    root = folder(tmp_path / "ok", {"a": 3, "b": 3})
    empty, built = tmp_path / "empty", tmp_path / "built"
    empty.mkdir()
    first = load_folder(root, built)
    with read_only(empty), read_only(built):
        with pytest.raises(ConfigError, match=f"--data-dir {empty}: cannot write there"):
            load_folder(root, empty)
        again = load_folder(root, built)
    assert again.digest() == first.digest() and again.report.decoded == 0


# ---------------------------------------------------------------- CIFAR files


def cifar_folder(data_dir: Path, meta: object, labels: list[int]) -> None:
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(count: int) -> dict[str, object]:
        data = rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8)
        return {"data": data, "labels": [labels[i % len(labels)] for i in range(count)]}

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch(6), protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


@HOSTILE_DATA
@pytest.mark.parametrize(
    ("meta", "labels", "message"),
    [
        (["cat", "dog"], [0, 1], "batches.meta: expected a dictionary, found a list"),
        ({"label_names": "cat"}, [0, 1], "batches.meta: label_names is not a list of names"),
        ({"label_names": ["cat", "dog"]}, [0, 1, 7], "label 7 in data_batch_1, beyond the 2"),
        ({"label_names": ["cat", "dog"]}, [0, -1], "label -1 in data_batch_1, beyond the 2"),
    ],
)
def test_malformed_cifar_files_are_one_line(tmp_path, meta, labels, message):
    cifar_folder(tmp_path, meta, labels)
    with pytest.raises(ConfigError, match=message) as info:
        load_dataset("cifar10", tmp_path)
    assert str(info.value).startswith("--dataset cifar10:") and "\n" not in str(info.value)


# ---------------------------------------------------------------- classes too small to measure


@HOSTILE_DATA
def test_a_class_with_one_image_is_warned_as_never_validated_nor_tested(tmp_path):
    root = folder(tmp_path / "lonely", {"many": 6, "one": 1})
    report = load_folder(root, tmp_path / "data").report
    assert report.counts["val"]["one"] == 0 and report.counts["test"]["one"] == 0
    assert (
        "class 'one' has no image in val or test (1 image in all): its accuracy is never "
        "measured; a class needs at least 3 images when val and test are carved from it"
    ) in report.notes


@HOSTILE_DATA
def test_a_small_validation_split_is_warned_with_what_one_image_is_worth(tmp_path):
    root = folder(tmp_path / "small", {"a": 20, "b": 20})
    report = load_folder(root, tmp_path / "data").report
    assert sum(report.counts["val"].values()) == 6
    note = (
        "validation holds 6 images (3 a class): one image is worth 16.7 accuracy points, so "
        "trials closer than that are not told apart; at least 20 a class is advised"
    )
    assert note in report.notes
    console = Console(record=True, width=200)
    print_data_report(console, report)
    assert note in console.export_text()


def test_a_large_enough_validation_split_is_not_warned(digits):
    assert not any("validation holds" in note for note in digits.report.notes)
