"""Common image corruptions at three severities (after Hendrycks & Dietterich, 2019).

Each works on a uint8 ``(N, C, H, W)`` batch and returns one of the same shape; the random
ones draw from a seeded generator, so the same seed gives the same corrupted set.
Magnitudes are in pixels of a 32-pixel image and scale with the image side.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor

SEVERITIES = (1, 2, 3)
Corruption = Callable[[Tensor, int, torch.Generator], Tensor]


def _to_uint8(x: Tensor) -> Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def gaussian_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    sigma = (0.04, 0.08, 0.12)[severity - 1] * 255.0
    noise = torch.randn(x.shape, generator=gen) * sigma
    return _to_uint8(x.float() + noise)


def blur(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    sigma = (0.5, 1.0, 1.5)[severity - 1] * max(1.0, min(x.shape[-2:]) / 32)
    kernel = 2 * math.ceil(3 * sigma) + 1
    return _to_uint8(TF.gaussian_blur(x.float(), [kernel, kernel], [sigma, sigma]))


def brightness(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    return _to_uint8(x.float() + (0.1, 0.2, 0.3)[severity - 1] * 255.0)


def contrast(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    factor = (0.7, 0.5, 0.3)[severity - 1]
    mean = x.float().mean(dim=(1, 2, 3), keepdim=True)
    return _to_uint8((x.float() - mean) * factor + mean)


def jpeg(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    quality = (60, 30, 15)[severity - 1]
    out = torch.empty_like(x)
    for i, image in enumerate(x):
        array = image.permute(1, 2, 0).numpy()
        pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(buffer).convert(pil.mode))
        out[i] = torch.from_numpy(decoded.reshape(array.shape).copy()).permute(2, 0, 1)
    return out


def rotate(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    limit = math.radians((5.0, 10.0, 15.0)[severity - 1])
    sign = torch.randint(0, 2, (x.shape[0],), generator=gen).float() * 2 - 1
    angle = sign * limit
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return _to_uint8(F.grid_sample(x.float(), grid, padding_mode="border", align_corners=False))


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "blur": blur,
    "brightness": brightness,
    "contrast": contrast,
    "jpeg": jpeg,
    "rotate": rotate,
}


def corrupt(images: Tensor, name: str, severity: int, seed: int = 0) -> Tensor:
    """``images`` uint8 NCHW, corrupted by ``name`` at ``severity`` (1..3), seeded."""
    gen = torch.Generator().manual_seed(seed * 1000 + severity * 10 + list(CORRUPTIONS).index(name))
    return CORRUPTIONS[name](images, severity, gen)
