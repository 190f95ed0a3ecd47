"""The ``automl`` command: parse, call, print, and map errors to exit codes.

Configuration and input errors print one line and exit with 2; a refused promotion exits
with 1; Ctrl-C exits with 130 and SIGTERM with 143, after the runs are closed and a
summary is shown. Each command lives in its module by domain (``search``, ``distributed``,
``models`` ...); this module composes them into ``app``, in one list.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from automl import __version__
from automl.cli import compare, continual, dashboard, distributed, insight, models, proxy, search
from automl.cli.common import (
    LONGEST,
    USAGE,
    console,
    errors,
    one_line,
    sigterm_as_interrupt,
)
from automl.cli.ui import ui
from automl.errors import AutomlError

app = typer.Typer(
    help="Search CNN architectures, augmentations and training settings with Optuna; "
    "record everything in MLflow; promote, predict with and export the models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# The commands, in the order ``automl --help`` lists them; each module owns its commands
# and this list composes them (no module registers itself on import).
app.command("search")(search.search_command)
app.command()(distributed.worker)
app.command()(dashboard.dashboard)
app.command()(ui)
app.command("storage-proxy")(proxy.storage_proxy)
app.command()(models.models)
app.command()(models.promote)
app.command()(models.rollback)
app.command()(models.predict)
app.command()(models.export)
app.command()(models.serve)
app.command()(insight.evaluate)
app.command()(insight.report)
app.command()(compare.compare)
app.command()(continual.retrain)
app.command()(continual.drift)
app.add_typer(distributed.study_app, name="study")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"automl {__version__}")
        raise typer.Exit()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (for tests and ``python -m automl``)."""
    try:
        result = app(args=argv, prog_name="automl", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        errors.print("aborted")
        return 130
    except typer.TyperException as exc:  # a usage error: click's own wording, one line
        message = " ".join(exc.format_message().split())
        errors.print(f"[red]error[/]: {one_line(message)}", highlight=False)
        return USAGE
    except AutomlError as exc:
        errors.print(f"[red]error[/]: {one_line(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())


__all__ = ["LONGEST", "app", "main", "run", "sigterm_as_interrupt"]
