"""The study runner: queue the trials, run them in one or several processes, conclude.

Data flows one way: settings and space in (``session.prepare``), an Optuna study driving
the objective, and a ``SearchOutcome`` out. Everything that can be wrong with the
settings, the space, the data or a store fails in ``prepare``, before any trial.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from automl.data import ImageData
from automl.errors import StoreError, Terminated
from automl.search.conclude import Registration, register_best
from automl.search.evaluation import evaluate_and_record, record_study_plots
from automl.search.hooks import Hooks
from automl.search.scheduler.heartbeats import keep_search_alive
from automl.search.scheduler.jobs import job_devices, spawn_jobs, stop_jobs
from automl.search.scheduler.owners import WORKERS, Owner
from automl.search.scheduler.queue import (
    Refill,
    fail_stale,
    owned_by,
    queue_trials,
    retries_of,
    running_trials,
    tickets_to_queue,
    waiting,
    work,
)
from automl.search.scheduler.session import Session, prepare
from automl.search.settings import SearchSettings
from automl.search.story import Search, StoryLinks, tell
from automl.search.strategy.pruners import epochs_run
from automl.search.trial.objective import Objective
from automl.tracking import TRACKING_ERRORS, Tracker

POLL_SECONDS = 1.0


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the study; args: the outcome so far and the original signal."""


@dataclass
class SearchOutcome:
    settings: SearchSettings
    study: optuna.Study
    data: ImageData
    parent_run_id: str
    tracker: Tracker
    wall_seconds: float
    optimize_seconds: float  # from the first claim to the last trial's end
    optuna_seconds: float  # inside Optuna: storage, sampling, pruning, telling
    trials_run: list[FrozenTrial]
    registration: Registration | None = None
    pareto: list[Registration] = field(default_factory=list)
    registration_seconds: float = 0.0
    evaluation: Any = None  # automl.insight.evaluate.Evaluation
    insight_seconds: float = 0.0
    interrupted: bool = False
    tracking_seconds_search: float = 0.0  # MLflow calls up to the end of the last trial
    notes: list[str] = field(default_factory=list)  # said after the trials (failed workers)
    story: StoryLinks | None = None  # where the MLflow UI tells it

    @property
    def states(self) -> Counter[str]:
        return Counter(t.state.name for t in self.study.get_trials(deepcopy=False))

    @property
    def epochs_run(self) -> int:
        return sum(epochs_run(t) for t in self.trials_run)


# ---------------------------------------------------------------------------- running


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


def run_trials(session: Session) -> SearchOutcome:
    """Run this search's tickets in ``--jobs`` processes; an interrupt closes the runs and
    raises ``Interrupted`` once every process has stopped."""
    owner = Owner(session.parent_run_id)  # this search claims its own tickets only
    with keep_search_alive(session.study, owner):
        return _run_owned(session, owner)


