"""Which complete trial is best when several share the best validation accuracy.

On a small validation split accuracy saturates: on digits (269 images) many trials reach
1.0, and Optuna's ``best_trial`` is then simply the first of them, a coin toss for the
model that gets registered. The validation loss still tells them apart: of two networks
with every validation image right, the one with the lower loss is right by wider
margins, the better bet on images it has not seen. It breaks ties only; the accuracy
still decides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

VAL_LOSS = "val_loss"  # user attribute: the validation loss at the epoch that was the result


def _loss(trial: FrozenTrial) -> float:
    value = trial.user_attrs.get(VAL_LOSS)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else math.inf


def rank_key(trial: FrozenTrial) -> tuple[float, float, int]:
    """Sorts best first: higher first objective, then lower validation loss, then earlier."""
    assert trial.values is not None
    return (-trial.values[0], _loss(trial), trial.number)


def ranked(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return sorted((t for t in trials if t.values is not None), key=rank_key)


def best_complete(study: optuna.Study) -> FrozenTrial:
    """The best complete trial of a one-objective study (ties broken as above)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ValueError("no complete trial")
    return ranked(complete)[0]


def beats(study: optuna.Study, value: float, val_loss: float) -> bool:
    """Whether a trial ending with ``value`` and ``val_loss`` would rank first now."""
    try:
        best = best_complete(study)
    except ValueError:
        return True
    assert best.values is not None
    return (-value, val_loss) < (-best.values[0], _loss(best))
