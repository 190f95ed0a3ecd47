"""Distributed throughput: trials per minute with 1, 2 and 4 workers on one study, through
PostgreSQL and a real MLflow server (both on this machine), and the retry delay of a
killed worker's trial.

Two objectives: "trivial" (sample the space, open and close the trial's MLflow run, no
training: the storage and tracking overhead of a trial) and "1-epoch digits" (real
`automl worker` processes). Prints figures; asserts nothing. Needs PostgreSQL on
127.0.0.1:5432 (user postgres).

    python benchmarks/workers.py [--trials 24] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
TINY = """
architecture: {stages: 1, per_stage: {width: 16, convs: 1}}
training: {epochs: 1, batch_size: 64}
"""
SLOW = """
architecture: {stages: 2, per_stage: {width: 64, convs: 2}}
training: {epochs: 40, batch_size: 16}
"""


def admin(sql: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(sql)


def env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # fmt: skip


def start_server(database: str, folder: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"{PG}/{database}",
         "--serve-artifacts", "--artifacts-destination", str(folder / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return process
        except OSError:
            time.sleep(0.5)


def create(
    name: str, trials: int, storage: str, tracking: str, folder: Path, *, slow: bool = False
) -> None:
    space, epochs = folder / f"{name}.yaml", 40 if slow else 1
    space.write_text(SLOW if slow else TINY)
    subprocess.run(
        [sys.executable, "-m", "automl", "study", "create", "--study-name", name, "--trials",
         str(trials), "--space", str(space), "--max-epochs", str(epochs), "--storage", storage,
         "--tracking-uri", tracking],
        cwd=folder, env=env(), check=True, capture_output=True,
    )  # fmt: skip


def trivial_worker(name: str, storage: str, tracking: str, ready, go) -> None:
    """Claims tickets like a worker, but its objective only samples and tracks."""
    from optuna.trial import TrialState

    from automl.search.objective import TrialResult
    from automl.search.queue import work
    from automl.search.session import join
    from automl.search.settings import SearchSettings

    local = SearchSettings(study_name=name, storage=storage, tracking_uri=tracking, device="cpu")
    session = join(local)

    def trivial(trial):
        params = session.space.sample(trial)
        run = session.tracker.start_trial_run(session.parent_run_id, name, trial.number, params)
        trial.set_user_attr("mlflow_run_id", run.run_id)
        trial.report(0.5, 1)
        run.log_epoch(1, {"val_acc": 0.5})
        run.finish("COMPLETE")
        return TrialResult(TrialState.COMPLETE, (0.5,))

    ready.set()
    go.wait()
    work(session.study, trivial)


def measure_trivial(workers: int, trials: int, tracking: str, folder: Path) -> float:
    name = f"trivial-{workers}"
    storage = f"{PG}/bench_optuna"
    create(name, trials, storage, tracking, folder)
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    readies = [context.Event() for _ in range(workers)]
    processes = [
        context.Process(target=trivial_worker, args=(name, storage, tracking, ready, go))
        for ready in readies
    ]
    for process in processes:
        process.start()
    for ready in readies:  # start the clock once every worker has joined
        ready.wait()
    start = time.perf_counter()
    go.set()
    for process in processes:
        process.join()
    return trials / (time.perf_counter() - start) * 60


def measure_real(workers: int, trials: int, tracking: str, folder: Path) -> float:
    name = f"digits-{workers}"
    storage = f"{PG}/bench_optuna"
    create(name, trials, storage, tracking, folder)
    command = [sys.executable, "-m", "automl", "worker", "--study", name, "--storage", storage,
               "--tracking-uri", tracking, "--device", "cpu"]  # fmt: skip
    start = time.perf_counter()
    processes = [subprocess.Popen(command, cwd=folder, env=env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(workers)]  # fmt: skip
    for process in processes:
        process.wait()
    return trials / (time.perf_counter() - start) * 60


def measure_retry(tracking: str, folder: Path, grace: int = 10) -> tuple[float, float]:
    """Seconds from ``kill -9`` of a worker mid-trial until another worker runs the trial
    again, and until that retry completes (heartbeat every 2 s, grace ``grace`` s). The
    trial trains for about 16 s, so the kill lands mid-trial."""
    import optuna
    from optuna.trial import TrialState

    name, storage = "retry", f"{PG}/bench_optuna"
    create(name, 1, storage, tracking, folder, slow=True)
    command = [sys.executable, "-m", "automl", "worker", "--study", name, "--storage", storage,
               "--tracking-uri", tracking, "--device", "cpu"]  # fmt: skip
    run_env = {**env(), "AUTOML_HEARTBEAT_SECONDS": "2", "AUTOML_GRACE_SECONDS": str(grace)}

    def trials() -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)

    def wait_for(test, seconds: float = 240) -> None:
        deadline = time.perf_counter() + seconds
        while not any(test(t) for t in trials()):
            if time.perf_counter() > deadline:
                raise SystemExit(f"retry benchmark: no such trial after {seconds:.0f} s")
            time.sleep(0.2)

    first = subprocess.Popen(command, cwd=folder, env=run_env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    second = None
    try:
        wait_for(lambda t: t.state == TrialState.RUNNING and len(t.intermediate_values) >= 1)
        first.kill()
        killed = time.perf_counter()
        second = subprocess.Popen(command, cwd=folder, env=run_env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for(
            lambda t: t.system_attrs.get("failed_trial") == 0 and t.state == TrialState.RUNNING
        )
        rerun = time.perf_counter() - killed
        second.wait(timeout=240)
        done = time.perf_counter() - killed
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
    return rerun, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--retry-only", action="store_true", help="only the killed-worker figure")
    args = parser.parse_args()
    if args.retry_only:
        args.workers = []
    for database in ("bench_optuna", "bench_mlflow"):
        admin(f"drop database if exists {database} with (force)")
        admin(f"create database {database}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = 5150 + os.getpid() % 500
        server = start_server("bench_mlflow", folder, port)
        tracking = f"http://127.0.0.1:{port}"
        try:
            cores = os.cpu_count()
            print(f"{args.trials} trials a row; PostgreSQL, an MLflow server, {cores} cores")
            print("(1-epoch rows include each worker's start, about 4 s)")
            for workers in args.workers:
                rate = measure_trivial(workers, args.trials, tracking, folder)
                cost = 60 / rate * workers * 1000
                print(f"trivial objective, {workers} worker(s): {rate:7.1f} trials/min "
                      f"= {cost:5.0f} ms of storage and tracking per trial")  # fmt: skip
            for workers in args.workers:
                rate = measure_real(workers, args.trials, tracking, folder)
                print(f"1-epoch digits,    {workers} worker(s): {rate:7.1f} trials/min")
            rerun, done = measure_retry(tracking, folder)
            print(
                f"killed worker (kill -9 mid-trial; heartbeat 2 s, grace 10 s): its trial runs "
                f"again {rerun:.1f} s after the kill on a new worker, completes at {done:.1f} s"
            )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()
    for database in ("bench_optuna", "bench_mlflow"):
        admin(f"drop database if exists {database} with (force)")


if __name__ == "__main__":
    main()
