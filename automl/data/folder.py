"""The user's own image folders: scan, clean, and decode once into a memory-mapped cache.

``PATH/<class>/...`` or ``PATH/{train,val,test}/<class>/...``. Before any trial:

- every file is hashed (a manifest keyed by size and modification time spares unchanged
  files a second read) and its header read, so non-images are found without decoding;
- a content found under two classes is a label conflict: every copy is dropped;
- exact duplicates keep one copy, preferring test over val over train, so a duplicate
  never sits in two splits;
- the kept images are decoded once, converted to the common channels and size with the
  same resize the served model uses, and stored as uint8 ``.npy`` files ordered by split.

The cache is keyed by the files' content and the preprocessing settings; a second search
on the same folder maps it into memory and decodes nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from automl.data.core import (
    SPLITS,
    TEST_SHARE,
    VAL_SHARE,
    DataReport,
    ImageData,
    Split,
    channel_stats,
    check_split_sizes,
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

CACHE_VERSION = 2
MAX_SIDE = 128  # the default size is the median size, capped at this side
MIN_SIDE = 4
SMALL_FACTOR = 4  # images whose shorter side is this many times under the target's are reported
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_FILES = 5_000_000
SPLIT_PRIORITY = {"test": 0, "val": 1, "train": 2}  # which copy of a duplicate is kept
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
    """The files of one class folder; a link leading out of the folder is refused."""
    inside = root.resolve()
    for path in _walk(class_dir, seen, inside):
        entry = Entry(path.relative_to(root).as_posix(), class_dir.name, split, group)
        if not path.resolve().is_relative_to(inside):  # a link leading out
            entry.error = "outside the folder: a link to a file elsewhere"
        yield entry


def _manifest_path(cache_dir: Path, root: Path) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:20]
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
        stat = path.stat()
        entry.size, entry.mtime_ns = stat.st_size, stat.st_mtime_ns
        old = known.get(entry.rel)
        if old and old["size"] == entry.size and old["mtime_ns"] == entry.mtime_ns:
            entry.sha, entry.width, entry.height = old["sha"], old["width"], old["height"]
            entry.mode, entry.error = old["mode"], old["error"]
        else:
            _read_header(path, entry)
            read += 1
        if done % 500 == 0 or done == len(entries):
            progress("inspecting files", done, len(entries))
    cache_dir.mkdir(parents=True, exist_ok=True)
    fields = ("size", "mtime_ns", "sha", "width", "height", "mode", "error")
    table = {e.rel: {f: getattr(e, f) for f in fields} for e in entries}
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table))
    tmp.replace(manifest_path)
    return read


def _read_header(path: Path, entry: Entry) -> None:
    if entry.size > MAX_FILE_BYTES:
        entry.error = f"too large: {entry.size:,} bytes"
        return
    data = path.read_bytes()
    entry.sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(path) as image:
            entry.width, entry.height = image.size
            entry.mode = image.mode
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
            root, cache, ordered, classes=classes, channels=channels, size=size, progress=progress
        )
    (train, val, test), meta = _read_cache(cache, group_level)
    small = [e.rel for e in kept if min(e.height, e.width) * SMALL_FACTOR < min(size)]
    report = DataReport(
        source=label,
        classes=classes,
        files_found=len(entries) + len(loose),
        kept=len(train) + len(val) + len(test),
        image_size=size,
        channels=channels,
        size_rule=size_rule,
        counts={
            name: {c: int((part.labels == i).sum()) for i, c in enumerate(classes)}
            for name, part in zip(SPLITS, (train, val, test), strict=True)
        },
        dropped={**dropped, **meta.get("dropped", {})},
        small_images=small,
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


def _read_cache(cache: Path, group_level: bool) -> tuple[tuple[Split, Split, Split], Any]:
    """The three splits from a cache (the images memory-mapped), and its metadata."""
    meta = json.loads((cache / "meta.json").read_text())
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
    return (train, val, test), meta


def _build_cache(
    root: Path,
    cache: Path,
    ordered: list[tuple[str, Entry]],
    *,
    classes: list[str],
    channels: int,
    size: tuple[int, int],
    progress: Progress,
) -> int:
    """Decode ``ordered`` (split, entry) into ``cache``; returns how many files were decoded.

    A file that passed the header check but fails to decode (truncated, say) is dropped
    here and listed as damaged; the arrays are then compacted once.
    """
    cache.mkdir(parents=True, exist_ok=True)
    shape = (len(ordered), channels, *size)
    images = np.lib.format.open_memmap(cache / "images.tmp.npy", "w+", np.uint8, shape)
    good = np.ones(len(ordered), dtype=bool)
    damaged: list[str] = []
    for index, (_, entry) in enumerate(ordered):
        try:
            images[index] = prepare(decode_image((root / entry.rel).read_bytes()), channels, size)
        except (ImageInputError, OSError) as exc:
            good[index] = False
            damaged.append(f"{entry.rel} ({exc})")
        if (index + 1) % 200 == 0 or index + 1 == len(ordered):
            progress("decoding images", index + 1, len(ordered))
    if not good.all():
        compact = np.lib.format.open_memmap(
            cache / "images.compact.npy", "w+", np.uint8, (int(good.sum()), channels, *size)
        )
        compact[:] = images[good]
        compact.flush()
        del compact
        (cache / "images.tmp.npy").unlink()
        (cache / "images.compact.npy").replace(cache / "images.tmp.npy")
    else:
        images.flush()
    del images
    kept = [item for item, ok in zip(ordered, good, strict=True) if ok]
    labels = np.array([classes.index(e.label) for _, e in kept], dtype=np.int64)
    np.save(cache / "labels.npy", labels)
    group_names = sorted({e.group for _, e in ordered})
    np.save(
        cache / "groups.npy",
        np.array([group_names.index(e.group) for _, e in kept], dtype=np.int64),
    )
    (cache / "images.tmp.npy").replace(cache / "images.npy")
    meta: dict[str, Any] = {
        "counts": [sum(1 for split, _ in kept if split == name) for name in SPLITS],
        "dropped": {"damaged": damaged} if damaged else {},
        "groups": group_names,
    }
    (cache / "meta.json").write_text(json.dumps(meta))  # written last: marks the cache complete
    return len(ordered)
