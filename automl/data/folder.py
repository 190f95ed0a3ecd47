"""The user's own image folders: scan, clean, and decode once into a memory-mapped cache.

``PATH/<class>/...`` or ``PATH/{train,val,test}/<class>/...``. Before any trial:

- every file is hashed (a manifest keyed by size and modification time spares unchanged
  files a second read) and its header read, so non-images are found without decoding;
- a content found under two classes is a label conflict: every copy is dropped;
- exact duplicates keep one copy, preferring test over val over train, so a duplicate
  never sits in two splits;
- only regular files are read: broken links, link loops, FIFOs, sockets and devices are
  listed, never opened (a FIFO would block the read forever);
- the kept images are decoded once (upright, at 8 bits, as the served model decodes them),
  converted to the common channels and size with the same resize the served model uses,
  and stored as uint8 ``.npy`` files ordered by split (see ``automl.data.cache``);
- a class that loses every image in decoding is refused, like one with none readable.

The cache is keyed by the files' content and the preprocessing settings; a second search
on the same folder maps it into memory and decodes nothing.
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import json
import os
import secrets
import stat
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, UnidentifiedImageError

from automl.data.cache import publish, scratch, write_rows
from automl.data.core import (
    SPLITS,
    TEST_SHARE,
    VAL_SHARE,
    DataReport,
    ImageData,
    Split,
    channel_stats,
    check_split_sizes,
    split_notes,
    stratified_indices,
)
from automl.errors import ConfigError
from automl.serving.automl_serving import (
    GRAY_MODES,
    MAX_PIXELS,
    ImageInputError,
    decode_image,
    prepare,
)

CACHE_VERSION = 3  # 3: EXIF orientation applied, 16-bit, 32-bit and float pixels rescaled
MAX_SIDE = 128  # the default size is the median size, capped at this side
MIN_SIDE = 4
SMALL_FACTOR = 4  # images whose shorter side is this many times under the target's are reported
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_FILES = 5_000_000
SPLIT_PRIORITY = {"test": 0, "val": 1, "train": 2}  # which copy of a duplicate is kept
SIDEWAYS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
SPECIAL_FILES = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}
Progress = Callable[[str, int, int], None]


@dataclass
class Entry:
    rel: str  # path relative to the root, with '/'
    label: str
    split: str | None  # given by the folder layout, or None
    group: str = ""  # the group folder above the class folder (--group-level), else ""
    size: int = 0
    mtime_ns: int = 0
    sha: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    error: str = ""


def _walk(folder: Path, seen: set[tuple[int, int]], inside: Path) -> Iterator[Path]:
    """Files below ``folder``, following links but never entering a directory in ``seen``
    nor one outside ``inside`` (the data folder: a link cannot lead the scan elsewhere).

    ``seen`` is shared by the whole scan, so a link loop, or a link into another class
    folder, cannot list a file twice.
    """
    for root, dirs, names in os.walk(folder, followlinks=True):
        stat = os.stat(root)
        if (stat.st_dev, stat.st_ino) in seen:
            dirs.clear()
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and Path(root, d).resolve().is_relative_to(inside)
        )
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(root, name)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(root: Path, group_level: bool = False) -> tuple[list[Entry], list[str]]:
    """Every candidate file with its class and given split; files outside class folders.

    With ``group_level`` the layout is ``<group>/<class>/...`` (below any split folder).
    """
    label = f"imagefolder:{root}"
    split_dirs = _split_dirs(root, label)
    groups = [(d, d.name) for d in split_dirs] if split_dirs else [(root, None)]
    entries: list[Entry] = []
    loose: list[str] = []
    seen = {(os.stat(d).st_dev, os.stat(d).st_ino) for d in [root, *split_dirs]}
    for base, split in groups:
        loose += _files_in(base, root)
        parents = [(d, d.name) for d in _class_dirs(base)] if group_level else [(base, "")]
        for parent, group in parents:
            if group_level:
                loose += _files_in(parent, root)
            for class_dir in _class_dirs(parent):
                for entry in _class_entries(root, class_dir, split, group, seen):
                    entries.append(entry)
                    if len(entries) > MAX_FILES:
                        raise ConfigError(f"--dataset {label}: more than {MAX_FILES:,} files")
    if not entries:
        raise ConfigError(f"--dataset {label}: no class folder holds any file")
    return entries, loose


def _split_dirs(root: Path, label: str) -> list[Path]:
    """The folder's train/val/test folders (none: it is split later), checked: a folder
    that is missing, or that mixes split folders with class folders, is one line."""
    if not root.exists():
        raise ConfigError(f"--dataset {label}: no such folder")
    if not root.is_dir():
        raise ConfigError(f"--dataset {label}: not a folder")
    children = _class_dirs(root)
    split_dirs = [d for d in children if d.name in SPLITS]
    if split_dirs and len(split_dirs) != len(children):
        others = ", ".join(d.name for d in children if d.name not in SPLITS)
        raise ConfigError(
            f"--dataset {label}: mixes split folders (train/val/test) with other folders ({others})"
        )
    return split_dirs


def _files_in(folder: Path, root: Path) -> list[str]:
    """Files lying beside the class folders, outside any class."""
    return [p.relative_to(root).as_posix() for p in folder.iterdir() if p.is_file()]


def _class_entries(
    root: Path, class_dir: Path, split: str | None, group: str, seen: set[tuple[int, int]]
) -> Iterator[Entry]:
    """The files of one class folder; what is not a regular file inside the folder is
    refused (a link leading out of the folder, a broken link, a FIFO ...)."""
    inside = root.resolve()
    for path in _walk(class_dir, seen, inside):
        entry = Entry(path.relative_to(root).as_posix(), class_dir.name, split, group)
        entry.error = _not_a_file(path)
        if not entry.error and not path.resolve().is_relative_to(inside):  # a link leading out
            entry.error = "outside the folder: a link to a file elsewhere"
        yield entry


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be read as an image file ('' when it can)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"broken link: points to {os.readlink(path)}"
        return "unreadable: removed while the folder was read"
    except OSError as exc:  # a link loop, a folder we may not enter
        return f"unreadable: {exc.strerror}"
    if stat.S_ISREG(mode):
        return ""
    return f"not a regular file: {SPECIAL_FILES.get(stat.S_IFMT(mode), 'a special file')}"


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file. Opened without blocking and checked before reading, so
    a file swapped for a FIFO after the scan is refused, never waited on."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = SPECIAL_FILES.get(stat.S_IFMT(mode), "a special file")
            raise OSError(errno.EINVAL, f"not a regular file: {kind}")
        return handle.read()


def _manifest_path(cache_dir: Path, root: Path) -> Path:
    key = hashlib.sha256(f"{CACHE_VERSION}:{root.resolve()}".encode()).hexdigest()[:20]
    return cache_dir / f"manifest-{key}.json"


def inspect(root: Path, entries: list[Entry], cache_dir: Path, progress: Progress) -> int:
    """Hash and read the header of each file; unchanged files reuse the manifest.

    Returns how many files were read (0 when the manifest knew them all).
    """
    manifest_path = _manifest_path(cache_dir, root)
    try:
        known = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        known = {}
    read = 0
    for done, entry in enumerate(entries, 1):
        path = root / entry.rel
        if entry.error:  # refused while scanning (a link leading out): never read
            continue
        try:
            info = path.stat()
        except OSError as exc:  # removed since the scan
            entry.error = f"unreadable: {exc.strerror}"
            continue
        entry.size, entry.mtime_ns = info.st_size, info.st_mtime_ns
        old = known.get(entry.rel)
        if old and old["size"] == entry.size and old["mtime_ns"] == entry.mtime_ns:
            entry.sha, entry.width, entry.height = old["sha"], old["width"], old["height"]
            entry.mode, entry.error = old["mode"], old["error"]
        else:
            _read_header(path, entry)
            read += 1
        if done % 500 == 0 or done == len(entries):
            progress("inspecting files", done, len(entries))
    fields = ("size", "mtime_ns", "sha", "width", "height", "mode", "error")
    _save_manifest(manifest_path, {e.rel: {f: getattr(e, f) for f in fields} for e in entries})
    return read


def _save_manifest(path: Path, table: dict[str, Any]) -> None:
    """Written under a name of this process's own, then renamed: two searches may inspect
    one folder at once. The manifest only spares a second read of unchanged files, so a
    ``--data-dir`` that cannot take it is not an error here; a cache that must be written
    there is where that is said."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(table))
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)


