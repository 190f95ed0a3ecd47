"""Writing the decoded image cache so that no failure or neighbour can leave it half made.

A cache is built in a private folder beside its final place and moved there in one rename
once complete; two searches building the same cache at once each build their own, the
first rename wins and the other uses it. The pixels are written in order with ``write``
(never through a memory map, where a full disk is a bus error), after a check that the
free space holds them. A failed write removes the private folder and is one line naming
``--data-dir``: no space, a file-size limit, a read-only or unwritable folder.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from automl.errors import ConfigError

FULL = (errno.ENOSPC, errno.EDQUOT)
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
NOT_A_FOLDER = (errno.ENOTDIR, errno.EEXIST)


def human_size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def write_error(exc: OSError, data_dir: Path, what: str) -> Exception:
    """The one line a failed write under ``data_dir`` is told as; other errors as they are."""
    where = f"--data-dir {data_dir}"
    if exc.errno in FULL:
        return ConfigError(
            f"{where}: no space left for {what}; free some or pass another --data-dir"
        )
    if exc.errno == errno.EFBIG:
        return ConfigError(f"{where}: {what} is larger than the file-size limit (ulimit -f)")
    if exc.errno in UNWRITABLE:
        return ConfigError(
            f"{where}: cannot write there ({exc.strerror}); pass a writable --data-dir"
        )
    if exc.errno in NOT_A_FOLDER:
        return ConfigError(f"{where}: not a folder")
    return exc


@contextmanager
def scratch(cache: Path, label: str, needed: int) -> Iterator[Path]:
    """A private folder, named for this process alone, to build ``cache`` in (a folder
    under ``--data-dir/cache``). It is removed whatever happens (after a ``publish`` there
    is nothing left to remove); a failed write becomes one line."""
    data_dir = cache.parent.parent
    what = f"the image cache of {label} ({human_size(needed)})"
    work = cache.parent / f".{cache.name}.{os.getpid()}-{secrets.token_hex(4)}"
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        work.mkdir()
        check_space(work, needed, data_dir, what)
        yield work
    except OSError as exc:
        raise write_error(exc, data_dir, what) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_space(folder: Path, needed: int, data_dir: Path, what: str) -> None:
    """Refuse before decoding anything when the cache cannot fit."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ConfigError(
            f"--data-dir {data_dir}: no space left for {what}, {human_size(free)} free; "
            "free some or pass another --data-dir"
        )


def write_rows(handle: IO[bytes], shape: tuple[int, ...], rows: Iterable[np.ndarray]) -> None:
    """``rows`` (each ``shape[1:]``, uint8) as one ``.npy`` array of ``shape``, in order."""
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(handle, header)
    for row in rows:
        handle.write(np.ascontiguousarray(row, dtype=np.uint8).tobytes())
    handle.flush()


def publish(work: Path, cache: Path) -> None:
    """Move a complete cache into place in one rename. When another search put the same
    cache there first, theirs stays; a half-written cache of an older version is replaced."""
    try:
        work.rename(cache)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        if (cache / "meta.json").exists():
            return  # built by another search meanwhile, from the same files
        shutil.rmtree(cache, ignore_errors=True)
        work.rename(cache)
