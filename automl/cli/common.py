"""What every command shares: the consoles (a terminal's width, or 120 columns in a log),
signals handled as interrupts, the options of search settings other commands reuse, and
errors shown as one safe line."""

from __future__ import annotations

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

from automl.errors import STOP, Terminated
from automl.search.options import Option
from automl.search.settings import SearchSettings, option_of


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


USAGE = 2  # exit code of every usage and configuration error
LONGEST = 600  # characters of an error line; a 5,000-character name is not repeated whole


def one_line(message: str) -> str:
    """An error as one safe line: control characters (a name holding terminal escape
    sequences, a newline) shown as escapes, never acted on; very long ones shortened."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    if len(text) > LONGEST:
        text = f"{text[: LONGEST - 40]}… ({len(text) - LONGEST + 40} more characters)"
    return escape(text)  # and no rich markup either