def _read_header(path: Path, entry: Entry) -> None:
    if entry.size > MAX_FILE_BYTES:
        entry.error = f"too large: {entry.size:,} bytes"
        return
    try:
        data = read_regular(path)
    except OSError as exc:
        entry.error = f"unreadable: {exc.strerror or exc}"
        return
    entry.sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:
            entry.width, entry.height = image.size
            entry.mode = image.mode
            if _orientation(image) in SIDEWAYS:  # decoded upright: the sides swap
                entry.width, entry.height = entry.height, entry.width
    except Image.DecompressionBombError:
        entry.error = "too large: over Pillow's decompression-bomb limit"
        return
    except UnidentifiedImageError:
        entry.error = "not an image"
        return
    except (OSError, ValueError, SyntaxError) as exc:
        entry.error = f"unreadable: {exc}"
        return
    if entry.width * entry.height > MAX_PIXELS:
        entry.error = f"too large: {entry.width}x{entry.height} pixels"


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation when the header holds it (JPEG, WebP, TIFF; a PNG's when its
    EXIF comes before the pixels): asking a PNG for EXIF it has not met yet decodes it."""
    if "exif" not in image.info and image.format != "TIFF":
        return 1
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except (OSError, ValueError, TypeError, SyntaxError):
        return 1


def clean(entries: list[Entry], dropped: dict[str, list[str]]) -> list[Entry]:
    """Drop unreadable files, label conflicts and duplicates; return what is kept."""
    readable = []
    for entry in entries:
        if entry.error:
            reason, _, detail = entry.error.partition(": ")
            dropped.setdefault(reason, []).append(
                f"{entry.rel} ({detail})" if detail else entry.rel
            )
        else:
            readable.append(entry)
    by_content: dict[str, list[Entry]] = defaultdict(list)
    for entry in readable:
        by_content[entry.sha].append(entry)
    kept = []
    for copies in by_content.values():
        labels = {e.label for e in copies}
        if len(labels) > 1:
            for entry in copies:
                others = ", ".join(sorted(labels - {entry.label}))
                dropped.setdefault("label conflict", []).append(
                    f"{entry.rel} (also under {others})"
                )
            continue
        # Keep the copy in the most protected split, then the shortest name (copies grow names).
        copies.sort(key=lambda e: (SPLIT_PRIORITY.get(e.split or "train", 2), len(e.rel), e.rel))
        kept.append(copies[0])
        for other in copies[1:]:
            dropped.setdefault("duplicate", []).append(f"{other.rel} (same as {copies[0].rel})")
    kept.sort(key=lambda e: e.rel)
    return kept


def choose_size(kept: list[Entry], requested: int | None) -> tuple[tuple[int, int], str]:
    if requested is not None:
        return (requested, requested), f"--image-size {requested}"
    sizes = {(e.height, e.width) for e in kept}
    if len(sizes) == 1:
        return sizes.pop(), "native (all images share it)"
    height = min(MAX_SIDE, int(statistics.median(e.height for e in kept)))
    width = min(MAX_SIDE, int(statistics.median(e.width for e in kept)))
    return (height, width), f"median size, capped at {MAX_SIDE}"


def assign_splits(kept: list[Entry], classes: list[str]) -> dict[str, list[Entry]]:
    """Given splits as they are; missing ones carved from train, stratified and seeded."""
    share = {"val": VAL_SHARE, "test": TEST_SHARE}
    out: dict[str, list[Entry]] = {s: [e for e in kept if e.split == s] for s in SPLITS}
    carve: tuple[str, ...]
    if {e.split for e in kept} == {None}:
        pool, carve = kept, ("val", "test")
    else:
        pool, carve = out["train"], tuple(s for s in ("val", "test") if not out[s])
    shares = tuple(share[s] for s in carve)
    if carve:  # stratified by class, and by group within each class when there are groups
        strata = sorted({(e.group, e.label) for e in pool})
        labels = np.array([strata.index((e.group, e.label)) for e in pool])
        parts = stratified_indices(labels, shares)
        out["train"] = [pool[i] for i in parts[0]]
        for name, index in zip(carve, parts[1:], strict=True):
            out[name] = [pool[i] for i in index]
    return out


def load_folder(
    root: Path,
    data_dir: Path,
    image_size: int | None = None,
    progress: Progress | None = None,
    *,
    group_level: bool = False,
) -> ImageData:
    """An image folder as ``ImageData``: scanned, inspected, cleaned, checked, split,
    decoded once into a cache under ``data_dir`` and read back from it."""
    progress = progress or (lambda stage, done, total: None)
    label = f"imagefolder:{root}"
    cache_dir = data_dir / "cache"
    entries, loose = scan(root, group_level)
    inspect(root, entries, cache_dir, progress)
    dropped: dict[str, list[str]] = {"outside class folders": loose} if loose else {}
    kept = clean(entries, dropped)
    classes = _checked_classes(label, entries, kept)
    size, size_rule = choose_size(kept, image_size)
    if min(size) < MIN_SIDE:
        raise ConfigError(
            f"--dataset {label}: the images are too small to learn from ({size[0]}x{size[1]} "
            f"pixels, {size_rule}); pass --image-size to upscale them"
        )
    channels = 1 if all(e.mode in GRAY_MODES for e in kept) else 3
    splits = assign_splits(kept, classes)
    check_split_sizes(label, {s: [e.label for e in splits[s]] for s in SPLITS}, classes)
    cache = cache_dir / f"folder-{_cache_key(splits, size, channels)}"
    decoded = 0
    if not (cache / "meta.json").exists():
        ordered = [(name, e) for name in SPLITS for e in splits[name]]
        decoded = _build_cache(
            root, cache, ordered, classes=classes, channels=channels, size=size,
            progress=progress, label=label,
        )  # fmt: skip
    meta = json.loads((cache / "meta.json").read_text())
    counts: dict[str, dict[str, int]] = meta["class_counts"]
    _check_decoded(label, classes, counts, meta)
    train, val, test = _read_cache(cache, meta, group_level)
    report = DataReport(
        source=label,
        classes=classes,
        files_found=len(entries) + len(loose),
        kept=len(train) + len(val) + len(test),
        image_size=size,
        channels=channels,
        size_rule=size_rule,
        counts=counts,
        dropped={**dropped, **meta.get("dropped", {})},
        small_images=[e.rel for e in kept if min(e.height, e.width) * SMALL_FACTOR < min(size)],
        notes=split_notes(counts, classes),
        cache=str(cache),
        decoded=decoded,
    )
    mean, std = channel_stats(train.images)
    groups = tuple(meta["groups"]) if group_level else ()
    return ImageData(
        f"imagefolder:{root.name}", tuple(classes), train, val, test, mean, std, label, report,
        groups,
    )  # fmt: skip


def _checked_classes(label: str, entries: list[Entry], kept: list[Entry]) -> list[str]:
    """The class names; each must keep a readable image, and there must be two."""
    classes = sorted({e.label for e in entries})
    present = {e.label for e in kept}
    for name in classes:
        if name not in present:
            raise ConfigError(f"--dataset {label}: class folder '{name}' has no readable image")
    if len(classes) < 2:
        raise ConfigError(
            f"--dataset {label}: needs at least two class folders, found {len(classes)}"
        )
    return classes


def _check_decoded(
    label: str, classes: list[str], counts: dict[str, dict[str, int]], meta: dict[str, Any]
) -> None:
    """The checks made on the headers, made again on what decoded: a class whose every
    file is damaged (truncated, say) is refused as one with no readable file is, and the
    splits must still hold every class's training images."""
    damaged: dict[str, list[str]] = defaultdict(list)
    texts = meta["dropped"].get("damaged", [])
    for name, text in zip(meta["damaged_labels"], texts, strict=True):
        damaged[name].append(text)
    for name in classes:
        if not any(counts[split][name] for split in SPLITS):
            lost = sorted(damaged[name]) or ["?"]
            raise ConfigError(
                f"--dataset {label}: class folder '{name}' has no image that decodes "
                f"({len(damaged[name])} damaged, e.g. {lost[0]})"
            )
    check_split_sizes(
        label, {s: Counter({c: n for c, n in counts[s].items() if n}) for s in SPLITS}, classes
    )


