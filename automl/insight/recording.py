"""After a search registers its model: the registered version evaluated as served, and
the study's plots, recorded on the parent run (and the evaluation on the version)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from automl.data import ImageData
from automl.records import RunArtifact
from automl.tracking import Registry, Tracker, load_image_model

if TYPE_CHECKING:
    from automl.insight.evaluate import Evaluation


def evaluate_and_record(
    name: str,
    version: int,
    data: ImageData,
    *,
    tracker: Tracker,
    parent_run_id: str,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> Evaluation:
    """Evaluate the registered version as served; record figures and pictures on the parent
    run and on the version's logged model."""
    from automl.insight.evaluate import evaluate_model, write_evaluation

    model = load_image_model(f"models:/{name}/{version}")
    groups = None
    if data.group_names and data.test.groups is not None:
        groups = (data.test.groups.numpy(), list(data.group_names))
    evaluation = evaluate_model(model, data.test, groups=groups, progress=on_stage)
    with tempfile.TemporaryDirectory() as folder:
        files = Path(folder, RunArtifact.EVALUATION)
        write_evaluation(evaluation, files)
        metrics = evaluation.metrics()
        tracker.log_folder(parent_run_id, files, RunArtifact.EVALUATION)
        tracker.log_metrics(parent_run_id, metrics)
        with tracker.timed():
            Registry(tracker.tracking_uri).log_to_version(
                name, version, files, RunArtifact.EVALUATION, metrics
            )
    return evaluation


def record_study_plots(study: optuna.Study, tracker: Tracker, parent_run_id: str) -> dict[str, str]:
    """Study plots on the parent run; returns the plots skipped and why."""
    from automl.insight.study_plots import study_plots  # matplotlib: only when drawing

    with tempfile.TemporaryDirectory() as folder:
        plots = Path(folder, RunArtifact.STUDY_PLOTS)
        files, skipped = study_plots(study, plots)
        if files:
            tracker.log_folder(parent_run_id, plots, RunArtifact.STUDY_PLOTS)
    return skipped
