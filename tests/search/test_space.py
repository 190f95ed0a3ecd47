"""Search-space files: parsing, sampling, rebuilding, and every error message."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import FixedTrial

from automl.errors import ConfigError
from automl.search.space import load_space, parse_space
from automl.training.config import TrialConfig
from tests.conftest import DEFAULT_SPACE


def sample_many(space, n, seed=0, **kwargs):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.sample(trial, **kwargs))
        study.tell(trial, 0.0)
    return out


def test_default_space_loads_and_samples_valid_configs():
    space = load_space(DEFAULT_SPACE)
    for params in sample_many(space, 50):
        config = TrialConfig.from_params(params)
        assert 1 <= len(config.arch.stages) <= 3
        assert params["arch.stages"] == len(config.arch.stages)
        assert all(s.width in (16, 32, 48, 64) for s in config.arch.stages)
        assert config.aug.flip is False  # fixed in the file
        assert 4 <= config.train.epochs <= 16


def test_per_stage_params_are_named_per_stage():
    space = load_space(DEFAULT_SPACE)
    for params in sample_many(space, 30):
        n = params["arch.stages"]
        stage_keys = {k for k in params if k.startswith("arch.stage") and k != "arch.stages"}
        expected = {f"arch.stage{i}.{key}" for i in range(1, n + 1) for key in ("width", "convs")}
        assert stage_keys == expected


def test_a_growing_per_stage_range_doubles_with_each_stage():
    space = parse_space(
        "architecture:\n  stages: {type: int, low: 1, high: 3}\n"
        "  per_stage: {width: {type: int, low: 16, high: 32, step: 8, grow: 2}}\n"
    )
    seen: dict[int, set[int]] = {1: set(), 2: set(), 3: set()}
    for params in sample_many(space, 60):
        for i in range(1, params["arch.stages"] + 1):
            seen[i].add(params[f"arch.stage{i}.width"])
    assert seen[1] <= {16, 24, 32} and seen[2] <= {32, 48, 64} and seen[3] <= {64, 96, 128}
    assert len(seen[3]) > 1
    assert space.spec_of("arch.stage3.width").low == 64  # warm starts check this range


def test_photos_space_baseline_doubles_its_widths():
    space = load_space(DEFAULT_SPACE.parent / "photos.yaml")
    widths = [space.baseline[f"arch.stage{i}.width"] for i in range(1, 5)]
    assert widths == [16, 32, 64, 128]


def test_conditional_param_only_exists_when_its_condition_holds():
    space = load_space(DEFAULT_SPACE)
    samples = sample_many(space, 60)
    assert any(p["optim.name"] == "sgd" for p in samples)
    for params in samples:
        sgd = params["optim.name"] == "sgd"
        assert ("optim.momentum" in params) == sgd
        assert ("optim.nesterov" in params) == sgd


def test_fixed_trial_rebuilds_exactly_the_same_configuration():
    space = load_space(DEFAULT_SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(10):
        trial = study.ask()
        params = space.sample(trial)
        study.tell(trial, 0.0)
        frozen = study.trials[-1]
        # The Optuna params lack fixed values; the space restores them.
        assert space.sample(FixedTrial(frozen.params)) == params
        assert TrialConfig.from_params(params) == space.config(FixedTrial(frozen.params))


def test_every_sampled_value_is_one_the_space_allows():
    """A limit such as --max-epochs never reaches the record: it applies when training."""
    space = load_space(DEFAULT_SPACE)
    for params in sample_many(space, 20):
        assert 4 <= params["train.epochs"] <= 16


def test_shorthands_scalar_is_fixed_and_list_is_categorical():
    space = parse_space("training: {batch_size: [16, 32], epochs: 3}")
    for params in sample_many(space, 10):
        assert params["train.epochs"] == 3
        assert params["train.batch_size"] in (16, 32)


def test_stage_condition_may_refer_to_a_sibling_stage_param():
    text = """
architecture:
  stages: 3
  per_stage:
    convs: [1, 2]
    width: {type: int, low: 8, high: 16, when: {convs: 2}}
