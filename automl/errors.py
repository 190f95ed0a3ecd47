"""The error hierarchy: every error says who must stop.

A ``ConfigError`` ends the whole command before any training starts (exit code 2);
a ``TrialError`` ends one trial, which is recorded with its reason, and the study goes on.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AutomlError(Exception):
    """Root of every error automl raises on purpose; the CLI prints it as one line."""

    exit_code = 1


class ConfigError(AutomlError):
    """Bad configuration or input: fatal, reported before training starts."""

    exit_code = 2


class StoreError(ConfigError):
    """A storage or tracking URL that cannot be opened or written."""


class TrialError(AutomlError):
    """A problem inside one trial; ``reason`` is a short machine-readable word.

    The trial ends in ``state``: PRUNED for a configuration that cannot be trained as it is
    (out of memory, diverged, too large), so the sampler learns from it; FAIL for a fault
    of the surroundings (unwritable artifacts, unreachable tracking).
    """

    state = "PRUNED"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TrainingDiverged(TrialError):
    def __init__(self, message: str) -> None:
        super().__init__("diverged", message)


class OutOfMemory(TrialError):
    def __init__(self, message: str) -> None:
        super().__init__("oom", message)


class ArtifactWriteFailed(TrialError):
    """An artifact could not be written (disk full, say): the trial fails, not the study."""

    state = "FAIL"

    def __init__(self, message: str) -> None:
        super().__init__("artifacts", message)


class TrackingUnreachable(TrialError):
    """The tracking store stayed away through every retry before the trial could start."""

    state = "FAIL"

    def __init__(self, message: str) -> None:
        super().__init__("tracking", message)


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """Message for a name that is not registered, with the closest match when there is one."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}' (choose from {', '.join(known)}){hint}"


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so runs are closed before exiting. Unlike Ctrl-C at a
    terminal, it reaches only the process it was sent to, not its job processes."""


# A signal asked the process to stop: the interrupt it raised
# (see search/scheduler/signals.py, stopping_on_signals).
STOP: list[type[KeyboardInterrupt]] = []


def stop_if_asked() -> None:
    """Raise again the interrupt a signal asked for, in case its own raise was lost: Python
    prints and ignores an exception raised inside a garbage-collection callback, so a
    Ctrl-C landing there would otherwise be dropped and the search would run on."""
    if STOP:
        raise STOP[0]()
