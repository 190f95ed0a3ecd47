"""Concluding a search: the registered model is calibrated, ``--refit`` registers the
winning configuration retrained on train + validation, and ``--ensemble`` the best trials
as one model; one search, registered three ways."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from automl.pipeline import run_search
from automl.release.conclude import Concluding, register_best
from automl.tracking import Registry, load_image_model
from tests.conftest import search_settings

pytestmark = pytest.mark.slow
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conclude")
    settings = search_settings(folder, trials=3, study_name="fit", seed=5)
    return settings, run_search(settings)


def register(outcome, name: str, **options):
    how = Concluding(model_name=name, parent_run_id=outcome.parent_run_id, **options)
    [registration] = register_best(
        outcome.study, outcome.data, how, tracker=outcome.tracker, device=CPU
    )
    return registration, Registry(outcome.settings.tracking_uri).version(name, registration.version)


def served_and_logged(outcome, registration):
    model = load_image_model(registration.uri, outcome.settings.tracking_uri)
    trial = outcome.study.trials[registration.trial_number]
    logged = outcome.tracker.load_weights(trial.user_attrs["mlflow_run_id"])
    return model.state_dict(), logged  # the wrapped network's own weights, by their names


def test_the_registered_model_is_calibrated_and_keeps_the_trials_weights(searched):
    settings, outcome = searched
    reg = outcome.registration
    version = Registry(settings.tracking_uri).version(reg.name, reg.version)
    assert 0.05 <= float(version.tags["temperature"]) <= 20
    assert 0 <= float(version.tags["ece"]) <= 1
    assert 0 <= float(version.tags["ece_uncalibrated"]) <= 1
    assert reg.reloaded_test_acc == pytest.approx(reg.test_acc)  # as served, same accuracy
    served, logged = served_and_logged(outcome, reg)
    assert set(served) == set(logged)
    assert all(torch.equal(served[k], logged[k]) for k in logged)
    assert "refit" not in version.tags and "ensemble" not in version.tags


def test_refit_trains_the_winner_again_on_train_and_validation(searched):
    _, outcome = searched
    reg, version = register(outcome, "fit-refit", refit=True)
    served, logged = served_and_logged(outcome, reg)
    assert set(served) == set(logged)
    assert not all(torch.equal(served[k], logged[k]) for k in logged)  # trained again
    assert version.tags["refit"] == "train+val"
    assert version.tags["refit_epochs"] == "2"
    assert 0 < float(version.tags["test_acc_search"]) <= 1
    assert "refit: test_acc" in reg.note
    assert reg.reloaded_test_acc == pytest.approx(reg.test_acc)


def test_an_ensemble_of_the_best_trials_registers_and_exports_like_any_model(searched, digits):
    from automl.release.export import export_model

    _, outcome = searched
    reg, version = register(outcome, "fit-ensemble", ensemble=3)
    complete = [t for t in outcome.study.trials if t.state.name == "COMPLETE"]
    order = sorted(complete, key=lambda t: (-t.values[0], t.number))
    assert len(order) >= 2, "the search must leave two complete trials to average"
    assert reg.trial_number == order[0].number
    if not reg.members:  # no other trial helped on validation: the best alone, said so
        assert "the best is registered alone" in reg.note and "ensemble" not in version.tags
        return
    assert reg.members[0] == order[0].number and set(reg.members) <= {t.number for t in order}
    assert version.tags["ensemble"] == ",".join(map(str, reg.members))
    assert version.run_id == outcome.parent_run_id  # no member's run holds its figures
    weights = json.loads(version.tags["ensemble_weights"])
    assert [int(n) for n in weights] == list(reg.members)
    assert reg.weights == tuple(weights.values())
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
    assert float(version.tags["val_acc"]) >= order[0].values[0] - 1e-4  # never below its best
    single = float(version.tags["test_acc_single"])
    assert 0 < single <= 1 and reg.test_acc_single == pytest.approx(single, abs=1e-4)
    model = load_image_model(reg.uri, outcome.settings.tracking_uri)
    predicted = model.predict(digits.test.hwc()[:50])
    probabilities = np.stack(predicted["probabilities"].to_numpy())
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert reg.reloaded_test_acc == pytest.approx(reg.test_acc)
    exported = export_model(model, "onnx", outcome.settings.space.parent / "ensemble.onnx")
    assert exported.max_abs_diff <= 1e-4  # one program


def test_mirroring_is_decided_on_validation_and_a_mirrored_model_serves_and_exports(searched):
    """Whatever the validation split says of digits, a mirrored network publishes, serves
    as evaluated, keeps its trial's weights under their names and exports as one program."""
    from automl.release.export import export_model
    from automl.release.publish import NewVersion, publish
    from automl.release.rebuild import trained_model
    from automl.training.ensemble import Mirrored
    from automl.training.loop import Normalizer, evaluate

    _, outcome = searched
    reg, version = register(outcome, "fit-mirror", mirror=True)
    plain, both = (float(version.tags[f"val_acc_{kind}"]) for kind in ("unmirrored", "mirrored"))
    assert version.tags["tta"] == ("mirror" if both > plain else "none")
    assert reg.reloaded_test_acc == pytest.approx(reg.test_acc)
    trial = outcome.study.trials[reg.trial_number]
    data, uri = outcome.data, outcome.settings.tracking_uri
    network = Mirrored(trained_model(trial, data, outcome.tracker, CPU)[0]).eval()
    new = NewVersion("fit-mirrored", trial.user_attrs["mlflow_run_id"], dict(trial.params), {})
    number, reloaded = publish(network, data, new, registry=Registry(uri))
    _, test_acc = evaluate(network, data.test, Normalizer(data.mean, data.std), CPU)
    assert reloaded == pytest.approx(test_acc, abs=1e-6)  # the exported network mirrors
    model = load_image_model(f"models:/fit-mirrored/{number}", uri)
    served, logged = (
        model.state_dict(),
        outcome.tracker.load_weights(trial.user_attrs["mlflow_run_id"]),
    )
    assert set(served) == set(logged) and all(torch.equal(served[k], logged[k]) for k in logged)
    exported = export_model(model, "onnx", outcome.settings.space.parent / "mirrored.onnx")
    assert exported.max_abs_diff <= 1e-4


