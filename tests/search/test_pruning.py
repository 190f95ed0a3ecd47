"""When trials stop: progress on a share of each schedule, only in its first half (never
at the last epoch), and not after a trial has shown it cannot leave chance."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from automl.pipeline import run_search
from automl.search.strategy import pruners
from tests.conftest import TINY_SPACE, search_settings


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


class PruneLate(optuna.pruners.BasePruner):
    """Prunes every trial that reports past half of the 20-step grid."""

    def prune(self, study, trial):
        return (trial.last_step or 0) > pruners.MIN_GRID // 2


@pytest.mark.parametrize("epochs", [1, 3, 4, 7, 16, 20])
def test_progress_steps_are_distinct_shares_ending_on_the_grid(epochs):
    steps = [pruners.progress_step(e, epochs, 20) for e in range(1, epochs + 1)]
    assert steps == sorted(set(steps))
    assert steps[-1] == 20
    for epoch, step in zip(range(1, epochs + 1), steps, strict=True):
        assert step / 20 >= epoch / epochs > (step - 1) / 20  # the share, rounded up


def test_a_short_and_a_long_schedule_meet_at_the_same_share():
    assert pruners.progress_step(1, 4, 20) == pruners.progress_step(5, 20, 20) == 5
    assert pruners.progress_step(2, 4, 20) == pruners.progress_step(10, 20, 20) == 10


def test_chance_is_the_commonest_class_share():
    assert pruners.chance_level(np.array([0, 1, 2, 3]), 4) == 0.25
    assert pruners.chance_level(np.array([0, 0, 0, 1]), 2) == 0.75


@pytest.mark.slow
@pytest.mark.parametrize(("epochs", "state"), [(1, TrialState.COMPLETE), (2, TrialState.PRUNED)])
def test_a_pruner_cannot_stop_a_trial_at_its_last_epoch(tmp_path, epochs, state):
    space = TINY_SPACE.replace("epochs: 2", f"epochs: {epochs}")
    settings = search_settings(tmp_path, space, trials=2, study_name="last", max_epochs=4)
    outcome = run_search(settings, pruner=AlwaysPrune())
    assert [t.state for t in outcome.study.trials] == [state, state]
    for trial in outcome.study.trials:
        grid = pruners.MIN_GRID  # --max-epochs 4: the grid keeps its 20 steps
        assert sorted(trial.intermediate_values) == [grid if epochs == 1 else grid // 2]
    if state == TrialState.COMPLETE:  # its result and weights count: it is registered
        assert outcome.registration is not None


def test_pruners_may_stop_a_trial_in_the_first_half_of_its_schedule_only():
    assert pruners.prunable(10, 20)
    assert not pruners.prunable(11, 20)
    assert all(pruners.prunable(rung, 20) for rung in (1, 3, 9))  # Hyperband's, 20 steps
    assert not pruners.prunable(27, 30)  # its fourth rung on the photos space's 30 steps


@pytest.mark.slow
def test_no_pruner_stops_a_trial_past_half_its_schedule(tmp_path):
    space = TINY_SPACE.replace("epochs: 2", "epochs: 4")
    settings = search_settings(  # pruner none: the chance rule stays out of this test
        tmp_path, space, trials=1, study_name="late", max_epochs=4, pruner="none"
    )
    outcome = run_search(settings, pruner=PruneLate())
    [trial] = outcome.study.trials
    assert trial.state == TrialState.COMPLETE  # asked at steps 5 and 10; never at 15 or 20
    assert sorted(trial.intermediate_values) == [5, 10, 15, 20]


def test_a_trial_pruned_at_chance_reads_as_at_chance_not_as_behind():
    from automl.search.strategy.pruners import AT_CHANCE, pruned_why

    assert pruned_why(0.1004, 0.10) == AT_CHANCE  # 10 classes: within a tenth of the way
    assert pruned_why(0.30, 0.10) == "fell behind"
