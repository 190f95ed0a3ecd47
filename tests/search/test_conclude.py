"""Concluding a search: the registered model is calibrated, and ``--refit`` registers the
winning configuration retrained on train + validation, recorded as such."""

from __future__ import annotations

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
