"""What a training run needs to continue where it stopped, as bytes or a file.

``fit`` captures a ``TrainingState`` at the end of an epoch and can start from one: the
network, the optimizer, the learning-rate schedule's position, the loop's own generator
(data order and augmentation), the process's random states (torch CPU and CUDA, numpy,
Python) and the figures of the epochs so far. Resumed on the same kind of device, the
run goes on as if it had never stopped (bit for bit on a CPU).

A checkpoint holds tensors and plain containers, numbers and strings only, and is read
with ``torch.load(weights_only=True)``: loading one runs no pickled code. The loop trains
in bfloat16 under autocast, which needs no gradient scaler, so there is no scaler state.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from automl.errors import AutomlError

FORMAT = 1  # bumped when the layout changes; an older file is refused, not misread


class CheckpointUnreadable(AutomlError):
    """A checkpoint that is truncated, of another format, or not a checkpoint at all."""


@dataclass
class TrainingState:
    """One run at the end of epoch ``epoch``, every tensor on the CPU."""

    epoch: int  # epochs done; training resumes at epoch + 1
    epochs: int  # the schedule's length (the learning rate depends on it)
    steps_per_epoch: int
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    generator: Tensor  # the loop's generator: data order and augmentation
    device_type: str  # where ``generator`` lives (a CUDA generator's state is not a CPU's)
    rng: dict[str, Any]  # the process's generators (``rng_states``)
    history: list[dict[str, Any]]  # ``EpochResult`` of every epoch so far, as plain values
    meta: dict[str, Any] = field(default_factory=dict)  # the caller's own plain values

    # ------------------------------------------------------------------ bytes and files

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, **asdict(self)}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainingState:
        try:
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated, or not written by torch.save at all
            raise CheckpointUnreadable(f"not a readable checkpoint ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise CheckpointUnreadable(f"checkpoint format {found}, expected {FORMAT}")
        names = {item.name for item in fields(cls)}
        missing = names - raw.keys()
        if missing:
            raise CheckpointUnreadable(f"checkpoint lacks {', '.join(sorted(missing))}")
        return cls(**{name: raw[name] for name in names})

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file beside ``path``, then a rename, so a reader
        (or a process killed mid-write) never sees half a checkpoint."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=_draft_prefix(path), dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(self.to_bytes())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> TrainingState:
        return cls.from_bytes(path.read_bytes())

    @staticmethod
    def drafts(path: Path) -> list[Path]:
        """The temporary files ``save`` left beside ``path`` when it was killed mid-write."""
        if not path.parent.is_dir():
            return []
        return sorted(path.parent.glob(f"{_draft_prefix(path)}*"))


def _draft_prefix(path: Path) -> str:
    return f".{path.name}."


def on_cpu(value: Any) -> Any:
    """A copy of ``value`` with every tensor detached and on the CPU, so the state does not
    change as training goes on and loads on any device."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(on_cpu(item) for item in value)
    return value


def rng_states() -> dict[str, Any]:
    """The process's generators as tensors and plain values (no pickled objects)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    version, python_state, python_gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(python_state), "gauss": python_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        states["cuda"] = list(torch.cuda.get_rng_state_all())
    return states


def restore_rng(states: dict[str, Any]) -> None:
    """Put the process's generators back as ``rng_states`` found them. CUDA states are
    restored only where the same number of devices is visible."""
    torch.set_rng_state(states["torch"])
    saved = states["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (saved["kind"], keys, saved["position"], saved["has_gauss"], saved["gauss"])
    )
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
