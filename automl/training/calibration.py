"""Temperature scaling: probabilities that mean what they say.

A network trained with label smoothing, dropout and heavy augmentation is under-confident
(it says 0.7 where it is right 99 times in 100); one without them is often
over-confident. Dividing the logits by one temperature, fitted on the validation split
to minimise the negative log-likelihood, fixes most of it without changing a single
prediction (the arg-max is the same for any positive temperature). The temperature is
kept inside the network (``Calibrated``), so the exported, served model carries it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from automl.data import ImageData
from automl.training.loop import Normalizer, served_logits

BOUNDS = (0.05, 20.0)  # a temperature outside these means a broken fit, not a calibration
ECE_BINS = 15
CPU = torch.device("cpu")


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The temperature minimising the negative log-likelihood of ``labels``, but never so
    low that the mean confidence exceeds what the split supports.

    One parameter, a smooth convex objective in log-temperature: a few L-BFGS steps
    converge, on thousands of logits in milliseconds. When every validation image is
    right (common on small, easy splits) the likelihood keeps rising as the temperature
    falls, and the fit would run to its bound and make the model certain of everything,
    its mistakes on new images included. Laplace's rule of succession says how sure a
    split of n images with k right allows one to be, (k + 1) / (n + 2); below the
    temperature whose mean confidence reaches that, the split carries no evidence.
    """
    logits, labels = logits.float().cpu().clone(), labels.cpu().clone()  # off inference mode
    right = int((logits.argmax(1) == labels).sum())
    supported = (right + 1) / (len(labels) + 2)
    if right == len(labels):  # no likelihood optimum: as sure as the split allows
        return _temperature_for(logits, supported, low=BOUNDS[0])
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):  # degenerate logits: leave them as they are
        return 1.0
    temperature = min(max(temperature, BOUNDS[0]), BOUNDS[1])
    if _mean_confidence(logits, temperature) <= supported:
        return temperature
    return _temperature_for(logits, supported, low=temperature)


def nll(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> float:
    """The mean negative log-likelihood of ``labels`` under ``logits / temperature``."""
    return float(F.cross_entropy(logits.float().cpu() / temperature, labels.cpu()))


def helpful_temperature(logits: Tensor, labels: Tensor) -> float:
    """``fit_temperature``'s temperature if it lowers the split's negative log-likelihood,
    else 1: a temperature that makes the split it was fitted on less likely is a broken
    fit (a bound reached, a cap that disagrees with the likelihood), and the network's
    own logits are the better guess."""
    temperature = fit_temperature(logits, labels)
    return temperature if nll(logits, labels, temperature) <= nll(logits, labels) else 1.0


def _mean_confidence(logits: Tensor, temperature: float) -> float:
    return float((logits / temperature).softmax(1).max(1).values.mean())


def _temperature_for(logits: Tensor, confidence: float, low: float) -> float:
    """The temperature (above ``low``) at which the mean confidence is ``confidence``: it
    falls steadily as the temperature rises, so bisection in log-temperature finds it."""
    high = BOUNDS[1]
    if _mean_confidence(logits, high) >= confidence:
        return high
    for _ in range(60):
        middle = math.sqrt(low * high)
        if _mean_confidence(logits, middle) > confidence:
            low = middle
        else:
            high = middle
    return high


class Calibrated(nn.Module):
    """``network`` whose logits are divided by a fitted temperature."""

    temperature: Tensor

    def __init__(self, network: nn.Module, temperature: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.network(x)
        return logits / self.temperature


def expected_calibration_error(
    labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> tuple[float, list[dict[str, float]]]:
    """ECE = sum over bins of (share of samples) * |accuracy - mean confidence|."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        if count:
            accuracy = float(correct[members].mean())
            mean_conf = float(confidence[members].mean())
            ece += count / len(labels) * abs(accuracy - mean_conf)
        else:
            accuracy = mean_conf = float("nan")
        table.append(
            {"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
             "accuracy": accuracy, "confidence": mean_conf}
        )  # fmt: skip
    return float(ece), table


def calibrate(
    model: nn.Module,
    data: ImageData,
    temperature: float | None = None,
    *,
    device: torch.device = CPU,
) -> tuple[nn.Module, dict[str, float]]:
    """``model`` with a temperature (fitted on the validation split unless given: a refit
    model has trained on that split, and keeps the temperature of the search's model; 1
    when the fit would not lower the split's negative log-likelihood), and
    the figures that justify it: the temperature and the test split's ECE before and after.
    The logits are computed on ``device`` as the model is served; the model ends on the CPU."""
    model = model.to(CPU).eval()
    norm = Normalizer(data.mean, data.std)
    if temperature is None:
        if len(data.val) == 0:
            return model, {}
        val_logits = served_logits(model, data.val.images, norm, device)
        temperature = helpful_temperature(val_logits, data.val.labels)
    logits = served_logits(model, data.test.images, norm, device)
    labels = data.test.labels.numpy()
    before, _ = expected_calibration_error(labels, logits.softmax(1).numpy())
    after, _ = expected_calibration_error(labels, (logits / temperature).softmax(1).numpy())
    figures = {"temperature": temperature, "ece_uncalibrated": before, "ece": after}
    return Calibrated(model, temperature).eval(), figures
