"""The ``automl`` command: parse, call, print, and map errors to exit codes.

Configuration and input errors print one line and exit with 2; Ctrl-C exits with 130 and
SIGTERM with 143, after the runs are closed and a summary is shown.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import click
import typer
from rich.console import Console

from automl import __version__
from automl.config import DEFAULT_SPACE, DEFAULT_STORAGE, DEFAULT_TRACKING, PRUNERS, SAMPLERS
from automl.errors import AutomlError

app = typer.Typer(
    help="Search CNN architectures, augmentations and training settings with Optuna; "
    "record everything in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console()
errors = Console(stderr=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so runs are closed before exiting."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"automl {__version__}")
        raise typer.Exit()


@app.command()
def search(
    trials: Annotated[int, typer.Option("--trials", "-n", help="New trials to run.")] = 100,
    timeout: Annotated[
        float | None, typer.Option(help="Stop starting trials after this many seconds.")
    ] = None,
    space: Annotated[
        Path, typer.Option(help="Search space YAML file.", show_default=True)
    ] = DEFAULT_SPACE,
    dataset: Annotated[str, typer.Option(help="Data set: digits (built in).")] = "digits",
    study_name: Annotated[
        str | None,
        typer.Option(help="Optuna study; an existing one is resumed. [default: DATASET-SPACE]"),
    ] = None,
    storage: Annotated[str, typer.Option(help="Optuna storage URL.")] = DEFAULT_STORAGE,
    tracking_uri: Annotated[str, typer.Option(help="MLflow tracking URI.")] = DEFAULT_TRACKING,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment. [default: the study name]")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Registered model name. [default: the study name]")
    ] = None,
    sampler: Annotated[str, typer.Option(help="|".join(SAMPLERS))] = "tpe",
    pruner: Annotated[str, typer.Option(help="|".join(PRUNERS))] = "hyperband",
    max_epochs: Annotated[int, typer.Option(help="Upper bound on any trial's epochs.")] = 20,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda|cuda:N")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the sampler and of every trial.")] = 0,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where data sets are stored. [default: ~/.cache/automl/data]"),
    ] = None,
) -> None:
    """Run an Optuna study of CNN trials, record it in MLflow and register the best model."""
    from automl.config import SearchSettings
    from automl.console import SearchDisplay, print_summary
    from automl.study import Interrupted, run_search

    settings = SearchSettings(
        trials=trials,
        space=space,
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
    ).check()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with SearchDisplay(console, trials) as display:
            outcome = run_search(
                settings,
                hooks=display.hooks,
                on_trial_end=display.trial_end,
                on_stage=display.stage,
            )
    except Interrupted as stop:
        print_summary(console, stop.args[0])
        terminated = isinstance(stop.args[1], Terminated)
        raise typer.Exit(143 if terminated else 130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_summary(console, outcome)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (for tests and ``python -m automl``)."""
    try:
        result = app(args=argv, prog_name="automl", standalone_mode=False)
    except click.exceptions.ClickException as exc:
        exc.show(file=sys.stderr)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        errors.print("aborted")
        return 130
    except AutomlError as exc:
        errors.print(f"[red]error[/]: {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())