def _run_owned(session: Session, owner: Owner) -> SearchOutcome:
    study, settings = session.study, session.settings
    lazy = settings.timeout is not None  # a budget: queue as it goes
    queued_now = queue_trials(session, owner, lazy=lazy)
    for note in queued_now.notes:
        session.hooks.on_note(note)
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    tickets = {t.number for t in queued if owner.holds(t)}
    plan = None
    if lazy:
        plan = tickets_to_queue(settings.trials - len(tickets), queued_now.pending)
    refill = Refill(study, owner, tickets, plan) if plan is not None else None
    reporter = _Reporter(session, tickets, owner)
    deadline = time.monotonic() + settings.timeout if settings.timeout else None
    devices = job_devices(settings.device, settings.jobs, settings.trials_per_gpu)
    threads = max(1, (os.cpu_count() or 1) // settings.jobs)
    previous_threads = torch.get_num_threads()
    processes = spawn_jobs(settings, devices, threads, deadline, owner, plan=plan)
    # This process takes the first device; alone, the one the settings resolved to.
    objective = session.objective(torch.device(devices[0]) if processes else None)
    objective.deadline = deadline
    stop_polling = threading.Event()
    poller = threading.Thread(target=_poll, args=(reporter, stop_polling), daemon=True)
    if not settings.alone:  # other processes' trials are reported as they end
        poller.start()
    start = time.perf_counter()
    interrupted: KeyboardInterrupt | None = None
    failed_jobs = 0
    try:
        if processes:
            torch.set_num_threads(threads)
        failed_jobs = _drain(
            session, objective, processes, tickets, reporter=reporter, deadline=deadline,
            owner=owner, refill=refill,
        )  # fmt: skip
    except KeyboardInterrupt as stop:
        interrupted = stop
        stop_jobs(processes, signal_them=isinstance(stop, Terminated))
    except BaseException:  # an error here: the jobs must not run on behind it
        stop_jobs(processes, signal_them=True)
        raise
    finally:
        torch.set_num_threads(previous_threads)
        stop_polling.set()
        if poller.is_alive():
            poller.join()
    reporter.poll()
    outcome = SearchOutcome(
        settings=settings,
        study=study,
        data=session.data,
        parent_run_id=session.parent_run_id,
        tracker=session.tracker,
        wall_seconds=0.0,
        optimize_seconds=time.perf_counter() - start,
        optuna_seconds=session.clock.seconds,
        trials_run=sorted(reporter.seen.values(), key=lambda t: t.number),
        interrupted=interrupted is not None,
        tracking_seconds_search=session.tracker.seconds,
    )
    if failed_jobs and interrupted is None:
        outcome.notes.append(f"{failed_jobs} worker process(es) ended with an error")
    if interrupted is not None:
        _finish(session, outcome, "KILLED")
        raise Interrupted(outcome, interrupted)
    return outcome


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


def _poll(reporter: _Reporter, stop: threading.Event) -> None:
    while not stop.wait(POLL_SECONDS):
        try:
            reporter.poll()
        except Exception:  # a busy store: the next poll catches up
            continue


# ---------------------------------------------------------------------------- concluding


CONCLUSION_ERRORS: tuple[type[BaseException], ...] = (StoreError, *TRACKING_ERRORS)


def conclude(session: Session, outcome: SearchOutcome) -> SearchOutcome:
    """Register the best model (the Pareto front's with several objectives), evaluate it,
    draw the study plots, close the parent run.

    A tracking store that fails here is one line, and the parent run is closed as FAILED:
    the trials are safe in the study, and the next search on it registers its best."""
    try:
        _register_and_evaluate(session, outcome)
    except CONCLUSION_ERRORS as exc:
        with contextlib.suppress(Exception):  # the store may be the very thing that failed
            _finish(session, outcome, "FAILED")
        what = str(exc) if isinstance(exc, StoreError) else f"{session.tracker.what}: {exc}"
        raise StoreError(
            f"registering the best model failed ({what.splitlines()[0]}); the trials are "
            f"kept in study '{session.study.study_name}': the next search on it (--trials 1) "
            "registers its best"
        ) from None
    _finish(session, outcome, "FINISHED")
    return outcome


def _register_and_evaluate(session: Session, outcome: SearchOutcome) -> None:
    hooks, tracker, parent = session.hooks, session.tracker, session.parent_run_id
    trials = session.study.get_trials(deepcopy=False)
    if any(t.state == TrialState.COMPLETE for t in trials):
        hooks.on_stage("evaluating the best trial on the test split and registering it")
        start = time.perf_counter()
        registrations = register_best(
            session.study,
            session.data,
            tracker=tracker,
            parent_run_id=parent,
            model_name=session.settings.registered_model,
            device=session.device,
            dataset_options={
                "image_size": session.settings.image_size,
                "group_level": session.settings.group_level,
            },
            refit=session.settings.refit,
            ensemble=session.settings.members,
            mirror=session.settings.tta,
            weights_dir=session.settings.weights_dir,
            on_stage=hooks.on_stage,
        )
        outcome.registration, outcome.pareto = registrations[0], registrations
        outcome.registration_seconds = time.perf_counter() - start
    start = time.perf_counter()
    if session.settings.evaluate and outcome.registration is not None:
        hooks.on_stage("evaluating the registered model (metrics, robustness, saliency)")
        outcome.evaluation = evaluate_and_record(
            outcome.registration, session.data, tracker=tracker, parent_run_id=parent,
            on_stage=hooks.on_stage,
        )  # fmt: skip
    if session.settings.evaluate:
        hooks.on_stage("drawing the study plots")
        for plot, why in record_study_plots(session.study, tracker, parent).items():
            hooks.on_note(f"study plot '{plot}' skipped: {why}")
    outcome.insight_seconds = time.perf_counter() - start


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


def finish(session: Session) -> SearchOutcome:
    """Conclude a study whose trials workers ran: wait for the running ones, then register,
    evaluate, plot and close its parent run."""
    study = session.study
    numbers = {t.number for t in study.get_trials(deepcopy=False)}
    wait_for_running(study, numbers, session.close_stale)
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    outcome = SearchOutcome(
        settings=session.settings,
        study=study,
        data=session.data,
        parent_run_id=session.parent_run_id,
        tracker=session.tracker,
        wall_seconds=0.0,
        optimize_seconds=0.0,
        optuna_seconds=0.0,
        trials_run=study.get_trials(deepcopy=False, states=finished),
    )
    left = waiting(study)
    if left:
        outcome.notes.append(f"{left} queued trials were not run; they stay queued")
    return conclude(session, outcome)


def run_search(
    settings: SearchSettings,
    *,
    hooks: Hooks | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> SearchOutcome:
    """Run ``settings.trials`` new trials, then register, evaluate and plot the best model.

    ``pruner`` replaces the one ``settings`` names (tests use one with a fixed answer).
    """
    session = prepare(settings, hooks or Hooks(), pruner)
    outcome = run_trials(session)
    # Alive through its conclusion too (minutes with an evaluation): a search started on the
    # study meanwhile must not take this one's open parent run for an abandoned one.
    with keep_search_alive(session.study, Owner(session.parent_run_id)):
        return conclude(session, outcome)


def _finish(session: Session, outcome: SearchOutcome, status: str) -> None:
    states = outcome.states
    metrics: dict[str, float] = {
        "trials_complete": states.get("COMPLETE", 0),
        "trials_pruned": states.get("PRUNED", 0),
        "trials_failed": states.get("FAIL", 0),
        "epochs_run": outcome.epochs_run,
    }
    tags = {"state": "INTERRUPTED" if outcome.interrupted else "DONE"}
    if outcome.registration is not None:
        metrics["best_val_acc"] = outcome.registration.val_acc
        metrics["test_acc"] = outcome.registration.test_acc
        tags["best_trial"] = str(outcome.registration.trial_number)
        tags["registered_model"] = outcome.registration.uri
        tags["registered_version"] = f"{outcome.registration.name}/{outcome.registration.version}"
        if outcome.registration.run_id:  # the version's source run
            tags["best_trial_run_id"] = outcome.registration.run_id
    try:  # the record is complete without it: a store that fails here is only said
        told = Search(
            outcome.study, outcome.settings, outcome.parent_run_id, outcome.registration,
            [t.number for t in outcome.trials_run], outcome.interrupted,
        )  # fmt: skip
        outcome.story = tell(told, outcome.tracker)
    except TRACKING_ERRORS as exc:
        outcome.notes.append(f"the study's story was not written to MLflow: {exc}")
    outcome.wall_seconds = time.perf_counter() - session.started
    metrics["wall_seconds"] = outcome.wall_seconds
    outcome.tracker.finish_study_run(outcome.parent_run_id, status, metrics, tags)
