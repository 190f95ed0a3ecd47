"""A simulated fleet: N workers on one study, through `automl storage-proxy` or directly on
PostgreSQL, each claiming tickets, sampling the photos space with automl's sampler and
pruner, reporting its epochs, beating its heartbeat and telling its result, with no
training: what the study's storage (and optionally the MLflow tracking server) carries
for a fleet of that size.

Every simulated worker is a thread running automl's own loop (``queue.work``: fail_stale,
claim, heartbeats, tell) on its own ``StudyStorage`` (its own database pool, or its own
gRPC channel to a proxy), as `automl worker` does; the workers are spread over a few
processes (``--processes``). A trial lasts ``--trial-minutes`` divided by ``--compress``
(its epochs evenly spaced in it, pruned trials stopping early), and the heartbeat
interval and grace period are compressed alike (at least 1 s and 3 s); the batching
windows (2 s writes, 0.5 s looks) are not. The workers start spread over one trial's
length (``--ramp``), as a fleet in steady state runs, not all at once.

Each row prints claims/s and tells/s, p50/p99 of every storage call (each round trip
from a worker's ``StudyStorage`` to its backend: the proxy's client, or the database),
SQL statements per trial, the peak of PostgreSQL connections to the study's database,
CPU seconds per trial of the proxies and of the PostgreSQL backends serving the study,
the workers' own CPU, and how busy the machine was. Statements are counted where they
are sent (SQLAlchemy's ``before_cursor_execute`` in the proxies, or in the workers when
direct), because this server does not load ``pg_stat_statements``; committed
transactions come from ``pg_stat_database``. ``--mlflow`` adds an MLflow server and each
trial's run (created, metrics each epoch, closed) and prints its REST calls per trial.

The workers are threads sharing a few cores: at N = 1,000 on 2 cores their own Python
(TPE's sampling, gRPC) competes with the proxy and PostgreSQL, and the figures say so
(``machine busy``, ``workers CPU``). Prints figures; asserts nothing. Needs PostgreSQL
on 127.0.0.1:5432 (user postgres); every row gets a scratch database, dropped after.

    python benchmarks/fleet.py [--workers 1 10 100 1000] [--via proxy direct]
        [--compress 60] [--trial-minutes 5] [--trials-per-worker 2] [--proxies 1]
        [--proxy-threads 10] [--processes 4] [--prefill 0] [--index] [--mlflow]
"""

from __future__ import annotations

import argparse
import atexit
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROXY_FLAG = "--serve-proxy"  # this script, run as a proxy that counts its statements
STUDY = "fleet"
# Round trips from a worker's StudyStorage to its backend (Optuna's and automl's calls).
BACKEND_CALLS = (
    "_get_trials", "get_trial", "set_trial_state_values", "_create_new_trial",
    "record_heartbeat", "_get_stale_trial_ids", "get_study_id_from_name",
    "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_study_name_from_id", "set_study_user_attr", "set_study_system_attr",
    "set_trial_user_attr", "set_trial_system_attr", "set_trial_intermediate_value",
    "_set_trial_param", "get_all_studies", "_get_best_trial_id",
    "get_trial_id_from_study_id_trial_number", "create_new_study",
)  # fmt: skip
QUERY_CALLS = ("transition", "write", "change_user_attr", "state_of", "states")
MLFLOW_CALLS = ("create_run", "log_batch", "set_terminated", "set_tag", "log_param")


# ------------------------------------------------------------------ counting statements


