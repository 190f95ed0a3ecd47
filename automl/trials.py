"""Running trials from a queue of tickets, so any number of processes on any number of
machines finish exactly the trials that were asked for, none twice.

A search asks for N trials by enqueueing N tickets (waiting trials, optionally with fixed
params such as a baseline). Every worker, local or remote, claims a ticket atomically
through the storage, runs the objective on it and tells the result; it stops when no
ticket is left. A trial that dies with its worker (no heartbeat) is failed by the next
worker, its MLflow run closed, and its configuration queued again as a new ticket.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from automl.objective import TrialFailed
from automl.retry import retrying

TICKET = "ticket"  # user attribute of an enqueued trial: why it was queued
MAX_RETRY = 2


def add_tickets(
    study: optuna.Study,
    count: int,
    fixed: list[dict[str, Any]] | None = None,
    origins: list[str] | None = None,
) -> int:
    """Queue ``count`` trials; the first ones take ``fixed`` params (a baseline, an earlier
    study's best), each recorded with where it came from (``origins``)."""
    fixed = list(fixed or [])[:count]
    origins = list(origins or [])
    for index, params in enumerate(fixed):
        attrs = {TICKET: "fixed"}
        if index < len(origins):
            attrs["origin"] = origins[index]
        study.enqueue_trial(params, user_attrs=attrs)
    for _ in range(count - len(fixed)):
        study.enqueue_trial({}, user_attrs={TICKET: "new"})
    return count


def waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def running_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    """Seconds between heartbeats, or None for storages without them."""
    interval: int | None = getattr(storage, "get_heartbeat_interval", lambda: None)()
    return interval


def claim(study: optuna.Study) -> optuna.Trial | None:
    """Take one waiting ticket, or None when the queue is empty.

    Optuna's own queue pop (the storage changes WAITING to RUNNING only if nobody did
    first), without ``ask``'s fallback of creating an extra trial when the queue is empty.
    """
    study._thread_local.cached_all_trials = None  # see every worker's latest trials
    trial_id = study._pop_waiting_trial_id()
    if trial_id is None:
        return None
    # At once: Optuna never counts a running trial without any heartbeat as stale, so a
    # worker dying right here would otherwise leave it running for good.
    if heartbeat_interval(study._storage):
        study._storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
    return optuna.Trial(study, trial_id)


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record a heartbeat every interval while the trial runs (storages that support it)."""
    storage = study._storage
    interval = heartbeat_interval(storage)
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried at the next one
                storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _mark_retry(study: optuna.Study, failed: FrozenTrial) -> None:
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if trial.system_attrs.get("failed_trial") == failed.number:
            study._storage.set_trial_user_attr(trial._trial_id, TICKET, "retry")


def requeue(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Queue an interrupted trial's configuration again so a rerun finishes the request."""
    study.enqueue_trial(
        trial.params, user_attrs={TICKET: "retry", "retry_of": trial.number, "retry_reason": reason}
    )


def fail_stale(
    study: optuna.Study, on_stale: Callable[[FrozenTrial], None] | None = None
) -> list[FrozenTrial]:
    """Fail the trials of dead workers (no heartbeat for the grace period) and queue their
    configuration again; ``on_stale`` closes what else they left open (their MLflow run).

    Several workers may find the same dead trial: the storage lets only one fail it.
    """
    storage = study._storage
    if not heartbeat_interval(storage):
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):  # type: ignore[attr-defined]
        try:  # the reason first: a finished trial's attributes can no longer change
            storage.set_trial_user_attr(trial_id, "reason", "crashed")
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        trial = storage.get_trial(trial_id)
        retry(study, trial)
        _mark_retry(study, trial)
        if on_stale is not None:
            on_stale(trial)
        failed.append(trial)
    return failed


def _tell(
    study: optuna.Study,
    trial: optuna.Trial,
    values: float | tuple[float, ...] | None = None,
    state: TrialState | None = None,
) -> FrozenTrial:
    """Tell the result, retrying while the database is away: a finished result is not lost.
    A retry after a commit whose reply was lost finds the trial finished and skips."""
    return retrying(
        lambda: study.tell(trial, values, state=state, skip_if_finished=True),
        what="the Optuna storage",
    )


def work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float | tuple[float, ...]],
    *,
    on_trial_end: Callable[[optuna.Study, FrozenTrial], None] = lambda s, t: None,
    deadline: float | None = None,
    on_stale: Callable[[FrozenTrial], None] | None = None,
) -> int:
    """Claim and run tickets until none is left (or ``deadline``); returns how many ran.

    The objective raises ``TrialPruned`` or ``TrialFailed`` to end a trial that way. On
    Ctrl-C the running trial is failed, its ticket queued again, and the interrupt raised.
    """
    ran = 0
    storage = "the Optuna storage"
    while deadline is None or time.monotonic() < deadline:
        # A dead worker's trial is failed and queued again before we claim.
        retrying(lambda: fail_stale(study, on_stale), what=storage)
        trial = retrying(lambda: claim(study), what=storage)
        if trial is None:
            break
        with heartbeat(study, trial):
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                frozen = _tell(study, trial, state=TrialState.PRUNED)
            except TrialFailed:
                frozen = _tell(study, trial, state=TrialState.FAIL)
            except KeyboardInterrupt:
                _tell(study, trial, state=TrialState.FAIL)
                requeue(study, trial, "interrupted")
                raise
            except BaseException:
                _tell(study, trial, state=TrialState.FAIL)
                raise
            else:
                frozen = _tell(study, trial, value)
        ran += 1
        on_trial_end(study, frozen)
    return ran
