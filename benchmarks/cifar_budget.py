"""Searches under one wall-clock budget on real photos: CIFAR-10 as JPEG files.

Unpacks ``../shared/data/cifar10-jpg.tar.gz`` to a scratch folder (once), optionally keeps
a stratified subset (``--per-class`` training images a class, ``--test-per-class`` test
images a class; 0 keeps all), and runs, under the same ``--timeout`` budget and seed, the
default search (TPE + Hyperband), TPE without pruning, and the two honest references a
search must beat: ``baseline for the budget`` (the space's baseline, no search, its
schedule stretched over as many epochs as fit in the budget, timed from one epoch) and
``baseline ensemble for the budget`` (three seeds of it sharing the budget, averaged).
``--configs`` also offers random search with median pruning, TPE with ASHA (one
successive-halving bracket instead of Hyperband's three on a 30-step grid) and TPE with
median pruning across the whole study. Each seed runs every configuration in turn (A B C
D, A B C D), so a drift of the machine's speed touches them alike. Prints test accuracy
of the registered model, epochs, complete/pruned counts (members, for the baselines),
wall time and the seconds of one baseline epoch (a gauge of the machine's speed during
that run) for each, per seed and on average; ``--trials`` adds a line per trial (where
the budget went). ``--ensemble K`` sets the searches' ensemble size, and ``--also K ...``
registers each finished search once more per size (its K best averaged; run with
``--ensemble`` at least as large, so every member's weights were kept and none is trained
again): ensemble sizes compared on the very same trials, without the noise of one search
against another. Asserts nothing.

    python benchmarks/cifar_budget.py [--budget 900] [--seeds 0 1] [--per-class 500]
        [--test-per-class 0] [--space NAME] [--device auto] [--scratch DIR] [--trials]
        [--max-trials N] [--jobs N --trials-per-gpu K] [--ensemble K] [--also K ...]

Without ``--space`` every search gets the space ``automl search`` would choose for the
folder (``photos``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _harness import (
    baseline_for_budget,
    column_means,
    registered_accuracy,
    scratch_settings,
    timed_search,
)
from _photos import ARCHIVE, subset, unpack
from optuna.trial import FrozenTrial

from automl.records import TrialRecord
from automl.release.conclude import Concluding, register_best
from automl.search.space.bundled import resolve_space
from automl.training.device import resolve_device

BASELINES = {  # no search: the space's baseline trained for the whole budget, K seeds averaged
    "baseline for the budget": 1,
    "baseline ensemble for the budget": 3,
}
CONFIGS = {
    "default (tpe + hyperband)": {"sampler": "tpe", "pruner": "hyperband"},
    "tpe, no pruning": {"sampler": "tpe", "pruner": "none"},
    "random + median": {"sampler": "random", "pruner": "median"},
    "tpe + asha": {"sampler": "tpe", "pruner": "asha"},
    "tpe + median": {"sampler": "tpe", "pruner": "median"},
}


def baseline_epoch_seconds(trials: list[FrozenTrial]) -> float:
    """Seconds an epoch of trial 0 took: every search runs the space's baseline first, the
    same network on the same data, so it gauges how fast the machine was during that
    search (a baseline trained without a search times one epoch the same way)."""
    first = next((t for t in trials if t.number == 0), None)
    if first is None or first.datetime_start is None or first.datetime_complete is None:
        return float("nan")
    seconds = (first.datetime_complete - first.datetime_start).total_seconds()
    return seconds / max(1, TrialRecord.of(first).epochs_run)


def trial_lines(trials: list[FrozenTrial]) -> list[str]:
    """One line a trial: where the budget went (state, epochs of its schedule, seconds,
    best validation accuracy)."""
    lines = []
    for t in sorted(trials, key=lambda t: t.number):
        end = t.datetime_complete
        seconds = (end - t.datetime_start).total_seconds() if end and t.datetime_start else 0.0
        value = t.value if t.value is not None else max(t.intermediate_values.values(), default=0)
        lines.append(
            f"    trial {t.number:>3} {t.state.name:<8} epochs {TrialRecord.of(t).epochs_run:>2}/"
            f"{t.params.get('train.epochs', '?'):<2} {seconds:6.1f} s  val {value:.4f}"
        )
    return lines


Row = tuple[float, float, int, int, int, float]  # test, val, epochs, complete, pruned, wall


def print_row(name: str, seed: int, row: Row, gauge: float) -> None:
    print(
        f"{name:<33} {seed:>4} {row[0]:>7.4f} {row[1]:>7.4f} {row[2]:>6} {row[3]:>5} "
        f"{row[4]:>6} {row[5]:>7.0f} {gauge:>7.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=900.0, help="seconds per search")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=0)
    parser.add_argument("--space", default="", help="space file or bundled name [sized by data]")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-epochs", type=int, default=None, help="[the space's longest]")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/automl-cifar"))
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=[*list(CONFIGS)[:2], *BASELINES],
        choices=[*CONFIGS, *BASELINES],
    )
    parser.add_argument("--trials", action="store_true", help="print a line per trial too")
    parser.add_argument("--max-trials", type=int, default=100_000, help="trials at most")
    parser.add_argument("--jobs", type=int, default=1, help="parallel trials (GPU: packed)")
    parser.add_argument("--trials-per-gpu", type=int, default=1)
    parser.add_argument("--ensemble", type=int, default=None, help="[automl's default]")
    parser.add_argument("--also", type=int, nargs="*", default=[], help="other ensemble sizes")
    args = parser.parse_args()
    folder = subset(unpack(args.scratch, args.archive), args.per_class, args.test_per_class)
    chosen = {"space": resolve_space(Path(args.space))} if args.space else {}
    print(f"data: {folder}, budget {args.budget:.0f} s per search, space {args.space or 'sized'}")
    header = f"{'search':<33} {'seed':>4} {'test':>7} {'val':>7} {'epochs':>6} {'done':>5}"
    print(header + f" {'pruned':>6} {'wall s':>7} {'epoch s':>7}")
    rows: dict[str, list[Row]] = {c: [] for c in args.configs}
    for seed in args.seeds:
        for name in args.configs:
            work = args.scratch / f"run-{name.split()[0]}-{seed}-{time.time_ns()}"
            work.mkdir(parents=True)
            settings = scratch_settings(
                work,
                dataset=f"imagefolder:{folder}",
                data_dir=args.scratch / "cache",
                trials=args.max_trials,
                timeout=args.budget,
                jobs=args.jobs,
                trials_per_gpu=args.trials_per_gpu,
                **chosen,
                study_name="cifar-budget",
                max_epochs=args.max_epochs,
                seed=seed,
                device=args.device,
                evaluate=False,
                ensemble=args.ensemble,
                **CONFIGS.get(name, {}),
            )
            if name in BASELINES:
                run = baseline_for_budget(settings, args.budget, BASELINES[name])
                row = (run.test_acc, run.val_acc, run.epochs, run.members, 0, run.wall)
                print_row(name, seed, row, run.epoch_seconds)
                rows[name].append(row)
                continue
            outcome, wall = timed_search(settings)
            states = outcome.states
            test, val = registered_accuracy(outcome)
            row = (test, val, outcome.epochs_run, states["COMPLETE"], states["PRUNED"], wall)
            rows[name].append(row)
            print_row(name, seed, row, baseline_epoch_seconds(outcome.trials_run))
            if args.trials:
                print("\n".join(trial_lines(outcome.trials_run)), flush=True)
            for size in args.also:
                how = Concluding(
                    f"also-{size}", outcome.parent_run_id, ensemble=size, mirror=settings.tta
                )
                [other] = register_best(
                    outcome.study,
                    outcome.data,
                    how,
                    tracker=outcome.tracker,
                    device=resolve_device(settings.device),
                )
                members = ",".join(map(str, other.members or (other.trial_number,)))
                print(f"    --ensemble {size}: test {other.test_acc:.4f}  val "
                      f"{other.val_acc:.4f}  trials {members}", flush=True)  # fmt: skip
    print("\nmeans over seeds")
    for name, found in rows.items():
        test, val, epochs, done, pruned, wall = column_means(found)
        print(
            f"{name:<33} test {test:.4f}  val {val:.4f}  epochs {epochs:5.0f}  "
            f"complete {done:4.0f}  pruned {pruned:4.0f}  wall {wall:5.0f} s"
        )


if __name__ == "__main__":
    main()
