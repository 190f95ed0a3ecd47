"""Time to quality: the default search against a plain hand-written Optuna search.

Both run on digits with the same seed and the same splits, one after the other in child
processes of this script (one process tree, one machine, so only ratios are compared).
The reference is what a user writes by hand: TPE and median pruning around a DataLoader
loop over a small CNN, MLflow logged metric by metric in nested runs.

For each search it prints best-so-far validation and test accuracy against wall time
(test accuracy of the model each would register if stopped then, measured afterwards
from the weights the search kept, or outside the reference's clock: for the default
search, the ensemble of its best ``--ensemble`` trials so far), the time each takes to
reach a test accuracy of 0.99, and when the default search first reaches the
reference's final test accuracy. Asserts nothing.

    python benchmarks/time_to_quality.py [--trials 100] [--seeds 0 1 2] [--jobs N|auto]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import optuna
import torch
from _photos import accuracy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

TARGET = 0.99
Curve = list[tuple[float, float, float]]  # (seconds, best val_acc so far, its test_acc)


def default_search(
    seed: int, trials: int, folder: Path, space: str, jobs: int = 1
) -> dict[str, Any]:
    from _harness import registered_accuracy, scratch_settings, timed_search

    from automl.search.space.bundled import resolve_space

    chosen = {}  # no --space: the default, sized by the data
    if space:  # a file, or a bundled space by name, as --space takes it
        chosen["space"] = resolve_space(Path(space))
    settings = scratch_settings(
        folder,
        trials=trials,
        study_name="ttq",
        seed=seed,
        device="cpu",
        evaluate=False,
        jobs=jobs,
        **chosen,
    )
    start = time.time()  # the clock of the trials' datetimes, which the curve counts from
    outcome, wall = timed_search(settings)
    curve = registered_curve(outcome, settings.members, start)
    reg = outcome.registration
    final, val = registered_accuracy(outcome)
    curve.append((wall, val, final))
    result = {"curve": curve, "wall": wall, "final_test": final, "epochs": outcome.epochs_run}
    result["members"] = settings.members
    if reg is not None:
        from automl.tracking import Registry

        tags = Registry(settings.tracking_uri).version(reg.name, reg.version).tags
        result["calibration"] = {k: tags.get(k) for k in ("temperature", "ece_uncalibrated", "ece")}
        result["test_acc_single"] = tags.get("test_acc_single")
    trials = outcome.trials_run
    result["states"] = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED")}
    return result


def registered_curve(outcome: Any, count: int, start: float) -> Curve:
    """After each trial, the model the search would register if it stopped then: the best
    trial, or the ensemble of the best ``count`` so far (mirrored at test time where the
    validation split says so), tested outside the search's clock from the weights the
    search kept."""
    from automl.release.rebuild import trial_config
    from automl.training.calibration import calibrate
    from automl.training.ensemble import Ensemble, mirror_if_better
    from automl.training.loop import Normalizer, evaluate
    from automl.training.train import build_network

    data, tracker = outcome.data, outcome.tracker
    norm = Normalizer(data.mean, data.std)
    networks: dict[int, torch.nn.Module] = {}

    def network(trial: Any) -> torch.nn.Module:
        """The trial's kept weights, calibrated as the registration calibrates a member."""
        if trial.number not in networks:
            model = build_network(trial_config(trial), data)
            model.load_state_dict(tracker.load_weights(trial.user_attrs["mlflow_run_id"]))
            networks[trial.number] = calibrate(model, data)[0]
        return networks[trial.number]

    curve: Curve = []
    ranked: list[Any] = []
    chosen_before: list[int] = []
    complete = [t for t in outcome.study.trials if t.state.name == "COMPLETE"]
    for trial in sorted(complete, key=lambda t: t.datetime_complete):
        ranked = sorted([*ranked, trial], key=lambda t: (-t.values[0], t.number))
        members = ranked[:count]
        if [t.number for t in members] == chosen_before:
            continue
        try:
            model = (
                Ensemble([network(t) for t in members]) if len(members) > 1 else network(members[0])
            )
        except Exception:  # weights that cannot be read: no point on the curve
            continue
        chosen_before = [t.number for t in members]
        model = mirror_if_better(model, data)[0]  # as the registration decides it
        _, test_acc = evaluate(model.eval(), data.test, norm, torch.device("cpu"))
        seconds = trial.datetime_complete.timestamp() - start
        curve.append((seconds, float(members[0].values[0]), test_acc))
    return curve


def reference_network(trial: optuna.Trial, channels: int, classes: int) -> nn.Module:
    """A small CNN: 1 to 3 conv-BN-ReLU blocks, pooling, dropout, a linear head."""
    layers: list[nn.Module] = []
    for i in range(trial.suggest_int("n_conv", 1, 3)):
        width = trial.suggest_categorical(f"width_{i}", [8, 16, 32, 64])
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        if i < 2:
            layers.append(nn.MaxPool2d(2))
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    layers += [nn.Dropout(trial.suggest_float("dropout", 0.0, 0.5))]
    return nn.Sequential(*layers, nn.Linear(channels, classes))


