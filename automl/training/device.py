"""Which device a process trains on, and deterministic kernels when asked for.

The device is chosen once, by whoever starts the work (a search, a job process, a
retrain), and handed to the training code: nothing below it picks a device by itself.
"""

from __future__ import annotations

import os
import re

import torch

from automl.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` takes the first CUDA device when there is one; asking for a missing one is fatal."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise ConfigError(f"--device: expected auto, cpu, cuda or cuda:N, got '{name}'")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device: '{name}' was asked for but CUDA is not available here")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"--device: '{name}' does not exist ({torch.cuda.device_count()} CUDA devices)"
        )
    return torch.device("cuda", index)


def make_deterministic() -> None:
    """Deterministic kernels everywhere (slower on a GPU); the CPU loop is so already."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
