"""What the search bought, in points of validation accuracy: the best sampled trial over
the best configuration the study was given, and the registered model over the best trial."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from automl.insight.gains import Gains


def trial(number: int, value: float | None, origin: str | None = None):
    made = create_trial(
        state=TrialState.COMPLETE if value is not None else TrialState.PRUNED,
        value=value,
        user_attrs={"origin": origin} if origin else {},
    )
    made.number = number
    return made


def test_the_search_and_the_conclusion_are_each_credited_with_their_own_points():
    trials = [trial(0, 0.80, "baseline"), trial(1, 0.82, "portfolio 1"), trial(2, 0.85)]
    gains = Gains.of(trials, registered=0.86)
    assert gains.search_points == pytest.approx(3.0)
    assert gains.conclusion_points == pytest.approx(1.0)
    line = gains.line("the ensemble of 2")
    assert "search +3.0 points over the best given configuration (trial 1, val_acc 0.8200)" in line
    assert "the ensemble of 2 +1.0 points over the best trial alone" in line


def test_a_search_that_found_nothing_better_says_so():
    trials = [trial(0, 0.90, "baseline"), trial(1, 0.70), trial(2, None)]
    line = Gains.of(trials, registered=0.90).line()
    assert line.startswith("the search found nothing better than the best given configuration")
    assert "+0.0 points over the best trial alone" in line


def test_without_given_configurations_or_results_only_what_is_known_is_said():
    assert Gains.of([trial(0, 0.5)], registered=None).line() == ""
    assert Gains.of([], registered=None).search_points is None


def test_the_parent_note_says_what_the_search_bought():
    from dataclasses import dataclass

    from automl.insight.story import Search, bought

    @dataclass
    class Registered:
        name: str = "m"
        version: int = 1
        uri: str = "models:/m/1"
        trial_number: int = 2
        val_acc: float = 0.87
        test_acc: float = 0.85
        members: tuple[int, ...] = (2, 0)
        test_acc_single: float | None = 0.84

    study = optuna.create_study(direction="maximize")
    for made in [trial(0, 0.80, "baseline"), trial(1, 0.70), trial(2, 0.85)]:
        study.add_trial(made)
    search = Search(study, "run", Registered(), [0, 1, 2], ("val_acc",), "s.yaml", "d", "uri")
    assert bought(search) == (
        "What the search bought (validation accuracy): search +5.0 points over the best "
        "given configuration (trial 0, val_acc 0.8000); the ensemble of 2 +2.0 points over "
        "the best trial alone."
    )
    two = Search(study, "run", Registered(), [], ("val_acc", "params"), "s.yaml", "d", "uri")
    assert bought(two) == ""  # a Pareto front has no single best to credit
