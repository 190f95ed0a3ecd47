"""A space's portfolio: proven configurations queued after its baseline, each checked as
the baseline is (complete, every value one the space can draw), and the checks a space
file gets on its values (a key given twice, a value off a parameter's grid)."""

from __future__ import annotations

import re

import pytest

from automl.errors import ConfigError
from automl.pipeline import run_search
from automl.search.space import parse_space
from tests.conftest import search_settings

SPACE = """
architecture: {stages: 1, per_stage: {width: {type: int, low: 8, high: 16, step: 4}, convs: 1}}
optimizer: {name: sgd, lr: {type: float, low: 0.02, high: 0.2, log: true}}
training: {epochs: {type: int, low: 1, high: 2}, batch_size: [32, 64]}
baseline: {arch.stage1.width: 8, optim.lr: 0.1, train.epochs: 1, train.batch_size: 32}
"""
PORTFOLIO = """
portfolio:
  - {arch.stage1.width: 16, optim.lr: 0.05, train.epochs: 1, train.batch_size: 64}
  - {arch.stage1.width: 12, optim.lr: 0.2, train.epochs: 1, train.batch_size: 32}
"""


def test_a_portfolio_is_read_in_order_after_the_baseline():
    space = parse_space(SPACE + PORTFOLIO, "p.yaml")
    assert [origin for _, origin in space.queued_first] == [
        "baseline",
        "portfolio 1",
        "portfolio 2",
    ]
    assert space.queued_first[1][0]["arch.stage1.width"] == 16


@pytest.mark.hostile("inputs")
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            SPACE.replace("width: 8,", "width: 10,"),
            "baseline.arch.stage1.width: 10 is off the grid (from 8 in steps of 4)",
        ),
        (SPACE.replace("width: 8,", "width: 8.5,"), "8.5 is not a whole number"),
        (SPACE.replace("optim.lr: 0.1,", "optim.lr: fast,"), "'fast' is not a number"),
        (SPACE + "portfolio: {a: 1}\n", "portfolio: expected a list of configurations"),
        (
            SPACE + "portfolio:\n  - {arch.stage1.width: 8, train.epochs: 1}\n",
            "portfolio[0]: incomplete",
        ),
        (
            SPACE + "portfolio:\n  - {arch.stage1.width: 8, optim.lr: 0.1, train.epochs: 1, "
            "train.batch_size: 32}\n",
            "portfolio[0]: the same configuration as one before it",
        ),
        ("training:\n  epochs: 3\n  epochs: 5\n", "duplicate key 'epochs' (line 3, column 3)"),
    ],
)
def test_a_value_the_space_cannot_draw_or_a_key_given_twice_is_one_line(text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_space(text, "p.yaml")


@pytest.mark.slow
def test_a_new_study_trains_the_baseline_then_the_portfolio_then_samples(tmp_path):
    config = search_settings(
        tmp_path, SPACE + PORTFOLIO, trials=4, study_name="folio", max_epochs=1, pruner="none"
    )
    outcome = run_search(config)
    trials = sorted(outcome.study.trials, key=lambda t: t.number)
    space = parse_space(SPACE + PORTFOLIO)
    for trial, (params, origin) in zip(trials, space.queued_first, strict=False):
        assert trial.params.items() <= params.items() and trial.user_attrs["origin"] == origin
    assert "origin" not in trials[3].user_attrs  # sampled


def test_a_given_configuration_queued_again_stays_given(tmp_path):
    """A retry of the baseline (a Ctrl-C, a preemption) keeps its origin, so the chance
    rule still spares it."""
    import optuna

    from automl.search.scheduler.queue import requeue

    study = optuna.create_study()
    study.enqueue_trial({}, user_attrs={"origin": "baseline"})
    first = study.ask()
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    requeue(study, first, "interrupted")
    assert study.ask().user_attrs["origin"] == "baseline"


def test_a_data_folder_named_like_a_bundled_space_is_not_taken_for_it(tmp_path, monkeypatch):
    from pathlib import Path

    from automl.search.space.bundled import BUNDLED_SPACES, resolve_space

    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    assert resolve_space(Path("photos")) == BUNDLED_SPACES / "photos.yaml"
    (tmp_path / "mine.yaml").write_text("training: {epochs: 1}\n")
    assert resolve_space(Path("mine.yaml")) == Path("mine.yaml")
