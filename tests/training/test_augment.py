"""Batch augmentation: shapes, per-sample randomness, seeding, and what each op does."""

from __future__ import annotations

import pytest
import torch

from automl.training.augment import OPS, Augment, flip, translate
from automl.training.config import AUG_OPS, AugConfig


def batch(n=16, c=3, h=12, w=10):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_op_keeps_shape_and_range_and_changes_the_batch(name):
    x = batch()
    out = OPS[name](1.0)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, x)


@pytest.mark.parametrize("name", sorted(OPS))
def test_same_seed_same_batch_other_seed_other_batch(name):
    op = OPS[name](0.8)
    x = batch(n=64)
    a = op(x, torch.Generator().manual_seed(1))
    b = op(x, torch.Generator().manual_seed(1))
    c = op(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_ops_draw_parameters_per_sample():
    x = batch(n=1).expand(32, -1, -1, -1).contiguous()  # 32 copies of one image
    out = translate(1.0)(x, torch.Generator().manual_seed(0))
    distinct = {tuple(img.flatten().tolist()) for img in out}
    assert len(distinct) > 4


def test_flip_mirrors_about_half_the_samples_exactly():
    x = batch(n=400)
    out = flip(1.0)(x, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 150 < sum(mirrored) < 250


def test_translate_is_a_whole_pixel_shift_with_black_border():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3:5, 3:5] = 1.0
    out = translate(1.0)(x.expand(50, -1, -1, -1), torch.Generator().manual_seed(0))
    # Every output still holds the 2x2 block intact (shift <= 2 px keeps it inside).
    assert torch.all(out.sum(dim=(1, 2, 3)) == 4.0)
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_augment_applies_only_switched_on_ops():
    config = AugConfig(strength=0.5, translate=True, erasing=0.3)
    augment = Augment(config)
    assert [name for name, _ in augment.ops] == ["translate", "erasing"]
    assert not Augment(AugConfig())
    assert config.strength_of("erasing") == 0.3
    assert config.strength_of("translate") == 0.5
    assert config.strength_of("rotate") == 0.0


def test_every_config_op_has_a_builder():
    assert set(OPS) == set(AUG_OPS)


def test_works_on_uint8_derived_batches_of_one_channel():
    x = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8).float() / 255
    augment = Augment(AugConfig(strength=1.0, **{name: True for name in AUG_OPS}))
    out = augment(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
