"""What ``--refit`` and ``--ensemble K`` buy over registering the single best trial.

One search per seed (default settings, ``--trials`` trials), then the same finished study
concluded three ways into one tracking store: the single best trial (what the search
registered), the winner retrained on train + validation (``--refit``), and the K best
complete trials averaged (``--ensemble K``). Prints test accuracy, the test split's
expected calibration error and the seconds each conclusion took, per seed and on average;
asserts nothing. Accuracies do not depend on the machine's load; seconds do.

    python benchmarks/conclusion_gains.py [--trials 30] [--seeds 0 1 2] [--ensemble 3 5]
        [--dataset digits] [--image-size N]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from _harness import column_means, scratch_settings, timed_search

from automl.release.conclude import Concluding, register_best
from automl.tracking import Registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ensemble", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--image-size", type=int, default=None)
    args = parser.parse_args()
    ways = ["single best", "refit", *(f"ensemble {k}" for k in args.ensemble)]
    rows: dict[str, list[tuple[float, float, float]]] = {way: [] for way in ways}
    print(f"{'conclusion':<14} {'seed':>4} {'test_acc':>8} {'ece':>7} {'seconds':>8}")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as folder:
            extra = {"image_size": args.image_size} if args.image_size else {}
            settings = scratch_settings(
                folder, trials=args.trials, study_name=f"gains-{seed}", dataset=args.dataset,
                seed=seed, device="cpu", evaluate=False, **extra,
            )  # fmt: skip
            outcome, _ = timed_search(settings)
            registry = Registry(settings.tracking_uri)
            for way in ways:
                start = time.perf_counter()
                if way == "single best":
                    reg = outcome.registration
                else:
                    ensemble = int(way.split()[1]) if way.startswith("ensemble") else 1
                    how = Concluding(
                        f"gains-{way.replace(' ', '-')}", outcome.parent_run_id,
                        refit=way == "refit", ensemble=ensemble,
                    )  # fmt: skip
                    [reg] = register_best(
                        outcome.study,
                        outcome.data,
                        how,
                        tracker=outcome.tracker,
                        device=torch.device("cpu"),
                    )
                seconds = time.perf_counter() - start if way != "single best" else 0.0
                version = registry.version(reg.name, reg.version)
                row = (reg.test_acc, float(version.tags.get("ece", "nan")), seconds)
                rows[way].append(row)
                print(f"{way:<14} {seed:>4} {row[0]:>8.4f} {row[1]:>7.4f} {row[2]:>8.1f}",
                      flush=True)  # fmt: skip
    print("\nmeans over seeds")
    for way, found in rows.items():
        test, ece, seconds = column_means(found)
        print(f"{way:<14} test_acc {test:.4f}  ece {ece:.4f}  seconds {seconds:6.1f}")


if __name__ == "__main__":
    main()
