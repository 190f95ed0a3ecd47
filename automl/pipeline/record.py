"""The search's run closed with what it did: trial counts, the registered model's
figures and where it is, and the story the MLflow UI tells (``automl.insight.story``)."""

from __future__ import annotations

import time

from automl.insight.story import Search, tell
from automl.pipeline.outcome import Conclusion, SearchOutcome
from automl.records import RunTag, StudyState
from automl.search.scheduler.runner import TrialsRun
from automl.search.scheduler.session import Session
from automl.search.scheduler.signals import hurried
from automl.tracking import TRACKING_ERRORS


def close_parent_run(
    session: Session, run: TrialsRun, conclusion: Conclusion, status: str
) -> SearchOutcome:
    """Tell the story, close the search's run as ``status`` and return the outcome."""
    notes = list(run.notes)
    story = None
    try:  # the record is complete without it: a store that fails here is only said
        if hurried():  # a second Ctrl-C: the statuses first, the story another time
            notes.append("stopped at once: the study's story was not written to MLflow")
        else:
            story = tell(_told(session, run, conclusion), session.tracker)
    except TRACKING_ERRORS as exc:
        notes.append(f"the study's story was not written to MLflow: {exc}")
    outcome = SearchOutcome(
        settings=session.settings, study=session.study, data=session.data,
        parent_run_id=session.parent_run_id, tracker=session.tracker, run=run,
        conclusion=conclusion, wall_seconds=time.perf_counter() - session.started,
        story=story, notes=tuple(notes),
    )  # fmt: skip
    session.tracker.finish_study_run(
        session.parent_run_id, status, _metrics(outcome), _tags(outcome)
    )
    return outcome


def _told(session: Session, run: TrialsRun, conclusion: Conclusion) -> Search:
    settings = session.settings
    return Search(
        session.study, session.parent_run_id, conclusion.registration,
        [t.number for t in run.trials], settings.objectives, settings.space_file.name,
        settings.dataset, settings.tracking_uri, run.interrupted,
    )  # fmt: skip


def _metrics(outcome: SearchOutcome) -> dict[str, float]:
    states = outcome.states
    metrics: dict[str, float] = {
        "trials_complete": states.get("COMPLETE", 0),
        "trials_pruned": states.get("PRUNED", 0),
        "trials_failed": states.get("FAIL", 0),
        "epochs_run": outcome.epochs_run,
    }
    if outcome.registration is not None:
        metrics["best_val_acc"] = outcome.registration.val_acc
        # the evaluation's name: it logs the same figure, as served, on the same run
        metrics["test_accuracy"] = outcome.registration.test_acc
    metrics["wall_seconds"] = outcome.wall_seconds
    return metrics


def _tags(outcome: SearchOutcome) -> dict[str, str]:
    state = StudyState.INTERRUPTED if outcome.interrupted else StudyState.DONE
    tags = {RunTag.STATE: state}
    reg = outcome.registration
    if reg is not None:
        tags[RunTag.BEST_TRIAL] = str(reg.trial_number)
        tags[RunTag.REGISTERED_MODEL] = reg.uri
        tags[RunTag.REGISTERED_VERSION] = f"{reg.name}/{reg.version}"
        if reg.run_id:  # the version's source run
            tags[RunTag.BEST_TRIAL_RUN_ID] = reg.run_id
    return tags
