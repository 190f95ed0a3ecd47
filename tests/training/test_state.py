"""Checkpoints of the training loop: a resumed run is the uninterrupted one, bit for bit on
a CPU, and a checkpoint file is written atomically and read without unpickling code."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from automl.data import Split
from automl.training.augment import Augment
from automl.training.config import ArchConfig, AugConfig, OptimConfig, StageConfig, TrainConfig
from automl.training.loop import Callbacks, Normalizer, Setup, fit
from automl.training.networks import build_model
from automl.training.state import CheckpointUnreadable, TrainingState, rng_states

CPU = torch.device("cpu")
ARCH = ArchConfig(stages=(StageConfig(width=8, convs=1), StageConfig(width=16, convs=1)))


def head(split: Split, n: int) -> Split:
    return Split(split.images[:n], split.labels[:n])


def train(digits, epochs=4, *, resume=None, on_checkpoint=None, on_epoch=None, device=CPU):
    """A few epochs on a part of the digits: enough steps to show any drift."""
    torch.manual_seed(3)  # the model is built as the first try built it, then restored
    model = build_model(ARCH, 1, (8, 8), 10)
    setup = Setup(
        optim=OptimConfig(name="adamw", lr=0.01),
        schedule=TrainConfig(batch_size=64, epochs=epochs, schedule="onecycle"),
        augment=Augment(AugConfig(strength=0.7, translate=True, rotate=True, erasing=True)),
        norm=Normalizer(digits.mean, digits.std), device=device, seed=3,
    )  # fmt: skip
    callbacks = Callbacks(on_epoch=on_epoch, on_checkpoint=on_checkpoint)
    history = fit(
        model, head(digits.train, 384), head(digits.val, 128), setup, callbacks, resume=resume
    )
    return model, history


def test_a_resumed_run_ends_with_the_weights_of_the_uninterrupted_one(digits, tmp_path):
    states: list[TrainingState] = []
    whole, history = train(digits, on_checkpoint=states.append)
    assert [s.epoch for s in states] == [1, 2, 3]  # none after the last epoch
    path = tmp_path / "trial.pt"
    states[1].save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["trial.pt"]  # no temporary file left

    trained = []
    state = TrainingState.load(path)
    resumed, again = train(digits, resume=state, on_epoch=lambda r: trained.append(r.epoch))
    assert trained == [3, 4]  # only the epochs the checkpoint had not run
    assert [e.epoch for e in again] == [1, 2, 3, 4]  # the curve goes on
    for mine, theirs in zip(again, history, strict=True):
        assert (mine.train_loss, mine.val_acc) == (theirs.train_loss, theirs.val_acc)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert state.optimizer["state"][0]["step"].item() == 2 * 384 // 64  # left as it was
    assert state.scheduler["last_epoch"] == 2 * 384 // 64


def test_the_process_generators_are_put_back(digits):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    states: list[TrainingState] = []
    train(digits, epochs=2, on_checkpoint=states.append)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())  # after the capture
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state = TrainingState.from_bytes(states[0].to_bytes())
    from automl.training.state import restore_rng

    restore_rng(state.rng)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class Payload:
    """Anything but tensors and plain values: a checkpoint holding it is refused."""


def test_a_checkpoint_is_read_without_unpickling_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": Payload()}, path)
    with pytest.raises(CheckpointUnreadable, match="not a readable checkpoint"):
        TrainingState.load(path)
    good = TrainingState(
        epoch=1, epochs=2, steps_per_epoch=1, model={}, optimizer={}, scheduler={},
        generator=torch.Generator().get_state(), device_type="cpu", rng=rng_states(), history=[],
    )  # fmt: skip
    data = good.to_bytes()
    with pytest.raises(CheckpointUnreadable):
        TrainingState.from_bytes(data[: len(data) // 2])  # a write cut short
    assert TrainingState.from_bytes(data).epoch == 1


def test_a_checkpoint_of_another_schedule_is_refused(digits):
    states: list[TrainingState] = []
    train(digits, epochs=2, on_checkpoint=states.append)
    with pytest.raises(ValueError, match="cannot resume 3 epochs"):
        train(digits, epochs=3, resume=states[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_checkpoint_resumes_on_the_gpu_and_on_a_cpu(digits):
    """Saved from channels-last CUDA tensors, read on the CPU; a CPU worker takes the retry
    with a new data order (a CUDA generator's state means nothing to a CPU one)."""
    states: list[TrainingState] = []
    cuda = torch.device("cuda")
    train(digits, epochs=3, on_checkpoint=states.append, device=cuda)
    data = states[0].to_bytes()
    state = TrainingState.from_bytes(data)
    assert state.device_type == "cuda" and "cuda" in state.rng
    assert all(t.device.type == "cpu" for t in state.model.values())
    for device in (cuda, CPU):
        seen: list = []
        _, history = train(
            digits, epochs=3, resume=TrainingState.from_bytes(data), device=device,
            on_epoch=seen.append,
        )  # fmt: skip
        assert [r.epoch for r in seen] == [2, 3] and [e.epoch for e in history] == [1, 2, 3]