def _cache_key(splits: dict[str, list[Entry]], size: tuple[int, int], channels: int) -> str:
    """What the decoded arrays depend on: the files (by content), their split, the size
    and the channels; any change makes another cache."""
    source = json.dumps(
        {
            "version": CACHE_VERSION,
            "size": size,
            "channels": channels,
            "files": [(e.rel, e.sha, e.label, e.group, s) for s in SPLITS for e in splits[s]],
        }
    )
    return hashlib.sha256(source.encode()).hexdigest()[:24]


def _read_cache(cache: Path, meta: dict[str, Any], group_level: bool) -> tuple[Split, Split, Split]:
    """The three splits from a cache, the images memory-mapped (copy on write)."""
    images = np.load(cache / "images.npy", mmap_mode="c")
    labels = np.load(cache / "labels.npy")
    groups = np.load(cache / "groups.npy")
    bounds = np.cumsum([0, *meta["counts"]])
    train, val, test = (
        Split(
            torch.from_numpy(images[a:b]),
            torch.from_numpy(labels[a:b]).long(),
            torch.from_numpy(groups[a:b]).long() if group_level else None,
        )
        for a, b in itertools.pairwise(bounds)
    )
    return train, val, test


def _build_cache(
    root: Path,
    cache: Path,
    ordered: list[tuple[str, Entry]],
    *,
    classes: list[str],
    channels: int,
    size: tuple[int, int],
    progress: Progress,
    label: str,
) -> int:
    """Decode ``ordered`` (split, entry) into ``cache``; returns how many files were decoded.

    A file that passed the header check but fails to decode (truncated, say) is dropped
    here and listed as damaged; the arrays are then compacted once. The cache is built in
    a folder of its own and moved into place complete (``automl.data.cache``).
    """
    shape = (len(ordered), channels, *size)
    needed = int(np.prod(shape)) + 16 * len(ordered) + 64 * 1024  # pixels, labels, the rest
    good = np.ones(len(ordered), dtype=bool)
    damaged: list[tuple[str, str]] = []  # (class, "file (why)")
    with scratch(cache, label, needed) as work:
        rows = _decoded(root, ordered, channels, size, progress, good, damaged)
        with (work / "images.npy").open("wb") as handle:
            write_rows(handle, shape, rows)
        if not good.all():
            _compact(work / "images.npy", good)
        kept = [item for item, ok in zip(ordered, good, strict=True) if ok]
        np.save(work / "labels.npy", np.array([classes.index(e.label) for _, e in kept], np.int64))
        group_names = sorted({e.group for _, e in ordered})
        np.save(
            work / "groups.npy", np.array([group_names.index(e.group) for _, e in kept], np.int64)
        )
        meta: dict[str, Any] = {
            "counts": [sum(1 for split, _ in kept if split == name) for name in SPLITS],
            "class_counts": _class_counts(kept, classes),
            "dropped": {"damaged": [text for _, text in damaged]} if damaged else {},
            "damaged_labels": [name for name, _ in damaged],
            "groups": group_names,
        }
        (work / "meta.json").write_text(json.dumps(meta))
        publish(work, cache)
    return len(ordered)


