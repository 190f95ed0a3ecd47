"""``automl search``: run a study, record it, register its best model."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from automl.cli import TrackingOption, app, console
from automl.config import (
    DEFAULT_SPACE,
    DEFAULT_STORAGE,
    DEFAULT_TRACKING,
    PRUNERS,
    SAMPLERS,
    resolve_space,
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so runs are closed before exiting."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


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
    storage: Annotated[str, typer.Option(help="Optuna storage URL.")] = DEFAULT_STORAGE,
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
) -> None:
    """Run an Optuna study of CNN trials, record it in MLflow and register the best model."""
    from automl.config import SearchSettings
    from automl.console import SearchDisplay, print_summary
    from automl.runner import Interrupted, run_search

    settings = SearchSettings(
        trials=trials,
        space=resolve_space(space),
        dataset=dataset,
        study_name=study_name,
        storage=storage,
        tracking_uri=tracking_uri,
        experiment=experiment,
        model_name=model_name,
        sampler=sampler,
        pruner=pruner,
        max_epochs=max_epochs,
        device=device,
        seed=seed,
        timeout=timeout,
        data_dir=data_dir,
        image_size=image_size,
        weights_dir=weights_dir,
        group_level=group_level,
        evaluate=evaluate,
        objectives=tuple(name.strip() for name in objective.split(",") if name.strip()),
        max_params=max_params,
        max_latency_ms=max_latency_ms,
        jobs=jobs,
        trials_per_gpu=trials_per_gpu,
        compile=compile,
    ).check()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with SearchDisplay(console, trials) as display:
            outcome = run_search(settings, hooks=display.hooks)
    except Interrupted as stop:
        print_summary(console, stop.args[0])
        terminated = isinstance(stop.args[1], Terminated)
        raise typer.Exit(143 if terminated else 130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_summary(console, outcome)
