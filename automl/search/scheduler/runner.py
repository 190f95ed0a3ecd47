"""Running a search's trials to the end: queue its tickets, run them here and in its
``--jobs`` processes, report each once, and hand back what ran (``TrialsRun``); or, for
``automl worker``, run a study's shared tickets until none is left.

Concluding the search (registering, evaluating, recording) is not this module's job: see
``automl.pipeline``. Everything that can be wrong with the settings, the space, the data or
a store fails in ``session.prepare``, before any trial.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from automl.errors import Terminated
from automl.search.scheduler.heartbeats import keep_search_alive
from automl.search.scheduler.jobs import job_devices, spawn_jobs, stop_jobs
from automl.search.scheduler.owners import WORKERS, Owner
from automl.search.scheduler.queue import (
    Refill,
    ToQueue,
    fail_stale,
    owned_by,
    queue_trials,
    retries_of,
    running_trials,
    tickets_to_queue,
    waiting,
    work,
)
from automl.search.scheduler.session import Session
from automl.search.trial.objective import Objective

POLL_SECONDS = 1.0


@dataclass(frozen=True)
class TrialsRun:
    """What running a search's trials did."""

    trials: list[FrozenTrial]  # the trials this search ran, by number
    seconds: float  # from the first claim to the last trial's end
    optuna_seconds: float  # inside Optuna: storage, sampling, pruning, telling
    tracking_seconds: float  # MLflow calls, store set-up included
    interrupted: bool = False
    notes: tuple[str, ...] = ()  # said after the trials (failed worker processes)


class TrialsInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the trials; args: the ``TrialsRun`` so far and the signal."""


# ---------------------------------------------------------------------------- a search


class _Reporter:
    """Reports every finished ticket once to the hooks, whichever process ran it."""

    def __init__(self, session: Session, tickets: set[int], owner: Owner) -> None:
        self.session, self.tickets, self.owner = session, tickets, owner
        self.seen: dict[int, FrozenTrial] = {}
        self.lock = threading.Lock()

    def report(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self.lock:
            if trial.number in self.seen:
                return
            self.seen[trial.number] = trial
        self.session.hooks.on_trial_end(study, trial)

    def poll(self) -> None:
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        for trial in self.session.study.get_trials(deepcopy=False, states=finished):
            if trial.number in self.tickets or self.owner.holds(trial):  # queued by a job
                self.report(self.session.study, trial)


@dataclass(frozen=True)
class _Tickets:
    """This search's tickets: those queued now, and how the rest are queued (a budget
    queues one at a time, ``refill``, so it ends with nothing left behind)."""

    numbers: set[int]
    plan: ToQueue | None
    refill: Refill | None


def run_trials(session: Session) -> TrialsRun:
    """Run this search's tickets here and in its ``--jobs`` processes; an interrupt closes
    the running trials and raises ``TrialsInterrupted`` once every process has stopped."""
    owner = Owner(session.parent_run_id)  # this search claims its own tickets only
    with keep_search_alive(session.study, owner):
        return _run_owned(session, owner)


def _run_owned(session: Session, owner: Owner) -> TrialsRun:
    settings = session.settings
    tickets = _queue(session, owner)
    reporter = _Reporter(session, tickets.numbers, owner)
    deadline = time.monotonic() + settings.timeout if settings.timeout else None
    devices = job_devices(settings.device, settings.jobs, settings.trials_per_gpu)
    threads = max(1, (os.cpu_count() or 1) // settings.jobs)
    processes = spawn_jobs(settings, devices, threads, deadline, owner, plan=tickets.plan)
    # This process takes the first device; alone, the one the settings resolved to.
    objective = session.objective(torch.device(devices[0]) if processes else None)
    objective.deadline = deadline
    start = time.perf_counter()
    interrupted: KeyboardInterrupt | None = None
    failed_jobs = 0
    with _polling(reporter, other_processes=not settings.alone), _threads(threads, processes):
        try:
            failed_jobs = _drain(
                session, objective, processes, tickets.numbers, reporter=reporter,
                deadline=deadline, owner=owner, refill=tickets.refill,
            )  # fmt: skip
        except KeyboardInterrupt as stop:
            interrupted = stop
            stop_jobs(processes, signal_them=isinstance(stop, Terminated))
        except BaseException:  # an error here: the jobs must not run on behind it
            stop_jobs(processes, signal_them=True)
            raise
    reporter.poll()
    failed = f"{failed_jobs} worker process(es) ended with an error"
    run = TrialsRun(
        trials=sorted(reporter.seen.values(), key=lambda t: t.number),
        seconds=time.perf_counter() - start,
        optuna_seconds=session.clock.seconds,
        tracking_seconds=session.tracker.seconds,
        interrupted=interrupted is not None,
        notes=(failed,) if failed_jobs and interrupted is None else (),
    )
    if interrupted is not None:
        raise TrialsInterrupted(run, interrupted)
    return run


def _queue(session: Session, owner: Owner) -> _Tickets:
    """Queue this search's tickets (all of them, or with a budget the first), say what
    was queued, and know how to queue the rest."""
    study, settings = session.study, session.settings
    lazy = settings.timeout is not None  # a budget: queue as it goes
    queued_now = queue_trials(session, owner, lazy=lazy)
    for note in queued_now.notes:
        session.hooks.on_note(note)
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    numbers = {t.number for t in queued if owner.holds(t)}
    if not lazy:
        return _Tickets(numbers, None, None)
    plan = tickets_to_queue(settings.trials - len(numbers), queued_now.pending)
    return _Tickets(numbers, plan, Refill(study, owner, numbers, plan))


@contextmanager
def _polling(reporter: _Reporter, *, other_processes: bool) -> Iterator[None]:
    """While the block runs, report the trials other processes end, as they end."""
    if not other_processes:
        yield
        return
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(reporter, stop), daemon=True)
    poller.start()
    try:
        yield
    finally:
        stop.set()
        poller.join()


@contextmanager
def _threads(threads: int, processes: list[multiprocessing.process.BaseProcess]) -> Iterator[None]:
    """This process's share of the cores while job processes run beside it."""
    previous = torch.get_num_threads()
    try:
        if processes:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(previous)


