"""Training one configuration: the network it describes, seeded, then trained with its own
optimizer, schedule and augmentation on the data's training split.

A search trial, the rebuild of a winning trial whose weights are missing, and the
retraining of a registered model on new data all come through these two functions, so
the three can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from automl.data import ImageData
from automl.training.augment import Augment
from automl.training.config import OptimConfig, TrainConfig, TrialConfig
from automl.training.loop import (
    Callbacks,
    EpochResult,
    Normalizer,
    Setup,
    fit,
    out_of_memory_as_trial_error,
)
from automl.training.networks import build_model
from automl.training.state import TrainingState


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number`` of a search seeded with ``seed``."""
    return (seed * 1_000_003 + number) % (2**31)


def build_network(
    config: TrialConfig, data: ImageData, weights_dir: Path | None = None
) -> nn.Module:
    """The network ``config`` describes, shaped for ``data`` (channels, size, classes)."""
    return build_model(
        config.arch, data.channels, data.image_size, data.num_classes, weights_dir=weights_dir
    )


def seeded_network(
    config: TrialConfig, data: ImageData, seed: int, weights_dir: Path | None = None
) -> nn.Module:
    """``build_network`` with its initial weights drawn from ``seed``; a network too large
    for memory is a trial's problem (``OutOfMemory``), not a crash."""
    torch.manual_seed(seed)
    with out_of_memory_as_trial_error(config.train.batch_size):
        return build_network(config, data, weights_dir)


@dataclass(frozen=True)
class Overrides:
    """What a caller changes of a configuration's own training: fewer or more ``epochs``
    (a rebuild, a retrain), a scaled learning rate and no frozen warm-up (a gentle
    fine-tune), the parent's normalisation (weights trained with it), compiling the
    network, and a saved state to ``resume`` from (a retried trial)."""

    epochs: int | None = None
    lr_scale: float = 1.0
    freeze_epochs: int | None = None
    norm: Normalizer | None = None  # default: the data's own statistics
    compile: bool = False
    resume: TrainingState | None = None

    def schedule(self, config: TrialConfig) -> TrainConfig:
        schedule = config.train
        if self.epochs is None and self.freeze_epochs is None:
            return schedule
        epochs = schedule.epochs if self.epochs is None else self.epochs
        freeze = schedule.freeze_epochs if self.freeze_epochs is None else self.freeze_epochs
        return schedule.model_copy(update={"epochs": epochs, "freeze_epochs": freeze})

    def optim(self, config: TrialConfig) -> OptimConfig:
        if self.lr_scale == 1.0:
            return config.optim
        return config.optim.model_copy(update={"lr": config.optim.lr * self.lr_scale})


def fit_config(
    model: nn.Module,
    config: TrialConfig,
    data: ImageData,
    *,
    device: torch.device,
    seed: int,
    overrides: Overrides = Overrides(),
    callbacks: Callbacks | None = None,
) -> list[EpochResult]:
    """Train ``model`` in place as ``config`` says (with the caller's ``overrides``),
    validating on ``data.val`` each epoch."""
    setup = Setup(
        optim=overrides.optim(config),
        schedule=overrides.schedule(config),
        augment=Augment(config.aug),
        norm=overrides.norm or Normalizer(data.mean, data.std),
        device=device,
        seed=seed,
        compile=overrides.compile,
    )
    return fit(model, data.train, data.val, setup, callbacks, resume=overrides.resume)
