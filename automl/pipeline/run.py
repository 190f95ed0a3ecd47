"""``run_search``: a search from its settings to its registered model; ``finish_study``:
the same conclusion for a study whose trials ``automl worker`` processes ran."""

from __future__ import annotations

import contextlib
import dataclasses

import optuna
from optuna.trial import TrialState

from automl.errors import StoreError
from automl.pipeline.conclusion import evaluate, register
from automl.pipeline.outcome import Conclusion, SearchOutcome
from automl.pipeline.record import close_parent_run
from automl.search.hooks import Hooks
from automl.search.scheduler.heartbeats import keep_search_alive
from automl.search.scheduler.owners import Owner
from automl.search.scheduler.queue import waiting
from automl.search.scheduler.runner import (
    TrialsInterrupted,
    TrialsRun,
    run_trials,
    wait_for_running,
)
from automl.search.scheduler.session import Session, prepare
from automl.search.settings import SearchSettings
from automl.tracking import TRACKING_ERRORS

CONCLUSION_ERRORS: tuple[type[BaseException], ...] = (StoreError, *TRACKING_ERRORS)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the search; args: the outcome so far and the signal."""


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
    try:
        run = run_trials(session)
    except TrialsInterrupted as stop:
        outcome = close_parent_run(session, stop.args[0], Conclusion(), "KILLED")
        raise Interrupted(outcome, stop.args[1]) from None
    # Alive through its conclusion too (minutes with an evaluation): a search started on the
    # study meanwhile must not take this one's open parent run for an abandoned one.
    with keep_search_alive(session.study, Owner(session.parent_run_id)):
        return _conclude(session, run)


def finish_study(session: Session) -> SearchOutcome:
    """Conclude a study whose trials workers ran: wait for the running ones, then register,
    evaluate, plot and close its parent run."""
    study = session.study
    numbers = {t.number for t in study.get_trials(deepcopy=False)}
    wait_for_running(study, numbers, session.close_stale)
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    left = waiting(study)
    run = TrialsRun(
        trials=study.get_trials(deepcopy=False, states=finished),
        seconds=0.0, optuna_seconds=0.0, tracking_seconds=0.0,
        notes=(f"{left} queued trials were not run; they stay queued",) if left else (),
    )  # fmt: skip
    return _conclude(session, run)


def _conclude(session: Session, run: TrialsRun) -> SearchOutcome:
    """Conclude and close the search's run. A tracking store that fails here is one line,
    and the run is closed as FAILED: the trials are safe in the study, and the next search
    on it registers its best. Ctrl-C or SIGTERM here (registering, evaluating) closes it as
    KILLED with what was concluded so far, as during the trials."""
    concluded: list[Conclusion] = [Conclusion()]  # what is done so far, step by step
    try:
        session.close_abandoned()  # searches killed while this one ran
        concluded.append(register(session))
        concluded.append(evaluate(session, concluded[-1]))
    except CONCLUSION_ERRORS as exc:
        with contextlib.suppress(Exception):  # the store may be the very thing that failed
            close_parent_run(session, run, concluded[-1], "FAILED")
        what = str(exc) if isinstance(exc, StoreError) else f"{session.tracker.what}: {exc}"
        raise StoreError(
            f"registering the best model failed ({what.splitlines()[0]}); the trials are "
            f"kept in study '{session.study.study_name}': the next search on it (--trials 1) "
            "registers its best"
        ) from None
    except KeyboardInterrupt as stop:
        stopped = dataclasses.replace(run, interrupted=True)
        outcome = close_parent_run(session, stopped, concluded[-1], "KILLED")
        raise Interrupted(outcome, stop) from None
    return close_parent_run(session, run, concluded[-1], "FINISHED")
