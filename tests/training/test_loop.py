"""The training loop on real data: it learns, it is deterministic, and it fails cleanly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from automl.data import Split
from automl.errors import OutOfMemory, TrainingDiverged
from automl.training.augment import Augment
from automl.training.config import ArchConfig, AugConfig, OptimConfig, StageConfig, TrainConfig
from automl.training.loop import (
    Callbacks,
    Normalizer,
    Setup,
    evaluate,
    fit,
    lr_factor,
    make_optimizer,
    measure,
)
from automl.training.networks import build_model

CPU = torch.device("cpu")
ARCH = ArchConfig(stages=(StageConfig(width=16, convs=1), StageConfig(width=32, convs=1)))


def train(digits, *, epochs=3, seed=0, on_epoch=None, model=None, optim=None, aug=None):
    torch.manual_seed(seed)
    model = model or build_model(ARCH, 1, (8, 8), 10)
    setup = Setup(
        optim=optim or OptimConfig(name="sgd", lr=0.2, momentum=0.9, nesterov=True),
        schedule=TrainConfig(batch_size=64, epochs=epochs, schedule="onecycle"),
        augment=Augment(aug or AugConfig()),
        norm=Normalizer(digits.mean, digits.std),
        device=CPU,
        seed=seed,
    )
    history = fit(model, digits.train, digits.val, setup, Callbacks(on_epoch=on_epoch))
    return model, history


def test_learns_digits_in_a_few_epochs(digits):
    model, history = train(digits, epochs=6)
    assert len(history) == 6
    assert history[-1].val_acc > 0.9
    assert history[-1].train_loss < history[0].train_loss
    _, test_acc = evaluate(model, digits.test, Normalizer(digits.mean, digits.std), CPU)
    assert test_acc > 0.85
    first = history[0]
    assert first.epoch == 1 and first.images_per_second > 0 and first.seconds > 0


def test_same_seed_same_history_on_cpu(digits):
    aug = AugConfig(strength=0.7, translate=True, rotate=True, erasing=True)
    _, a = train(digits, epochs=2, seed=5, aug=aug)
    _, b = train(digits, epochs=2, seed=5, aug=aug)
    _, c = train(digits, epochs=2, seed=6, aug=aug)
    assert [e.train_loss for e in a] == [e.train_loss for e in b]
    assert [e.val_acc for e in a] == [e.val_acc for e in b]
    assert [e.train_loss for e in a] != [e.train_loss for e in c]


def test_on_epoch_exception_stops_training(digits):
    seen = []

    class Stop(Exception):
        pass

    def on_epoch(result):
        seen.append(result.epoch)
        if result.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(digits, epochs=5, on_epoch=on_epoch)
    assert seen == [1, 2]


class NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        return self.linear(x.flatten(1)) * float("nan")


def test_nan_loss_raises_training_diverged(digits):
    with pytest.raises(TrainingDiverged, match="training loss became nan in epoch 1") as info:
        train(digits, model=NaNModel())
    assert info.value.reason == "diverged"


class OOMModel(NaNModel):
    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_becomes_a_trial_error_naming_the_batch_size(digits):
    with pytest.raises(OutOfMemory, match="at batch size 64") as info:
        train(digits, model=OOMModel())
    assert info.value.reason == "oom"


def test_subsets_smaller_than_a_batch_still_train(digits):
    small = Split(digits.train.images[:10], digits.train.labels[:10])
    torch.manual_seed(0)
    model = build_model(ARCH, 1, (8, 8), 10)
    setup = Setup(
        optim=OptimConfig(),
        schedule=TrainConfig(batch_size=64, epochs=1),
        augment=Augment(AugConfig()),
        norm=Normalizer(digits.mean, digits.std),
        device=CPU,
        seed=0,
    )
    history = fit(model, small, digits.val, setup)
    assert len(history) == 1


@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_lr_schedules_shape(schedule):
    factors = [lr_factor(schedule, p / 100, 0.1) for p in range(101)]
    assert all(0.0 <= f <= 1.0 for f in factors)
    assert max(factors) == pytest.approx(1.0, abs=0.02)
    if schedule == "constant":
        assert factors[50] == 1.0 and factors[0] == 0.0
    else:
        assert factors[-1] == pytest.approx(0.0, abs=1e-6)
        assert factors[0] < factors[20]


def test_cosine_without_warmup_starts_at_full_rate():
    assert lr_factor("cosine", 0.0, 0.0) == 1.0
    assert lr_factor("cosine", 0.5, 0.0) == pytest.approx(0.5)


def test_weight_decay_skips_norms_and_biases():
    model = build_model(ARCH, 1, (8, 8), 10)
    optimizer = make_optimizer(model, OptimConfig(name="adamw", weight_decay=0.01))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"])
    assert all(p.ndim == 1 for p in plain["params"])


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_every_optimizer_builds(name):
    model = build_model(ARCH, 1, (8, 8), 10)
    optimizer = make_optimizer(model, OptimConfig(name=name, nesterov=True, momentum=0.0))
    assert optimizer.param_groups[0]["lr"] == OptimConfig().lr
    assert not math.isnan(optimizer.param_groups[0]["lr"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_with_bf16_and_channels_last(digits):
    torch.manual_seed(0)
    model = build_model(ARCH, 1, (8, 8), 10)
    setup = Setup(
        optim=OptimConfig(name="sgd", lr=0.05, nesterov=True),
        schedule=TrainConfig(batch_size=64, epochs=4),
        augment=Augment(AugConfig(translate=True)),
        norm=Normalizer(digits.mean, digits.std),
        device=torch.device("cuda"),
        seed=0,
    )
    history = fit(model, digits.train, digits.val, setup)
    assert history[-1].val_acc > 0.9


def test_measure_is_evaluate_in_float32_and_leaves_the_model_on_the_cpu(digits):
    model, _ = train(digits, epochs=2)
    norm = Normalizer(digits.mean, digits.std)
    assert measure(model, digits.test, norm, CPU) == evaluate(model, digits.test, norm, CPU)
    assert next(model.parameters()).device == CPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_figures_measured_on_cuda_match_the_cpu_and_the_model_comes_back(digits):
    """What a registration records is measured on the training device: the same figures
    as on the CPU (float32 both), with a normaliser built on the CPU, and the model back
    on the CPU for export."""
    from automl.training.calibration import calibrate

    cuda = torch.device("cuda")
    model, _ = train(digits, epochs=2)
    norm = Normalizer(digits.mean, digits.std)
    on_cpu = measure(model, digits.test, norm, CPU)
    on_cuda = measure(model, digits.test, Normalizer(digits.mean, digits.std), cuda)
    # float32 on both, but cuDNN may run convolutions in TF32: within two images
    assert on_cuda[1] == pytest.approx(on_cpu[1], abs=2.5 / len(digits.test))
    assert on_cuda[0] == pytest.approx(on_cpu[0], rel=1e-2)
    assert next(model.parameters()).device == CPU
    model.to(cuda)  # a CPU normaliser with a model and images on the GPU (robust_accuracy)
    assert evaluate(model, digits.val, Normalizer(digits.mean, digits.std), cuda)[1] > 0.5
    _, cpu_figures = calibrate(model, digits)
    calibrated, cuda_figures = calibrate(model, digits, device=cuda)
    assert cuda_figures["temperature"] == pytest.approx(cpu_figures["temperature"], rel=2e-2)
    assert next(calibrated.parameters()).device == CPU