class Reference:
    """The hand-written search, as a user would write it (the data comes from automl's
    loader only so that both searches use the very same splits)."""

    def __init__(self, seed: int) -> None:
        from automl.data import load_dataset

        torch.manual_seed(seed)
        data = load_dataset("digits")
        mean = data.train.images.float().mean() / 255
        std = data.train.images.float().std() / 255
        self.channels, self.classes = data.channels, data.num_classes
        self.train, self.val, self.test = (
            TensorDataset((split.images.float() / 255 - mean) / std, split.labels)
            for split in (data.train, data.val, data.test)
        )
        self.start = time.time()
        self.excluded = 0.0  # test evaluations for the curve: not part of the search's time
        self.best_val = -1.0
        self.best_test = 0.0
        self.curve: Curve = []
        self.epochs = 0

    def objective(self, trial: optuna.Trial) -> float:
        model = reference_network(trial, self.channels, self.classes)
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        name = trial.suggest_categorical("optimizer", ["adam", "sgd"])
        batch = trial.suggest_categorical("batch_size", [32, 64, 128])
        if name == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        loader = DataLoader(self.train, batch_size=batch, shuffle=True)
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(trial.params)
            val_acc = 0.0
            for epoch in range(10):
                model.train()
                for x, y in loader:
                    opt.zero_grad()
                    loss = nn.functional.cross_entropy(model(x), y)
                    loss.backward()
                    opt.step()
                self.epochs += 1
                val_acc = accuracy(model, self.val)
                mlflow.log_metric("val_acc", val_acc, step=epoch)
                mlflow.log_metric("train_loss", float(loss), step=epoch)
                trial.report(val_acc, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        if val_acc > self.best_val:
            tick = time.time()
            self.best_val, self.best_test = val_acc, accuracy(model, self.test)
            self.excluded += time.time() - tick
            self.curve.append((time.time() - self.start - self.excluded, val_acc, self.best_test))
        return val_acc


def reference_search(seed: int, trials: int, folder: Path, space: str = "") -> dict[str, Any]:
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    mlflow.set_experiment("reference")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = Reference(seed)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
        storage=f"sqlite:///{folder}/optuna.db",
    )
    with mlflow.start_run(run_name="study"):
        study.optimize(search.objective, n_trials=trials)
    wall = time.time() - search.start - search.excluded
    return {
        "curve": search.curve, "wall": wall, "final_test": search.best_test,
        "epochs": search.epochs,
    }  # fmt: skip


def first_time(curve: Curve, target: float) -> float | None:
    """When the curve first reaches ``target``; automl's accuracies are float32, so the
    same count of right test images can fall a hair below the reference's float64."""
    return next((t for t, _, test in curve if test >= target - 1e-6), None)


def child(which: str, seed: int, trials: int, space: str, jobs: str) -> None:
    from automl.search.options import parse_jobs

    with tempfile.TemporaryDirectory() as folder:
        if which == "default":
            result = default_search(seed, trials, Path(folder), space, parse_jobs(jobs))
        else:
            result = reference_search(seed, trials, Path(folder), space)
    print("RESULT " + json.dumps(result))


def spawn(which: str, seed: int, trials: int, space: str, jobs: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", which, "--seeds", str(seed)]
    command += ["--trials", str(trials), "--space", space, "--jobs", jobs]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {which} search (seed {seed}) failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    print(f"  {which} seed {seed}: {line}", flush=True)  # kept even if a later run fails
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return result


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--space", default="", help="the default search's space [sized by the data]"
    )
    parser.add_argument("--jobs", default="1", help="the default search's --jobs, N or auto [1]")
    parser.add_argument("--child", choices=["default", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seeds[0], args.trials, args.space, args.jobs)
        return
    for seed in args.seeds:
        ref = spawn("reference", seed, args.trials, args.space, "1")
        ours = spawn("default", seed, args.trials, args.space, args.jobs)
        print(f"\nseed {seed}: best-so-far (seconds, val_acc, test_acc)")
        for name, result in (("reference", ref), ("default", ours)):
            points = "  ".join(f"{t:.0f}s {v:.4f}/{s:.4f}" for t, v, s in result["curve"])
            print(f"  {name:<9} {points}")
        target = ref["final_test"]
        reached = first_time(ours["curve"], target)
        share = f"{reached / ref['wall']:.2f}" if reached is not None else "-"
        print(f"  {'search':<9} {'wall':>7} {'epochs':>7} {'final test':>10} {'to 0.99':>8}")
        for name, result in (("reference", ref), ("default", ours)):
            print(
                f"  {name:<9} {result['wall']:>6.0f}s {result['epochs']:>7} "
                f"{result['final_test']:>10.4f} {seconds(first_time(result['curve'], TARGET)):>8}"
            )
        print(
            f"  default: {ours.get('states')} calibration {ours.get('calibration')}; "
            f"{ours.get('members')} members, best single {ours.get('test_acc_single')}"
        )
        print(
            f"  default reaches the reference's final test {target:.4f} after "
            f"{seconds(reached)} = {share} of the reference's wall time (goal <= 0.33)"
        )


if __name__ == "__main__":
    main()
