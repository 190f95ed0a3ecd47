"""Training one configuration: the network it describes, seeded, then trained with its own
optimizer, schedule and augmentation on the data's training split.

A search trial, the rebuild of a winning trial whose weights are missing, and the
retraining of a registered model on new data all come through these two functions, so
the three can never drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from automl.data import ImageData
from automl.training.augment import Augment
from automl.training.checkpoint import TrainingState
from automl.training.config import TrialConfig
from automl.training.loop import EpochResult, Normalizer, fit, out_of_memory_as_trial_error
from automl.training.networks import build_model


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


def fit_config(
    model: nn.Module,
    config: TrialConfig,
    data: ImageData,
    *,
    device: torch.device,
    seed: int,
    epochs: int | None = None,
    lr_scale: float = 1.0,
    freeze_epochs: int | None = None,
    norm: Normalizer | None = None,
    on_epoch: Callable[[EpochResult], bool | None] | None = None,
    compile: bool = False,
    resume: TrainingState | None = None,
    on_checkpoint: Callable[[TrainingState], None] | None = None,
) -> list[EpochResult]:
    """Train ``model`` in place as ``config`` says, validating on ``data.val`` each epoch.

    ``epochs``, ``lr_scale`` and ``freeze_epochs`` adapt the recipe (a shorter rebuild, a
    gentler fine-tune); ``norm`` defaults to the data's own statistics; ``resume`` and
    ``on_checkpoint`` are ``fit``'s.
    """
    schedule = config.train
    if epochs is not None or freeze_epochs is not None:
        schedule = schedule.model_copy(
            update={
                "epochs": schedule.epochs if epochs is None else epochs,
                "freeze_epochs": schedule.freeze_epochs if freeze_epochs is None else freeze_epochs,
            }
        )
    optim = config.optim
    if lr_scale != 1.0:
        optim = optim.model_copy(update={"lr": optim.lr * lr_scale})
    return fit(
        model,
        data.train,
        data.val,
        optim=optim,
        schedule=schedule,
        augment=Augment(config.aug),
        norm=norm or Normalizer(data.mean, data.std),
        device=device,
        seed=seed,
        on_epoch=on_epoch,
        compile=compile,
        resume=resume,
        on_checkpoint=on_checkpoint,
    )
