"""Continual learning commands: retrain a registered model on new data, check data drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from automl.cli.common import DataDirOption, TrackingOption, console, print_note
from automl.stores import DEFAULT_TRACKING

if TYPE_CHECKING:
    from automl.release.drift import DriftReport
    from automl.release.retrain import RetrainOutcome

ModelArgument = Annotated[str, typer.Argument(help="models:/NAME@ALIAS or models:/NAME/V.")]
DatasetOption = Annotated[
    str, typer.Option(help="The new data: a data set name or imagefolder:PATH.", show_default=False)
]


def retrain(
    model_uri: ModelArgument,
    dataset: DatasetOption,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs to train. [default: the model's own]")
    ] = None,
    from_scratch: Annotated[
        bool,
        typer.Option(
            "--from-scratch/--from-weights",
            help="Start from fresh weights, or fine-tune the model's own.",
        ),
    ] = False,
    new_head: Annotated[
        bool, typer.Option(help="Allow other classes than the model's: the head is rebuilt.")
    ] = False,
    lr_scale: Annotated[
        float | None,
        typer.Option(
            help="Multiply the learning rate. [default: 0.1 from weights, 1 from scratch]"
        ),
    ] = None,
    alias: Annotated[str, typer.Option(help="Alias given to the new version.")] = "candidate",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and shuffling.")] = 0,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment. [default: the model's own]")
    ] = None,
    weights_dir: Annotated[
        Path | None, typer.Option(help="Pretrained backbone weights, for --from-scratch.")
    ] = None,
    data_dir: DataDirOption = None,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
) -> None:
    """Train a registered model's exact configuration on new data; register it as a candidate."""
    from automl.release.retrain import RetrainOptions
    from automl.release.retrain import retrain as run_retrain
    from automl.tracking import store_errors_in

    options = RetrainOptions(
        dataset=dataset, data_dir=data_dir, epochs=epochs, from_scratch=from_scratch,
        new_head=new_head, lr_scale=lr_scale, alias=alias, device=device, seed=seed,
        weights_dir=weights_dir, experiment=experiment,
    ).check()  # fmt: skip
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[figures]}"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("preparing", total=None, figures="")

        def on_stage(message: str) -> None:
            progress.update(task, description=message)
            if message.startswith("training"):
                progress.update(task, total=int(message.split()[1]), completed=0)

        with store_errors_in(tracking_uri):
            outcome = run_retrain(
                model_uri, tracking_uri, options, on_stage=on_stage,
                on_epoch=lambda r: progress.update(
                    task, completed=r.epoch,
                    figures=f"val_acc {r.val_acc:.4f}  loss {r.train_loss:.3f}",
                ),
            )  # fmt: skip
    _print_retrain(outcome)


def _print_retrain(outcome: RetrainOutcome) -> None:
    for note in outcome.notes:
        print_note(note)
    source = outcome.source
    table = Table(
        title=f"{source.name}: version {source.version} (parent) and version {outcome.version} "
        f"(candidate, retrained {outcome.epochs} epochs from {outcome.start})",
        title_justify="left",
    )
    table.add_column("test split")
    table.add_column("images", justify="right")
    table.add_column(f"parent v{source.version}", justify="right")
    table.add_column(f"candidate v{outcome.version}", justify="right")
    table.add_column("change", justify="right")
    for row in outcome.comparisons:
        change = row.candidate_acc - row.parent_acc
        colour = "green" if change >= 0 else "red"
        table.add_row(
            row.split, str(row.images), f"{row.parent_acc:.4f}", f"{row.candidate_acc:.4f}",
            f"[{colour}]{change:+.4f}[/]",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"val_acc {outcome.start_val_acc:.4f} before training -> "
        f"{outcome.history[-1].val_acc:.4f} after {outcome.epochs} epochs "
        f"(lr x{outcome.lr_scale:g}, {outcome.seconds:.1f} s). Registered {outcome.uri} with "
        f"the alias '{outcome.alias}'; MLflow run {outcome.run_id}.\nPromote it with the gate "
        f"on the new data: automl promote {source.name} --version {outcome.version} "
        f"--dataset {outcome.dataset}"
    )


def drift(
    model_uri: ModelArgument,
    dataset: DatasetOption,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for scripts.")
    ] = False,
    data_dir: DataDirOption = None,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
) -> None:
    """Compare new data with a model's training data; say whether a retrain is advised."""
    from automl.release.drift import check_drift
    from automl.tracking import store_errors_in

    with console.status("checking drift…") as status, store_errors_in(tracking_uri):
        report = check_drift(
            model_uri, dataset, tracking_uri, data_dir=data_dir,
            on_stage=lambda m: status.update(f"{m}…"),
        )  # fmt: skip
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
        return
    _print_drift(report)


def _print_drift(report: DriftReport) -> None:
    table = Table(
        title=f"{report.model}: {report.dataset} ({report.new_images} images) against its "
        f"training data {report.reference} ({report.reference_images} images)",
        title_justify="left",
    )
    for column in ("check", "training", "new", "statistic", "threshold", "drift"):
        table.add_column(column, justify="left" if column == "check" else "right")
    for check in report.checks:
        flag = "[red]yes[/]" if check.drifted else "[green]no[/]"
        table.add_row(
            check.name, f"{check.reference:.4f}", f"{check.new:.4f}", f"{check.statistic:.4f}",
            f"{check.threshold:g}", flag,
        )  # fmt: skip
    console.print(table)
    shifted = sorted(report.class_shares.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1]))[:5]
    console.print(
        "largest class share changes: "
        + ", ".join(f"{name} {a:.3f}->{b:.3f}" for name, (a, b) in shifted)
    )
    if report.advised:
        console.print("[bold red]retrain advised[/]:")
        for reason in report.reasons:
            console.print(f"  - {reason}")
        console.print(
            f"next: automl retrain {report.model} --dataset {report.dataset}"
            " (train on old and new data together if classes are missing from the new data)"
        )
    else:
        console.print("[bold green]no retrain needed[/]: the new data looks like the training data")
    console.print(f"logged to MLflow run {report.run_id}")
