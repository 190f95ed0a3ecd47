"""Distributed throughput: trials per minute with 1, 2 and 4 workers on one study, through
PostgreSQL and a real MLflow server (both on this machine), the retry delay of a killed
worker's trial, and 8, 16 and 32 workers directly on PostgreSQL and through
`automl storage-proxy`.

Two objectives: "trivial" (sample the space, open and close the trial's MLflow run, no
training: the storage and tracking overhead of a trial) and "1-epoch digits" (real
`automl worker` processes). The scale rows ("scale") run a storage-only trivial objective
(sample the space with the random sampler, report one epoch, set an attribute) in light
worker processes that claim, heartbeat and tell as `automl worker` does, and report trials
per minute, the workers' time inside the storage per trial, and the peak number of
PostgreSQL connections to the study's database (`pg_stat_activity`, sampled every 50 ms).
Prints figures; asserts nothing. Needs PostgreSQL on 127.0.0.1:5432 (user postgres).

    python benchmarks/workers.py [--rows trivial digits retry scale] [--trials 24]
        [--workers 1 2 4] [--scale 8 16 32] [--via direct proxy] [--per-worker 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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

    from automl.search.scheduler.queue import TrialResult, work
    from automl.search.scheduler.session import join
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


def start_together(
    target: Callable[..., None], args: tuple[Any, ...], workers: int
) -> tuple[list[multiprocessing.process.BaseProcess], float]:
    """Start ``workers`` processes of ``target(*args, ready, go)`` and release them at
    once when every one has joined; returns them and the moment they were released."""
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    readies = [context.Event() for _ in range(workers)]
    processes = [context.Process(target=target, args=(*args, ready, go)) for ready in readies]
    for process in processes:
        process.start()
    for ready in readies:  # start the clock once every worker has joined
        ready.wait()
    start = time.perf_counter()
    go.set()
    return processes, start


def measure_trivial(workers: int, trials: int, tracking: str, folder: Path) -> float:
    name = f"trivial-{workers}"
    storage = f"{PG}/bench_optuna"
    create(name, trials, storage, tracking, folder)
    processes, start = start_together(trivial_worker, (name, storage, tracking), workers)
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


# ---------------------------------------------------------------- scale: 8 to 32 workers


def scale_worker(url: str, name: str, results, ready, go) -> None:
    """Claims, heartbeats and tells like `automl worker`; its objective only samples the
    space, reports an epoch and sets an attribute. Sends (trials run, seconds in storage)."""
    import optuna
    from optuna.trial import TrialState

    from automl.search.scheduler.queue import TrialResult, work
    from automl.search.space import parse_space
    from automl.stores import compat, open_storage
    from automl.stores.clock import OptunaClock

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    clock = OptunaClock()
    storage = compat.StudyStorage(open_storage(url), clock)
    sampler = optuna.samplers.RandomSampler()  # sampling is free: storage is what is measured
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    space = parse_space(TINY, "benchmark")

    def trivial(trial):
        space.sample(trial)
        trial.set_user_attr("worker", os.getpid())
        trial.report(0.5, 1)
        return TrialResult(TrialState.COMPLETE, (0.5,))

    ready.set()
    go.wait()
    ran = work(study, trivial)
    results.put((ran, clock.seconds))


class PeakConnections(threading.Thread):
    """The most connections to ``database`` seen in `pg_stat_activity` while it runs."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self.database, self.peak, self.done = database, 0, threading.Event()

    def run(self) -> None:
        import psycopg

        # autocommit: inside a transaction pg_stat_activity is a snapshot that never changes
        url = "postgresql://postgres@127.0.0.1:5432/postgres"
        with psycopg.connect(url, autocommit=True) as conn:
            query = "select count(*) from pg_stat_activity where datname = %s"
            while not self.done.is_set():
                (count,) = conn.execute(query, (self.database,)).fetchone()
                self.peak = max(self.peak, count)
                self.done.wait(0.05)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def measure_scale(workers: int, per_worker: int, url: str, direct: str) -> tuple[float, float, int]:
    """Trials per minute, ms in storage per trial, peak PostgreSQL connections."""
    import optuna

    from automl.search.scheduler.queue import add_tickets
    from automl.stores import compat, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name, trials = f"scale-{workers}-{'proxy' if url.startswith('grpc') else 'direct'}", 0
    setup = compat.StudyStorage(open_storage(direct))
    study = optuna.create_study(study_name=name, storage=setup, direction="maximize")
    add_tickets(study, workers * per_worker)
    setup.backend.engine.dispose()
    results = multiprocessing.get_context("spawn").Queue()
    peak = PeakConnections("bench_optuna")
    peak.start()  # from the start: connections are opened as workers join
    processes, start = start_together(scale_worker, (url, name, results), workers)
    outcomes = [results.get() for _ in processes]
    wall = time.perf_counter() - start
    for process in processes:
        process.join()
    connections = peak.stop()
    trials = sum(ran for ran, _ in outcomes)
    assert trials == workers * per_worker, f"{trials} trials ran of {workers * per_worker}"
    storage_ms = sum(seconds for _, seconds in outcomes) / trials * 1000
    return trials / wall * 60, storage_ms, connections


