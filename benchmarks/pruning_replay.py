"""Replays the learning curves of a finished search under each pruner, in seconds.

A search under one pruner tells how that pruner did on the trials it sampled; comparing
pruners that way costs a whole search each (a 15-minute CIFAR-10 budget per pruner and
seed), and the searches drift apart as soon as one prunes what the other keeps. A search
run without pruning (``--pruner none``) records every trial's whole curve on the progress
grid; this script feeds those curves, trial by trial in the order they ran, to each
pruner with the rules ``automl search`` adds to it (no pruning past half a schedule, never
at the last epoch, a trial still at chance after a fair number of optimizer steps stops,
unless the study was given its configuration), and prints for each:
the trials it would have stopped and when, the seconds that would have saved (each
trial's time spread evenly over its epochs), and which of the search's best trials (by
final validation accuracy: the ensemble ``automl search`` would register) it would have
lost. Hyperband hashes trials to brackets by study name and trial number, so the replay
uses the recorded study's name and numbers: the brackets are the ones the same search
would have had.

What it cannot tell: which configurations the sampler would have drawn with the saved time
(TPE learns from pruned trials too), so the figures bound what a pruner saves and costs
on these trials, not the accuracy a pruned search would reach. Asserts nothing.

    python benchmarks/pruning_replay.py STORAGE [STORAGE ...] [--study NAME]
        [--pruners hyperband median asha] [--top 3] [--classes 10] [--train-images N]
        [--trials]

STORAGE: an Optuna storage URL or a SQLite file (``automl.db`` of a finished search, e.g.
one that ``benchmarks/cifar_budget.py --configs "tpe, no pruning"`` left in its scratch
folder).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.records import TrialRecord
from automl.search.strategy.pruners import (
    CHANCE_STEPS,
    batch_size,
    exempt,
    grid_steps,
    make_pruner,
    optimizer_steps,
    prunable,
    stuck_at_chance,
)


@dataclass(frozen=True)
class Replayed:
    number: int
    final: float  # the recorded trial's validation accuracy
    seconds: float  # what the recorded trial took
    epochs: int  # epochs it recorded
    stopped_at: int | None  # the epoch the replayed pruner stops it at, if any
    why: str = ""

    @property
    def saved(self) -> float:
        if self.stopped_at is None:
            return 0.0
        return self.seconds * (1 - self.stopped_at / self.epochs)


def recorded(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials, in the order they ran, with a curve to replay."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted((t for t in complete if t.intermediate_values), key=lambda t: t.number)


def steps_after(frozen: FrozenTrial, epoch: int, train_images: int | None) -> int:
    """Optimizer steps after ``epoch`` epochs; unknown ``train_images``: a large data set,
    on which two epochs are past ``CHANCE_STEPS``."""
    if train_images is None:
        return CHANCE_STEPS
    return optimizer_steps(epoch, train_images, batch_size(TrialRecord.of(frozen).params))


def replay(
    trials: list[FrozenTrial],
    pruner_name: str,
    study_name: str,
    grid: int,
    chance: float,
    train_images: int | None = None,
) -> list[Replayed]:
    """Each recorded curve reported, epoch by epoch, to a fresh in-memory study whose
    pruner is ``pruner_name``, with the rules the search's objective applies around it."""
    study = optuna.create_study(
        study_name=study_name, direction="maximize", pruner=make_pruner(pruner_name, grid)
    )
    out = []
    for frozen in trials:
        trial = study.ask()
        while trial.number < frozen.number:  # numbers decide Hyperband's brackets
            study.tell(trial, state=TrialState.FAIL)
            trial = study.ask()
        steps = sorted(frozen.intermediate_values)
        stopped, why = None, ""
        for epoch, step in enumerate(steps, 1):
            value = frozen.intermediate_values[step]
            trial.report(value, step)
            if epoch == len(steps):
                break
            if prunable(step, max(grid, len(steps))) and trial.should_prune():
                stopped, why = epoch, "pruned"
            elif not exempt(frozen) and stuck_at_chance(
                epoch, steps_after(frozen, epoch, train_images), value, chance
            ):
                stopped, why = epoch, "at chance"
            if stopped is not None:
                break
        seconds = (frozen.datetime_complete - frozen.datetime_start).total_seconds()  # type: ignore[operator]
        out.append(Replayed(frozen.number, float(frozen.value), seconds, len(steps), stopped, why))  # type: ignore[arg-type]
        if stopped is None:
            study.tell(trial, frozen.value)
        else:
            study.tell(trial, state=TrialState.PRUNED)
    return out


def storage_url(text: str) -> str:
    return text if "://" in text else f"sqlite:///{Path(text).resolve()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storages", nargs="+", help="Optuna storage URLs or SQLite files")
    parser.add_argument("--study", help="the study's name [the storage's only study]")
    parser.add_argument("--pruners", nargs="+", default=["hyperband", "median", "asha"])
    parser.add_argument("--top", type=int, default=3, help="best trials that matter [3]")
    parser.add_argument("--classes", type=int, default=10, help="for the chance rule [10]")
    parser.add_argument(
        "--train-images", type=int, help="the search's training images, for the chance rule"
    )
    parser.add_argument("--trials", action="store_true", help="a line per trial too")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for text in args.storages:
        url = storage_url(text)
        study = optuna.load_study(study_name=args.study, storage=url)
        trials = recorded(study)
        if not trials:
            print(f"{text}: no complete trial with a curve")
            continue
        # Every trial's last epoch is the grid's last step: the largest step is the grid.
        grid = grid_steps(max(max(t.intermediate_values) for t in trials))
        top = sorted(trials, key=lambda t: (-float(t.value), t.number))[: args.top]  # type: ignore[arg-type]
        total = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)  # type: ignore[operator]
        best = ", ".join(f"{t.number} ({t.value:.4f})" for t in top)
        print(f"\n{text}: {len(trials)} complete trials, {total:.0f} s, grid {grid}; best {best}")
        for name in args.pruners:
            chance = 1.0 / args.classes
            rows = replay(trials, name, study.study_name, grid, chance, args.train_images)
            stopped = [r for r in rows if r.stopped_at is not None]
            saved = sum(r.saved for r in rows)
            lost = [r.number for r in stopped if r.number in {t.number for t in top}]
            print(
                f"  {name:<10} stops {len(stopped):>2} of {len(rows)}, saves {saved:5.0f} s "
                f"({saved / total:4.0%}); of the best {args.top} loses {lost or 'none'}"
            )
            if args.trials:
                for r in rows:
                    fate = f"{r.why} at epoch {r.stopped_at}" if r.stopped_at else "runs whole"
                    print(
                        f"      trial {r.number:>3} val {r.final:.4f} {r.epochs:>2} epochs "
                        f"{r.seconds:6.1f} s: {fate}"
                    )


if __name__ == "__main__":
    main()
