"""Where a result came from: package versions, the code's git commit, the machine."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("automl", "torch", "torchvision", "optuna", "mlflow", "numpy", "scikit-learn", "pillow")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the automl checkout that runs (editable installs), if known."""
    folder = path or Path(__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None
