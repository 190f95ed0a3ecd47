"""Concluding a search: its best model registered (``automl.release``), then evaluated
and the study's plots drawn (``automl.insight``), each step said as it starts."""

from __future__ import annotations

import time
from dataclasses import replace

from optuna.trial import TrialState

from automl.insight.recording import evaluate_and_record, record_study_plots
from automl.pipeline.outcome import Conclusion
from automl.release.conclude import Concluding, register_best
from automl.search.scheduler.session import Session


def concluding(session: Session) -> Concluding:
    """How the settings ask this search to conclude."""
    settings = session.settings
    return Concluding(
        model_name=settings.registered_model,
        parent_run_id=session.parent_run_id,
        dataset_options={"image_size": settings.image_size, "group_level": settings.group_level},
        refit=settings.refit,
        ensemble=settings.members,
        mirror=settings.tta,
        weights_dir=settings.weights_dir,
    )


def register(session: Session) -> Conclusion:
    """Register the best model (the Pareto front's with several objectives), if any trial
    completed."""
    complete = any(t.state == TrialState.COMPLETE for t in session.study.get_trials(deepcopy=False))
    if not complete:
        return Conclusion()
    session.hooks.on_stage("evaluating the best trial on the test split and registering it")
    start = time.perf_counter()
    registrations = register_best(
        session.study, session.data, concluding(session), tracker=session.tracker,
        device=session.device, on_stage=session.hooks.on_stage,
    )  # fmt: skip
    return Conclusion(tuple(registrations), time.perf_counter() - start)


def evaluate(session: Session, registered: Conclusion) -> Conclusion:
    """Evaluate the registered model and draw the study plots, as the settings ask."""
    hooks, start = session.hooks, time.perf_counter()
    evaluation = None
    first = registered.registration
    if session.settings.evaluate and first is not None:
        hooks.on_stage("evaluating the registered model (metrics, robustness, saliency)")
        evaluation = evaluate_and_record(
            first.name, first.version, session.data, tracker=session.tracker,
            parent_run_id=session.parent_run_id, on_stage=hooks.on_stage,
        )  # fmt: skip
    if session.settings.evaluate:
        hooks.on_stage("drawing the study plots")
        skipped = record_study_plots(session.study, session.tracker, session.parent_run_id)
        for plot, why in skipped.items():
            hooks.on_note(f"study plot '{plot}' skipped: {why}")
    return replace(registered, evaluation=evaluation, insight_seconds=time.perf_counter() - start)
