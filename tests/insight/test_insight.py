"""Insight on hand-made predictions and tiny real models: metrics, calibration, corruptions,
saliency, group fairness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automl.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from automl.insight.metrics import classification_report
from automl.insight.saliency import integrated_gradients
from automl.training.calibration import expected_calibration_error
from automl.training.config import ArchConfig, StageConfig
from automl.training.networks import build_model


def one_hot_probs(predicted, confidence, n=3):
    probs = np.full((len(predicted), n), 0.0)
    for i, (p, c) in enumerate(zip(predicted, confidence, strict=True)):
        probs[i] = (1 - c) / (n - 1)
        probs[i, p] = c
    return probs


def test_per_class_metrics_worst_class_and_gap():
    labels = np.array([0, 0, 0, 1, 1, 2])
    probs = one_hot_probs([0, 0, 1, 1, 1, 2], [0.9] * 6)
    report = classification_report(labels, probs, ["a", "b", "c"])
    assert report.accuracy == pytest.approx(5 / 6)
    np.testing.assert_allclose(report.recall, [2 / 3, 1.0, 1.0])
    np.testing.assert_allclose(report.precision, [1.0, 2 / 3, 1.0])
    np.testing.assert_array_equal(report.confusion, [[2, 1, 0], [0, 2, 0], [0, 0, 1]])
    f1 = [2 * (1 * 2 / 3) / (1 + 2 / 3), 2 * (2 / 3) / (1 + 2 / 3), 1.0]
    assert report.macro_f1 == pytest.approx(np.mean(f1))
    assert report.worst_class == "a"
    assert report.worst_recall == pytest.approx(2 / 3)
    assert report.recall_gap == pytest.approx(1 / 3)


def test_absent_classes_do_not_count_as_worst():
    labels = np.array([0, 0, 1])
    probs = one_hot_probs([0, 0, 1], [0.8] * 3)
    report = classification_report(labels, probs, ["a", "b", "c"])
    assert report.worst_recall == 1.0 and report.recall_gap == 0.0


def test_expected_calibration_error_on_known_bins():
    labels = np.array([0, 0, 0, 0, 1, 1])
    # four at confidence 0.9 (three right), two at 0.6 (both right)
    probs = one_hot_probs([0, 0, 0, 2, 1, 1], [0.9, 0.9, 0.9, 0.9, 0.6, 0.6])
    ece, table = expected_calibration_error(labels, probs)
    assert ece == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.4)
    filled = [b for b in table if b["count"]]
    assert [b["count"] for b in filled] == [2, 4]
    assert filled[1]["accuracy"] == pytest.approx(0.75)


def test_perfectly_calibrated_predictions_have_zero_ece():
    labels = np.array([0, 1, 0, 1])
    probs = one_hot_probs([0, 1, 0, 1], [1.0] * 4, n=2)
    assert expected_calibration_error(labels, probs)[0] == pytest.approx(0.0)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruptions_are_deterministic_by_seed_and_change_the_images(name):
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(40, 200, size=(6, 3, 32, 32), dtype=np.uint8))
    for severity in SEVERITIES:
        a = corrupt(images, name, severity, seed=1)
        b = corrupt(images, name, severity, seed=1)
        assert a.dtype == torch.uint8 and a.shape == images.shape
        assert torch.equal(a, b)
        assert not torch.equal(a, images)
    mild = (corrupt(images, name, 1).float() - images.float()).abs().mean()
    harsh = (corrupt(images, name, 3).float() - images.float()).abs().mean()
    assert harsh > mild


@pytest.mark.parametrize("name", ["gaussian_noise"])
def test_random_corruptions_differ_across_seeds(name):
    images = torch.full((4, 1, 16, 16), 128, dtype=torch.uint8)
    assert not torch.equal(corrupt(images, name, 2, seed=1), corrupt(images, name, 2, seed=2))


def test_integrated_gradients_maps_have_the_image_size_and_structure():
    torch.manual_seed(0)
    model = build_model(ArchConfig(stages=(StageConfig(width=8, convs=1),)), 1, (8, 8), 10).eval()
    x = torch.randn(5, 1, 8, 8)
    target = model(x).argmax(1)
    maps = integrated_gradients(model, x, target, steps=16)
    assert maps.shape == (5, 8, 8)
    assert torch.all(maps >= 0) and torch.all(maps <= 1)
    assert torch.allclose(maps.flatten(1).max(1).values, torch.ones(5))
    assert all(m.std() > 0.01 for m in maps)  # not constant


def test_integrated_gradients_work_on_an_exported_program():
    torch.manual_seed(0)
    model = build_model(ArchConfig(stages=(StageConfig(width=8, convs=1),)), 3, (12, 12), 4).eval()
    x = torch.randn(2, 3, 12, 12)
    program = torch.export.export(model, (x,)).module()
    target = model(x).argmax(1)
    torch.testing.assert_close(
        integrated_gradients(program, x, target, steps=8),
        integrated_gradients(model, x, target, steps=8),
    )


def test_integrated_gradients_completeness():
    """The attributions (before normalisation) add up to f(x) - f(baseline)."""
    torch.manual_seed(0)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    x = torch.randn(1, 1, 4, 4)
    weights = linear[1].weight[0].detach().view(1, 1, 4, 4)
    expected = (x * weights).abs().sum(1)[0]
    maps = integrated_gradients(linear, x, torch.tensor([0]), steps=4)
    torch.testing.assert_close(maps[0], expected / expected.max())


@pytest.mark.slow
def test_group_fairness_search_and_evaluate_command(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from automl.cli import main
    from automl.pipeline import run_search
    from automl.search.settings import SearchSettings
    from tests.conftest import TINY_SPACE

    root = tmp_path / "people"
    rng = np.random.default_rng(0)
    for group, shift in (("indoor", 0), ("outdoor", 60)):
        for label, base in (("cat", 50), ("dog", 170)):
            folder = root / group / label
            folder.mkdir(parents=True)
            for i in range(10):
                pixels = np.clip(rng.normal(base + shift * (label == "cat"), 25, (12, 12)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    settings = SearchSettings(
        trials=1, space=space, dataset=f"imagefolder:{root}", data_dir=tmp_path / "data",
        storage=f"sqlite:///{tmp_path / 'automl.db'}",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        max_epochs=2, device="cpu", group_level=True,
    )  # fmt: skip
    outcome = run_search(settings)
    assert set(outcome.evaluation.groups) == {"indoor", "outdoor"}
    metrics = outcome.evaluation.metrics()
    assert {"group.indoor.accuracy", "group.outdoor.accuracy", "group_accuracy_gap"} <= set(metrics)

    monkeypatch.chdir(tmp_path)
    uri = f"models:/{outcome.settings.registered_model}/1"
    code = main(["evaluate", uri, "-o", "ev", "--tracking-uri", settings.tracking_uri])
    out = capsys.readouterr().out
    assert code == 0
    assert "group indoor" in out and "worst class recall" in out
    written = {p.name for p in (tmp_path / "ev").iterdir()}
    assert {"groups.png", "saliency.png", "evaluation.json", "confusion_matrix.csv"} <= written


def test_undoing_a_temperature_gives_back_the_softmax_of_the_logits():
    from automl.insight.evaluate import uncalibrated

    logits = np.random.default_rng(0).normal(0, 4, (50, 10))

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    for temperature in (0.5, 1.0, 2.7):
        calibrated = softmax(logits / temperature).astype(np.float32)  # as served
        undone = uncalibrated(calibrated, temperature)
        np.testing.assert_allclose(undone, softmax(logits), atol=1e-4)