"""
    space = parse_space(text)
    for params in sample_many(space, 20):
        for i in (1, 2, 3):
            assert (f"arch.stage{i}.width" in params) == (params[f"arch.stage{i}.convs"] == 2)


def test_empty_sections_take_defaults():
    space = parse_space("architecture: {}\n")
    (params,) = sample_many(space, 1)
    assert params == {}
    assert TrialConfig.from_params(params) == TrialConfig()


def test_float_in_scientific_notation_without_dot_is_read_as_number():
    space = parse_space("optimizer: {lr: {type: float, low: 1e-4, high: 1e-1, log: true}}")
    (params,) = sample_many(space, 1)
    assert 1e-4 <= params["optim.lr"] <= 1e-1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("- 1\n- 2\n", "expected a mapping of sections, got a list"),
        ("architecture: [1\n", "invalid YAML"),
        ("architecure: {}\n", "architecure: unknown section 'architecure' (choose from"),
        ("architecure: {}\n", "did you mean 'architecture'?"),
        ("architecture: 3\n", "architecture: expected a mapping of parameters, got int"),
        ("architecture: {widht: 3}\n", "architecture.widht: unknown parameter 'widht'"),
        (
            "architecture: {dropout: {low: 0, high: 1}}\n",
            "architecture.dropout: a parameter mapping needs 'type'",
        ),
        (
            "architecture: {dropout: {type: floot, low: 0, high: 1}}\n",
            "architecture.dropout.type: unknown type 'floot'",
        ),
        (
            "architecture: {dropout: {type: float, low: 0.5}}\n",
            "architecture.dropout.high: missing required key",
        ),
        (
            "architecture: {dropout: {type: float, low: 0.5, high: 0.1}}\n",
            "architecture.dropout: low <= high must hold, got low=0.5, high=0.1",
        ),
        (
            "architecture: {dropout: {type: float, low: 0.0, high: 1.5}}\n",
            "architecture.dropout: value 1.5 is not allowed",
        ),
        (
            "architecture: {dropout: {type: float, low: 0, high: 0.1, lo: 1}}\n",
            "architecture.dropout.lo: unknown key",
        ),
        (
            "optimizer: {lr: {type: float, low: 0, high: 0.1, log: true}}\n",
            "optimizer.lr: a log-scale float needs low > 0",
        ),
        (
            "architecture: {activation: [relu, tanh]}\n",
            "architecture.activation: value 'tanh' is not allowed",
        ),
        (
            "architecture: {kernel_size: [3, 4]}\n",
            "kernel_size must be odd",
        ),
        (
            "architecture: {stages: {type: int, low: 1, high: 12}}\n",
            "architecture.stages: the stage count must lie in [1, 8], got 12",
        ),
        (
            "architecture: {stages: {type: float, low: 1, high: 2}}\n",
            "architecture.stages: the stage count is an integer: use type int",
        ),
        (
            "training: {batch_size: {type: float, low: 16, high: 64}}\n",
            "training.batch_size: 'batch_size' is an integer parameter: use type int",
        ),
        (
            "architecture: {residual: {type: int, low: 0, high: 1}}\n",
            "'residual' is a true/false parameter",
        ),
        (
            "architecture: {per_stage: {depth: 2}}\n",
            "architecture.per_stage.depth: unknown per-stage parameter 'depth'",
        ),
        (
            "architecture: {per_stage: {width: [0, 8]}}\n",
            "architecture.per_stage.width: value 0 is not allowed",
        ),
        (
            "training: {batch_size: {type: int, low: 16, high: 64, grow: 2}}\n",
            "training.batch_size.grow: only a per-stage parameter grows with depth",
        ),
        (
            "architecture:\n  stages: 6\n"
            "  per_stage: {width: {type: int, low: 256, high: 512, grow: 4}}\n",
            "architecture.per_stage.width: value 262144 is not allowed",
        ),
        (
            "optimizer: {momentum: {type: float, low: 0.8, high: 0.9, when: {name: sgd}}}\n",
            "optimizer.momentum.when.name: refers to no parameter defined before this one",
        ),
        (
            "optimizer:\n  name: [sgd, adam]\n"
            "  momentum: {type: float, low: 0.8, high: 0.9, when: {name: sdg}}\n",
            "optimizer.momentum.when.name: 'sdg' is not one of ['sgd', 'adam']",
        ),
        (
            "training: {batch_size: {type: categorical, choices: []}}\n",
            "training.batch_size.choices: List should have at least 1 item",
        ),
        (
            "training: {batch_size: {type: categorical, choices: [16, 16]}}\n",
            "choices must be distinct",
        ),
        ("training: {epochs: {type: int, low: 1, high: 1e999}}\n", "training.epochs"),
        ("training: {epochs: !!python/object:os.system ls}\n", "invalid YAML"),
    ],
)
def test_invalid_space_gives_one_line_naming_file_and_key(text, message):
    with pytest.raises(ConfigError) as info:
        parse_space(text, "spaces/bad.yaml")
    text_of_error = str(info.value)
    assert text_of_error.startswith("spaces/bad.yaml: ")
    assert message in text_of_error
    assert "\n" not in text_of_error


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: search space file not found"):
        load_space(tmp_path / "nope.yaml")


def test_names_lists_every_parameter_once():
    names = load_space(DEFAULT_SPACE).names
    assert len(names) == len(set(names))
    assert "arch.stageN.width" in names
    assert "optim.momentum" in names
