"""The one training loop, used by the search and by any retraining.

It knows neither Optuna nor MLflow: it reports each epoch through ``Callbacks.on_epoch``,
whose exceptions (a pruning decision, say) end training, and hands a ``TrainingState`` at
the end of each epoch to ``Callbacks.on_checkpoint``; ``resume`` continues from one.
Data stays on the device as uint8 and is normalised per batch; the loss is summed on the
device and read once per epoch, so a step never waits for the host.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from automl.data import Split
from automl.errors import OutOfMemory, TrainingDiverged
from automl.training.augment import Augment
from automl.training.config import OptimConfig, TrainConfig
from automl.training.state import TrainingState, on_cpu, restore_rng, rng_states

# Evaluation batches: large on a GPU (throughput), modest on a CPU (activations of wide
# convolutions at 1024 images take hundreds of MB of host memory for no gain in speed).
EVAL_BATCH = {"cuda": 2048, "cpu": 256}
RESIDENT_SHARE = 0.5  # a split lives on the GPU if it takes at most this share of free memory


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
    """Weight decay applies to weights only: decaying norms and biases only hurts.

    A pretrained backbone learns at ``backbone_lr`` times the head's rate, so fine-tuning
    does not wash out what it knows.
    """
    parts: list[tuple[list[nn.Parameter], float]] = [(list(model.parameters()), config.lr)]
    head, backbone = (
        getattr(model, "head_parameters", None),
        getattr(model, "backbone_parameters", None),
    )
    if callable(head) and callable(backbone):
        parts = [(list(head()), config.lr), (list(backbone()), config.lr * config.backbone_lr)]
    groups = []
    for params, lr in parts:
        groups.append(
            {
                "params": [p for p in params if p.ndim > 1],
                "lr": lr,
                "weight_decay": config.weight_decay,
            }
        )
        groups.append({"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0})
    groups = [g for g in groups if g["params"]]
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
def out_of_memory_as_trial_error(batch_size: int) -> Iterator[None]:
    try:
        yield
    except torch.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        raise OutOfMemory(f"out of device memory at batch size {batch_size}: {exc}") from None
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc):
            raise
        raise OutOfMemory(f"out of host memory (batch size {batch_size}): {exc}") from None


def _batch(images: Tensor, norm: Normalizer, device: torch.device) -> Tensor:
    x: Tensor = norm(images.to(device, non_blocking=True).float().div_(255.0))
    return x


def evaluate(
    model: nn.Module, split: Split, norm: Normalizer, device: torch.device
) -> tuple[float, float]:
    """Mean loss and accuracy over a split, in large batches."""
    return _loss_and_accuracy(predict_logits(model, split.images, norm, device), split.labels)


def measure(
    model: nn.Module, split: Split, norm: Normalizer, device: torch.device
) -> tuple[float, float]:
    """Loss and accuracy of ``model`` as it is served (float32; cuDNN may still run its
    convolutions in TF32 on a GPU), computed on ``device``.

    The figures a version records (its test accuracy, the ensemble's, the mirrored one's)
    come from here: on a GPU they take seconds where the CPU beside it takes minutes for
    an ensemble of CIFAR-10 networks. The model is left on the CPU, where it is exported.
    """
    return _loss_and_accuracy(served_logits(model, split.images, norm, device), split.labels)


def served_logits(
    model: nn.Module, images: Tensor, norm: Normalizer, device: torch.device
) -> Tensor:
    """``measure``'s logits, on the CPU (calibration fits a temperature to them)."""
    try:
        return predict_logits(model.to(device), images, norm, device, exact=True).cpu()
    finally:
        model.to(torch.device("cpu"))


