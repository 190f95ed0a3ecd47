"""Integrated gradients (Sundararajan et al., 2017): which pixels a prediction rests on.

Model-agnostic, so it works on the ``torch.export`` program a registered model serves:
the attribution is (input - baseline) times the mean gradient along the straight path
from the baseline (the training-mean image, zero after normalisation) to the input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

STEPS = 32


@dataclass
class SaliencyExample:
    """One test image, its attribution map, and what the model said of it."""

    image: np.ndarray  # uint8 (H, W, C)
    heat: np.ndarray  # float (H, W) in [0, 1]
    true: str
    predicted: str

    @property
    def correct(self) -> bool:
        return self.true == self.predicted


def integrated_gradients(
    network: Callable[[Tensor], Tensor], x: Tensor, target: Tensor, steps: int = STEPS
) -> Tensor:
    """Per-pixel attribution ``(N, H, W)`` in [0, 1] for the ``target`` class of each input."""
    baseline = torch.zeros_like(x)
    total = torch.zeros_like(x)
    for alpha in torch.linspace(1.0 / steps, 1.0, steps):
        point = (baseline + alpha * (x - baseline)).detach().requires_grad_(True)
        scores = network(point).gather(1, target.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(scores, point)
        total += grad
    attribution = ((x - baseline) * total / steps).abs().sum(dim=1)
    peak = attribution.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return attribution / peak.view(-1, 1, 1)
