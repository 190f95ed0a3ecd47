"""Insight commands: evaluate a model, report on a study."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from automl.cli.common import (
    DataDirOption,
    StorageOption,
    TrackingOption,
    console,
    setting_option,
)
from automl.errors import ConfigError
from automl.files import check_output_file, check_output_folder, replacing_in, write_atomic
from automl.records import RunArtifact, StudyRecord, StudyRunTags, VersionTag, VersionTags
from automl.stores import DEFAULT_STORAGE, DEFAULT_TRACKING

if TYPE_CHECKING:  # the commands import what they use when they run
    from automl.insight.report import MlflowPages
    from automl.tracking import Tracker


def evaluate(
    model_uri: Annotated[
        str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/V or a folder.")
    ],
    dataset: Annotated[
        str | None,
        typer.Option(help="Data set to test on. [default: the one recorded with the model]"),
    ] = None,
    data_dir: DataDirOption = None,
    group_level: Annotated[
        bool,
        typer.Option(help="The image folder is laid out as GROUP/CLASS/...: report per group."),
    ] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Folder for the figures.")
    ] = None,
    log: Annotated[bool, typer.Option(help="Attach the figures to the registered version.")] = True,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
) -> None:
    """Accuracy, per-class and per-group fairness, calibration, robustness and saliency."""
    from automl.data import load_dataset, load_recorded, split_digest
    from automl.insight.evaluate import evaluate_model, summary_rows, write_evaluation
    from automl.tracking import Registry, load_image_model

    if output is not None:  # before the model is fetched: a file there is said at once
        check_output_folder(output)
    model = load_image_model(model_uri, tracking_uri)
    registry = Registry(tracking_uri) if model_uri.startswith("models:/") else None
    version = registry.resolve(model_uri) if registry is not None else None  # a folder: none
    folder = output or Path(
        f"evaluation-{version.name}-v{version.version}" if version else RunArtifact.EVALUATION
    )
    check_output_folder(folder)
    with console.status("loading the test split…"):
        if dataset is None and version is not None and VersionTags.of(version.tags).dataset:
            data = load_recorded(version.tags, data_dir)
        else:
            name = dataset or str(model.preprocess.get("dataset", ""))
            data = load_dataset(name, data_dir, group_level=group_level)
    if list(data.classes) != model.classes:
        raise ConfigError(
            f"--dataset: its classes ({', '.join(data.classes[:5])}...) are not the model's "
            f"({', '.join(model.classes[:5])}...)"
        )
    recorded = model.preprocess.get("test_digest")
    if recorded and recorded != split_digest(data.test):
        console.print("[yellow]note[/]: this is not the test split recorded with the model")
    groups = None
    if data.group_names and data.test.groups is not None:
        groups = (data.test.groups.numpy(), list(data.group_names))
    with console.status("evaluating…") as status:
        evaluation = evaluate_model(
            model, data.test, groups=groups, progress=lambda s: status.update(f"{s}…")
        )
    with replacing_in(folder) as drafts:  # each file replaced whole, never through a link
        files = [folder / path.name for path in write_evaluation(evaluation, drafts)]
    table = Table(
        title=f"{model_uri} on {data.name}: {len(data.test)} test images", title_justify="left"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in summary_rows(evaluation):
        table.add_row(name, value)
    console.print(table)
    console.print(f"wrote {len(files)} files to {folder}")
    if log and registry is not None and version is not None:
        registry.log_to_version(
            version.name, version.version, folder, RunArtifact.EVALUATION, evaluation.metrics()
        )
        console.print(f"attached to version {version.version} of '{version.name}'")


def report(
    study_name: Annotated[str, typer.Argument(metavar="STUDY", help="The Optuna study.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write.")] = Path(
        "report.html"
    ),
    storage: StorageOption = DEFAULT_STORAGE,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
    ui_url: setting_option("ui_url") = "",  # type: ignore[valid-type]
) -> None:
    """One self-contained HTML page: summary, leaderboard, data, study plots, evaluation."""
    import optuna

    from automl.insight.report import SECTIONS, build_report
    from automl.insight.study_plots import study_plots
    from automl.stores import open_storage
    from automl.tracking import Tracker

    check_output_file(output)  # before the study is read
    store = open_storage(storage, create=False)
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(store)) or "none"
        raise ConfigError(
            f"no study named '{study_name}' in the storage (studies: {names})"
        ) from None
    tracker = Tracker(tracking_uri, None)
    parent_id = StudyRecord.of(study).parent_run_id
    with tempfile.TemporaryDirectory() as tmp, console.status("gathering the study's records…"):
        folder = Path(tmp)
        parent = tracker.run_info(parent_id) if parent_id else None
        data_path = (
            tracker.download(parent_id, RunArtifact.DATA_REPORT, folder) if parent_id else None
        )
        evaluation = (
            tracker.download(parent_id, RunArtifact.EVALUATION, folder) if parent_id else None
        )
        plots, skipped = study_plots(study, folder / "plots")
        pages = _mlflow_pages(tracker, study.study_name, parent_id, parent, ui_url)
        html = build_report(
            study,
            parent=parent,
            data_report=json.loads(data_path.read_text()) if data_path else None,
            plots=folder / "plots" if plots else None,
            plots_skipped=skipped,
            evaluation=evaluation,
            pages=pages,
        )
    write_atomic(output, html)  # replaced whole, never written through a link
    images = html.count("<img ")
    console.print(
        f"wrote {output} ({len(html) / 1e6:.1f} MB, {len(SECTIONS)} sections, {images} images); "
        "it opens offline in any browser"
    )


def _mlflow_pages(
    tracker: Tracker,
    study: str,
    parent_id: str | None,
    parent: dict[str, Any] | None,
    ui_url: str = "",
) -> MlflowPages | None:
    """Where the report links to in the MLflow UI (None without the study's run)."""
    from automl.insight.report import MlflowPages
    from automl.tracking import Registry
    from automl.tracking.ui import UiLinks, address, has_view, open_command, served, view_key

    if not parent_id or parent is None:
        return None
    uri = tracker.tracking_uri
    experiment_id = str(parent["experiment_id"])
    links = UiLinks(experiment_id).full(uri, local=address(uri, ui_url), ui_url=ui_url)
    tags = StudyRunTags.of(parent["tags"])
    model = None
    name, best_trial = tags.registered_name, tags.best_trial
    if name and best_trial is not None:
        identity = {VersionTag.STUDY: study, VersionTag.TRIAL_NUMBER: best_trial}
        version = Registry(uri).find_version(name, identity)
        model = (name, version) if version is not None else None
    key = view_key(study)
    return MlflowPages(
        links=links,
        start="" if served(uri) else open_command(uri),
        parent_run_id=parent_id,
        view=key if has_view(tracker, experiment_id, key) else None,
        model=model,
    )