def count_statements(seen: list[str]) -> None:
    """Note every statement this process sends through SQLAlchemy, by its first word (a
    list: appending is atomic across threads, a counter's ``+=`` is not)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def counted(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?")

    event.listen(Engine, "before_cursor_execute", counted)


def serve_proxy(argv: list[str]) -> None:
    """``automl storage-proxy`` (the CLI's own function), counting its statements into the
    file named first, written when it stops; ``--threads N`` sets its server threads."""
    counts_file, rest = argv[0], argv[1:]
    if rest[:1] == ["--threads"]:
        from automl.stores.proxy import server

        defaults = server.ProxyServer.__init__.__kwdefaults__
        assert defaults is not None and "threads" in defaults
        defaults["threads"] = int(rest[1])
        rest = rest[2:]
    seen: list[str] = []
    count_statements(seen)
    atexit.register(lambda: Path(counts_file).write_text(json.dumps(Counter(seen))))
    from automl.cli import main

    code = main(rest)
    Path(counts_file).write_text(json.dumps(Counter(seen)))
    sys.exit(code)


# ---------------------------------------------------------------------- the machine


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of every core so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return sum(values) - idle, sum(values)


class Watch(threading.Thread):
    """Samples PostgreSQL every 100 ms while the fleet runs: the connections to the study's
    database (the peak) and the CPU of each backend serving it (the last reading of each,
    so a backend that exits between samples loses at most 100 ms)."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self.database, self.peak = database, 0
        self.backends: dict[int, float] = {}
        self.before: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        import psycopg
        from _study_fill import PG_ADMIN

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            query = "select pid from pg_stat_activity where datname = %s"
            first = True
            while not self.done.is_set():
                pids = [pid for (pid,) in conn.execute(query, (self.database,)).fetchall()]
                self.peak = max(self.peak, len(pids))
                for pid in pids:
                    seconds = cpu_seconds(pid)
                    if first:
                        self.before[pid] = seconds  # spent before the fleet started
                    self.backends[pid] = max(self.backends.get(pid, 0.0), seconds)
                first = False
                self.done.wait(0.1)

    def stop(self) -> tuple[int, float]:
        """The peak connections and the backends' CPU seconds while it watched."""
        self.done.set()
        self.join()
        spent = sum(s - self.before.get(pid, 0.0) for pid, s in self.backends.items())
        return self.peak, spent


def committed(database: str) -> int:
    import psycopg
    from _study_fill import PG_ADMIN

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute("select pg_stat_clear_snapshot()")
        row = conn.execute(
            "select xact_commit from pg_stat_database where datname = %s", (database,)
        ).fetchone()
    return int(row[0]) if row else 0


# ------------------------------------------------------------------------- the proxies


@dataclass
class Proxy:
    process: subprocess.Popen[str]
    url: str
    counts_file: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def proxies(url: str, count: int, threads: int, folder: Path) -> Iterator[list[Proxy]]:
    """``count`` `automl storage-proxy` processes over ``url``; stopped with SIGTERM (as
    Kubernetes stops them) when the block ends."""
    started: list[Proxy] = []
    try:
        for index in range(count):
            port, counts = free_port(), folder / f"proxy-{index}.json"
            command = [sys.executable, __file__, PROXY_FLAG, str(counts), "--threads",
                       str(threads), "storage-proxy", "--storage", url, "--port", str(port),
                       "--report-every", "3600"]  # fmt: skip
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            started.append(Proxy(process, f"grpc://127.0.0.1:{port}", counts))
            assert process.stdout is not None
            while "Ctrl-C stops it" not in (line := process.stdout.readline()):
                if not line:
                    raise SystemExit("a storage proxy did not start")
        yield started
    finally:
        for proxy in started:
            if proxy.process.poll() is None:
                proxy.process.send_signal(signal.SIGTERM)
        for proxy in started:
            try:
                proxy.process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proxy.process.kill()
                proxy.process.wait()


# ----------------------------------------------------------------------- the workers


@dataclass(frozen=True)
class Plan:
    """What every simulated worker is told."""

    urls: tuple[str, ...]  # a worker's storage: urls[index % len(urls)]
    trial_seconds: float
    ramp: float
    pruner: str
    sampler: str
    direct: bool
    tracking: str | None
    parent_run: str | None
    workers: int


@dataclass
class Tally:
    """One process's figures, sent back to the parent."""

    calls: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    pruned: list[int] = field(default_factory=list)  # numbers of the trials pruned
    errors: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    cpu: float = 0.0
    claims: list[float] = field(default_factory=list)  # when each trial was claimed, told
    tells: list[float] = field(default_factory=list)


class Timer:
    """Records the duration of the outermost storage call of each thread."""

    def __init__(self, tally: Tally) -> None:
        self.tally, self.local = tally, threading.local()

    def wrap(self, owner: Any, names: tuple[str, ...], prefix: str = "") -> None:
        for name in names:
            method = getattr(owner, name, None)
            if callable(method):
                setattr(owner, name, self._timed(prefix + name, method))

    def _timed(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self.local, "depth", 0)
            self.local.depth = depth + 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.local.depth = depth
                if depth == 0:
                    self.tally.calls[name].append(time.perf_counter() - start)

        return call


def open_worker_study(plan: Plan, index: int, timer: Timer) -> Any:
    """The study as `automl worker` opens it (``scheduler.session._open``), its backend's
    calls timed."""
    from _study_fill import GRID

    from automl.search.settings import SearchSettings
    from automl.search.strategy.pruners import make_pruner
    from automl.search.strategy.study import open_study
    from automl.stores import open_storage
    from automl.stores.compat import StudyStorage

    url = plan.urls[index % len(plan.urls)]
    storage = StudyStorage(open_storage(url))
    timer.wrap(storage._backend, BACKEND_CALLS)
    if storage.queries is not storage._backend:
        timer.wrap(storage.queries, QUERY_CALLS)
    else:
        timer.wrap(storage._backend, QUERY_CALLS)
    settings = SearchSettings(study_name=STUDY, storage=url, sampler=plan.sampler)
    pruner = make_pruner(plan.pruner, GRID)
    return open_study(settings, storage, pruner, seed_offset=1000 * index)


def objective_for(plan: Plan, index: int, tally: Tally, timer: Timer) -> Callable[[Any], Any]:
    """A trial as the objective runs it, training replaced by sleeping through its epochs:
    sample the space, record the run's attributes and send them, report each epoch on the
    progress grid and ask the pruner in the first half of the schedule."""
    from _study_fill import GRID, accuracy, curve, photos_space
    from optuna.trial import TrialState

    from automl.records import TrialAttr
    from automl.search.scheduler.queue import TrialResult
    from automl.search.strategy.pruners import prunable
    from automl.stores.compat import flush

    space = photos_space()
    tracker = None
    if plan.tracking is not None:
        from automl.tracking import Tracker

        tracker = Tracker(plan.tracking, STUDY)
        timer.wrap(tracker.client, MLFLOW_CALLS, prefix="mlflow.")

    def objective(trial: Any) -> Any:
        tally.claims.append(time.perf_counter())
        params = space.sample(trial)
        run = None
        if tracker is not None and plan.parent_run is not None:
            run = tracker.start_trial_run(plan.parent_run, STUDY, trial.number, params)
        attrs = {TrialAttr.RUN_ID: run.run_id if run else f"{trial.number:032x}",
                 TrialAttr.PARAMS: params, TrialAttr.SEED: 0,
                 TrialAttr.WORKER: f"sim-{index}:{os.getpid()}"}  # fmt: skip
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        flush(trial.study)
        rng = random.Random(trial.number)
        epochs = int(params["train.epochs"])
        points = curve(accuracy(params, rng), epochs, rng)
        for epoch, (step, value) in enumerate(points, 1):
            time.sleep(plan.trial_seconds / epochs)
            if run is not None:
                run.log_epoch(epoch, {"val_acc": value, "train_loss": 1 - value})
            trial.report(value, step)
            if epoch < epochs and prunable(step, GRID) and trial.should_prune():
                trial.set_user_attr(TrialAttr.REASON, "pruned")
                if run is not None:
                    run.finish("PRUNED", reason="pruned")
                tally.pruned.append(trial.number)
                return TrialResult(TrialState.PRUNED)
        if run is not None:
            run.finish("COMPLETE")
        return TrialResult(TrialState.COMPLETE, (points[-1][1],))

    return objective


def one_worker(plan: Plan, index: int, tally: Tally, timer: Timer, go: Any) -> None:
    import optuna

    from automl.search.scheduler.queue import work

    try:
        study = open_worker_study(plan, index, timer)
        objective = objective_for(plan, index, tally, timer)
        go.wait()
        time.sleep(plan.ramp * index / max(1, plan.workers))  # steady state, not a stampede
        work(study, objective, on_trial_end=lambda s, t: tally.tells.append(time.perf_counter()))
    except Exception as exc:  # a row's failure is a figure too (too many connections)
        tally.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    finally:
        optuna.logging.set_verbosity(optuna.logging.ERROR)


def worker_process(plan: Plan, indices: list[int], results: Any, ready: Any, go: Any) -> None:
    """A process of ``len(indices)`` simulated workers (threads); sends its ``Tally``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tally = Tally()
    if plan.direct:
        count_statements(tally.statements)
    timer = Timer(tally)
    threads = [
        threading.Thread(target=one_worker, args=(plan, i, tally, timer, go), daemon=True)
        for i in indices
    ]
    for thread in threads:
        thread.start()
    ready.set()
    go.wait()
    cpu = time.process_time()
    for thread in threads:
        thread.join()
    tally.cpu = time.process_time() - cpu  # from the release on: imports and setup excluded
    tally.calls = dict(tally.calls)
    results.put(tally)


# ------------------------------------------------------------------------------- rows


@dataclass
class Row:
    via: str
    workers: int
    trials: int = 0
    pruned: int = 0
    wall: float = 0.0
    claims_per_s: float = 0.0
    tells_per_s: float = 0.0
    calls: dict[str, list[float]] = field(default_factory=dict)
    statements: Counter[str] = field(default_factory=Counter)
    commits: int = 0
    peak: int = 0
    pg_cpu: float = 0.0
    proxy_cpu: float = 0.0
    worker_cpu: float = 0.0
    busy: float = 0.0
    errors: list[str] = field(default_factory=list)
    mlflow_commits: int = 0


def compressed_env(compress: float) -> dict[str, str]:
    beat = max(1, round(30 / compress))
    return {"AUTOML_HEARTBEAT_SECONDS": str(beat),
            "AUTOML_GRACE_SECONDS": str(max(3 * beat, round(90 / compress)))}  # fmt: skip


def create_study(url: str, tickets: int, args: argparse.Namespace) -> None:
    """The study with ``tickets`` queued trials (and ``--prefill`` finished ones)."""
    import optuna
    from _study_fill import GRID, fill

    from automl.search.scheduler.queue import add_tickets
    from automl.search.settings import SearchSettings
    from automl.search.strategy.pruners import make_pruner
    from automl.search.strategy.study import open_study
    from automl.stores import close_storage, open_storage
    from automl.stores.compat import StudyStorage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = StudyStorage(open_storage(url))
    settings = SearchSettings(study_name=STUDY, storage=url, sampler=args.sampler)
    study = open_study(settings, storage, make_pruner(args.pruner, GRID))
    if args.prefill:
        fill(url, STUDY, args.prefill)
    add_tickets(study, tickets)
    storage.flush()
    close_storage(storage.backend)
    if args.index:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "create index ix_trials_study_id_state on trials (study_id, state)"
            )
        engine.dispose()


def run_fleet(plan: Plan, processes: int) -> tuple[list[Tally], float]:
    """The fleet's processes, released together; their tallies and the moment of release."""
    groups = [list(range(p, plan.workers, processes)) for p in range(processes)]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    go = context.Event()
    readies = [context.Event() for _ in groups]
    procs = [context.Process(target=worker_process, args=(plan, g, results, r, go))
             for g, r in zip(groups, readies, strict=True)]  # fmt: skip
    for proc in procs:
        proc.start()
    for ready in readies:
        ready.wait()
    start = time.perf_counter()
    go.set()
    tallies = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    return tallies, start


def measure(workers: int, via: str, args: argparse.Namespace, folder: Path) -> Row:
    from _study_fill import PG, admin

    database = f"fleet_{os.getpid()}_{workers}_{via}"
    admin(f"drop database if exists {database} with (force)")
    admin(f"create database {database}")
    url = f"{PG}/{database}"
    row = Row(via, workers)
    try:
        create_study(url, workers * args.trials_per_worker, args)
        with ExitStack() as stack:
            urls: tuple[str, ...] = (url,)
            proxy_pids: list[int] = []
            started_proxies: list[Proxy] = []
            if via == "proxy":
                started_proxies = stack.enter_context(
                    proxies(url, args.proxies, args.proxy_threads, folder)
                )
                urls = tuple(p.url for p in started_proxies)
                proxy_pids = [p.process.pid for p in started_proxies]
            tracking, parent = stack.enter_context(tracking_server(args, folder, database))
            seconds = args.trial_minutes * 60 / args.compress
            ramp = seconds if args.ramp is None else args.ramp
            plan = Plan(urls, seconds, ramp, args.pruner, args.sampler, via == "direct",
                        tracking, parent, workers)  # fmt: skip
            processes = max(1, min(workers, args.processes))
            watch = Watch(database)
            watch.start()
            commits0, ticks0 = committed(database), machine_ticks()
            proxy0 = sum(cpu_seconds(pid) for pid in proxy_pids)
            mlflow0 = committed(f"{database}_mlflow") if tracking else 0
            tallies, start = run_fleet(plan, processes)
            rates(row, tallies, start, plan.ramp)
            row.proxy_cpu = sum(cpu_seconds(pid) for pid in proxy_pids) - proxy0
            ticks1 = machine_ticks()
            row.commits = committed(database) - commits0
            if tracking:
                row.mlflow_commits = committed(f"{database}_mlflow") - mlflow0
            row.peak, row.pg_cpu = watch.stop()
            row.busy = (ticks1[0] - ticks0[0]) / max(1, ticks1[1] - ticks0[1])
        for proxy in started_proxies:  # written when it stopped
            if proxy.counts_file.exists():
                row.statements.update(json.loads(proxy.counts_file.read_text()))
        for tally in tallies:
            row.trials += len(tally.tells)
            row.pruned += len(tally.pruned)
            row.errors += tally.errors
            row.statements.update(Counter(tally.statements))
            row.worker_cpu += tally.cpu
            for name, times in tally.calls.items():
                row.calls.setdefault(name, []).extend(times)
    finally:
        admin(f"drop database if exists {database} with (force)")
        admin(f"drop database if exists {database}_mlflow with (force)")
    return row


def rates(row: Row, tallies: list[Tally], start: float, ramp: float) -> None:
    """Claims and tells a second once every worker has started (from the end of the ramp
    to the last tell), or over the whole run when that window is too short."""
    claims = [t for tally in tallies for t in tally.claims]
    tells = [t for tally in tallies for t in tally.tells]
    if not tells:
        return
    end = max(tells)
    row.wall = end - start
    begin = start + ramp if end - (start + ramp) > 0.25 * row.wall else start
    window = end - begin
    row.claims_per_s = sum(1 for t in claims if t >= begin) / window
    row.tells_per_s = sum(1 for t in tells if t >= begin) / window


@contextmanager
def tracking_server(
    args: argparse.Namespace, folder: Path, database: str
) -> Iterator[tuple[str | None, str | None]]:
    """With ``--mlflow``: an MLflow server on PostgreSQL and the study's parent run."""
    if not args.mlflow:
        yield None, None
        return
    from _study_fill import admin
    from workers import start_server

    admin(f"create database {database}_mlflow")
    port = free_port()
    server = start_server(f"{database}_mlflow", folder, port)
    try:
        from automl.tracking import Tracker

        uri = f"http://127.0.0.1:{port}"
        parent = Tracker(uri, STUDY).start_study_run(STUDY, params={}, tags={})
        yield uri, parent
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


# ---------------------------------------------------------------------------- printing


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


def print_row(row: Row, args: argparse.Namespace) -> None:
    trials = max(1, row.trials)
    storage_calls = [t for name, times in row.calls.items() if not name.startswith("mlflow.")
                     for t in times]  # fmt: skip
    print(f"{row.via:<7}{row.workers:>8}{row.trials:>8}{row.claims_per_s:>10.2f}{row.tells_per_s:>9.2f}"
          f"{percentile(storage_calls, 0.5) if storage_calls else 0:>9.1f}"
          f"{percentile(storage_calls, 0.99) if storage_calls else 0:>9.1f}"
          f"{sum(row.statements.values()) / trials:>10.1f}{row.commits / trials:>9.1f}"
          f"{row.peak:>7}{row.proxy_cpu / trials * 1000:>11.1f}"
          f"{row.pg_cpu / trials * 1000:>10.1f}"
          f"{row.worker_cpu / trials * 1000:>12.1f}{row.busy * 100:>7.0f}%",
          flush=True)  # fmt: skip
    if args.details:
        print(
            f"  {row.pruned} of {row.trials} pruned; {row.wall:.1f} s; statements "
            + ", ".join(f"{k} {v / trials:.1f}" for k, v in row.statements.most_common())
        )
        for name, times in sorted(row.calls.items(), key=lambda item: -len(item[1])):
            print(
                f"  {name:<42}{len(times) / trials:>7.1f}/trial  p50 "
                f"{percentile(times, 0.5):7.1f} ms  p99 {percentile(times, 0.99):7.1f} ms"
            )
        if row.mlflow_commits:
            print(f"  MLflow database: {row.mlflow_commits / trials:.1f} commits a trial")
    for error in sorted(set(row.errors))[:5]:
        print(f"  error ({row.errors.count(error)} workers): {error}")


def main() -> None:
    if sys.argv[1:2] == [PROXY_FLAG]:
        serve_proxy(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--via", nargs="+", choices=("proxy", "direct"), default=["proxy"])
    parser.add_argument("--compress", type=float, default=60.0,
                        help="how many times faster than real time trials run")  # fmt: skip
    parser.add_argument("--trial-minutes", type=float, default=5.0,
                        help="a whole schedule's length, uncompressed")  # fmt: skip
    parser.add_argument("--trials-per-worker", type=int, default=2)
    parser.add_argument("--ramp", type=float, default=None,
                        help="seconds over which workers start [default: one trial]")  # fmt: skip
    parser.add_argument("--proxies", type=int, default=1, help="proxies; workers split evenly")
    parser.add_argument("--proxy-threads", type=int, default=10, help="each proxy's threads")
    parser.add_argument("--processes", type=int, default=4, help="processes holding the workers")
    parser.add_argument("--sampler", default="tpe", choices=("tpe", "random"))
    parser.add_argument("--pruner", default="hyperband", choices=("hyperband", "none"))
    parser.add_argument("--prefill", type=int, default=0, help="finished trials to start with")
    parser.add_argument("--index", action="store_true",
                        help="add an index on trials (study_id, state) first")  # fmt: skip
    parser.add_argument("--mlflow", action="store_true", help="each trial's MLflow run too")
    parser.add_argument("--details", action="store_true", help="each call's figures")
    args = parser.parse_args()
    os.environ.update(compressed_env(args.compress))  # the proxies and workers inherit it
    seconds = args.trial_minutes * 60 / args.compress
    print(f"trials of {args.trial_minutes:g} min compressed {args.compress:g}x ({seconds:.1f} s; "
          f"as many trials/s as {args.compress:g}x the workers at full length); "
          f"{args.sampler}, {args.pruner}; {args.proxies} proxies x {args.proxy_threads} threads; "
          f"heartbeat {os.environ['AUTOML_HEARTBEAT_SECONDS']} s; prefill {args.prefill:,}; "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'via':<7}{'workers':>8}{'trials':>8}{'claims/s':>10}{'tells/s':>9}{'p50 ms':>9}"
          f"{'p99 ms':>9}{'SQL/trial':>10}{'commits':>9}{'conns':>7}{'proxy ms':>11}"
          f"{'PG ms':>10}{'workers ms':>12}{'busy':>8}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for via in args.via:
            for workers in args.workers:
                print_row(measure(workers, via, args, Path(tmp)), args)
    print(
        "claims/s and tells/s: once every worker started (after the ramp) to the last tell; "
        "p50/p99: every storage call of every worker; SQL/trial: statements sent; commits: "
        "pg_stat_database; conns: peak; proxy, PG, workers ms: CPU per trial; busy: all cores"
    )


if __name__ == "__main__":
    main()
