"""Same seed, same trials: run ``automl search`` as a user would and write what each trial
did, so two commits (before and after a change that must not change behaviour) can be
compared trial for trial.

Runs the CLI in a subprocess in a scratch folder and reads the study back with Optuna
alone, so it works on any commit whatever the package's layout.

    python benchmarks/same_trials.py run OUT.json [--trials 16] [--seed 0] [-- SEARCH OPTIONS]
    python benchmarks/same_trials.py compare BEFORE.json AFTER.json
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


def run(out: Path, trials: int, seed: int, extra: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="same-trials-") as folder:
        storage = f"sqlite:///{folder}/automl.db"
        command = [
            sys.executable, "-m", "automl", "search", "--trials", str(trials),
            "--seed", str(seed), "--storage", storage,
            "--tracking-uri", f"sqlite:///{folder}/mlflow.db", "--study-name", "same",
            "--device", "cpu", "--no-evaluate", *extra,
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=folder, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        rows = _trials(storage)
    out.write_text(json.dumps({"command": command[3:], "wall": wall, "trials": rows}, indent=1))
    print(f"{len(rows)} trials in {wall:.1f} s -> {out}")


def _trials(storage: str) -> list[dict[str, Any]]:
    import optuna

    study = optuna.load_study(study_name="same", storage=storage)
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "values": t.values,
            "epochs": len(t.intermediate_values) or len(t.user_attrs.get("curve", {})),
            "reports": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        }
        for t in study.get_trials(deepcopy=False)
    ]


def compare(before: Path, after: Path) -> int:
    a = json.loads(before.read_text())["trials"]
    b = json.loads(after.read_text())["trials"]
    differ = 0
    for x, y in zip(a, b, strict=False):
        fields = [k for k in ("state", "params", "values", "epochs", "reports") if x[k] != y[k]]
        mark = "same" if not fields else "DIFFERENT: " + ", ".join(fields)
        differ += bool(fields)
        value = x["values"][0] if x["values"] else None
        shown = "-" if value is None else f"{value:.4f}"
        print(f"trial {x['number']:3d}  {x['state']:8s} {shown:>7s} {x['epochs']:3d} ep  {mark}")
    if len(a) != len(b):
        print(f"trial counts differ: {len(a)} and {len(b)}")
        differ += 1
    print("identical" if not differ else f"{differ} trials differ")
    return 1 if differ else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    running = sub.add_parser("run")
    running.add_argument("out", type=Path)
    running.add_argument("--trials", type=int, default=16)
    running.add_argument("--seed", type=int, default=0)
    comparing = sub.add_parser("compare")
    comparing.add_argument("before", type=Path)
    comparing.add_argument("after", type=Path)
    args, extra = parser.parse_known_args()  # the rest: more `automl search` options
    if args.command == "run":
        run(args.out, args.trials, args.seed, [a for a in extra if a != "--"])
    else:
        sys.exit(compare(args.before, args.after))


if __name__ == "__main__":
    main()