@contextmanager
def storage_proxy(url: str):
    """`automl storage-proxy` over ``url`` on a free port; yields its grpc:// URL."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "automl", "storage-proxy", "--storage", url, "--port",
               str(port), "--report-every", "3600"]  # fmt: skip
    process = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    while "Ctrl-C stops it" not in (line := process.stdout.readline()):
        if not line:
            raise SystemExit("the storage proxy did not start")
    try:
        yield f"grpc://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        print(f"({process.communicate(timeout=60)[0].strip().splitlines()[-1]})")


def run_scale(args: argparse.Namespace) -> None:
    direct = f"{PG}/bench_optuna"
    print(f"{args.per_worker} trials a worker, storage-only objective, random sampler; "
          f"PostgreSQL on this machine, {os.cpu_count()} cores")  # fmt: skip
    print(f"{'via':<7}{'workers':>8}{'trials/min':>12}{'storage ms/trial':>18}"
          f"{'peak PG connections':>21}")  # fmt: skip

    def row(via: str, url: str) -> None:
        for workers in args.scale:
            rate, storage_ms, peak = measure_scale(workers, args.per_worker, url, direct)
            print(f"{via:<7}{workers:>8}{rate:>12.0f}{storage_ms:>18.1f}{peak:>21}", flush=True)

    if "direct" in args.via:
        row("direct", direct)
    if "proxy" in args.via:
        with storage_proxy(direct) as url:
            row("proxy", url)


# ---------------------------------------------------------------------------------- main

ROWS = ("trivial", "digits", "retry", "scale")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--trials", type=int, default=24, help="trials a row (trivial, digits)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--scale", type=int, nargs="+", default=[8, 16, 32],
                        help="worker processes of the scale rows")  # fmt: skip
    parser.add_argument("--via", nargs="+", choices=("direct", "proxy"),
                        default=["direct", "proxy"], help="scale rows: through what")  # fmt: skip
    parser.add_argument("--per-worker", type=int, default=10, help="scale rows: trials a worker")
    parser.add_argument("--retry-only", action="store_true", help="only the killed-worker figure")
    args = parser.parse_args()
    if args.retry_only:
        args.rows = ["retry"]
    for database in ("bench_optuna", "bench_mlflow"):
        admin(f"drop database if exists {database} with (force)")
        admin(f"create database {database}")
    try:
        if {"trivial", "digits", "retry"} & set(args.rows):
            run_tracked(args)
        if "scale" in args.rows:
            run_scale(args)
    finally:
        for database in ("bench_optuna", "bench_mlflow"):
            admin(f"drop database if exists {database} with (force)")


def run_tracked(args: argparse.Namespace) -> None:
    """The rows with an MLflow server: trivial, 1-epoch digits, the killed worker."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = 5150 + os.getpid() % 500
        server = start_server("bench_mlflow", folder, port)
        tracking = f"http://127.0.0.1:{port}"
        try:
            cores = os.cpu_count()
            print(f"{args.trials} trials a row; PostgreSQL, an MLflow server, {cores} cores")
            if "trivial" in args.rows:
                for workers in args.workers:
                    rate = measure_trivial(workers, args.trials, tracking, folder)
                    cost = 60 / rate * workers * 1000
                    print(f"trivial objective, {workers} worker(s): {rate:7.1f} trials/min "
                          f"= {cost:5.0f} ms of storage and tracking per trial")  # fmt: skip
            if "digits" in args.rows:
                print("(1-epoch rows include each worker's start, about 4 s)")
                for workers in args.workers:
                    rate = measure_real(workers, args.trials, tracking, folder)
                    print(f"1-epoch digits,    {workers} worker(s): {rate:7.1f} trials/min")
            if "retry" in args.rows:
                rerun, done = measure_retry(tracking, folder)
                print(
                    f"killed worker (kill -9 mid-trial; heartbeat 2 s, grace 10 s): its trial "
                    f"runs again {rerun:.1f} s after the kill on a new worker, completes at "
                    f"{done:.1f} s"
                )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()


if __name__ == "__main__":
    main()
