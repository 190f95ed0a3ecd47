"""A budget is a budget: at ``--timeout`` the running trial stops after its epoch and
counts, no trial starts, and nothing is left queued."""

from __future__ import annotations

import time

import pytest
from optuna.trial import TrialState

from automl.pipeline import run_search
from tests.conftest import TINY_SPACE, search_settings

pytestmark = pytest.mark.slow


def test_the_deadline_cuts_the_running_trial_and_leaves_no_ticket(tmp_path):
    long = TINY_SPACE.replace("epochs: 2", "epochs: 300")
    settings = search_settings(
        tmp_path, long, trials=1000, study_name="budget", max_epochs=300, timeout=4, pruner="none"
    )
    start = time.monotonic()
    outcome = run_search(settings)
    took = time.monotonic() - start
    trials = outcome.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE]  # one trial, nothing queued
    [trial] = trials
    epochs = len(trial.intermediate_values)
    assert 1 <= epochs < 300
    assert trial.user_attrs["cut"] == f"budget ended after epoch {epochs}"
    assert trial.values[0] == trial.intermediate_values[max(trial.intermediate_values)]
    assert outcome.registration is not None  # its result and weights count
    assert took < 120  # 4 s of trials, one epoch past it, then the registration


def test_a_budget_runs_at_most_the_trials_asked_for(tmp_path):
    settings = search_settings(tmp_path, trials=3, study_name="few", timeout=600)
    outcome = run_search(settings)
    assert len(outcome.study.trials) == 3
    assert all(t.state != TrialState.WAITING for t in outcome.study.trials)


def test_a_budget_with_jobs_leaves_no_ticket_and_reports_every_trial(tmp_path):
    """Two processes share the budget's count of tickets to queue: at the deadline neither
    leaves a queued ticket, and every trial either ran is in the outcome."""
    settings = search_settings(
        tmp_path, trials=1000, study_name="jobs-budget", timeout=12, jobs=2, pruner="none"
    )
    outcome = run_search(settings)
    trials = outcome.study.trials
    assert not [t.number for t in trials if t.state == TrialState.WAITING]
    assert len(trials) >= 2 and len(trials) < 1000
    assert {t.number for t in outcome.trials_run} == {t.number for t in trials}


def test_a_budget_cut_short_leaves_no_warm_start_queued(tmp_path):
    """Warm starts are queued one at a time too: a budget that ends after the first of
    them leaves the others unqueued, and the study holds only the trials that ran."""
    earlier = search_settings(tmp_path, trials=4, study_name="earlier", pruner="none")
    run_search(earlier)
    long = TINY_SPACE.replace("epochs: 2", "epochs: 300")
    settings = search_settings(
        tmp_path, long, trials=50, study_name="warm-budget", max_epochs=300, timeout=3,
        pruner="none", warm_start="earlier:4",
    )  # fmt: skip
    notes: list[str] = []
    from automl.search.hooks import Hooks

    outcome = run_search(settings, hooks=Hooks(on_note=notes.append))
    trials = outcome.study.trials
    assert any(n.startswith("trial 3 is warm start from") for n in notes), notes
    assert [t.state for t in trials] == [TrialState.COMPLETE]  # cut at the deadline
    assert trials[0].user_attrs.get("origin", "").startswith("earlier")
