"""Running trials from a queue of tickets, so any number of processes on any number of
machines finish exactly the trials that were asked for, none twice.

A search asks for N trials by enqueueing N tickets (waiting trials, optionally with fixed
params such as a baseline). Every worker, local or remote, claims a ticket atomically
through the storage, runs the objective on it and tells the result; it stops when no
ticket is left. A trial that dies with its worker (no heartbeat) is failed by the next
worker, its MLflow run closed, and its configuration queued again as a new ticket. A
retry whose trial left a checkpoint (``TrialAttr.CHECKPOINT_EPOCH``) resumes from it
(``search/trial/checkpoints.py``) and is claimed before any other ticket.
"""

from __future__ import annotations

import multiprocessing
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from automl.errors import Terminated, stop_if_asked
from automl.records import Ticket, TrialAttr, TrialRecord
from automl.retry import STORE, retrying
from automl.search.scheduler.heartbeats import keep_trial_alive
from automl.search.scheduler.owners import WORKERS, Owner, adopt
from automl.stores import compat

if TYPE_CHECKING:
    from automl.search.settings import SearchSettings
    from automl.search.space import SearchSpace
    from automl.search.space.warmstart import WarmStart

MAX_RETRY = 2
# A trial starts under a budget only with at least this share of a typical complete
# trial's time left: the pruner compares trials up to half their schedule, so one cut
# before that has no result worth its epochs.
MEANINGFUL_SHARE = 0.5


@dataclass(frozen=True)
class TrialResult:
    """How a trial ended, as the objective says it: a state, and values when complete."""

    state: TrialState
    values: tuple[float, ...] | None = None


def add_tickets(
    study: optuna.Study,
    count: int,
    fixed: list[dict[str, Any]] | None = None,
    origins: list[str] | None = None,
    *,
    owner: Owner = WORKERS,
) -> int:
    """Queue ``count`` trials for ``owner``; the first ones take ``fixed`` params (a
    baseline, an earlier study's best), each recorded with where it came from."""
    fixed = list(fixed or [])[:count]
    origins = list(origins or [])
    for index, params in enumerate(fixed):
        attrs = {TrialAttr.TICKET: Ticket.FIXED, TrialAttr.OWNER: owner.id}
        if index < len(origins):
            attrs[TrialAttr.ORIGIN] = origins[index]
        study.enqueue_trial(params, user_attrs=attrs)
    for _ in range(count - len(fixed)):
        attrs = {TrialAttr.TICKET: Ticket.NEW, TrialAttr.OWNER: owner.id}
        study.enqueue_trial({}, user_attrs=attrs)
    return count


Fixed = tuple[dict[str, Any], str]  # a configuration to queue as is, and where it came from


@dataclass(frozen=True)
class ToQueue:
    """The tickets a budgeted search has still to queue, shared by the search and its
    ``--jobs`` processes: ``left`` of them (a ``multiprocessing.Value``, first ``start``),
    the first ones taking the ``pending`` fixed configurations (warm starts) in order."""

    left: Any
    start: int
    pending: tuple[Fixed, ...] = ()


def tickets_to_queue(count: int, pending: tuple[Fixed, ...] = ()) -> ToQueue:
    count = max(0, count)
    return ToQueue(multiprocessing.get_context("spawn").Value("i", count), count, pending)


class Refill:
    """Queues a budgeted search's next ticket when none is left to claim, until
    ``--trials`` were queued: the deadline then leaves no ticket behind, warm starts
    included. Together the search and its ``--jobs`` processes queue exactly ``--trials``,
    whichever process finds the queue empty (``ToQueue``).
    """

    def __init__(self, study: optuna.Study, owner: Owner, tickets: set[int], plan: ToQueue) -> None:
        self.study, self.owner, self.tickets, self.plan = study, owner, tickets, plan

    def __call__(self) -> bool:
        left = self.plan.left
        with left.get_lock():
            if left.value <= 0:
                return False
            index = self.plan.start - left.value  # this ticket's place: each taken once
            left.value -= 1
        fixed = list(self.plan.pending[index : index + 1])
        add_tickets(self.study, 1, [p for p, _ in fixed], [o for _, o in fixed], owner=self.owner)
        queued = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        self.tickets.update(t.number for t in queued if self.owner.holds(t))
        return True


def owned_by(study: optuna.Study, owner: Owner) -> set[int]:
    """The numbers of every trial ``owner`` holds, whichever process queued it."""
    return {t.number for t in study.get_trials(deepcopy=False) if owner.holds(t)}


def retries_of(study: optuna.Study, tickets: set[int]) -> set[int]:
    """The queued retries of ``tickets`` (dead workers' trials, queued again)."""
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    records = ((t.number, TrialRecord.of(t)) for t in queued)
    return {n for n, r in records if r.failed_trial in tickets or r.retry_of in tickets}


