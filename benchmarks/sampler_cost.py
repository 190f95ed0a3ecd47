"""The default sampler's cost against the study's size: how long a worker takes to get its
next configuration (claim a ticket, sample the space) when the study already holds 1k,
10k, 50k or 100k finished trials, with automl's sampler settings.

The study is filled by bulk insert into Optuna's tables (``_study_fill.py``: the photos
space's parameters, reports on its progress grid, the attributes a trial carries), then
opened as a worker opens it: ``StudyStorage`` over ``open_storage`` and ``open_study``
with ``make_sampler("tpe")`` (multivariate, grouped, constant liar) and the shared
Hyperband pruner. For each size it prints

- the first ask of a newly started worker ("cold": it reads every trial once) and the
  process's memory after it;
- the median and 90th percentile of the next ``--asks`` asks ("warm": the cache holds
  the study, only changes are read), each followed by its tell;
- the light look for changes a worker makes at each claim and pruning decision (at most
  every 0.5 s: ``SqlQueries.states``) and the stale-trial query of every claim (Optuna's
  ``_get_stale_trial_ids``), in ms;
- bytes a trial takes in the database and in the proxy's reply (Optuna's protobuf).

``--running K`` adds K trials RUNNING (other workers' trials: the constant liar reads
each at every ask), ``--queued Q`` Q queued tickets; ``--index`` times the two queries
again after adding an index on ``trials (study_id, state)``. Prints figures; asserts
nothing. PostgreSQL: a scratch database on 127.0.0.1:5432 (user postgres), dropped after.

    python benchmarks/sampler_cost.py [--sizes 1000 10000 50000 100000] [--storage sqlite]
        [--asks 20] [--running 0] [--queued 0] [--index]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from _study_fill import GRID, PG, accuracy, admin, fill, photos_space
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import TrialState

from automl.search.scheduler.queue import TrialResult, _tell, add_tickets, claim
from automl.search.settings import SearchSettings
from automl.search.strategy.pruners import make_pruner
from automl.search.strategy.study import open_study
from automl.stores import close_storage, open_storage
from automl.stores.compat import StudyStorage
from automl.stores.sql import SqlQueries

STUDY = "sampler-cost"
INDEX = "ix_trials_study_id_state"


@contextmanager
def scratch_store(kind: str) -> Iterator[str]:
    """A new, empty study database: a SQLite file in a temporary folder, or a PostgreSQL
    database of its own; removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/study.db"
        return
    name = f"sampler_cost_{os.getpid()}"
    admin(f"drop database if exists {name} with (force)")
    admin(f"create database {name}")
    try:
        yield f"{PG}/{name}"
    finally:
        admin(f"drop database if exists {name} with (force)")


def settings_for(url: str) -> SearchSettings:
    return SearchSettings(study_name=STUDY, storage=url, sampler="tpe", pruner="hyperband")


def worker_study(url: str, seed_offset: int) -> optuna.Study:
    """The study as a worker opens it (``scheduler.session._open``), without the data."""
    storage = StudyStorage(open_storage(url))
    return open_study(
        settings_for(url), storage, make_pruner("hyperband", GRID), seed_offset=seed_offset
    )


def one_ask(study: optuna.Study, space: Any) -> tuple[float, optuna.Trial]:
    """Seconds to claim the queued ticket and sample the space, as a worker does."""
    start = time.perf_counter()
    trial = claim(study)
    assert trial is not None, "no ticket to claim"
    space.sample(trial)
    return time.perf_counter() - start, trial


def tell(study: optuna.Study, trial: optuna.Trial) -> None:
    """Tell a synthetic result, as ``queue.work`` tells an objective's."""
    result = TrialResult(
        TrialState.COMPLETE, (accuracy(trial.params, random.Random(trial.number)),)
    )
    _tell(study, trial, result.values, state=result.state)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def best_of(call: Callable[[], Any], repeats: int = 5) -> float:
    """The fastest of ``repeats`` calls, in ms (the query's cost, not the machine's noise)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def trial_ids(backend: RDBStorage, study_id: int, limit: int) -> list[int]:
    """The study's first ``limit`` trial ids and, last, its highest."""
    table = models.TrialModel.__table__
    where = table.c.study_id == study_id
    with backend.engine.connect() as conn:
        first = conn.execute(
            sqlalchemy.select(table.c.trial_id).where(where).order_by(table.c.trial_id).limit(limit)
        ).scalars()
        highest = conn.execute(
            sqlalchemy.select(sqlalchemy.func.max(table.c.trial_id)).where(where)
        )
        return [*first, highest.scalar_one()]


def query_ms(url: str) -> tuple[float, float]:
    """The light look (``SqlQueries.states``) and the stale-trial query, in ms."""
    backend = open_storage(url)
    assert isinstance(backend, RDBStorage)
    try:
        study_id = backend.get_study_id_from_name(STUDY)
        highest = trial_ids(backend, study_id, 0)[-1]
        queries = SqlQueries(backend)
        look = best_of(lambda: queries.states(study_id, highest))
        stale = best_of(lambda: backend._get_stale_trial_ids(study_id))
        return look, stale
    finally:
        backend.engine.dispose()


