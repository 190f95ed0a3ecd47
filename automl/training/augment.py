"""Batch augmentation on the training device: every op draws its own parameters per sample.

Ops work on whole ``(N, C, H, W)`` float batches in [0, 1] (before normalisation) with
tensor operations only, so a GPU run never waits on per-image CPU work. Each op is built
by name from a strength in [0, 1]; the same generator state gives the same batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from automl.training.config import AUG_OPS, AugConfig

BatchOp = Callable[[Tensor, torch.Generator], Tensor]

MAX_SHIFT = 0.25  # translate: share of the image side at strength 1
MAX_DEGREES = 30.0  # rotate
MAX_ZOOM = 0.25  # scale: +/- share at strength 1
MAX_ERASE = 0.4  # erasing: largest share of the area at strength 1


def _uniform(n: int, low: float, high: float, x: Tensor, gen: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, device=x.device, generator=gen)


def flip(strength: float) -> BatchOp:
    """Mirror left-right with probability one half (strength only switches it on)."""

    def op(x: Tensor, gen: torch.Generator) -> Tensor:
        mask = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
        return torch.where(mask[:, None, None, None], x.flip(-1), x)

    return op


def translate(strength: float) -> BatchOp:
    """Pad with black once, then cut a per-sample window: whole-pixel shifts."""

    def op(x: Tensor, gen: torch.Generator) -> Tensor:
        n, _, h, w = x.shape
        pad = max(1, round(strength * MAX_SHIFT * min(h, w)))
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=gen)
        rows = (dy + torch.arange(h, device=x.device))[:, :, None]
        cols = (dx + torch.arange(w, device=x.device))[:, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None]
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)

    return op


def _affine(x: Tensor, angle: Tensor, zoom: Tensor) -> Tensor:
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate(strength: float) -> BatchOp:
    """Rotate each sample by up to ``MAX_DEGREES * strength`` either way."""
    limit = math.radians(MAX_DEGREES * strength)

    def op(x: Tensor, gen: torch.Generator) -> Tensor:
        angle = _uniform(x.shape[0], -limit, limit, x, gen)
        return _affine(x, angle, torch.ones_like(angle))

    return op


def scale(strength: float) -> BatchOp:
    """Zoom each sample in or out by up to ``MAX_ZOOM * strength``."""
    limit = MAX_ZOOM * strength

    def op(x: Tensor, gen: torch.Generator) -> Tensor:
        zoom = _uniform(x.shape[0], 1.0 - limit, 1.0 + limit, x, gen)
        return _affine(x, torch.zeros_like(zoom), zoom)

    return op


def erasing(strength: float) -> BatchOp:
    """Replace a random rectangle of half the samples with noise (Zhong et al., 2017)."""
    max_area = max(0.02, MAX_ERASE * strength)

    def op(x: Tensor, gen: torch.Generator) -> Tensor:
        n, _, h, w = x.shape
        area = _uniform(n, 0.02, max_area, x, gen) * h * w
        ratio = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), x, gen))
        eh = torch.sqrt(area * ratio).clamp(1, h)
        ew = torch.sqrt(area / ratio).clamp(1, w)
        top = torch.rand(n, device=x.device, generator=gen) * (h - eh + 1)
        left = torch.rand(n, device=x.device, generator=gen) * (w - ew + 1)
        ys = torch.arange(h, device=x.device)[None, :, None]
        xs = torch.arange(w, device=x.device)[None, None, :]
        inside = (
            (ys >= top.floor()[:, None, None])
            & (ys < (top + eh).floor()[:, None, None])
            & (xs >= left.floor()[:, None, None])
            & (xs < (left + ew).floor()[:, None, None])
        )
        chosen = torch.rand(n, device=x.device, generator=gen) < 0.5
        mask = (inside & chosen[:, None, None])[:, None]
        noise = torch.rand(x.shape, device=x.device, generator=gen, dtype=x.dtype)
        return torch.where(mask, noise, x)

    return op


OPS: dict[str, Callable[[float], BatchOp]] = {
    "flip": flip,
    "translate": translate,
    "scale": scale,
    "rotate": rotate,
    "erasing": erasing,
}
assert set(OPS) == set(AUG_OPS), "every op the config accepts needs a builder"


class Augment:
    """The ops a config switches on, applied in a fixed order."""

    def __init__(self, config: AugConfig) -> None:
        self.ops = [
            (name, OPS[name](config.strength_of(name)))
            for name in OPS
            if config.strength_of(name) > 0.0
        ]

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: Tensor, gen: torch.Generator) -> Tensor:
        for _, op in self.ops:
            x = op(x, gen)
        return x

    def __repr__(self) -> str:
        return f"Augment({', '.join(name for name, _ in self.ops) or 'none'})"