def test_a_version_is_reused_only_for_the_same_conclusion_with_its_own_figures(searched):
    """Concluding the same trial again reuses its version only when it is concluded the
    same way (refit, ensemble, mirroring), and reports that version's figures."""
    _, outcome = searched
    refit, _ = register(outcome, "fit-again", refit=True)
    plain, version = register(outcome, "fit-again")
    assert not plain.reused and plain.version == refit.version + 1
    assert version.tags["conclusion"] == "single" and "refit" not in version.tags
    again, _ = register(outcome, "fit-again")
    assert again.reused and again.version == plain.version
    assert again.test_acc == float(version.tags["test_acc"])
    assert again.val_acc == float(version.tags["val_acc"])
    refit_again, refit_version = register(outcome, "fit-again", refit=True)
    assert refit_again.reused and refit_again.version == refit.version
    assert refit_version.tags["conclusion"] == "refit"
    assert refit_again.test_acc == float(refit_version.tags["test_acc"])


def test_an_ensemble_larger_than_the_complete_trials_says_so(searched):
    _, outcome = searched
    complete = [t for t in outcome.study.trials if t.state.name == "COMPLETE"]
    reg, version = register(outcome, "fit-short", ensemble=len(complete) + 1)
    done = f"{len(complete)} trial{'' if len(complete) == 1 else 's'} completed"
    assert f"--ensemble {len(complete) + 1}: {done}, so" in reg.note
    assert len(reg.members) <= len(complete) and len(reg.members) != 1
    assert version.tags.get("ensemble", "") == ",".join(map(str, reg.members))


def test_ensemble_is_refused_with_refit_before_anything_runs(tmp_path):
    from automl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--ensemble: .* not with --refit"):
        search_settings(
            tmp_path, trials=3, study_name="x", ensemble=2, refit=True
        ).resolve().check()


