"""Why a search completed no trial, and what to run instead, in one sentence.

"No trial completed" alone leaves a person nowhere: the trials may have been pruned at
chance, cut by the budget, or failed, and each calls for a different next command. The
sentence counts what happened to the trials and names the options that change it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState

from automl.records import TrialRecord
from automl.search.strategy.pruners import AT_CHANCE, batch_size, optimizer_steps

FEW_IMAGES = 100  # training images a class below which more data is the first advice


def _steps(trial: FrozenTrial, train_images: int) -> int:
    record = TrialRecord.of(trial)
    try:
        size = batch_size(record.params)
    except ValueError:  # params from an older space: the steps are unknown
        return 0
    return optimizer_steps(record.epochs_trained, train_images, size)


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


def _what_happened(trials: Sequence[FrozenTrial], train_images: int) -> list[str]:
    """Each way the trials ended, counted."""
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    at_chance = [t for t in pruned if AT_CHANCE in (TrialRecord.of(t).message or "")]
    parts = []
    if at_chance:
        steps = _span([_steps(t, train_images) for t in at_chance])
        parts.append(f"{len(at_chance)} still at chance after {steps} optimizer steps")
    if len(pruned) > len(at_chance):
        parts.append(f"{len(pruned) - len(at_chance)} fell behind the others")
    failed = Counter(
        TrialRecord.of(t).reason or "error" for t in trials if t.state == TrialState.FAIL
    )
    if failed:
        reasons = ", ".join(f"{reason} {n}" for reason, n in failed.most_common())
        parts.append(f"{failed.total()} failed ({reasons})")
    unfinished = sum(1 for t in trials if not t.state.is_finished())
    if unfinished:
        parts.append(f"{unfinished} did not finish")
    return parts


def _advice(
    trials: Sequence[FrozenTrial], train_images: int, classes: int, timeout: float | None
) -> list[str]:
    """The options that would change the outcome, the likeliest first."""
    advice = []
    if any(t.state == TrialState.PRUNED for t in trials):
        advice.append("--pruner none (every trial trains its whole schedule)")
    per_class = train_images // max(classes, 1)
    if per_class < FEW_IMAGES:
        advice.append(f"more images (training holds about {per_class} a class)")
    if timeout is not None:
        advice.append(f"a longer --timeout ({timeout:g} s now)")
    if any(t.state == TrialState.FAIL for t in trials):
        advice.append("the failed trials' messages (their MLflow runs say why each stopped)")
    return advice


def why_nothing_completed(
    trials: Sequence[FrozenTrial], train_images: int, classes: int, timeout: float | None = None
) -> str:
    """Why none of ``trials`` (a search's own) completed and what to run instead.

    ``train_images`` and ``classes`` describe the training split (optimizer steps and
    images a class follow from them); ``timeout`` is the search's ``--timeout``, if any."""
    n = len(trials)
    if n == 0:
        head = "no trial ran before the budget ended"
    elif all(t.state == TrialState.PRUNED for t in trials):
        head = f"all {n} trial{'s were' if n > 1 else ' was'} pruned"
    else:
        head = f"none of the {n} trial{'s' if n > 1 else ''} completed"
    parts = _what_happened(trials, train_images)
    advice = _advice(trials, train_images, classes, timeout)
    text = f"{head}: {', '.join(parts)}" if parts else head
    return f"{text}; to get a model, try {', '.join(advice)}" if advice else text