def count(study: optuna.Study, state: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=(state,)))


def waiting(study: optuna.Study, owner: Owner | None = None) -> int:
    """Queued tickets, all of them or ``owner``'s."""
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return sum(1 for t in queued if owner is None or owner.holds(t))


def running_trials(study: optuna.Study, owner: Owner | None = None) -> int:
    """Running trials, all of them or ``owner``'s."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return sum(1 for t in running if owner is None or owner.holds(t))


def resumable(trial: FrozenTrial) -> bool:
    """A queued retry whose trial left a checkpoint: it continues work already paid for."""
    return bool(TrialRecord.of(trial).checkpoint_epoch)


def claim(study: optuna.Study, owner: Owner = WORKERS) -> optuna.Trial | None:
    """Take one of ``owner``'s waiting tickets, resumable retries first, or None when
    none is left."""
    trial = compat.pop_waiting(study, lambda t: owner.holds(t) and resumable(t))
    trial = trial or compat.pop_waiting(study, owner.holds)
    # At once: Optuna never counts a running trial without any heartbeat as stale, so a
    # worker dying right here would otherwise leave it running for good.
    if trial is not None and compat.heartbeat_interval(compat.storage_of(study)):
        compat.record_heartbeat(study, trial)
    return trial


def requeue(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Queue an interrupted trial's configuration again, for the same owner: the next
    search adopts it once that owner is gone, or a worker runs it if it was shared; with
    the epoch of its checkpoint, when it left one."""
    record = TrialRecord.of(trial)
    attrs: dict[str, Any] = {
        TrialAttr.TICKET: Ticket.RETRY,
        TrialAttr.RETRY_OF: trial.number,
        TrialAttr.RETRY_REASON: reason,
        TrialAttr.OWNER: record.owner,
    }
    if record.checkpoint_epoch:
        attrs[TrialAttr.CHECKPOINT_EPOCH] = record.checkpoint_epoch
    if record.origin:  # a given configuration stays one (the chance rule spares it)
        attrs[TrialAttr.ORIGIN] = record.origin
    study.enqueue_trial(trial.params, user_attrs=attrs)


def fail_stale(
    study: optuna.Study, on_stale: Callable[[FrozenTrial], None] | None = None
) -> list[FrozenTrial]:
    """Fail the trials of dead workers (no heartbeat for the grace period) and queue their
    configuration again; ``on_stale`` closes what else they left open (their MLflow run).

    Several workers may find the same dead trial: the storage lets only one fail it.
    """
    storage = compat.storage_of(study)
    if not compat.heartbeat_interval(storage) or not running_trials(study):
        return []  # no running trial, none can be dead (seen within LOOK_SECONDS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    failed = []
    for trial_id in compat.stale_trial_ids(study):
        try:  # the reason first: a finished trial's attributes can no longer change
            storage.set_trial_user_attr(trial_id, TrialAttr.REASON, "crashed")
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        if not compat.transition(study, trial_id, TrialState.RUNNING, TrialState.FAIL):
            continue  # another worker failed it first
        trial = storage.get_trial(trial_id)
        retry(study, trial)  # its user attributes are copies of the dead trial's
        for queued in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            history = TrialRecord.of(queued).retry_history
            if history and history[-1] == trial.number:
                queued_id = compat.trial_id(queued)
                storage.set_trial_user_attr(queued_id, TrialAttr.TICKET, Ticket.RETRY)
                storage.set_trial_user_attr(queued_id, TrialAttr.RETRY_OF, trial.number)
        if on_stale is not None:
            on_stale(trial)
        failed.append(trial)
    return failed


def _tell(
    study: optuna.Study,
    trial: optuna.Trial,
    values: tuple[float, ...] | None = None,
    state: TrialState | None = None,
) -> FrozenTrial:
    """Tell the result, retrying while the database is away: a finished result is not lost.
    A retry after a commit whose reply was lost finds the trial finished and skips."""
    told = list(values) if values is not None else None
    with compat.timed(study):
        retrying(lambda: compat.release(study, trial), what=STORE, holding="trial reports")
        return retrying(
            lambda: study.tell(trial, told, state=state, skip_if_finished=True),
            what=STORE,
            holding="trial results",
        )


