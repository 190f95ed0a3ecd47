"""Temperature scaling: a known temperature is recovered, predictions never change, and a
smoothed (under-confident) digits network comes out calibrated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automl.training.augment import Augment
from automl.training.calibration import (
    Calibrated,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    helpful_temperature,
    nll,
)
from automl.training.config import AugConfig, OptimConfig, TrainConfig
from automl.training.loop import Normalizer, Setup, fit, predict_logits
from automl.training.networks import build_model
from tests.training.test_loop import ARCH

CPU = torch.device("cpu")


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_recovers_the_temperature_the_labels_were_drawn_with(true_temperature):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, 10, generator=generator) * 3
    labels = torch.multinomial((logits / true_temperature).softmax(1), 1, generator=generator)
    fitted = fit_temperature(logits, labels.squeeze(1))
    assert fitted == pytest.approx(true_temperature, rel=0.05)


def test_a_split_with_every_image_right_does_not_make_the_model_certain():
    """All 269 validation images right: the likelihood alone would drive the temperature
    to its bound; the fit stops where the mean confidence is (269 + 1) / (269 + 2)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (269,), generator=generator)
    logits = torch.randn(269, 10, generator=generator)
    logits[torch.arange(269), labels] += 8.0  # every arg-max right
    assert bool((logits.argmax(1) == labels).all())
    temperature = fit_temperature(logits, labels)
    confidence = float((logits / temperature).softmax(1).max(1).values.mean())
    assert temperature > 0.1
    assert confidence == pytest.approx(270 / 271, abs=1e-4)


@pytest.mark.parametrize("margin", [5.0, 10.0])
def test_the_temperature_kept_never_makes_the_validation_split_less_likely(margin):
    """Every image right: the cap of the split's support lifts the temperature above 1 when
    the logits are already surer than the split allows (margin 10); that makes the split less
    likely than the network's own logits, so the temperature kept is 1. Below (margin 5),
    the fitted temperature sharpens and is kept."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (269,), generator=generator)
    logits = torch.randn(269, 10, generator=generator)
    logits[torch.arange(269), labels] += margin
    fitted, kept = fit_temperature(logits, labels), helpful_temperature(logits, labels)
    assert nll(logits, labels, kept) <= nll(logits, labels)
    if margin == 10.0:
        assert fitted > 1.0 and kept == 1.0
    else:
        assert fitted < 1.0 and kept == fitted


def test_calibrated_network_keeps_every_prediction_and_exports():
    torch.manual_seed(0)
    network = build_model(ARCH, 1, (8, 8), 10).eval()
    wrapped = Calibrated(network, 3.0).eval()
    x = torch.randn(16, 1, 8, 8)
    assert torch.equal(wrapped(x).argmax(1), network(x).argmax(1))
    assert torch.allclose(wrapped(x), network(x) / 3.0)
    program = torch.export.export(wrapped, (x,))
    assert torch.allclose(program.module()(x), wrapped(x), atol=1e-6)


def test_a_smoothed_digits_network_comes_out_calibrated(digits):
    torch.manual_seed(0)
    network = build_model(ARCH, 1, (8, 8), 10)
    setup = Setup(
        optim=OptimConfig(name="sgd", lr=0.2, momentum=0.9, nesterov=True),
        schedule=TrainConfig(batch_size=64, epochs=6, schedule="onecycle", label_smoothing=0.2),
        augment=Augment(AugConfig()), norm=Normalizer(digits.mean, digits.std),
        device=CPU, seed=0,
    )  # fmt: skip
    fit(network, digits.train, digits.val, setup)
    model, figures = calibrate(network, digits)
    assert isinstance(model, Calibrated)
    assert figures["temperature"] < 1.0  # smoothing makes it under-confident: sharpen
    assert figures["ece_uncalibrated"] > 0.05
    assert figures["ece"] < figures["ece_uncalibrated"] / 2
    logits = predict_logits(model, digits.test.images, Normalizer(digits.mean, digits.std), CPU)
    ece, _ = expected_calibration_error(digits.test.labels.numpy(), logits.softmax(1).numpy())
    assert ece == pytest.approx(figures["ece"])


def test_perfectly_calibrated_predictions_have_no_error():
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(labels, probs)[0] == pytest.approx(0.0)
