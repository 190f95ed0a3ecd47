"""How fast the CLI answers when there is nothing heavy to do.

Times each command in a fresh process (best of ``--repeat``) on a small local study and
tracking store made first, and prints seconds and peak memory (RSS). Prints figures;
asserts nothing. Targets: ``automl --help`` under 0.5 s; ``automl models`` and
``automl study status`` under 2 s on a quiet 2-core machine.

    python benchmarks/cli_latency.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = [
    ["--help"],
    ["--version"],
    ["models"],
    ["study", "status", "bench"],
    ["models", "missing-model"],
]


def make_stores(folder: Path) -> None:
    """A tracking store with two registered models (a few tagged, aliased versions each)
    and a study with a few finished trials, made in a child process."""
    script = (
        "import optuna\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "from automl.stores import open_storage\n"
        "from automl.tracking.common import client_for\n"
        "client = client_for('sqlite:///mlflow.db')\n"
        "for name in ('digits', 'photos'):\n"
        "    client.create_registered_model(name)\n"
        "    for v in range(1, 5):\n"
        "        client.create_model_version(name, f'/tmp/no-model-{v}', tags={\n"
        "            'val_acc': '0.98', 'test_acc': '0.97', 'dataset': name, 'study': name})\n"
        "    client.set_registered_model_alias(name, 'champion', '3')\n"
        "study = optuna.create_study(study_name='bench', direction='maximize',"
        " storage=open_storage('sqlite:///automl.db'))\n"
        "study.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=20)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=folder, check=True)


def timed(args: list[str], folder: Path) -> tuple[float, float, int]:
    """Seconds, peak RSS (MB) and exit code of one ``automl`` run in a new process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "automl", *args], cwd=folder,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        make_stores(folder)
        print(f"{'command':<32} {'best s':>7} {'peak MB':>8} exit")
        for command in COMMANDS:
            runs = [timed(command, folder) for _ in range(args.repeat)]
            best = min(runs)
            label = "automl " + " ".join(command)
            print(f"{label:<32} {best[0]:7.2f} {best[1]:8.0f} {best[2]:>4}")


if __name__ == "__main__":
    main()
