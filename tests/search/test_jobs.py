"""Several trials at once, several objectives, size constraints and baselines, for real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from optuna.trial import TrialState

from automl.errors import ConfigError
from automl.pipeline import run_search
from automl.search.scheduler.jobs import assign_gpus
from automl.search.settings import SearchSettings
from automl.search.space import load_space, parse_space
from tests.conftest import DEFAULT_SPACE, TINY_SPACE, mlflow_client, search_settings

pytestmark = pytest.mark.slow


def settings(tmp_path: Path, space_text: str, **overrides) -> SearchSettings:
    return search_settings(tmp_path, space_text, **{"trials": 4, "study_name": "par", **overrides})


def test_two_jobs_finish_exactly_the_trials_asked_for(tmp_path):
    # Trials long enough that the second process (seconds to start) gets some of them.
    slow = "architecture: {stages: 2, per_stage: {width: 16, convs: 1}}\n"
    slow += "optimizer: {lr: [0.05, 0.1]}\ntraining: {epochs: 12, batch_size: 16}\n"
    config = settings(tmp_path, slow, trials=10, jobs=2, max_epochs=12, pruner="none")
    outcome = run_search(config)
    trials = outcome.study.trials
    assert len(trials) == 10
    assert sorted(t.number for t in trials) == list(range(10))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, "both processes ran trials"
    client = mlflow_client(config.tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("par").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'",
    )
    assert sorted(int(r.data.tags["trial_number"]) for r in runs) == list(range(10))
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["worker"] for r in runs} == workers


def test_multi_objective_search_registers_the_pareto_front(tmp_path):
    config = settings(tmp_path, TINY_SPACE, trials=6, objectives=("accuracy", "params"))
    outcome = run_search(config)
    front = outcome.study.best_trials
    assert outcome.study.metric_names == ["accuracy", "params"]
    assert {r.trial_number for r in outcome.pareto} == {t.number for t in front}
    assert outcome.registration.trial_number == max(front, key=lambda t: t.values[0]).number
    client = mlflow_client(config.tracking_uri)
    versions = client.search_model_versions("name='par'")
    assert len(versions) == len(front)
    assert all(v.tags["pareto"] == "true" and "params" in v.tags["objectives"] for v in versions)
    candidate = client.get_model_version_by_alias("par", "candidate")
    assert int(candidate.version) == outcome.registration.version
    for trial in outcome.study.trials:  # pruning on the accuracy curve works with 2 objectives
        if trial.state == TrialState.PRUNED:
            assert trial.user_attrs["curve"]


def test_constraints_reject_oversized_networks_before_training(tmp_path):
    big = "architecture: {stages: 2, per_stage: {width: 64, convs: 2}}\ntraining: {epochs: 2}\n"
    config = settings(tmp_path, big, trials=2, max_params=1000)
    outcome = run_search(config)
    for trial in outcome.study.trials:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["reason"] == "constraint"
        assert "parameters > --max-params 1,000" in trial.user_attrs["message"]
        assert trial.constraints["params"] > 0  # samplers see how far over it was
        assert not trial.intermediate_values  # no epoch was trained
    assert outcome.registration is None


def test_the_baseline_is_trial_zero(tmp_path):
    config = settings(tmp_path, DEFAULT_SPACE.read_text(), trials=1, max_epochs=1)
    outcome = run_search(config)
    (trial,) = outcome.study.trials
    baseline = load_space(DEFAULT_SPACE).baseline
    # --max-epochs 1 bounds its training, and the record keeps what it is and the cap apart,
    # so a warm start from this study can run it again.
    assert trial.params == baseline
    assert len(trial.intermediate_values) == 1 and trial.user_attrs["epochs_cap"] == 1
    assert trial.user_attrs["ticket"] == "fixed"
    from automl.search.space.warmstart import fitting

    assert fitting(load_space(DEFAULT_SPACE), trial.params) == (baseline, None)


def test_gpu_assignment_packs_jobs_per_gpu():
    assert assign_gpus([0, 1], 4, 2) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert assign_gpus([0, 1], 4, 1) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert assign_gpus([3], 3, 4) == ["cuda:3"] * 3


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ("{train.epochz: 3}", "baseline.train.epochz: unknown parameter"),
        ("{train.epochs: 99}", "baseline.train.epochs: 99 is outside [1, 5]"),
        ("{train.batch_size: 7}", "baseline.train.batch_size: 7 is not one of [8, 16]"),
        ("{train.epochs: 3}", "baseline: incomplete"),
        ("[1, 2]", "baseline: expected a mapping"),
    ],
)
def test_bad_baselines_are_config_errors(baseline, message):
    text = (
        "training: {epochs: {type: int, low: 1, high: 5}, batch_size: [8, 16]}\n"
        f"baseline: {baseline}\n"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_space(text, "b.yaml")
