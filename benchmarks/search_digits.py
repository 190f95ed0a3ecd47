"""The default 100-trial search on digits: speed, quality and tracking overhead.

Prints figures; asserts nothing. Targets: test_acc >= 0.99, MLflow and Optuna calls under
3 % of the wall time each. "Optuna calls" is the time inside Optuna, counted by the
study's storage (``stores/clock.OptunaClock``): every storage call, sampling at
each claim and suggestion, pruning decisions and tells, from any thread.

    python benchmarks/search_digits.py [--trials 100] [--seed 0] [--sampler tpe]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _harness import print_rows, scratch_settings, timed_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--pruner", default="hyperband")
    parser.add_argument("--space", type=Path, help="[default: sized by the data]")
    parser.add_argument("--max-epochs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = scratch_settings(
            folder,
            trials=args.trials,
            **({"space": args.space} if args.space else {}),
            study_name="bench",
            sampler=args.sampler,
            pruner=args.pruner,
            max_epochs=args.max_epochs,
            seed=args.seed,
            device="cpu",
        )
        outcome, wall = timed_search(settings)
    trials = outcome.trials_run
    pruned = sum(t.state.name == "PRUNED" for t in trials)
    failed = sum(t.state.name == "FAIL" for t in trials)
    reg = outcome.registration
    mlflow_s = outcome.tracking_seconds_search
    optuna_s = outcome.optuna_seconds
    rows = [
        ("trials", f"{len(trials)} ({pruned} pruned, {failed} failed)"),
        ("wall time", f"{wall:.1f} s (search {outcome.optimize_seconds:.1f} s)"),
        ("trials per minute", f"{60 * len(trials) / wall:.1f}"),
        ("epochs run", f"{outcome.epochs_run}"),
        ("pruned share", f"{pruned / max(len(trials), 1):.0%}"),
        ("best val_acc", f"{outcome.study.best_value:.4f}"),
        ("test_acc", f"{reg.test_acc:.4f}" if reg else "n/a"),
        (
            "reloaded test_acc",
            f"{reg.reloaded_test_acc:.4f}" if reg and reg.reloaded_test_acc else "n/a",
        ),
        (
            "MLflow calls",
            f"{mlflow_s:.2f} s = {mlflow_s / wall:.1%} of wall (store set-up and trials)",
        ),
        (
            "registration",
            f"{outcome.registration_seconds:.2f} s = "
            f"{outcome.registration_seconds / wall:.1%} of wall "
            "(test, export, register, reload check)",
        ),
        ("Optuna calls", f"{optuna_s:.2f} s = {optuna_s / wall:.1%} of wall"),
    ]
    print_rows(rows)


if __name__ == "__main__":
    main()
