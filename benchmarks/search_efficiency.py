"""How much search the defaults buy: TPE + Hyperband against random search + median
pruning and against TPE without pruning, on digits, same trial budget, several seeds.
``default, epochs compared`` is the default with the pruning rule of before: trials
compared at the same epoch whatever their schedule's length (see search/strategy/pruners.py).

Prints best val_acc, test_acc, epochs trained, the mean schedule length of complete
trials and wall time per run and on average; asserts nothing.

    python benchmarks/search_efficiency.py [--trials 50] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from _harness import column_means, scratch_settings, timed_search

from automl.records import TrialRecord
from automl.search.strategy import pruners

CONFIGS = {
    "default (tpe + hyperband)": {"sampler": "tpe", "pruner": "hyperband"},
    "random + median": {"sampler": "random", "pruner": "median"},
    "tpe, no pruning": {"sampler": "tpe", "pruner": "none"},
    "default, epochs compared": {"sampler": "tpe", "pruner": "hyperband"},
}
SAME_EPOCH = "default, epochs compared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, int, float, float]]] = {
        name: [] for name in args.configs
    }
    print(
        f"{'search':<28} {'seed':>4} {'best val':>9} {'test':>7} {'epochs':>7} "
        f"{'schedule':>8} {'wall s':>7}"
    )
    for seed in args.seeds:
        for name in args.configs:
            options = CONFIGS[name]
            with tempfile.TemporaryDirectory() as folder:
                settings = scratch_settings(
                    folder,
                    trials=args.trials,
                    study_name="efficiency",
                    seed=seed,
                    device="cpu",
                    evaluate=False,
                    **options,
                )
                rule = pruners.progress_step
                if name == SAME_EPOCH:  # the rule of before: step = epoch
                    pruners.progress_step = lambda epoch, epochs, grid: epoch
                try:
                    outcome, wall = timed_search(settings)
                finally:
                    pruners.progress_step = rule
            reg = outcome.registration
            complete = [t for t in outcome.trials_run if t.state.name == "COMPLETE"]
            schedule = float(np.mean([TrialRecord.of(t).epochs_run for t in complete]))
            row = (reg.val_acc, reg.test_acc, outcome.epochs_run, schedule, wall)
            results[name].append(row)
            print(
                f"{name:<28} {seed:>4} {row[0]:>9.4f} {row[1]:>7.4f} {row[2]:>7} "
                f"{row[3]:>8.1f} {row[4]:>7.1f}",
                flush=True,
            )
    print("\nmeans over seeds")
    for name, rows in results.items():
        best, test, epochs, schedule, wall = column_means(rows)
        print(
            f"{name:<28} best val {best:.4f}  test {test:.4f}  "
            f"epochs {epochs:6.0f}  schedule {schedule:4.1f}  wall {wall:6.1f} s"
        )


if __name__ == "__main__":
    main()