def _loss_and_accuracy(logits: Tensor, labels: Tensor) -> tuple[float, float]:
    labels = labels.to(logits.device)
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: Tensor, norm: Normalizer, device: torch.device, *, exact: bool = False
) -> Tensor:
    """Logits for ``images`` on ``device``, where the model must already be.

    On a GPU the per-epoch validation runs in bfloat16 with channels-last inputs (speed);
    ``exact`` keeps float32, as the model is served, for the figures a version records.
    The normaliser follows the images to the device, whichever device it was built on.
    """
    model.eval()
    norm.to(device)
    cuda = device.type == "cuda" and not exact
    outputs = []
    step = EVAL_BATCH.get(device.type, 256)
    for start in range(0, images.shape[0], step):
        x = _batch(images[start : start + step], norm, device)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", torch.bfloat16) if cuda else nullcontext():
            outputs.append(model(x).float())
    logits: Tensor = torch.cat(outputs)
    return logits


class DeviceImages:
    """A split's images where the loop reads them: on the device when they fit in
    ``RESIDENT_SHARE`` of its free memory, else in pinned host memory, copied per batch."""

    def __init__(self, split: Split, device: torch.device) -> None:
        self.device = device
        resident = True
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            resident = split.images.numel() <= RESIDENT_SHARE * free
        self.resident = resident
        self.images = split.images.to(device) if resident else split.images.pin_memory()

    def __getitem__(self, index: Tensor) -> Tensor:
        if self.resident:
            return self.images[index]
        batch = self.images[index.cpu()].pin_memory()
        return batch.to(self.device, non_blocking=True)


