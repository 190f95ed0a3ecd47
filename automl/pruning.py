"""Pruning on the accuracy curve when the study has several objectives.

Optuna's pruners (and ``trial.report``) serve single-objective studies only. In a
multi-objective study the validation-accuracy curve is still recorded as the trial's
intermediate values, and a percentile rule prunes on it: a trial whose accuracy at an
epoch falls below the given percentile of the other trials at that epoch stops. A low
percentile keeps small, fast models that trade accuracy for latency alive.
"""

from __future__ import annotations

import numpy as np
import optuna
from optuna.trial import TrialState

PERCENTILE = 25.0
STARTUP_TRIALS = 5
WARMUP_EPOCHS = 1


def record(trial: optuna.Trial, epoch: int, value: float) -> None:
    """Store an intermediate value without ``trial.report``'s single-objective check."""
    trial.study._storage.set_trial_intermediate_value(trial._trial_id, epoch, value)


def should_prune(
    trial: optuna.Trial,
    epoch: int,
    value: float,
    *,
    percentile: float = PERCENTILE,
    startup_trials: int = STARTUP_TRIALS,
    warmup_epochs: int = WARMUP_EPOCHS,
) -> bool:
    if epoch <= warmup_epochs:
        return False
    others = [
        t.intermediate_values[epoch]
        for t in trial.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
        )
        if epoch in t.intermediate_values
    ]
    if len(others) < startup_trials:
        return False
    return value < float(np.percentile(others, percentile))
