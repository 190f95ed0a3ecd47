"""``automl search``: run a study, record it, register its best model."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from automl.cli import StorageOption, TrackingOption, app, console, sigterm_as_interrupt
from automl.config import (
    DEFAULT_SPACE,
    DEFAULT_STORAGE,
    DEFAULT_TRACKING,
    PRUNERS,
    SAMPLERS,
    resolve_space,
)
from automl.errors import Terminated

if TYPE_CHECKING:
    from automl.config import SearchSettings


@app.command()
def search(
    trials: Annotated[int, typer.Option("--trials", "-n", help="New trials to run.")] = 100,
    timeout: Annotated[
        float | None, typer.Option(help="Stop starting trials after this many seconds.")
    ] = None,
    space: Annotated[
        Path,
        typer.Option(
            help="Search space YAML file, or a bundled one by name (default, images).",
            show_default=True,
        ),
    ] = DEFAULT_SPACE,
    dataset: Annotated[
        str,
        typer.Option(
            help="digits (built in), mnist, fashion-mnist, kmnist, cifar10, cifar100, svhn, "
            "or imagefolder:PATH."
        ),
    ] = "digits",
    study_name: Annotated[
        str | None,
        typer.Option(help="Optuna study; an existing one is resumed. [default: DATASET-SPACE]"),
    ] = None,
    storage: StorageOption = DEFAULT_STORAGE,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment. [default: the study name]")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Registered model name. [default: the study name]")
    ] = None,
    sampler: Annotated[
        str, typer.Option(help="|".join(SAMPLERS) + " (nsga2: several objectives)")
    ] = "tpe",
    pruner: Annotated[str, typer.Option(help="|".join(PRUNERS))] = "hyperband",
    max_epochs: Annotated[int, typer.Option(help="Upper bound on any trial's epochs.")] = 20,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda|cuda:N")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the sampler and of every trial.")] = 0,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where data sets are stored. [default: ~/.cache/automl/data]"),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(help="Side images are resized to (image folders). [default: median, <=128]"),
    ] = None,
    weights_dir: Annotated[
        Path | None,
        typer.Option(help="Pretrained backbone weights (.pth); then torch's hub cache."),
    ] = None,
    group_level: Annotated[
        bool,
        typer.Option(help="Image folder laid out as GROUP/CLASS/...: fairness per group."),
    ] = False,
    evaluate: Annotated[
        bool,
        typer.Option(help="Evaluate the registered model and draw the study plots."),
    ] = True,
    objective: Annotated[
        str,
        typer.Option(
            help="accuracy, or accuracy plus any of latency, params, robust_accuracy "
            "(comma-separated): a multi-objective search registers its Pareto front."
        ),
    ] = "accuracy",
    max_params: Annotated[
        int | None, typer.Option(help="Reject networks with more parameters, before training.")
    ] = None,
    max_latency_ms: Annotated[
        float | None,
        typer.Option(help="Reject networks slower than this per image, before training."),
    ] = None,
    jobs: Annotated[int, typer.Option(help="Trials run in parallel, one process each.")] = 1,
    trials_per_gpu: Annotated[
        int, typer.Option(help="Parallel trials packed on one GPU (with --jobs).")
    ] = 1,
    compile: Annotated[
        bool, typer.Option(help="torch.compile each trial's network (pays off on long trials).")
    ] = False,
    deterministic: Annotated[
        bool, typer.Option(help="Deterministic kernels: same seed, same metrics (slower on GPU).")
    ] = False,
    warm_start: Annotated[
        str | None,
        typer.Option(
            metavar="STUDY[:K]",
            help="Run the K best configurations (default 5) of an earlier study first.",
        ),
    ] = None,
    warm_start_storage: Annotated[
        str | None,
        typer.Option(help="The Optuna storage of the --warm-start study [default: --storage]."),
    ] = None,
) -> None:
    """Run an Optuna study of CNN trials, record it in MLflow and register the best model."""
    settings = _settings(locals())  # first: locals() holds the options only
    from automl.console import SearchDisplay, print_summary
    from automl.runner import Interrupted, run_search

    try:
        with sigterm_as_interrupt(), SearchDisplay(console, trials) as display:
            outcome = run_search(settings, hooks=display.hooks)
    except Interrupted as stop:
        print_summary(console, stop.args[0])
        terminated = isinstance(stop.args[1], Terminated)
        raise typer.Exit(143 if terminated else 130) from None
    print_summary(console, outcome)


def _settings(values: dict[str, Any]) -> SearchSettings:
    """The command's options as checked settings (the same for search and study create)."""
    from automl.config import SearchSettings

    values = dict(values)
    objective = values.pop("objective")
    values["objectives"] = tuple(name.strip() for name in objective.split(",") if name.strip())
    values["space"] = resolve_space(values["space"])
    return SearchSettings(**values).check()


def create(**values: Any) -> None:
    """Create the study and queue its trials without running any: start workers next."""
    from automl.config import mask_url
    from automl.console import print_data_report
    from automl.hooks import Hooks
    from automl.runner import queue_trials
    from automl.session import prepare

    settings = _settings(values)
    with console.status("creating the study…") as status:
        hooks = Hooks(
            on_stage=lambda m: status.update(f"{m}…"),
            on_note=lambda m: console.print(f"[yellow]note[/]: {m}"),
            on_data=lambda report: print_data_report(console, report),
        )
        session = prepare(settings, hooks, mode="workers")
        for note in queue_trials(session):
            console.print(f"[yellow]note[/]: {note}")
    queued = sum(1 for t in session.study.trials if t.state.name == "WAITING")
    console.print(
        f"study [bold]{settings.study}[/] has {queued} queued trials; parent run "
        f"{session.parent_run_id}. Start workers anywhere with:\n  automl worker --study "
        f"{settings.study} --storage {mask_url(settings.storage)} --tracking-uri "
        f"{mask_url(settings.tracking_uri)}\nand when they are done: automl study finish "
        f"{settings.study} --storage ... --tracking-uri ..."
    )


create.__signature__ = inspect.signature(search)  # type: ignore[attr-defined]
create.__annotations__ = dict(search.__annotations__)