def _class_counts(kept: list[tuple[str, Entry]], classes: list[str]) -> dict[str, dict[str, int]]:
    """Images per split and class, every class named in every split."""
    found = Counter((split, e.label) for split, e in kept)
    return {name: {c: found[name, c] for c in classes} for name in SPLITS}


def _decoded(
    root: Path,
    ordered: list[tuple[str, Entry]],
    channels: int,
    size: tuple[int, int],
    progress: Progress,
    good: np.ndarray,
    damaged: list[tuple[str, str]],
) -> Iterator[np.ndarray]:
    """Each file decoded and resized, in order; a damaged one is a blank row, marked in
    ``good`` and listed in ``damaged``."""
    blank = np.zeros((channels, *size), dtype=np.uint8)
    for index, (_, entry) in enumerate(ordered):
        try:
            row = prepare(decode_image(read_regular(root / entry.rel)), channels, size)
        except (ImageInputError, OSError) as exc:
            row = blank
            good[index] = False
            damaged.append((entry.label, f"{entry.rel} ({exc})"))
        yield row
        if (index + 1) % 200 == 0 or index + 1 == len(ordered):
            progress("decoding images", index + 1, len(ordered))


def _compact(path: Path, good: np.ndarray) -> None:
    """Drop the blank rows of damaged files from the array at ``path``."""
    source = np.load(path, mmap_mode="r")
    compact = path.with_name("images.compact.npy")
    with compact.open("wb") as handle:
        write_rows(
            handle, (int(good.sum()), *source.shape[1:]), (source[i] for i in np.flatnonzero(good))
        )
    del source
    compact.replace(path)
