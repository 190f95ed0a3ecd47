"""The one training loop, used by the search and by any retraining.

It knows neither Optuna nor MLflow: it reports each epoch through ``on_epoch``, whose
exceptions (a pruning decision, say) end training. Data stays on the device as uint8 and
is normalised per batch; the loss is summed on the device and read once per epoch, so
a step never waits for the host.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from automl.augment import Augment
from automl.data import Split
from automl.errors import OutOfMemory, TrainingDiverged
from automl.params import OptimConfig, TrainConfig

EVAL_BATCH = 1024


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    images_per_second: float

    def metrics(self) -> dict[str, float]:
        return {
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_acc": self.val_acc,
            "lr": self.lr,
            "epoch_seconds": self.seconds,
            "images_per_second": self.images_per_second,
        }


class Normalizer(nn.Module):
    """uint8 images -> float, per-channel standardised; kept beside the model, not in it."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def make_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """Weight decay applies to weights only: decaying norms and biases only hurts."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    if config.name == "sgd":
        nesterov = config.nesterov and config.momentum > 0
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=nesterov)
    if config.name == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(schedule: str, progress: float, warmup: float) -> float:
    """Multiplier of the base learning rate at ``progress`` in [0, 1] of all steps."""
    if schedule == "onecycle":  # triangular: up for the first quarter, down to zero
        peak = warmup or 0.25
        return progress / peak if progress < peak else max(0.0, (1 - progress) / (1 - peak))
    if warmup and progress < warmup:
        return progress / warmup
    if schedule == "cosine":
        span = (progress - warmup) / max(1e-8, 1 - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, span)))
    return 1.0


@contextmanager
def _out_of_memory_as_trial_error(batch_size: int) -> Iterator[None]:
    try:
        yield
    except torch.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        raise OutOfMemory(f"out of device memory at batch size {batch_size}: {exc}") from None
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc):
            raise
        raise OutOfMemory(f"out of host memory at batch size {batch_size}") from None


def _batch(images: Tensor, norm: Normalizer, device: torch.device) -> Tensor:
    x: Tensor = norm(images.to(device, non_blocking=True).float().div_(255.0))
    return x


def evaluate(
    model: nn.Module, split: Split, norm: Normalizer, device: torch.device
) -> tuple[float, float]:
    """Mean loss and accuracy over a split, in large batches."""
    logits = predict_logits(model, split.images, norm, device)
    labels = split.labels.to(device)
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: Tensor, norm: Normalizer, device: torch.device
) -> Tensor:
    model.eval()
    cuda = device.type == "cuda"
    outputs = []
    for start in range(0, images.shape[0], EVAL_BATCH):
        x = _batch(images[start : start + EVAL_BATCH], norm, device)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", torch.bfloat16) if cuda else nullcontext():
            outputs.append(model(x).float())
    logits: Tensor = torch.cat(outputs)
    return logits


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    *,
    optim: OptimConfig,
    schedule: TrainConfig,
    augment: Augment,
    norm: Normalizer,
    device: torch.device,
    seed: int,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> list[EpochResult]:
    """Train ``model`` in place for ``schedule.epochs`` epochs; returns every epoch's figures."""
    cuda = device.type == "cuda"
    model.to(device)
    norm.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    images, labels = train.images.to(device), train.labels.to(device)
    n = images.shape[0]
    batch_size = min(schedule.batch_size, n)
    steps_per_epoch = max(1, n // batch_size)  # drop the ragged last batch: BN needs > 1 sample
    total_steps = steps_per_epoch * schedule.epochs
    optimizer = make_optimizer(model, optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(schedule.schedule, step / total_steps, schedule.warmup)
    )
    gen = torch.Generator(device=device).manual_seed(seed)
    history: list[EpochResult] = []
    with _out_of_memory_as_trial_error(batch_size):
        for epoch in range(1, schedule.epochs + 1):
            start = time.perf_counter()
            model.train()
            lr = float(scheduler.get_last_lr()[0])
            loss_sum = torch.zeros((), device=device)
            order = torch.randperm(n, device=device, generator=gen)
            for step in range(steps_per_epoch):
                index = order[step * batch_size : (step + 1) * batch_size]
                x = images[index].float().div_(255.0)
                if augment:
                    x = augment(x, gen)
                x = norm(x)
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", torch.bfloat16) if cuda else nullcontext():
                    loss = F.cross_entropy(
                        model(x), labels[index], label_smoothing=schedule.label_smoothing
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach().float()
            train_loss = loss_sum.item() / steps_per_epoch
            train_seconds = time.perf_counter() - start
            if not math.isfinite(train_loss):
                raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch}")
            val_loss, val_acc = evaluate(model, val, norm, device)
            result = EpochResult(
                epoch=epoch,
                train_loss=train_loss,
                val_loss=val_loss,
                val_acc=val_acc,
                lr=lr,
                seconds=time.perf_counter() - start,
                images_per_second=steps_per_epoch * batch_size / max(train_seconds, 1e-9),
            )
            history.append(result)
            if on_epoch is not None:
                on_epoch(result)
    return history
