"""Samplers and pruners by name, each driving the real space on a cheap objective."""

from __future__ import annotations

import random

import optuna
import pytest

from automl.search.settings import PRUNERS, SAMPLERS
from automl.search.space import load_space
from automl.search.strategy.pruners import make_pruner
from automl.search.strategy.samplers import make_sampler
from tests.conftest import DEFAULT_SPACE


def objective(space):
    def run(trial):
        params = space.sample(trial)
        rng = random.Random(trial.number)
        for epoch in range(1, min(params["train.epochs"], 6) + 1):
            trial.report(0.5 + 0.05 * epoch + rng.random() * 0.1, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return rng.random()

    return run


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_samples_the_conditional_default_space(sampler):
    space = load_space(DEFAULT_SPACE)
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(sampler, 0), pruner=make_pruner("none", 6)
    )
    study.optimize(objective(space), n_trials=12)
    assert len(study.trials) == 12
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # conditional params appear only where their condition holds, whatever the sampler
    for trial in study.trials:
        assert ("optim.momentum" in trial.params) == (trial.params["optim.name"] == "sgd")


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_same_seed_same_sequence_of_params(sampler):
    space = load_space(DEFAULT_SPACE)
    runs = []
    for _ in range(2):
        study = optuna.create_study(direction="maximize", sampler=make_sampler(sampler, 7))
        study.optimize(objective(space), n_trials=15)
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("pruner", PRUNERS)
def test_every_pruner_runs_and_only_none_never_prunes(pruner):
    space = load_space(DEFAULT_SPACE)
    study = optuna.create_study(
        direction="maximize",
        sampler=make_sampler("random", 0),
        pruner=make_pruner(pruner, 6),
    )
    study.optimize(objective(space), n_trials=30)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    if pruner == "none":
        assert not pruned
    else:
        assert pruned


class Watching(optuna.samplers.RandomSampler):
    """Random sampling that notes how many trials the study it is handed holds."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.seen: list[int] = []

    def sample_independent(self, study, trial, name, distribution):
        if name == "arch.stages":
            self.seen.append(len(study.get_trials(deepcopy=False)))
        return super().sample_independent(study, trial, name, distribution)


def test_hyperband_prunes_by_bracket_but_the_sampler_sees_every_trial():
    space = load_space(DEFAULT_SPACE)
    runs = {}
    for name, pruner in [
        ("plain", optuna.pruners.HyperbandPruner(min_resource=1, max_resource=6)),
        ("ours", make_pruner("hyperband", 6)),
    ]:
        sampler = Watching()
        study = optuna.create_study(
            study_name="brackets", direction="maximize", sampler=sampler, pruner=pruner
        )
        study.optimize(objective(space), n_trials=24)
        runs[name] = ([t.state for t in study.trials], sampler.seen)
    assert optuna.trial.TrialState.PRUNED in runs["ours"][0]
    assert runs["ours"][0] == runs["plain"][0]  # the same trials pruned, bracket by bracket
    assert runs["ours"][1] == list(range(1, 25))  # every trial so far, its own included
    assert runs["plain"][1] != runs["ours"][1]  # Optuna's own shows a bracket's trials only


def hopeless_trials_left_running(pruner: optuna.pruners.BasePruner, grid: int = 30) -> int:
    """Trials far behind every other that no bracket stopped in the prunable half."""
    study = optuna.create_study(study_name="halves", direction="maximize", pruner=pruner)
    for _ in range(30):  # every bracket gets good trials through all its rungs
        trial = study.ask()
        for step in range(1, grid + 1):
            trial.report(0.9, step)
            trial.should_prune()
        study.tell(trial, 0.9)
    running = 0
    for _ in range(30):
        trial = study.ask()
        for step in range(1, grid // 2 + 1):
            trial.report(0.1, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            running += 1
            study.tell(trial, 0.1)
    return running


def test_every_hyperband_bracket_prunes_within_the_first_half_of_a_schedule():
    # Optuna's own on the whole 30-step grid has a fourth bracket whose one rung (27)
    # lies past the half in which a trial may be pruned: its hopeless trials run whole.
    whole = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=30, reduction_factor=3)
    assert hopeless_trials_left_running(whole) > 0
    assert hopeless_trials_left_running(make_pruner("hyperband", 30)) == 0
