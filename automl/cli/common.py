"""What every command shares: the consoles (a terminal's width, or 120 columns in a log),
signals handled as interrupts, the options of search settings other commands reuse, and
errors shown as one safe line."""

from __future__ import annotations

import contextlib
import os
import sys
import typing
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from automl.search.options import Option
from automl.search.scheduler.signals import stopping_on_signals
from automl.search.settings import SearchSettings, option_of


def _width() -> int | None:
    """Terminals report their width; logs and pipes get 120 columns instead of 80."""
    return None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120


class PipeSafe:
    """``sys.stdout`` (or ``sys.stderr``) as it is at each write, which outlives its reader:
    when the pipe it writes to closes (``automl search | tee log`` stopped by the same
    Ctrl-C), its descriptor is pointed at the null device instead of raising
    ``BrokenPipeError`` in the middle of closing the trial's and the search's records."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _stream(self) -> Any:
        stream = getattr(sys, self.name)
        return getattr(stream, "rich_proxied_file", stream)  # beneath a live display's proxy

    def write(self, text: str) -> int:
        try:
            return int(self._stream().write(text))
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream().flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        """What is left to write, now and at exit, goes to the null device."""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream().fileno())
            os.close(null)

    def __getattr__(self, name: str) -> Any:
        if name == "rich_proxied_file":  # this object is the file rich writes to
            raise AttributeError(name)
        return getattr(self._stream(), name)


console = Console(file=typing.cast(IO[str], PipeSafe("stdout")), width=_width(), soft_wrap=True)


# Ctrl-C and SIGTERM raised once as interrupts while a command runs; the signals after the
# first only hurry its clean-up (``automl.search.scheduler.signals``).
sigterm_as_interrupt = stopping_on_signals


errors = Console(file=typing.cast(IO[str], PipeSafe("stderr")), width=_width(), soft_wrap=True)


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


def print_note(message: str, on: Console | None = None) -> None:
    """A note in yellow; its text is the user's or the data's, so never read as markup."""
    (on or console).print(f"[yellow]note[/]: {escape(message)}")
