"""What a search can optimise: a registry of objectives, each a direction and a measure.

Accuracy comes from training; the size of a network (parameters, latency) is known before
training, so constraints reject oversized networks early; robust accuracy is measured on
corrupted validation images after training. A new objective is one entry in
``OBJECTIVES``: the settings, the CLI's check and the study's directions read it from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from automl.data import ImageData


class Measurements:
    """One trial's network and what has been measured of it, each figure at most once."""

    def __init__(self, model: torch.nn.Module, data: ImageData, device: torch.device) -> None:
        self.model, self.data, self.device = model, data, device
        self.accuracy = 0.0  # the last epoch's validation accuracy, once trained

    @cached_property
    def params(self) -> float:
        from automl.training.networks import count_params

        return float(count_params(self.model))

    @cached_property
    def latency(self) -> float:
        return measure_latency(self.model, self.data, self.device)

    @cached_property
    def robust_accuracy(self) -> float:
        return robust_accuracy(self.model, self.data, self.device)


@dataclass(frozen=True)
class Goal:
    """One objective a search can optimise: which way is better, and how it is measured."""

    direction: str  # Optuna's "maximize" or "minimize"
    measure: Callable[[Measurements], float]
    # The metric a trial's run already holds this figure as (None: logged under its own
    # name when the trial completes), so no run carries the same figure twice.
    recorded_as: str | None = None


# The first objective of a search is always accuracy; the others trade against it.
OBJECTIVES: dict[str, Goal] = {
    "accuracy": Goal("maximize", lambda m: m.accuracy, "val_acc"),
    "robust_accuracy": Goal("maximize", lambda m: m.robust_accuracy),
    "latency": Goal("minimize", lambda m: m.latency, "latency_ms"),
    "params": Goal("minimize", lambda m: m.params, "n_params"),
}


def unrecorded(names: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    """The objective values a completed trial's run does not hold yet, by name."""
    pairs = zip(names, values, strict=True)
    return {name: value for name, value in pairs if OBJECTIVES[name].recorded_as is None}


def measure_latency(
    model: torch.nn.Module, data: ImageData, device: torch.device, runs: int = 20
) -> float:
    """Median milliseconds to classify one image on ``device``, as the network is served."""
    import torch

    model = model.to(device).eval()
    x = torch.zeros(1, data.channels, *data.image_size, device=device)
    cuda = device.type == "cuda"
    times = []
    with torch.inference_mode():
        for index in range(runs + 3):
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(device)
            if index >= 3:  # the first calls warm up kernels and caches
                times.append(time.perf_counter() - start)
    model.train()
    return 1000.0 * float(sorted(times)[len(times) // 2])


def robust_accuracy(model: torch.nn.Module, data: ImageData, device: torch.device) -> float:
    """Mean accuracy over every corruption and severity, on (up to 500 of) the validation split."""
    from automl.data import Split
    from automl.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
    from automl.training.loop import Normalizer, evaluate

    images, labels = data.val.images[:500], data.val.labels[:500]
    norm = Normalizer(data.mean, data.std)
    scores = []
    for name in CORRUPTIONS:
        for severity in SEVERITIES:
            split = Split(corrupt(images, name, severity), labels)
            scores.append(evaluate(model, split, norm, device)[1])
    return float(sum(scores) / len(scores))


def dominates(a: list[float], b: tuple[float, ...], directions: list[str]) -> bool:
    """``a`` is at least as good as ``b`` on every objective and better on one."""
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]
    better_or_equal = all(s * x >= s * y for s, x, y in zip(sign, a, b, strict=True))
    return better_or_equal and any(s * x > s * y for s, x, y in zip(sign, a, b, strict=True))
