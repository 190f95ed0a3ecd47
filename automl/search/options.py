"""How a setting is declared: its option, check and parsing from the command line.

``search/settings.py`` declares every setting of a search with ``option``; the checks
and parsers here are what those declarations use, kept apart so the declarations read
as one list.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from automl.errors import ConfigError, unknown_name

MAX_AUTO_JOBS = 8
Scope = Literal["study", "local", "run"]
Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Option:
    """How one setting appears on the command line and where it belongs."""

    help: str
    scope: Scope
    flags: tuple[str, ...] = ()  # default: --field-name
    name: str | None = None  # the command's parameter when it differs from the field
    typed: type | None = None  # what the command line takes when it differs from the field
    parse: Callable[[Any], Any] | None = None  # command-line value -> field value
    check: Check | None = None  # a problem with the value, or None
    metavar: str | None = None
    envvar: str | None = None
    show_default: bool | str = True
    secret: bool = False  # a URL that may hold a password: masked wherever it is shown

    def flag(self, field_name: str) -> str:
        return self.flags[0] if self.flags else "--" + field_name.replace("_", "-")


def option(default: Any, help: str, scope: Scope, **details: Any) -> Any:
    return field(default=default, metadata={"option": Option(help, scope, **details)})


def at_least(low: int, high: int | None = None) -> Check:
    """An integer from ``low`` up to ``high`` (a bound that stops absurd values: a million
    queued trials, a thousand processes)."""

    def check(value: int) -> str | None:
        if value < low:
            return f"must be at least {low}, got {value}"
        if high is not None and value > high:
            return f"must be at most {high:,}, got {value:,}"
        return None

    return check


def positive(value: float | None, high: float = 1e9) -> str | None:
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0:
        return f"must be a positive number, got {value}"
    return f"must be at most {high:g}, got {value:g}" if value > high else None


def seconds(value: float, high: float = 1e6) -> str | None:
    """A duration in seconds, 0 included."""
    if not math.isfinite(value) or value < 0:
        return f"must be a number of seconds, 0 or more, got {value}"
    return f"must be at most {high:g}, got {value:g}" if value > high else None


def writable_folder(path: Path) -> str | None:
    """A folder this process can write in, or one it can make (nothing is made here: the
    checks run before anything is written)."""
    path = Path(path).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{path}: no permission to write in {existing}"
    return None


def within(low: int, high: int) -> Check:
    def check(value: int | None) -> str | None:
        if value is None or low <= value <= high:
            return None
        return f"must lie in [{low}, {high}], got {value}"

    return check


def one_of(kind: str, known: tuple[str, ...]) -> Check:
    return lambda value: None if value in known else unknown_name(kind, value, known)


def parse_jobs(text: str) -> int:
    """``--jobs``: a number, or ``auto``. Small networks leave a core idle when one trial
    runs two threads (on the 8x8 digits one thread trains as fast as two), so on a CPU
    machine ``auto`` runs one single-threaded trial per core; with GPUs, one per GPU."""
    if str(text).strip().lower() != "auto":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--jobs: expected a number or auto, got '{text}'") from None
    import torch  # only for auto: how many GPUs there are

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return gpus or max(1, min(os.cpu_count() or 1, MAX_AUTO_JOBS))


def objective_list(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())
