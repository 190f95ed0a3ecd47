"""Observers of a search (the progress display, tests); none may change its course.

Like keras-tuner's callbacks: the runner and the objective call them at fixed points and
ignore what they return. Every hook does nothing by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: a command that just reads a study loads no torch
    from optuna import Study
    from optuna.trial import FrozenTrial

    from automl.data import DataReport
    from automl.training.loop import EpochResult


def _nothing(*args: Any) -> None:
    return None


@dataclass
class Hooks:
    on_stage: Callable[[str], None] = _nothing  # a set-up step begins
    on_note: Callable[[str], None] = _nothing  # something the user should read, said once
    on_progress: Callable[[str, int, int], None] = _nothing  # (stage, done, total) of long work
    on_data: Callable[[DataReport], None] = _nothing  # the data is loaded and cleaned
    on_trial_begin: Callable[[int, dict[str, Any]], None] = _nothing  # (number, params)
    on_epoch_end: Callable[[int, EpochResult, int], None] = _nothing  # (number, result, epochs)
    on_trial_end: Callable[[Study, FrozenTrial], None] = _nothing