def work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], TrialResult],
    *,
    on_trial_end: Callable[[optuna.Study, FrozenTrial], None] = lambda s, t: None,
    deadline: float | None = None,
    on_stale: Callable[[FrozenTrial], None] | None = None,
    owner: Owner = WORKERS,
    refill: Callable[[], bool] | None = None,
    on_note: Callable[[str], None] = lambda note: None,
) -> int:
    """Claim and run ``owner``'s tickets until none is left (or ``deadline``, or too
    little of the budget is left for a trial: ``on_note`` says so); returns how many ran.
    ``refill`` queues the next ticket when none is left (False: no more).

    The objective says how each trial ended. On Ctrl-C or SIGTERM the running trial is
    failed (the objective has saved its checkpoint), its ticket queued again at once, and
    the interrupt raised; any other escape fails it and is raised.
    """
    ran = 0
    while deadline is None or time.monotonic() < deadline:
        stop_if_asked()  # between trials too
        short = too_short_for_a_trial(study, deadline)
        if short:
            on_note(short)
            break
        # A dead worker's trial is failed and queued again before we claim.
        retrying(lambda: fail_stale(study, on_stale), what=STORE)
        trial = retrying(lambda: claim(study, owner), what=STORE)
        if trial is None and refill is not None and refill():  # storage calls retry inside
            # Claimed at once, past the deadline too: a ticket queued here is never left
            # behind by a deadline that fell between queuing it and claiming it.
            trial = retrying(lambda: claim(study, owner), what=STORE)
            if trial is None:  # another process of the search took it
                continue
        if trial is None:
            break
        with keep_trial_alive(study, trial):
            try:
                result = objective(trial)
            except KeyboardInterrupt as stop:
                _tell(study, trial, state=TrialState.FAIL)
                why = "preempted" if isinstance(stop, Terminated) else "interrupted"
                requeue(study, trial, why)
                raise
            except BaseException:
                _tell(study, trial, state=TrialState.FAIL)
                raise
            values = result.values if result.state == TrialState.COMPLETE else None
            frozen = _tell(study, trial, values, state=result.state)
        ran += 1
        on_trial_end(study, frozen)
    return ran


def too_short_for_a_trial(study: optuna.Study, deadline: float | None) -> str | None:
    """Why no trial should start before ``deadline`` (None: one may): the time left is
    less than ``MEANINGFUL_SHARE`` of what this study's complete trials took (their
    median; trials cut by a budget left out). Before any trial completes, one may."""
    if deadline is None:
        return None
    took = sorted(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.datetime_start and t.datetime_complete and TrialAttr.CUT not in t.user_attrs
    )
    if not took:
        return None
    typical, left = took[len(took) // 2], deadline - time.monotonic()
    if left >= MEANINGFUL_SHARE * typical:
        return None
    return (
        f"the budget's last {max(left, 0):.0f} s are too short for a trial (a complete one "
        f"takes about {typical:.0f} s): no trial started in them"
    )


@dataclass
class Queued:
    """What ``queue_trials`` did: notes for the user, and the fixed configurations a
    budgeted search is still to queue, in order, as it needs tickets."""

    notes: list[str]
    pending: tuple[Fixed, ...] = ()


class Queuing(Protocol):
    """What queueing a search's tickets reads of its session (``session.Session``)."""

    study: optuna.Study
    settings: SearchSettings
    space: SearchSpace
    warm: WarmStart | None


def queue_trials(session: Queuing, owner: Owner = WORKERS, *, lazy: bool = False) -> Queued:
    """Queue this search's ``--trials`` tickets for ``owner``: first the tickets of
    searches that are gone (adopted), then new ones. A new study starts with the
    warm-start configurations, then the space's baseline and portfolio.

    ``lazy``: queue one ticket now (the first fixed configuration, if any); the search adds
    the others one at a time as it runs (``queue.Refill``), so a budget that ends leaves
    nothing queued behind it."""
    study, settings, warm = session.study, session.settings, session.warm
    notes = []
    adopted = adopt(study, owner, settings.trials) if owner != WORKERS else 0
    if adopted:
        notes.append(f"resuming: {adopted} queued trials left by a search that stopped run first")
    new = settings.trials - adopted
    if new <= 0 or (lazy and adopted):
        return Queued(notes)
    if study.get_trials(deepcopy=False):
        add_tickets(study, 1 if lazy else new, owner=owner)
        ignored = ["--warm-start ignored: the study already has trials"] if warm else []
        return Queued(notes + ignored)
    fixed: list[Fixed] = []
    if warm:
        fixed = [(dict(p), o) for p, o in zip(warm.configurations, warm.origins, strict=True)]
    fixed += [(p, o) for p, o in session.space.queued_first if all(p != q for q, _ in fixed)]
    fixed = fixed[:new]
    now = 1 if lazy else new
    add_tickets(study, now, [p for p, _ in fixed], [o for _, o in fixed], owner=owner)
    notes += list(warm.skipped) if warm else []
    for number, (_, origin) in enumerate(fixed):
        given = origin == "baseline" or origin.startswith("portfolio")
        what = f"the space's {origin}" if given else f"warm start from {origin}"
        notes.append(f"trial {number} is {what}")
    return Queued(notes, tuple(fixed[now:]) if lazy else ())
