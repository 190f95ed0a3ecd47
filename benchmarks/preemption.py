"""Work lost to preemption: epochs a trial trains again after its worker is stopped at
epoch k of n, with and without the checkpoint it left.

Each scenario creates a one-trial study (SQLite, a local MLflow store, in a temporary
folder), starts an `automl worker` with `--checkpoint-dir` and `--checkpoint-seconds 0`,
stops it once its checkpoint holds epoch k, then lets a second worker run the retry:

- "kill -9, no checkpoint": the checkpoint folder is emptied after the kill, so the retry
  starts from epoch 1, as every retry did before checkpoints;
- "kill -9": the retry resumes from the last checkpoint;
- "SIGTERM": the worker hands the trial back (its checkpoint saved) and exits.

"done" is the epochs the stopped worker had completed (its last checkpoint: one is saved
at the end of every epoch but the last), "re-run" the epochs the retry trained that had
been done already, "lost" the seconds of a partial epoch between the last checkpoint and
the stop.

Then the price: a search of the bundled `small` space on the digits, in this process,
with a checkpoint after every epoch to the default store (the trial's MLflow run), and
the share of its wall time spent capturing, saving and deleting checkpoints. Prints
figures; asserts nothing.

    python benchmarks/preemption.py [--epochs 10] [--at 6] [--trials 12]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPACE = """
architecture: {{stages: 2, per_stage: {{width: 32, convs: 1}}}}
optimizer: {{name: adamw, lr: 0.01}}
training: {{epochs: {epochs}, batch_size: 32, schedule: onecycle}}
"""
FAST = {"AUTOML_HEARTBEAT_SECONDS": "1", "AUTOML_GRACE_SECONDS": "3"}


def env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "PYTHONPATH": str(REPO), **FAST}


def checkpoint(folder: Path) -> tuple[int, float] | None:
    """The epoch the newest checkpoint in ``folder`` holds, and when it was written."""
    from automl.training.state import TrainingState

    files = sorted(folder.glob("*/*.pt"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    return TrainingState.load(files[-1]).epoch, files[-1].stat().st_mtime


def scenario(name: str, epochs: int, at: int) -> dict[str, float | int | str]:
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        stores = ["--storage", f"sqlite:///{folder / 'automl.db'}",
                  "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]  # fmt: skip
        (folder / "space.yaml").write_text(SPACE.format(epochs=epochs))
        subprocess.run(
            [sys.executable, "-m", "automl", "study", "create", "--study-name", "spot",
             "--trials", "1", "--space", str(folder / "space.yaml"), "--max-epochs",
             str(epochs), "--pruner", "none", *stores],
            cwd=folder, env=env(), check=True, capture_output=True,
        )  # fmt: skip
        checkpoints = folder / "checkpoints"
        worker = [sys.executable, "-m", "automl", "worker", "--study", "spot", "--device",
                  "cpu", "--no-stay", "--checkpoint-dir", str(checkpoints),
                  "--checkpoint-seconds", "0", *stores]  # fmt: skip
        logs = (folder / "victim.log").open("w")
        victim = subprocess.Popen(worker, cwd=folder, env=env(), stdout=logs, stderr=logs)
        while (found := checkpoint(checkpoints)) is None or found[0] < at:
            if victim.poll() is not None:
                raise SystemExit(f"the worker ended first:\n{(folder / 'victim.log').read_text()}")
            time.sleep(0.05)
        time.sleep(0.3)  # somewhere inside the next epoch
        stopped = time.time()
        victim.send_signal(signal.SIGTERM if name == "SIGTERM" else signal.SIGKILL)
        victim.wait()
        exit_seconds = time.time() - stopped
        done, written = checkpoint(checkpoints) or (0, stopped)
        lost = max(0.0, stopped - written) if name != "SIGTERM" else 0.0
        if name == "kill -9, no checkpoint":
            shutil.rmtree(checkpoints)
        time.sleep(3.5)  # the grace period of a dead worker's heartbeat
        subprocess.run(worker, cwd=folder, env=env(), check=True, capture_output=True)
        return {"scenario": name, "done": done, "exit": exit_seconds, "lost": lost,
                **retry_figures(folder, stores[1])}  # fmt: skip


def retry_figures(folder: Path, storage: str) -> dict[str, float | int]:
    import optuna

    from automl.records import TrialRecord
    from automl.stores import open_storage

    study = optuna.load_study(study_name="spot", storage=open_storage(storage))
    retry = study.get_trials(deepcopy=False)[-1]
    assert retry.datetime_start is not None and retry.datetime_complete is not None
    return {
        "resumed_at": TrialRecord.of(retry).resumed_at,
        "trained": TrialRecord.of(retry).epochs_run,
        "curve": len(retry.intermediate_values),
        "seconds": (retry.datetime_complete - retry.datetime_start).total_seconds(),
    }


def price(trials: int) -> None:
    """Wall time of a search and the part of it spent on checkpoints."""
    import statistics

    from _harness import scratch_settings

    from automl.records import TrialRecord
    from automl.search.hooks import Hooks
    from automl.search.scheduler.runner import run_trials
    from automl.search.scheduler.session import prepare
    from automl.search.space.bundled import resolve_space
    from automl.search.trial import checkpoints
    from automl.training import loop

    spent: dict[str, list[float]] = {"capture": [], "keep": [], "forget": []}

    def timed(owner: type, name: str, kind: str) -> None:
        method = getattr(owner, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[kind].append(time.perf_counter() - start)

        setattr(owner, name, wrapper)

    timed(loop._Loop, "capture", "capture")
    timed(checkpoints.TrialCheckpoints, "keep", "keep")
    timed(checkpoints.TrialCheckpoints, "forget", "forget")
    with tempfile.TemporaryDirectory() as folder:
        settings = scratch_settings(
            folder, trials=trials, space=resolve_space(Path("small")), study_name="price",
            device="cpu", evaluate=False, checkpoint_seconds=0.0,
        )  # fmt: skip
        start = time.perf_counter()
        outcome = run_trials(prepare(settings, Hooks()))
        wall = time.perf_counter() - start
    total = sum(sum(values) for values in spent.values())
    epochs = sum(TrialRecord.of(t).epochs_run for t in outcome.trials)
    print(f"\n{trials} trials, {epochs} epochs in {wall:.1f} s; checkpoints took "
          f"{total:.2f} s ({100 * total / wall:.1f}%): {len(spent['keep'])} captured "
          f"(median {1000 * statistics.median(spent['capture']):.1f} ms) and saved (median "
          f"{1000 * statistics.median(spent['keep']):.1f} ms), "
          f"{len(spent['forget'])} trials' deleted (median "
          f"{1000 * statistics.median(spent['forget']):.1f} ms)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--at", type=int, default=6, help="stop once this epoch is saved")
    parser.add_argument("--trials", type=int, default=12, help="trials of the price search")
    args = parser.parse_args()
    print(f"one trial of {args.epochs} epochs, its worker stopped after epoch {args.at}:")
    print(f"{'scenario':<24}{'done':>6}{'re-run':>8}{'trained':>9}{'curve':>7}"
          f"{'retry s':>9}{'lost s':>8}{'exit s':>8}")  # fmt: skip
    for name in ("kill -9, no checkpoint", "kill -9", "SIGTERM"):
        f = scenario(name, args.epochs, args.at)
        rerun = int(f["done"]) - (int(f["resumed_at"]) - 1)
        print(f"{name:<24}{f['done']:>6}{rerun:>8}{f['trained']:>9}{f['curve']:>7}"
              f"{f['seconds']:>9.1f}{f['lost']:>8.2f}{f['exit']:>8.1f}")  # fmt: skip
    price(args.trials)


if __name__ == "__main__":
    main()
