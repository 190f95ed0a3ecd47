"""The spaces that ship with automl, found by name from any folder."""

from __future__ import annotations

from pathlib import Path

DEFAULT_SPACE = Path("search_spaces") / "default.yaml"
BUNDLED_SPACES = Path(__file__).resolve().parent.parent.parent / "search_spaces"


def resolve_space(path: Path) -> Path:
    """A space file as given; else a bundled space by name (``images``) or the bundled default.

    So ``automl search`` works from any folder, not only from a checkout of the project; a
    folder named like a bundled space (``photos/``, the data itself) is not a space file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        return path
    bundled = BUNDLED_SPACES / (path.name if path.suffix else f"{path.name}.yaml")
    if (path == DEFAULT_SPACE or len(path.parts) == 1) and bundled.exists():
        return bundled
    return path


def bundled_spaces() -> list[str]:
    return sorted(p.stem for p in BUNDLED_SPACES.glob("*.yaml"))
