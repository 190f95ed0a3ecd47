"""Writing the files a user names (an export, a report, an evaluation) safely.

A file is written in full beside its destination, then moved onto it with one rename:
a reader sees the old file or the new one, never half of one, and a symbolic link planted
at the destination is replaced, never followed (a rename does not follow links). Drafts
are made in a private folder created for them, so no name another user could plant a link
at is ever opened for writing.

The checks here run before anything slow, so an output that cannot be written is said in
one line before a model is fetched or a study read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from automl.errors import ConfigError


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A draft path to write ``path``'s new content to; when the block ends without
    error the draft replaces ``path`` in one rename, otherwise it is removed. For writers
    that take a file name (an exporter, a plotting library). Files a writer puts beside
    its draft (ONNX's ``NAME.data`` of external weights) are moved beside ``path`` first,
    so the file never appears without them."""
    drafts = Path(tempfile.mkdtemp(prefix=f".{path.name[:64]}.", suffix=".draft", dir=path.parent))
    try:
        draft = drafts / path.name  # the same suffix: some writers pick the format by it
        yield draft
        for companion in sorted(drafts.iterdir()):
            if companion != draft:
                os.replace(companion, path.parent / companion.name)
        os.replace(draft, path)
    finally:
        shutil.rmtree(drafts, ignore_errors=True)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` (text is written as UTF-8) to ``path`` through a draft beside it:
    all of it or nothing, and never through a link planted at ``path``."""
    content = data.encode() if isinstance(data, str) else data
    with replacing(path) as draft, open(draft, "xb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def replacing_in(folder: Path) -> Iterator[Path]:
    """A private draft folder inside ``folder`` (made if missing) to write files in; when
    the block ends without error each file written there replaces its namesake in
    ``folder``, one rename each. For writers that fill a folder."""
    folder.mkdir(parents=True, exist_ok=True)
    drafts = Path(tempfile.mkdtemp(prefix=".drafts.", dir=folder))
    try:
        yield drafts
        for draft in sorted(drafts.iterdir()):
            os.replace(draft, folder / draft.name)
    finally:
        shutil.rmtree(drafts, ignore_errors=True)


def check_output_file(path: Path, option: str = "-o") -> None:
    """Refuse in one line an output file that cannot be written: a folder, a file in a
    folder that does not exist, or in one where nothing can be created (no permission, a
    read-only file system)."""
    if path.is_dir():
        raise ConfigError(f"{option}: {path} is a folder; name the file to write")
    if not path.parent.is_dir():
        raise ConfigError(f"{option}: the folder {path.parent} does not exist")
    _check_writable(path.parent, path, option)


def check_output_folder(folder: Path, option: str = "-o") -> None:
    """Refuse in one line an output folder that cannot be made or written in: a file of
    that name, or a path under a file or an unwritable folder."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == folder else f"is under the file {existing}"
        raise ConfigError(f"{option}: {folder} {what}; name a folder to write the files in")
    _check_writable(existing, folder, option)


def _check_writable(folder: Path, named: Path, option: str) -> None:
    """Create and remove one private file in ``folder``: the only test that also holds
    for read-only file systems and for processes running as root."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"{option} {named}: cannot write it (cannot write in {folder}: {exc.strerror or exc})"
        ) from None
