"""Loading a data set by name: built in, torchvision formats, or ``imagefolder:PATH``."""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from automl.data.builtin import BUILTIN
from automl.data.core import ImageData
from automl.errors import ConfigError, unknown_name

FOLDER_PREFIX = "imagefolder:"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "automl" / "data"
DATASET_NAMES = (*BUILTIN, f"{FOLDER_PREFIX}PATH")


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


def check_data_dir(folder: Path) -> None:
    """A ``--data-dir`` that is a file, or lies below one, is refused in one line: nothing
    could be read or written there. One that cannot be written is said where a write is
    needed (a cache built earlier on a read-only mount is still read)."""
    for path in (folder, *folder.parents):
        try:
            mode = path.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue  # made when needed
        except OSError:
            return  # said by the first write that needs it
        if not stat.S_ISDIR(mode):
            where = "" if path == folder else f" ({path} is a file)"
            raise ConfigError(f"--data-dir {folder}: not a folder{where}")
        return


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
    check_data_dir(folder)
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
