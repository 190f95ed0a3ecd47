"""Settings declared once: the CLI, the recipe and the checks all come from the fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer

from automl.cli import app
from automl.errors import AutomlError, ConfigError
from automl.search.settings import SearchSettings, option_of
from automl.search.space.bundled import resolve_space
from tests.conftest import DEFAULT_SPACE


def _command(*path: str):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


@pytest.mark.parametrize("path", [("search",), ("study", "create")])
def test_every_field_is_an_option_of_search_and_study_create(path):
    command = _command(*path)
    flags = {flag for param in command.params for flag in param.opts}
    for item in dataclasses.fields(SearchSettings):
        spec = option_of(item.name)
        assert spec.flag(item.name) in flags, item.name
        param = next(p for p in command.params if spec.flag(item.name) in p.opts)
        assert param.help == spec.help


def test_both_commands_take_the_same_options():
    def options(command):
        return sorted((tuple(p.opts), tuple(p.secondary_opts), p.default) for p in command.params)

    assert options(_command("search")) == options(_command("study", "create"))


def test_options_build_settings_and_parse_their_values(tmp_path):
    settings = SearchSettings.from_options(
        {"trials": 3, "objective": "accuracy, latency", "space": Path("images"), "seed": 4}
    )
    assert settings.objectives == ("accuracy", "latency")
    assert settings.space_file.name == "images.yaml" and settings.space_file.exists()  # bundled
    assert (settings.trials, settings.seed, settings.sampler) == (3, 4, "tpe")


def test_the_recipe_round_trip_keeps_the_study_and_takes_the_local_values(tmp_path):
    space = tmp_path / "mine.yaml"
    space.write_text(DEFAULT_SPACE.read_text())
    created = SearchSettings(
        trials=7, space=space, seed=3, sampler="random", pruner="median", max_epochs=5,
        objectives=("accuracy", "params"), max_params=10_000, compile=True,
        storage="sqlite:///here.db", device="cpu", study_name="s",
    )  # fmt: skip
    recipe = created.resolve().to_recipe()
    assert recipe["space_yaml"] == space.read_text()
    assert "storage" not in recipe and "device" not in recipe and "trials" not in recipe
    local = SearchSettings(study_name="s", storage="postgresql://w@db/x", device="cuda:1")
    joined = SearchSettings.from_recipe(recipe, local)
    for item in dataclasses.fields(SearchSettings):
        scope = option_of(item.name).scope
        source = created if scope == "study" else local
        if item.name not in ("space", "experiment", "model_name"):
            assert getattr(joined, item.name) == getattr(source, item.name), item.name
    assert joined.space_file.name == "mine.yaml"
    assert joined.experiment == "s" and joined.model_name == "s"  # resolved when recorded


def test_a_recipe_of_an_earlier_version_still_joins():
    old = {
        "space_yaml": "", "space_name": "default.yaml", "dataset": "digits", "data_digest": "x",
        "image_size": None, "group_level": False, "max_epochs": 20, "seed": 0,
        "sampler": "tpe", "pruner": "hyperband", "objectives": ["accuracy"],
        "max_params": None, "max_latency_ms": None, "compile": False, "warm_start": None,
        "experiment": "e", "model_name": "m", "parent_run_id": "r",
    }  # fmt: skip
    joined = SearchSettings.from_recipe(old, SearchSettings(study_name="s"))
    assert joined.space == Path("default.yaml") and joined.deterministic is False
    assert joined.objectives == ("accuracy",)


def test_public_masks_every_url_that_may_hold_a_password():
    settings = SearchSettings(
        storage="postgresql://u:pw1@h/db",
        tracking_uri="http://u:pw2@h:5000",
        warm_start_storage="postgresql://u:pw3@h/db",
        ui_url="http://u:pw4@h:5000/",
    )
    text = str(settings.public())
    assert not any(f"pw{i}" in text for i in range(1, 5))
    secret = {i.name for i in dataclasses.fields(SearchSettings) if option_of(i.name).secret}
    assert secret == {"storage", "tracking_uri", "warm_start_storage", "ui_url"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"jobs": 0}, "--jobs: must be at least 1, got 0"),
        ({"trials_per_gpu": 0}, "--trials-per-gpu: must be at least 1, got 0"),
        ({"image_size": 2}, "--image-size: must lie in [4, 1024], got 2"),
        ({"max_latency_ms": -1.0}, "--max-latency-ms: must be a positive number"),
        ({"objectives": ("latency",)}, "--objective: list accuracy first"),
        ({"objectives": ("accuracy", "speed")}, "--objective: unknown objective 'speed'"),
        ({"checkpoint_seconds": -1.0}, "--checkpoint-seconds: must be a number of seconds"),
        ({"checkpoint_seconds": float("inf")}, "--checkpoint-seconds: must be a number of"),
        ({"checkpoint_dir": DEFAULT_SPACE / "x"}, "--checkpoint-dir: .*default.yaml is not a"),
    ],
)
def test_each_field_checks_its_own_value(values, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        SearchSettings(space=DEFAULT_SPACE, **values).resolve().check()


def test_the_default_space_is_sized_by_the_data(tmp_path):
    """Small images get the small space unless a space is chosen; the study is named so."""
    from automl.search.space.bundled import BUNDLED_SPACES

    digits = SearchSettings().resolve()
    assert digits.space == BUNDLED_SPACES / "small.yaml" and digits.study_name == "digits-small"
    assert SearchSettings(dataset="mnist").resolve().study_name == "mnist-default"
    folder = SearchSettings(dataset=f"imagefolder:{tmp_path}", image_size=12).resolve()
    assert folder.space == BUNDLED_SPACES / "small.yaml"
    photos = SearchSettings(dataset=f"imagefolder:{tmp_path}", image_size=64).resolve()
    assert photos.space == BUNDLED_SPACES / "photos.yaml"
    assert photos.study_name and photos.study_name.endswith("-photos")
    unknown = SearchSettings(dataset=f"imagefolder:{tmp_path}").resolve()  # its median side
    assert unknown.space == BUNDLED_SPACES / "photos.yaml"
    assert SearchSettings(dataset=f"imagefolder:{tmp_path}", image_size=28).sized_space == "photos"
    assert SearchSettings(dataset="cifar10").resolve().space_file.name == "default.yaml"
    chosen = SearchSettings(space=resolve_space(Path("default"))).resolve()
    assert chosen.space == BUNDLED_SPACES / "default.yaml"
    assert chosen.study_name == "digits-default"


def test_settings_hold_what_was_given_and_resolving_fills_the_rest_once():
    given = SearchSettings(trials=3)
    assert (given.space, given.max_epochs, given.study_name) == (None, None, None)
    resolved = given.resolve()
    assert resolved.max_epochs == 16 and resolved.study_name == "digits-small"
    assert resolved.resolve() == resolved  # resolving again changes nothing
    with pytest.raises(AutomlError, match="resolve"):
        _ = given.experiment_name  # the study's name is not known before


def test_a_space_given_is_kept_even_when_it_is_the_default_file(monkeypatch):
    """``--space search_spaces/default.yaml`` once counted as not given (it was compared
    with the option's default path), so digits got the small space instead."""
    monkeypatch.chdir(DEFAULT_SPACE.parent.parent)
    given = SearchSettings.from_options({"space": "search_spaces/default.yaml"}).resolve()
    assert given.space_file.resolve() == DEFAULT_SPACE.resolve()
    assert given.study_name == "digits-default"


def test_the_command_line_sizes_the_space_from_any_folder(tmp_path, monkeypatch):
    """Outside a checkout, `automl search` without --space once got the default space: the
    relative default path was resolved to the bundled file before it could be sized."""
    from automl.search.space.bundled import BUNDLED_SPACES

    monkeypatch.chdir(tmp_path)
    given = SearchSettings.from_options({"space": None, "trials": 2}).resolve()
    assert given.space == BUNDLED_SPACES / "small.yaml" and given.study_name == "digits-small"
    assert given.max_epochs == 16
    chosen = SearchSettings.from_options({"space": Path("default")}).resolve()  # --space default
    assert chosen.space == BUNDLED_SPACES / "default.yaml"
    assert chosen.study_name == "digits-default"
    mnist = SearchSettings.from_options({"space": None, "dataset": "mnist"}).resolve()
    assert mnist.space == BUNDLED_SPACES / "default.yaml" and mnist.space_file.exists()


def test_jobs_takes_a_number_or_auto():
    from automl.search.options import parse_jobs

    assert parse_jobs("3") == 3
    assert 1 <= parse_jobs("auto") <= 8  # no GPU here: one per core
    with pytest.raises(ConfigError, match="--jobs: expected a number or auto, got 'many'"):
        parse_jobs("many")


def test_max_epochs_follows_the_spaces_longest_schedule_unless_given(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(DEFAULT_SPACE.read_text())
    assert SearchSettings(space=space).resolve().max_epochs == 16  # training.epochs: 4 to 16
    text = DEFAULT_SPACE.read_text().replace("train.epochs: 12", "train.epochs: 9")
    space.write_text(text.replace("{type: int, low: 4, high: 16}", "[5, 9]", 1))
    assert "epochs: [5, 9]" in space.read_text()
    assert SearchSettings(space=space).resolve().max_epochs == 9
    assert SearchSettings(space=space, max_epochs=5).resolve().max_epochs == 5
    photos = SearchSettings(dataset="imagefolder:/photos").resolve()
    assert photos.space_file.name == "photos.yaml" and photos.max_epochs == 30
    missing = SearchSettings(space=tmp_path / "missing.yaml").resolve()
    assert missing.epoch_limit == 20  # check() says why
    # Hyperband's rungs are steps 1, 3 and 9: a grid of fewer than 20 steps looks later.
    assert SearchSettings(space=space).resolve().progress_grid == 20
    assert photos.progress_grid == 30


def test_one_objective_registers_an_ensemble_of_three_unless_refit_or_told():
    assert SearchSettings().members == 3
    assert SearchSettings(ensemble=1).members == 1
    assert SearchSettings(ensemble=5).members == 5
    assert (
        SearchSettings(refit=True).resolve().check().members == 1
    )  # the default gives way to --refit
    assert SearchSettings(objectives=("accuracy", "latency")).resolve().check().members == 1