class _Loop:
    """One training run's state; ``fit`` is the public entry point."""

    def __init__(
        self,
        model: nn.Module,
        train: Split,
        *,
        optim: OptimConfig,
        schedule: TrainConfig,
        device: torch.device,
        seed: int,
        compile: bool = False,
    ) -> None:
        self.model, self.schedule, self.device = model, schedule, device
        # torch.compile pays a compilation up front for faster steps: worth it for long trials.
        self.forward: Callable[[Tensor], Tensor] = torch.compile(model) if compile else model
        self.cuda = device.type == "cuda"
        self.images = DeviceImages(train, device)
        self.labels = train.labels.to(device)
        self.n = len(train)
        self.batch_size = min(schedule.batch_size, self.n)
        # Drop the ragged last batch: BatchNorm needs more than one sample.
        self.steps = max(1, self.n // self.batch_size)
        total = self.steps * schedule.epochs
        self.optimizer = make_optimizer(model, optim)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_factor(schedule.schedule, step / total, schedule.warmup),
        )
        self.gen = torch.Generator(device=device).manual_seed(seed)
        counts = torch.bincount(self.labels, minlength=int(self.labels.max()) + 1)
        counts = counts.float().clamp_min(1)
        self.class_weight = None
        if schedule.balance == "weighted_loss":  # inverse frequency, mean weight 1
            self.class_weight = counts.sum() / (len(counts) * counts)
        self.sample_weight = None
        if schedule.balance == "balanced_sampling":  # every class equally likely
            self.sample_weight = (1.0 / counts)[self.labels]
        self.freeze = getattr(model, "freeze_backbone", None)
        self.seed = seed

    def capture(self, history: list[EpochResult]) -> TrainingState:
        """Everything the next epoch depends on, copied to the CPU."""
        return TrainingState(
            epoch=len(history), epochs=self.schedule.epochs, steps_per_epoch=self.steps,
            model=on_cpu(self.model.state_dict()), optimizer=on_cpu(self.optimizer.state_dict()),
            scheduler=on_cpu(self.scheduler.state_dict()), generator=self.gen.get_state(),
            device_type=self.device.type, rng=rng_states(),
            history=[asdict(result) for result in history],
        )  # fmt: skip

    def restore(self, state: TrainingState) -> list[EpochResult]:
        """Continue from ``state``; returns the epochs it had run. A state of another
        schedule or data size would silently train something else: refused."""
        if (state.epochs, state.steps_per_epoch) != (self.schedule.epochs, self.steps):
            raise ValueError(
                f"a checkpoint of {state.epochs} epochs of {state.steps_per_epoch} steps cannot "
                f"resume {self.schedule.epochs} epochs of {self.steps} steps"
            )
        self.model.load_state_dict(state.model)
        # A copy: the optimizer adopts the tensors it is given and updates them in place.
        self.optimizer.load_state_dict(on_cpu(state.optimizer))
        self.scheduler.load_state_dict(state.scheduler)
        if state.device_type == self.device.type:
            self.gen.set_state(state.generator)
        else:  # a CUDA generator's state means nothing to a CPU one: a new, seeded order
            self.gen.manual_seed(self.seed + state.epoch)
        restore_rng(state.rng)
        return [EpochResult(**result) for result in state.history]

    def order(self) -> Tensor:
        if self.sample_weight is not None:
            return torch.multinomial(
                self.sample_weight, self.n, replacement=True, generator=self.gen
            )
        return torch.randperm(self.n, device=self.device, generator=self.gen)

    def epoch(self, epoch: int, augment: Augment, norm: Normalizer) -> float:
        """One pass; the loss is summed on the device and read once, at the end."""
        self.model.train()
        if self.freeze is not None:
            self.freeze(epoch <= self.schedule.freeze_epochs)
        loss_sum = torch.zeros((), device=self.device)
        order = self.order()
        for step in range(self.steps):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            x = self.images[index].float().div_(255.0)
            if augment:
                x = augment(x, self.gen)
            x = norm(x)
            if self.cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", torch.bfloat16) if self.cuda else nullcontext():
                loss = F.cross_entropy(
                    self.forward(x),
                    self.labels[index],
                    weight=self.class_weight,
                    label_smoothing=self.schedule.label_smoothing,
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
            self.scheduler.step()
            loss_sum += loss.detach().float()
        return loss_sum.item() / self.steps


@dataclass(frozen=True)
class Setup:
    """How a network is trained: its optimiser, schedule, augmentation and normalisation,
    on which device, from which seed, compiled or not."""

    optim: OptimConfig
    schedule: TrainConfig
    augment: Augment
    norm: Normalizer
    device: torch.device
    seed: int
    compile: bool = False


@dataclass(frozen=True)
class Callbacks:
    """What the caller sees while training runs.

    ``on_epoch`` sees each epoch's figures; it stops training by raising (pruning) or by
    returning True (the epochs so far stand). ``on_checkpoint`` receives the state at the
    end of each epoch but the last, before ``on_epoch`` sees its figures."""

    on_epoch: Callable[[EpochResult], bool | None] | None = None
    on_checkpoint: Callable[[TrainingState], None] | None = None


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    setup: Setup,
    callbacks: Callbacks | None = None,
    *,
    resume: TrainingState | None = None,
) -> list[EpochResult]:
    """Train ``model`` in place for ``setup.schedule.epochs`` epochs; returns every epoch's
    figures. ``resume`` starts from a state ``callbacks.on_checkpoint`` received, the model
    built as before, and the figures returned include its epochs."""
    optim, schedule, augment, norm, device = (
        setup.optim, setup.schedule, setup.augment, setup.norm, setup.device
    )  # fmt: skip
    on_epoch, on_checkpoint = (
        (callbacks.on_epoch, callbacks.on_checkpoint) if callbacks else (None, None)
    )
    model.to(device)
    norm.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()
    history: list[EpochResult] = []
    with out_of_memory_as_trial_error(schedule.batch_size):
        loop = _Loop(
            model, train, optim=optim, schedule=schedule, device=device, seed=setup.seed,
            compile=setup.compile,
        )  # fmt: skip
        if resume is not None:
            history = loop.restore(resume)
        for epoch in range(len(history) + 1, schedule.epochs + 1):
            start = time.perf_counter()
            lr = float(loop.scheduler.get_last_lr()[0])
            train_loss = loop.epoch(epoch, augment, norm)
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
                images_per_second=loop.steps * loop.batch_size / max(train_seconds, 1e-9),
            )
            history.append(result)
            if on_checkpoint is not None and epoch < schedule.epochs:
                on_checkpoint(loop.capture(history))  # first: an interrupt in on_epoch keeps it
            if on_epoch is not None and on_epoch(result):
                break  # the caller stops here: a budget ended, say
    return history