def test_by_default_the_three_best_keep_their_weights_and_register_as_one(tmp_path):
    """Every trial that ends among the best K saves its weights, so the ensemble is made
    of the very networks the search trained (none retrained); a retrain of the version
    starts from its best member, whose params it carries."""
    settings = search_settings(tmp_path, trials=5, study_name="trio", seed=2, ensemble=None)
    outcome = run_search(settings)
    reg = outcome.registration
    version = Registry(settings.tracking_uri).version(reg.name, reg.version)
    complete = [t for t in outcome.study.trials if t.state.name == "COMPLETE"]
    order = sorted(complete, key=lambda t: (-t.values[0], t.number))
    runs = {t.number: outcome.tracker.run_info(t.user_attrs["mlflow_run_id"]) for t in order}
    kept = [t.number for t in order if runs[t.number]["tags"].get("has_weights")]
    assert len(kept) >= 3 and kept[:3] == [t.number for t in order[:3]]
    assert reg.members, reg.note  # digits: some trial beside the best helps on validation
    assert reg.members[0] == order[0].number and set(reg.members) <= set(kept)
    assert len(reg.members) <= 3
    assert version.tags["ensemble"] == ",".join(map(str, reg.members))
    assert "retrained" not in reg.note, reg.note
    model = load_image_model(reg.uri, settings.tracking_uri)
    best = outcome.tracker.load_weights(order[0].user_attrs["mlflow_run_id"])
    served = model.state_dict()
    assert set(served) == set(best)
    assert all(torch.equal(served[k], best[k]) for k in best)
    from automl.release.retrain import RetrainOptions, plan

    job = plan(reg.uri, settings.tracking_uri, RetrainOptions(dataset="digits", device="cpu"))
    assert job.lineage["parent_ensemble"] == version.tags["ensemble"]
    assert any(f"member, trial {order[0].number}, retrained alone" in n for n in job.notes)


def test_a_store_failing_at_registration_is_one_line_and_the_next_search_registers(tmp_path):
    """The artifact store breaks once the trials are done: the search ends in one line
    that says the trials are kept, its parent run FAILED; the next search registers."""
    import shutil
    from dataclasses import replace

    from automl.errors import StoreError
    from automl.search.hooks import Hooks
    from tests.conftest import mlflow_client

    settings = search_settings(tmp_path, trials=2, study_name="broken", max_epochs=1)
    artifacts, aside = tmp_path / "mlartifacts", tmp_path / "aside"

    def break_store(study, trial) -> None:
        if trial.number == 1:  # the last trial: a file where the artifact folder was
            shutil.move(artifacts, aside)
            artifacts.write_text("not a folder")

    with pytest.raises(StoreError, match=r"^registering the best model failed \(") as caught:
        run_search(settings, hooks=Hooks(on_trial_end=break_store))
    message = str(caught.value)
    assert "the trials are kept in study 'broken'" in message and "\n" not in message
    client = mlflow_client(settings.tracking_uri)
    parents = client.search_runs(
        [client.get_experiment_by_name(settings.resolve().experiment_name).experiment_id],
        filter_string="tags.kind = 'study'",
    )
    assert [p.info.status for p in parents] == ["FAILED"]

    artifacts.unlink()
    shutil.move(aside, artifacts)
    outcome = run_search(replace(settings, trials=1))
    assert outcome.registration is not None and not outcome.registration.reused


def test_a_rebuilt_trial_starts_from_the_weights_dir_as_it_did(tmp_path, digits):
    """A refit or a rebuild trains the trial's configuration again from the pretrained
    weights it started from: with its backbone frozen for the whole schedule, the
    backbone's weights are the file's, untouched."""
    import optuna
    import torchvision

    from automl.release.rebuild import retrained

    reference = torchvision.models.resnet18(weights=None)
    filename = torchvision.models.get_model_weights("resnet18").DEFAULT.url.rsplit("/", 1)[-1]
    torch.save(reference.state_dict(), tmp_path / filename)
    params = {"arch.backbone": "resnet18", "train.epochs": 1, "train.freeze_epochs": 1,
              "train.batch_size": 64, "optim.name": "adamw", "optim.lr": 0.003}  # fmt: skip
    trial = optuna.trial.create_trial(value=0.5, user_attrs={"params": params})
    model = retrained(trial, digits, CPU, tmp_path)
    inner = dict(model.named_parameters())
    [name] = [n for n in inner if n.endswith("layer1.0.conv1.weight")]
    torch.testing.assert_close(inner[name], reference.layer1[0].conv1.weight)
