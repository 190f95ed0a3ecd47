"""Continual learning on real stores: warm-started searches, retraining a registered model
on new data with its lineage, promotion on a named split, and data drift checks."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from PIL import Image

from automl.cli import main
from automl.data import load_recorded, split_digest
from automl.pipeline import run_search
from automl.records import VersionTags
from automl.release.drift import check_drift
from automl.release.promote import promote
from automl.release.retrain import RetrainOptions, retrain
from automl.search.hooks import Hooks
from automl.search.settings import SearchSettings
from automl.search.space import parse_space
from automl.search.space.warmstart import fitting
from automl.tracking import Registry, load_image_model, log_image_model
from tests.conftest import TINY_SPACE, mlflow_client

pytestmark = pytest.mark.slow
NAME = "cl"


def write_folder(
    root: Path, data, skip: str | None = None, scale: float = 1.0, mode: str = "L"
) -> str:
    """The digits as an image folder (PNG files), optionally without one class, darker or
    in another mode."""
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        for index, (image, label) in enumerate(zip(part.images, part.labels.tolist(), strict=True)):
            name = data.classes[label]
            if name == skip:
                continue
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (image[0].float() * scale).round().clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels.numpy()).convert(mode).save(folder / f"{index}.png")
    return f"imagefolder:{root}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, digits):
    """A study on digits whose best model holds 'champion', and digits as image folders."""
    folder: Path = tmp_path_factory.mktemp("continual")
    space = folder / "tiny.yaml"
    space.write_text(TINY_SPACE.replace("epochs: 2", "epochs: 4"))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    settings = SearchSettings(
        trials=2, space=space, study_name="first", storage=f"sqlite:///{folder / 'automl.db'}",
        tracking_uri=uri, model_name=NAME, device="cpu", seed=3, max_epochs=4, evaluate=False,
    )  # fmt: skip
    run_search(settings)
    promote(Registry(uri), NAME, data_dir=folder / "data")
    return {
        "folder": folder,
        "space": space,
        "uri": uri,
        "storage": settings.storage,
        "all": write_folder(folder / "all", digits),
        "nothree": write_folder(folder / "nothree", digits, skip="3"),
        "dark": write_folder(folder / "dark", digits, scale=0.4),
    }


@pytest.fixture
def cli(lab, capsys, monkeypatch):
    monkeypatch.chdir(lab["folder"])

    def run(*args):
        code = main([*args, "--tracking-uri", lab["uri"]])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def versions(uri: str) -> dict[int, dict[str, str]]:
    client = mlflow_client(uri)
    return {int(v.version): dict(v.tags) for v in client.search_model_versions(f"name='{NAME}'")}


# ---------------------------------------------------------------------------- warm start


def _source_study(storage: str) -> None:
    """An earlier study with known results: trial 1 used a width the new space lacks."""
    study = optuna.create_study(study_name="earlier", storage=storage, direction="maximize")
    dists = {
        "arch.stages": IntDistribution(1, 2),
        "arch.stage1.width": CategoricalDistribution([8, 16, 32]),
        "arch.activation": CategoricalDistribution(["relu", "gelu"]),
        "optim.name": CategoricalDistribution(["sgd", "adamw"]),
        "optim.lr": FloatDistribution(0.02, 0.2, log=True),
        "train.batch_size": CategoricalDistribution([32, 64]),
    }
    rows = [(0.90, 8, "relu", 0.05), (0.95, 32, "gelu", 0.1), (0.85, 16, "gelu", 0.03),
            (0.80, 8, "relu", 0.15), (0.70, 16, "relu", 0.02)]  # fmt: skip
    for value, width, activation, lr in rows:
        params = {"arch.stages": 1, "arch.stage1.width": width, "arch.activation": activation,
                  "optim.name": "adamw", "optim.lr": lr, "train.batch_size": 64}  # fmt: skip
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))


def test_warm_start_enqueues_the_k_best_and_skips_one_that_no_longer_fits(lab):
    storage = lab["storage"]
    _source_study(storage)
    notes: list[str] = []
    settings = SearchSettings(
        trials=4, space=lab["space"], study_name="warm", storage=storage,
        tracking_uri=lab["uri"], model_name="warm", device="cpu", max_epochs=1,
        evaluate=False, warm_start="earlier:3",
    )  # fmt: skip
    outcome = run_search(settings, hooks=Hooks(on_note=notes.append))
    assert any(
        "trial 1 of 'earlier' skipped" in n and "'arch.stage1.width' = 32" in n for n in notes
    )
    trials = outcome.study.trials
    assert len(trials) == 4
    # the 3 best are earlier #1 (0.95, skipped), #0 (0.90) and #2 (0.85), in that order
    expected = [(0, 8, "relu", 0.05), (2, 16, "gelu", 0.03)]
    for trial, (number, width, activation, lr) in zip(trials, expected, strict=False):
        assert trial.params["arch.stage1.width"] == width
        assert trial.params["arch.activation"] == activation
        assert trial.params["optim.lr"] == pytest.approx(lr)
        assert trial.user_attrs["origin"] == f"earlier#{number}"
        run = mlflow_client(lab["uri"]).get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["origin"] == f"earlier#{number}"
    assert "origin" not in trials[2].user_attrs  # the rest is sampled as usual


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--warm-start", "missing"], "--warm-start: no study named 'missing'"),
        (["--warm-start", "first:0"], "--warm-start: expected STUDY or STUDY:K"),
        (["--warm-start", "first", "--warm-start-storage", "sqlite:///{folder}/none.db"],
         "no such Optuna storage"),
        (["--warm-start", "first", "--warm-start-storage", "sqlite:///no/such.db"],
         "--warm-start-storage: the folder no does not exist"),
    ],
)  # fmt: skip
def test_bad_warm_start_is_one_line_before_anything_runs(cli, lab, args, message):
    code, _, err = cli("search", "--trials", "1", "--study-name", "never", "--storage",
                       lab["storage"], *(a.format(folder=lab["folder"]) for a in args))  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "never" not in optuna.study.get_all_study_names(lab["storage"])


# ---------------------------------------------------------------------------- retrain


def test_retrain_from_weights_starts_from_the_champion_not_from_chance(lab):
    registry = Registry(lab["uri"])
    champion = registry.by_alias(NAME, "champion")
    assert champion is not None
    options = RetrainOptions(dataset="digits", epochs=1, device="cpu")
    tuned = retrain(f"models:/{NAME}@champion", lab["uri"], options)
    assert tuned.start_val_acc == pytest.approx(VersionTags.of(champion.tags).val_acc, abs=0.02)
    assert tuned.start_val_acc > 0.5
    scratch = retrain(
        f"models:/{NAME}@champion", lab["uri"],
        RetrainOptions(dataset="digits", epochs=1, device="cpu", from_scratch=True),
    )  # fmt: skip
    assert scratch.start_val_acc < 0.3  # ten classes: chance is 0.1
    assert tuned.history[-1].val_acc > scratch.history[-1].val_acc
    # same data: one comparison, on the parent's own test split
    assert len(tuned.comparisons) == 1
    assert tuned.comparisons[0].parent_acc == pytest.approx(
        VersionTags.of(champion.tags).test_acc, abs=0.01
    )


def test_retrain_on_new_data_records_lineage_and_compares_both_splits(cli, lab):
    before = versions(lab["uri"])
    champion = Registry(lab["uri"]).by_alias(NAME, "champion")
    code, out, err = cli("retrain", f"models:/{NAME}@champion", "--dataset", lab["all"],
                         "--epochs", "2", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    after = versions(lab["uri"])
    (new,) = set(after) - set(before)
    tags = after[new]
    assert tags["parent_version"] == str(champion.version)
    assert tags["parent_dataset"] == "digits"
    assert tags["dataset"] == "imagefolder:" + str(Path(lab["all"][12:]).resolve())
    assert tags["retrain.start"] == "weights"
    plain, both = (float(tags[f"val_acc_{kind}"]) for kind in ("unmirrored", "mirrored"))
    assert tags["tta"] == ("mirror" if both > plain else "none")  # decided on the new split
    assert float(tags["val_acc"]) == pytest.approx(both if tags["tta"] == "mirror" else plain)
    assert "params" not in tags  # the same configuration travels in the model instead
    params = load_image_model(champion.uri, lab["uri"]).preprocess["params"]
    assert load_image_model(f"models:/{NAME}/{new}", lab["uri"]).preprocess["params"] == params
    assert Registry(lab["uri"]).by_alias(NAME, "candidate").version == new
    for key in ("old_test_acc.parent", "old_test_acc.candidate", "new_test_acc.parent",
                "new_test_acc.candidate"):  # fmt: skip
        assert 0.0 <= float(tags[f"compare.{key}"]) <= 1.0
    run = mlflow_client(lab["uri"]).get_run(tags["retrain_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["kind"] == "retrain"
    assert run.data.tags["parent_version"] == str(champion.version)
    assert run.data.tags["parent_run_id"] == champion.run_id
    assert "old test (digits)" in out and "new test (imagefolder:" in out
    # the gate on the new data's test split, with the old split shown beside it
    code, out, err = cli("promote", NAME, "--dataset", lab["all"], "--force")
    assert code == 0, err
    assert "gate on imagefolder:" in out and "recorded with version" in out
    assert versions(lab["uri"])[new]["promoted.champion.test_split"].startswith("imagefolder:")


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["--dataset", "nothree"], "its classes differ from the model's (missing 3)"),
        ("strip", ["--dataset", "digits"], "has no recorded params"),
        (None, ["--dataset", "digits", "--epochs", "0"], "--epochs: must be at least 1"),
        (None, ["--dataset", "digits", "--alias", "champion"], "only through the gate"),
        (None, ["--dataset", "digits", "--alias", "v2"], "MLflow keeps those"),
    ],
)
def test_bad_retrain_is_one_line_and_registers_nothing(cli, lab, setup, args, message):
    uri = f"models:/{NAME}@champion"
    client = mlflow_client(lab["uri"])
    if setup == "strip":  # a version registered before params were recorded
        champion = client.get_model_version_by_alias(NAME, "champion")
        held = f"models:/{NAME}/{champion.version}"
        preprocess = dict(load_image_model(held, lab["uri"]).preprocess)
        del preprocess["params"]
        mlflow.set_tracking_uri(lab["uri"])
        run = client.create_run(client.get_run(champion.run_id).info.experiment_id)
        network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        logged = log_image_model(
            run.info.run_id, network, preprocess, np.zeros((1, 8, 8, 1), np.uint8)
        )
        bare = Registry(lab["uri"]).register(NAME, logged, {"dataset": "digits"})
        uri = f"models:/{NAME}/{bare}"
    args = [lab.get(a, a) for a in args]
    before = versions(lab["uri"])
    code, _, err = cli("retrain", uri, *args, "--device", "cpu")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert versions(lab["uri"]) == before


def test_new_head_retrains_for_other_classes_and_says_so(cli, lab):
    code, out, err = cli("retrain", f"models:/{NAME}@champion", "--dataset", lab["nothree"],
                         "--new-head", "--epochs", "1", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert "the head was rebuilt" in out
    candidate = Registry(lab["uri"]).by_alias(NAME, "candidate")
    assert candidate.tags["retrain.new_head"] == "true"
    assert "3" not in load_image_model(candidate.uri, lab["uri"]).classes


# ---------------------------------------------------------------------------- drift


def test_drift_check_reports_a_removed_class_and_not_the_same_data(lab):
    same = check_drift(f"models:/{NAME}@champion", lab["all"], lab["uri"])
    assert not same.advised, same.reasons
    shifted = check_drift(f"models:/{NAME}@champion", lab["nothree"], lab["uri"])
    assert shifted.advised
    classes = next(c for c in shifted.checks if c.name == "class distribution")
    assert classes.drifted and "absent from the new data: 3" in classes.detail
    assert shifted.class_shares["3"][1] == 0.0 and shifted.class_shares["3"][0] > 0.05
    run = mlflow_client(lab["uri"]).get_run(shifted.run_id)
    assert run.data.metrics["drift.retrain_advised"] == 1.0
    assert run.data.metrics["drift.class_distribution"] == pytest.approx(classes.statistic)
    assert run.data.tags["kind"] == "drift"
    dark = check_drift(f"models:/{NAME}@champion", lab["dark"], lab["uri"])
    drifted = {c.name for c in dark.checks if c.drifted}
    assert {"brightness", "contrast"} <= drifted and "class distribution" not in drifted


def test_drift_cli_json(cli, lab):
    code, out, err = cli("drift", f"models:/{NAME}@champion", "--dataset", lab["nothree"], "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["retrain_advised"] is True
    assert any(r.startswith("class distribution") for r in report["reasons"])


def test_a_retrain_on_adapted_data_records_splits_that_reload_identically(lab, digits):
    """RGB images for a gray model are adapted to it; the recorded options must bring back
    the very test split the version was scored on (promote and evaluate rely on it)."""
    rgb = write_folder(lab["folder"] / "rgb", digits, mode="RGB")
    outcome = retrain(
        f"models:/{NAME}@champion", lab["uri"],
        RetrainOptions(dataset=rgb, epochs=1, device="cpu", alias="rgb"),
    )  # fmt: skip
    tags = Registry(lab["uri"]).resolve(outcome.uri).tags
    data = load_recorded(tags)
    assert data.channels == 1
    assert split_digest(data.test) == tags["test_digest"]
    assert data.digest() == tags["data_digest"]


def test_warm_start_skips_a_value_of_the_wrong_kind_or_off_the_step(lab):
    space = parse_space(lab["space"].read_text(), "tiny.yaml")
    _, why = fitting(space, {"arch.stages": "two"})
    assert why == "parameter 'arch.stages' = 'two' is not an integer any more"
    _, why = fitting(space, {"arch.stages": 1.5})
    assert why is not None and "not an integer" in why
    kept, why = fitting(space, {"arch.stages": 2})
    assert why is None and kept == {"arch.stages": 2}


def test_image_statistics_do_not_depend_on_chunks_or_on_copying_the_splits(digits):
    from automl.release.drift import _Pool, image_statistics

    images = digits.train.images[:300]
    whole, chunked = image_statistics(images, chunk=10_000), image_statistics(images, chunk=7)
    for name in whole:
        assert np.allclose(whole[name], chunked[name])
    pool = _Pool(digits)
    everything = torch.cat([digits.train.images, digits.val.images, digits.test.images])
    pooled, direct = pool.statistics(), image_statistics(everything)
    assert all(np.allclose(pooled[k], direct[k]) for k in direct)
    sample = pool.sample()  # digits is smaller than the sample size: every image, once
    assert len(sample.images) == len(pool) == len(everything)
    assert sorted(sample.labels.tolist()) == sorted(pool.labels.tolist())
    assert torch.equal(sample.images.long().sum(0), everything.long().sum(0))
