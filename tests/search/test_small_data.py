"""Small data works by default: the chance rule waits for a fair number of optimizer steps,
never stops a configuration given to the study, and a search that completes nothing says
why and what to run instead."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial
from PIL import Image
from rich.console import Console

from automl.cli.display import print_summary
from automl.pipeline import run_search
from automl.records import TrialAttr
from automl.search.scheduler.queue import add_tickets
from automl.search.strategy import pruners
from automl.search.strategy.nothing_completed import why_nothing_completed
from tests.conftest import TINY_SPACE, search_settings


def learnable_folder(
    root: Path, *, classes: int = 10, per_class: int = 12, side: int = 16, noise: float = 30.0
) -> str:
    """An image folder whose classes a small CNN can tell apart, though not at a glance:
    each class is a grating of its own orientation (five) and tint (two), at a random
    phase, under Gaussian noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    for c in range(classes):
        angle = np.pi * (c % 5) / 5
        tint = np.array([1.0, 0.6, 0.2]) if (c // 5) % 2 == 0 else np.array([0.2, 0.6, 1.0])
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            along = xx * np.cos(angle) + yy * np.sin(angle)
            wave = np.sin(along * 2 * np.pi / (side / 4) + rng.uniform(0, 2 * np.pi))
            pixels = 128 + 90 * wave[..., None] * tint + rng.normal(0, noise, (side, side, 3))
            image = np.clip(pixels, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / f"{i}.png")
    return f"imagefolder:{root}"


# -- the rule's arithmetic ------------------------------------------------------------------


def test_optimizer_steps_follow_the_training_loop():
    assert pruners.optimizer_steps(2, 280, 64) == 8  # 40 photos a class: 4 steps an epoch
    assert pruners.optimizer_steps(3, 1000, 32) == 93  # the ragged last batch is dropped
    assert pruners.optimizer_steps(2, 50, 128) == 2  # a batch is at most the whole split


def test_two_epochs_of_a_small_data_set_are_not_a_fair_chance():
    # The rule before: two epochs at 0.10 on ten classes was the end, however few steps.
    assert not pruners.stuck_at_chance(2, 8, 0.10, 0.1)
    assert not pruners.stuck_at_chance(30, pruners.CHANCE_STEPS - 1, 0.10, 0.1)
    assert pruners.stuck_at_chance(3, pruners.CHANCE_STEPS, 0.15, 0.1)
    assert not pruners.stuck_at_chance(1, 5000, 0.10, 0.1)  # one epoch is never enough
    assert not pruners.stuck_at_chance(3, 5000, 0.20, 0.1)  # past a tenth of the way up
    assert pruners.stuck_at_chance(3, 5000, 0.54, 0.5)  # two classes: 0.55 is a tenth of the way


def _claimed(origin: str | None) -> tuple[optuna.Study, optuna.Trial]:
    study = optuna.create_study(direction="maximize")
    fixed = [{}] if origin else None
    add_tickets(study, 1, fixed, [origin] if origin else None)
    return study, study.ask()


@pytest.mark.parametrize("origin", ["baseline", "portfolio:wide", "older-study#3"])
def test_a_configuration_given_to_the_study_is_never_stopped_at_chance(origin):
    _, trial = _claimed(origin)
    trial.set_user_attr(TrialAttr.PARAMS, {"train.batch_size": 8})
    rule = pruners.ChanceRule(chance=0.1, train_images=10_000)
    assert pruners.exempt(trial)
    rule.check(trial, 10, 30, 0.1)  # 12,500 steps at chance: it goes on


def test_a_sampled_configuration_at_chance_after_a_fair_chance_stops():
    _, trial = _claimed(None)
    trial.set_user_attr(TrialAttr.PARAMS, {"train.batch_size": 8})
    assert not pruners.exempt(trial)
    rule = pruners.ChanceRule(chance=0.1, train_images=800)  # 100 steps an epoch
    rule.check(trial, 1, 30, 0.1)
    with pytest.raises(optuna.TrialPruned, match=r"still at chance .* after 200 optimizer steps"):
        rule.check(trial, 2, 30, 0.1)


@pytest.mark.slow
def test_a_trial_stuck_at_chance_stops_once_it_had_a_fair_chance(tmp_path, digits):
    hopeless = (
        TINY_SPACE.replace("epochs: 2", "epochs: 12")
        .replace("lr: {type: float, low: 0.02, high: 0.2, log: true}", "lr: 1.0e-7")
        .replace("batch_size: [32, 64]", "batch_size: 32")
    )
    settings = search_settings(tmp_path, hopeless, trials=1, study_name="chance", max_epochs=12)
    outcome = run_search(settings, pruner=optuna.pruners.NopPruner())
    assert outcome.registration is None  # nothing completed, nothing registered
    [trial] = outcome.study.trials
    per_epoch = pruners.optimizer_steps(1, len(digits.train), 32)
    fair = -(-pruners.CHANCE_STEPS // per_epoch)  # the first epoch past CHANCE_STEPS steps
    assert trial.state == TrialState.PRUNED
    assert len(trial.intermediate_values) == fair > pruners.CHANCE_EPOCHS
    assert (
        f"{pruners.AT_CHANCE} (0.10) after {fair * per_epoch} optimizer steps"
        in (trial.user_attrs[TrialAttr.MESSAGE])
    )


# -- a real search on a small folder --------------------------------------------------------


@pytest.mark.slow
def test_a_search_on_a_small_folder_is_not_stopped_at_chance_after_two_epochs(tmp_path):
    """10 classes of 12 noisy images: one or two optimizer steps an epoch. The rule by
    epochs stopped trial 0 at epoch 2 (3 steps), at chance; given its schedule, it learns."""
    dataset = learnable_folder(tmp_path / "photos", noise=70.0)
    space = TINY_SPACE.replace("epochs: 2", "epochs: 8")
    settings = search_settings(
        tmp_path, space, dataset=dataset, data_dir=tmp_path / "cache", trials=2,
        study_name="small", max_epochs=8, seed=1,
    )  # fmt: skip
    outcome = run_search(settings, pruner=optuna.pruners.NopPruner())  # the chance rule alone
    trials = outcome.study.trials
    messages = [t.user_attrs.get(TrialAttr.MESSAGE, "") for t in trials]
    assert not any(pruners.AT_CHANCE in m for m in messages), messages
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    epoch_2 = pruners.progress_step(2, 8, pruners.MIN_GRID)
    assert trials[0].intermediate_values[epoch_2] < 0.19  # at chance (0.10) by the old rule
    assert all(t.value > 0.2 for t in trials)  # ten classes: twice chance, and more
    assert outcome.registration is not None


# -- when nothing completes, the summary says why ---------------------------------------------


def _ended(state: TrialState, message: str = "", reason: str = "pruned", epochs: int = 3):
    attrs = {TrialAttr.MESSAGE: message, TrialAttr.REASON: reason,
             TrialAttr.PARAMS: {"train.batch_size": 64}}  # fmt: skip
    values = {step: 0.1 for step in range(1, epochs + 1)}
    return create_trial(state=state, user_attrs=attrs, intermediate_values=values)


def test_the_reason_nothing_completed_counts_the_trials_and_names_the_options():
    at_chance = f"val_acc 0.1000 at epoch 3 of 30 {pruners.AT_CHANCE} (0.10) after 12 steps"
    trials = [_ended(TrialState.PRUNED, at_chance) for _ in range(7)]
    trials.append(_ended(TrialState.PRUNED, "val_acc 0.2 at epoch 2 of 30 fell behind", epochs=2))
    text = why_nothing_completed(trials, train_images=280, classes=10, timeout=120)
    assert text.startswith("all 8 trials were pruned: 7 still at chance after 12 optimizer steps")
    assert "1 fell behind" in text
    assert "--pruner none" in text
    assert "about 28 a class" in text
    assert "a longer --timeout (120 s now)" in text


def test_failed_trials_are_counted_by_reason():
    trials = [_ended(TrialState.FAIL, reason="oom")] * 2 + [_ended(TrialState.PRUNED, "x")]
    text = why_nothing_completed(trials, train_images=50_000, classes=10)
    assert text.startswith("none of the 3 trials completed: 1 fell behind the others, 2 failed")
    assert "(oom 2)" in text
    assert "more images" not in text  # 5,000 a class is not what held it back
    assert "--timeout" not in text


@pytest.mark.slow
def test_a_search_that_completes_nothing_prints_why(tmp_path):
    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    space = TINY_SPACE.replace("epochs: 2", "epochs: 3")
    settings = search_settings(tmp_path, space, trials=2, study_name="none", max_epochs=3)
    outcome = run_search(settings, pruner=AlwaysPrune())
    assert outcome.registration is None
    out = io.StringIO()
    print_summary(Console(file=out, width=200), outcome)
    text = out.getvalue()
    assert "no trial completed: nothing was registered" in text
    assert "all 2 trials were pruned: 2 " in text  # at chance or behind, as the pruner saw
    assert "--pruner none" in text
