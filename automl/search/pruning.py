"""Pruning on the accuracy curve when the study has several objectives.

Optuna's pruners (and ``trial.report``) serve single-objective studies only, and its
multi-objective samplers cannot rank pruned trials that carry intermediate values. So in
a multi-objective study the validation-accuracy curve is kept as the trial's ``curve``
user attribute, and a percentile rule prunes on it: a trial whose accuracy at an epoch
falls below the given percentile of the other trials at that epoch stops. A low
percentile keeps alive the small, fast models that trade accuracy for latency.
"""

from __future__ import annotations

import numpy as np
import optuna
from optuna.trial import TrialState

PERCENTILE = 25.0
STARTUP_TRIALS = 5
WARMUP_EPOCHS = 1
CURVE = "curve"


def record(trial: optuna.Trial, epoch: int, value: float) -> None:
    curve = dict(trial.user_attrs.get(CURVE, {}))
    curve[str(epoch)] = value
    trial.set_user_attr(CURVE, curve)


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
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    key = str(epoch)
    others = [
        t.user_attrs[CURVE][key]
        for t in trial.study.get_trials(deepcopy=False, states=finished)
        if key in t.user_attrs.get(CURVE, {})
    ]
    if len(others) < startup_trials:
        return False
    return value < float(np.percentile(others, percentile))


def epochs_run(trial: optuna.trial.FrozenTrial) -> int:
    """Epochs a trial trained, whichever way its curve was recorded."""
    return max(len(trial.intermediate_values), len(trial.user_attrs.get(CURVE, {})))