def bytes_per_trial(url: str, trials: int) -> tuple[float, float]:
    """A trial's bytes in the database (its tables' total size, or the SQLite file) and in
    the proxy's reply to a worker reading the study (Optuna's protobuf, as the proxy's
    ``Trials`` call sends it)."""
    from optuna.storages._grpc.auto_generated import api_pb2
    from optuna.storages._grpc.servicer import _to_proto_trial

    backend = open_storage(url)
    assert isinstance(backend, RDBStorage)
    try:
        study_id = backend.get_study_id_from_name(STUDY)
        *first, highest = trial_ids(backend, study_id, 500)
        sample = backend._get_trials(study_id, None, set(first), highest)
        wire = len(api_pb2.GetTrialsReply(trials=[_to_proto_trial(t) for t in sample])
                   .SerializeToString()) / max(1, len(sample))  # fmt: skip
        if url.startswith("sqlite"):
            size = Path(url.removeprefix("sqlite:///")).stat().st_size
        else:
            with backend.engine.connect() as conn:
                size = conn.execute(
                    sqlalchemy.text(
                        "select sum(pg_total_relation_size(c.oid)) from pg_class c "
                        "where c.relkind = 'r' and c.relname like :tables"
                    ),
                    {"tables": "trial%"},
                ).scalar_one()
        return size / trials, wire
    finally:
        backend.engine.dispose()


def set_index(url: str, *, present: bool) -> None:
    """Add (or drop again) the index the light look could use."""
    backend = open_storage(url)
    assert isinstance(backend, RDBStorage)
    try:
        with backend.engine.begin() as conn:
            if present:
                conn.exec_driver_sql(f"create index {INDEX} on trials (study_id, state)")
            else:
                conn.exec_driver_sql(f"drop index {INDEX}")
            if backend.engine.dialect.name == "postgresql":
                conn.exec_driver_sql("analyze trials")
    finally:
        backend.engine.dispose()


def measure(url: str, size: int, args: argparse.Namespace, space: Any) -> None:
    """One row: a new worker's first ask, then ``args.asks`` warm ones, the queries."""
    study = worker_study(url, seed_offset=size)
    add_tickets(study, args.asks + 1)
    cold, trial = one_ask(study, space)
    memory = rss_mib()
    tell(study, trial)
    warm = []
    for _ in range(args.asks):
        seconds, trial = one_ask(study, space)
        warm.append(seconds)
        tell(study, trial)
    warm.sort()
    p90 = warm[min(len(warm) - 1, int(0.9 * len(warm)))]
    look, stale = query_ms(url)
    row = (f"{size:>8,} {cold * 1000:>10.0f} {statistics.median(warm) * 1000:>10.1f} "
           f"{p90 * 1000:>9.1f} {look:>9.2f} {stale:>9.2f} {memory:>9.0f}")  # fmt: skip
    if args.index:
        set_index(url, present=True)
        look_i, stale_i = query_ms(url)
        set_index(url, present=False)
        row += f" {look_i:>10.2f} {stale_i:>10.2f}"
    print(row, flush=True)
    storage = study._storage
    if isinstance(storage, StudyStorage):
        storage.flush()
        storage.backend.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000, 100000])
    parser.add_argument("--storage", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--asks", type=int, default=20, help="warm asks a size")
    parser.add_argument("--running", type=int, default=0, help="other workers' running trials")
    parser.add_argument("--queued", type=int, default=0, help="queued tickets besides")
    parser.add_argument("--index", action="store_true",
                        help=f"time the queries again with an index {INDEX}")  # fmt: skip
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = photos_space()
    print(f"photos space, TPE as automl builds it (multivariate, group, constant liar), "
          f"{args.storage}; {args.running} running trials, {args.queued} queued tickets; "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    header = (f"{'trials':>8} {'cold ms':>10} {'warm p50':>10} {'warm p90':>9} {'look ms':>9} "
              f"{'stale ms':>9} {'RSS MiB':>9}")  # fmt: skip
    print(header + (f" {'look+ix ms':>10} {'stale+ix':>10}" if args.index else ""))
    with scratch_store(args.storage) as url:
        backend = open_storage(url)
        optuna.create_study(study_name=STUDY, storage=backend, direction="maximize")
        close_storage(backend)
        finished = 0
        if args.running:
            fill(url, STUDY, args.running, running=True, seed=1)
        if args.queued:
            add_tickets(worker_study(url, 0), args.queued)
        for size in sorted(args.sizes):
            if size > finished:
                start = time.perf_counter()
                fill(url, STUDY, size - finished, seed=size)
                took = time.perf_counter() - start
                print(f"  (filled {size - finished:,} trials in {took:.0f} s)", file=sys.stderr)
                finished = size
            measure(url, size, args, space)
            finished += args.asks + 1  # the asks told their trials
        per_db, per_wire = bytes_per_trial(url, finished + args.running + args.queued)
        print(f"bytes a trial: {per_db:,.0f} in the database (its tables with their indexes), "
              f"{per_wire:,.0f} in the proxy's reply")  # fmt: skip


if __name__ == "__main__":
    main()
