"""The ``automl`` command: parse, call, print, and map errors to exit codes.

Configuration and input errors print one line and exit with 2; a refused promotion exits
with 1; Ctrl-C exits with 130 and SIGTERM with 143, after the runs are closed and a
summary is shown. Each command lives in its own module and registers itself on ``app``.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from automl import __version__
from automl.errors import STOP, AutomlError, Terminated
from automl.search.options import Option
from automl.search.settings import SearchSettings, option_of

app = typer.Typer(
    help="Search CNN architectures, augmentations and training settings with Optuna; "
    "record everything in MLflow; promote, predict with and export the models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _width() -> int | None:
    """Terminals report their width; logs and pipes get 120 columns instead of 80."""
    return None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120


console = Console(width=_width(), soft_wrap=True)


def _stopper(kind: type[KeyboardInterrupt]) -> Callable[[int, object], None]:
    def stop(signum: int, frame: object) -> None:
        if not STOP:
            STOP.append(kind)  # kept, in case this raise is lost (see stop_if_asked)
        raise kind()

    return stop


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raised as ``Terminated`` while the block runs, so the running trial and the
    runs are closed as on Ctrl-C (and as PID 1 in a container, where an unhandled SIGTERM
    is ignored until the SIGKILL that follows). Both signals are also remembered, so an
    interrupt whose raise Python dropped still stops the search at the next epoch."""
    previous = signal.signal(signal.SIGTERM, _stopper(Terminated))
    interrupt = signal.getsignal(signal.SIGINT)
    if interrupt is signal.default_int_handler:  # not where SIGINT is ignored (nohup, &)
        signal.signal(signal.SIGINT, _stopper(KeyboardInterrupt))
    hook = sys.unraisablehook

    def quiet(unraisable: Any) -> None:  # a lost interrupt is acted on, not printed
        if not (STOP and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            hook(unraisable)

    sys.unraisablehook = quiet
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if interrupt is signal.default_int_handler:
            signal.signal(signal.SIGINT, interrupt)
        sys.unraisablehook = hook
        STOP.clear()


errors = Console(stderr=True, width=_width(), soft_wrap=True)


def typer_option(spec: Option) -> Any:
    """The typer option a search setting is given with on the command line."""
    return typer.Option(
        *spec.flags,
        help=spec.help,
        envvar=spec.envvar,
        metavar=spec.metavar,
        show_default=spec.show_default,
    )


def setting_option(name: str) -> Any:
    """A search setting's option for other commands (``--storage`` of ``worker``): the
    same flag, help and environment variable as ``automl search`` gives it."""
    return Annotated[typing.get_type_hints(SearchSettings)[name], typer_option(option_of(name))]


TrackingOption = setting_option("tracking_uri")
StorageOption = setting_option("storage")
DataDirOption = setting_option("data_dir")
DeviceOption = setting_option("device")
WeightsDirOption = setting_option("weights_dir")
CheckpointDirOption = setting_option("checkpoint_dir")
CheckpointSecondsOption = setting_option("checkpoint_seconds")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"automl {__version__}")
        raise typer.Exit()


USAGE = 2  # exit code of every usage and configuration error
LONGEST = 600  # characters of an error line; a 5,000-character name is not repeated whole


def one_line(message: str) -> str:
    """An error as one safe line: control characters (a name holding terminal escape
    sequences, a newline) shown as escapes, never acted on; very long ones shortened."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    if len(text) > LONGEST:
        text = f"{text[: LONGEST - 40]}… ({len(text) - LONGEST + 40} more characters)"
    return escape(text)  # and no rich markup either


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


# Each module registers its commands on ``app``, in the order ``automl --help`` lists them.
COMMAND_MODULES = (
    "search", "distributed", "dashboard", "proxy", "models", "insight", "continual",
)  # fmt: skip
for _module in COMMAND_MODULES:
    importlib.import_module(f"automl.cli.{_module}")
