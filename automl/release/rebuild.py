"""A finished trial's network again: its logged weights, or its configuration trained once
more from its recorded params, seed and epochs (a refit trains it on more data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from automl.data import ImageData
from automl.records import TrialRecord
from automl.tracking import Tracker
from automl.training.config import TrialConfig
from automl.training.train import (
    Overrides,
    build_network,
    fit_config,
    seeded_network,
    trial_seed,
)

CPU = torch.device("cpu")


def trial_config(trial: Any) -> TrialConfig:
    """The exact configuration a trial trained, fixed values of the space included."""
    return TrialConfig.from_params(TrialRecord.of(trial).params)


def trial_epochs(trial: Any) -> int:
    """The epochs of its schedule the trial's weights had trained, those before a resumed
    checkpoint included (a refit or a rebuild trains them all from scratch)."""
    config, record = trial_config(trial), TrialRecord.of(trial)
    cap = record.epochs_cap if record.epochs_cap is not None else config.train.epochs
    return record.epochs_trained or min(config.train.epochs, cap)


def trained_model(
    trial: Any,
    data: ImageData,
    tracker: Tracker,
    device: torch.device,
    weights_dir: Path | None = None,
) -> tuple[torch.nn.Module, str]:
    """The trial's network with its logged weights; retrained from its params if none exist.

    The text says why it was retrained ("" when the logged weights were used).
    """
    model = build_network(trial_config(trial), data)
    run_id = TrialRecord.of(trial).run_id
    try:
        if run_id is None:
            raise FileNotFoundError("the trial has no MLflow run")
        model.load_state_dict(tracker.load_weights(run_id))
        return model, ""
    except Exception as exc:  # missing or unreadable weights: the params still rebuild it
        reason = f"retrained trial {trial.number}: its weights could not be loaded ({exc})"
    return retrained(trial, data, device, weights_dir), reason


def retrained(
    trial: Any,
    data: ImageData,
    device: torch.device,
    weights_dir: Path | None = None,
) -> torch.nn.Module:
    """The trial's configuration trained again on ``data``: same seed, same epochs, the
    same pretrained weights to start from (``--weights-dir``)."""
    config = trial_config(trial)
    seed = trial_seed(TrialRecord.of(trial).seed, trial.number)
    model = seeded_network(config, data, seed, weights_dir)
    epochs = Overrides(epochs=trial_epochs(trial))
    fit_config(model, config, data, device=device, seed=seed, overrides=epochs)
    return model.to(CPU)
