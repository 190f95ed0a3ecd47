"""Concluding a search: the registered model is calibrated, and ``--refit`` registers the
winning configuration retrained on train + validation, recorded as such."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automl.search.runner import run_search
from automl.tracking import Registry, load_image_model
from tests.conftest import search_settings

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("refit", [False, True])
def test_registered_model_is_calibrated_and_refit_when_asked(tmp_path, refit):
    settings = search_settings(tmp_path, trials=2, study_name="fit", seed=3, refit=refit)
    outcome = run_search(settings)
    reg = outcome.registration
    version = Registry(settings.tracking_uri).version(reg.name, reg.version)
    temperature = float(version.tags["temperature"])
    assert 0.05 <= temperature <= 20
    assert 0 <= float(version.tags["ece"]) <= 1
    assert 0 <= float(version.tags["ece_uncalibrated"]) <= 1
    assert reg.reloaded_test_acc == pytest.approx(reg.test_acc)  # as served, same accuracy
    model = load_image_model(reg.uri, settings.tracking_uri)
    served = model.state_dict()  # the wrapped network's own weights, under their own names
    trial = outcome.study.trials[reg.trial_number]
    logged = outcome.tracker.load_weights(trial.user_attrs["mlflow_run_id"])
    assert set(served) == set(logged)
    same = all(torch.equal(served[k], logged[k]) for k in logged)
    if not refit:
        assert same and "refit" not in version.tags
        return
    assert not same  # trained again, on more images
    assert version.tags["refit"] == "train+val"
    assert version.tags["refit_epochs"] == "2"
    assert 0 < float(version.tags["test_acc_search"]) <= 1
    assert "refit: test_acc" in reg.note


def test_an_ensemble_of_the_best_trials_registers_and_exports_like_any_model(tmp_path, digits):
    from automl.release.export import export_model

    settings = search_settings(tmp_path, trials=3, study_name="ens", seed=5, ensemble=3)
    outcome = run_search(settings)
    reg = outcome.registration
    complete = [t for t in outcome.study.trials if t.state.name == "COMPLETE"]
    order = sorted(complete, key=lambda t: (-t.values[0], t.number))
    version = Registry(settings.tracking_uri).version(reg.name, reg.version)
    assert version.tags["ensemble"] == ",".join(str(t.number) for t in order)
    assert reg.trial_number == order[0].number
    single = float(version.tags["test_acc_single"])
    assert 0 < single <= 1 and f"test_acc {single:.4f} -> {reg.test_acc:.4f}" in reg.note
    model = load_image_model(reg.uri, settings.tracking_uri)
    predicted = model.predict(digits.test.hwc()[:50])
    probabilities = np.stack(predicted["probabilities"].to_numpy())
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert reg.reloaded_test_acc == pytest.approx(reg.test_acc)
    exported = export_model(model, "onnx", tmp_path / "ensemble.onnx")  # one program
    assert exported.max_abs_diff <= 1e-4


def test_ensemble_is_refused_with_refit_before_anything_runs(tmp_path):
    from automl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--ensemble: .* not with --refit"):
        search_settings(tmp_path, trials=3, study_name="x", ensemble=2, refit=True).check()