def _drain(
    session: Session,
    objective: Objective,
    processes: list[multiprocessing.process.BaseProcess],
    tickets: set[int],
    *,
    reporter: _Reporter,
    deadline: float | None,
    owner: Owner,
    refill: Callable[[], bool] | None = None,
) -> int:
    """Run tickets here until none is left, wait for the job processes and for trials
    running elsewhere, then run the retries of dead workers' trials; returns how many job
    processes ended with an error."""
    failed_jobs = 0
    while True:
        work(
            session.study, objective, on_trial_end=reporter.report, deadline=deadline,
            on_stale=session.close_stale, owner=owner, refill=refill,
            on_note=session.hooks.on_note,
        )  # fmt: skip
        for process in processes:
            process.join()
        failed_jobs += sum(p.exitcode not in (0, None) for p in processes)
        tickets |= owned_by(session.study, owner)  # the jobs' refills queued some too
        wait_for_running(session.study, tickets, session.close_stale)
        retries = retries_of(session.study, tickets)  # dead workers' trials, queued again
        if not retries or (deadline is not None and time.monotonic() >= deadline):
            return failed_jobs
        tickets |= retries
        processes = []


def _poll(reporter: _Reporter, stop: threading.Event) -> None:
    while not stop.wait(POLL_SECONDS):
        try:
            reporter.poll()
        except Exception:  # a busy store: the next poll catches up
            continue


def wait_for_running(
    study: optuna.Study,
    tickets: set[int],
    on_stale: Callable[[FrozenTrial], None] | None = None,
    poll: float = 2.0,
) -> None:
    """Wait until no ticket is running on another worker (dead ones are failed on the way;
    their retries are queued, not run here)."""
    running = (TrialState.RUNNING,)
    while any(t.number in tickets for t in study.get_trials(deepcopy=False, states=running)):
        fail_stale(study, on_stale)
        time.sleep(poll)


# ---------------------------------------------------------------------------- a worker


@dataclass
class WorkerOutcome:
    study: optuna.Study
    ran: list[FrozenTrial]
    seconds: float


def run_worker(
    session: Session, *, wait: float = 0.0, poll: float = 5.0, stay: bool = True
) -> WorkerOutcome:
    """Run the study's queued trials until none is left; with ``wait``, first wait up to
    that many seconds for some to be queued (workers started before the study). With
    ``stay``, keep watching while other workers' trials run: if one of those workers dies,
    its trial's retry is run here instead of being left queued with no worker."""
    start = time.perf_counter()
    deadline = time.monotonic() + wait
    while not waiting(session.study, WORKERS) and time.monotonic() < deadline:
        session.hooks.on_stage("waiting for queued trials")
        time.sleep(poll)
    ran: list[FrozenTrial] = []

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        ran.append(trial)
        session.hooks.on_trial_end(study, trial)

    objective = session.objective()
    while True:
        work(session.study, objective, on_trial_end=report, on_stale=session.close_stale)
        running = running_trials(session.study, WORKERS) if stay else 0  # not ours: others'
        if not running:
            break
        session.hooks.on_stage(
            f"{running} trial(s) running on other workers; standing by to retry them"
        )
        time.sleep(poll)
    return WorkerOutcome(session.study, ran, time.perf_counter() - start)
