"""The builder over random samples of the default space and over input shapes."""

from __future__ import annotations

import optuna
import pytest
import torch

from automl.search.space import load_space
from automl.training.config import ACTIVATIONS, ArchConfig, StageConfig, TrialConfig
from automl.training.networks import ACTIVATION_LAYERS, build_model, count_params, stem_stride
from tests.conftest import DEFAULT_SPACE


def default_space_samples(n: int) -> list[TrialConfig]:
    space = load_space(DEFAULT_SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2024))
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append(space.config(trial))
        study.tell(trial, 0.0)
    return configs


@pytest.mark.parametrize("index", range(30))
def test_random_default_space_model_trains_one_step(index):
    config = default_space_samples(30)[index]
    torch.manual_seed(index)
    model = build_model(config.arch, 1, (8, 8), 10)
    x = torch.randn(4, 1, 8, 8)
    out = model(x)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("channels", "size", "classes"),
    [(1, (8, 8), 10), (3, (32, 32), 100), (3, (224, 224), 2), (1, (28, 20), 5), (3, (9, 13), 3)],
)
@pytest.mark.parametrize("residual", [False, True])
def test_builds_for_any_input_shape(channels, size, classes, residual):
    arch = ArchConfig(
        stages=(StageConfig(width=8, convs=1), StageConfig(width=16, convs=2)) * 2,
        residual=residual,
    )
    model = build_model(arch, channels, size, classes).eval()
    out = model(torch.randn(2, channels, *size))
    assert out.shape == (2, classes)


def test_large_inputs_are_patchified_first():
    deep = ArchConfig(stages=(StageConfig(width=8, convs=1),) * 3)
    small = build_model(deep, 3, (32, 32), 10)
    large = build_model(deep, 3, (224, 224), 10)
    assert isinstance(large.features[0], torch.nn.Conv2d)
    assert large.features[0].stride == (8, 8)  # 28, then 14 and 7 after the poolings
    assert not isinstance(small.features[0], torch.nn.Conv2d)  # 32 -> 16 -> 8 already


STRIDES = [(8, 1, 1), (8, 3, 1), (32, 1, 4), (32, 2, 2), (32, 3, 1), (64, 1, 8), (64, 3, 2)]
STRIDES += [(64, 4, 2), (128, 4, 4)]  # four stages on a photo: a 2x2 or 4x4 stem


@pytest.mark.parametrize(
    ("side", "stages", "stride"),
    STRIDES,
)
def test_a_shallow_network_on_a_large_image_gets_a_coarser_stem(side, stages, stride):
    """The last stage's map is at most 8 pixels wide, so depth never decides whether a
    network can see the shapes in an image."""
    assert stem_stride(side, stages) == stride
    arch = ArchConfig(stages=(StageConfig(width=8, convs=1),) * stages)
    model = build_model(arch, 3, (side, side), 10).eval()
    final = model.features(torch.zeros(1, 3, side, side)).shape[-1]
    assert final <= 8


@pytest.mark.parametrize("config", default_space_samples(3), ids=["a", "b", "c"])
def test_exports_with_torch_export_and_dynamic_batch(config):
    model = build_model(config.arch, 1, (8, 8), 10).eval()
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (torch.randn(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(program.module()(x), model(x))


def test_every_activation_name_has_a_layer():
    assert set(ACTIVATION_LAYERS) == set(ACTIVATIONS)


def test_batch_norm_off_gives_conv_biases():
    with_bn = build_model(ArchConfig(batch_norm=True), 1, (8, 8), 10)
    without = build_model(ArchConfig(batch_norm=False), 1, (8, 8), 10)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in without.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules())
    assert count_params(without) != count_params(with_bn)
