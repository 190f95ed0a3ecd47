"""How much search the defaults buy: TPE + Hyperband against random search + median
pruning and against TPE without pruning, on digits, same trial budget, several seeds.

Prints best val_acc, test_acc, epochs trained and wall time per run and on average;
asserts nothing.

    python benchmarks/search_efficiency.py [--trials 50] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from automl.search.runner import run_search
from automl.search.settings import SearchSettings

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {
    "default (tpe + hyperband)": {"sampler": "tpe", "pruner": "hyperband"},
    "random + median": {"sampler": "random", "pruner": "median"},
    "tpe, no pruning": {"sampler": "tpe", "pruner": "none"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, int, float]]] = {name: [] for name in CONFIGS}
    print(f"{'search':<28} {'seed':>4} {'best val':>9} {'test':>7} {'epochs':>7} {'wall s':>7}")
    for seed in args.seeds:
        for name, options in CONFIGS.items():
            with tempfile.TemporaryDirectory() as folder:
                settings = SearchSettings(
                    trials=args.trials,
                    space=REPO / "search_spaces" / "default.yaml",
                    study_name="efficiency",
                    storage=f"sqlite:///{folder}/automl.db",
                    tracking_uri=f"sqlite:///{folder}/mlflow.db",
                    seed=seed,
                    device="cpu",
                    evaluate=False,
                    **options,
                )
                start = time.perf_counter()
                outcome = run_search(settings)
                wall = time.perf_counter() - start
            reg = outcome.registration
            row = (reg.val_acc, reg.test_acc, outcome.epochs_run, wall)
            results[name].append(row)
            print(f"{name:<28} {seed:>4} {row[0]:>9.4f} {row[1]:>7.4f} {row[2]:>7} {row[3]:>7.1f}")
    print("\nmeans over seeds")
    for name, rows in results.items():
        best, test, epochs, wall = (np.mean(col) for col in zip(*rows, strict=True))
        print(
            f"{name:<28} best val {best:.4f}  test {test:.4f}  "
            f"epochs {epochs:6.0f}  wall {wall:6.1f} s"
        )


if __name__ == "__main__":
    main()
