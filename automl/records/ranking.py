"""The one rule that ranks trials, for every reader: the conclusion registering the best,
the objective deciding whose weights to keep, the terminal's leaderboard, the MLflow
story, the HTML report and warm starts.

Most accurate first; of equal accuracy, the earlier trial (a database returns tied rows
in any order, so the number decides).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"


def _state(trial: Any) -> str:
    return str(trial.state.name)


def merit(trial: Any, sign: float = 1.0) -> tuple[float, int]:
    """The sort key of a complete trial: its first objective (``sign`` -1 when that is
    minimised), then its number."""
    return -sign * float(trial.values[0]), int(trial.number)


def by_merit(trials: Iterable[Any], *, maximize: bool = True) -> list[Any]:
    """The complete trials with a result, best first."""
    complete = [t for t in trials if _state(t) == COMPLETE and t.values]
    return sorted(complete, key=lambda t: merit(t, 1.0 if maximize else -1.0))


def place(value: float, trials: Iterable[Any]) -> int:
    """How many complete trials rank ahead of a new result ``value`` (a tie goes to the
    earlier trial, which is every one already there)."""
    return sum(1 for t in trials if _state(t) == COMPLETE and t.values and t.values[0] >= value)


def last_val_acc(trial: Any) -> float | None:
    """The accuracy a trial ended with: its result, or its last report when it was cut."""
    if trial.values:
        return float(trial.values[0])
    reports = trial.intermediate_values
    return reports[max(reports)] if reports else None


def ranked(trials: Iterable[Any], *, failed: bool = False) -> list[Any]:
    """Completed trials by accuracy, then the pruned ones by the accuracy they were cut at
    (a short study still shows what was tried), then, with ``failed``, the failed ones."""
    trials = list(trials)
    pruned = [t for t in trials if _state(t) == PRUNED and last_val_acc(t) is not None]
    pruned.sort(key=lambda t: (-(last_val_acc(t) or 0.0), t.number))
    broken = [t for t in trials if _state(t) == FAIL] if failed else []
    return [*by_merit(trials), *pruned, *broken]
