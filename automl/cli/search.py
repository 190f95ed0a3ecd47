"""``automl search`` and ``automl study create``: their options come from ``SearchSettings``.

Each field of the settings carries its flag, help and check, so both commands are built
from the same table (``settings_command``): an option added there appears in both, with
the same help, and reaches the search whole.
"""

from __future__ import annotations

import dataclasses
import inspect
import signal
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from automl.cli.common import console, print_note, sigterm_as_interrupt, typer_option
from automl.errors import Terminated
from automl.search.options import Option
from automl.search.settings import SearchSettings


def settings_command(body: Callable[[SearchSettings], None]) -> Callable[..., None]:
    """A command taking every search option, calling ``body`` with the checked settings."""
    hints = typing.get_type_hints(SearchSettings)
    parameters, annotations = [], {}
    for item in dataclasses.fields(SearchSettings):
        spec: Option = item.metadata["option"]
        name = spec.name or item.name
        default = item.default
        if spec.typed is str and isinstance(default, tuple):
            default = ",".join(default)
        annotation = Annotated[spec.typed or hints[item.name], typer_option(spec)]  # type: ignore[valid-type]
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default))
        annotations[name] = annotation

    def command(**values: Any) -> None:
        body(SearchSettings.from_options(values).resolve().check())

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p.replace(annotation=annotations[p.name]) for p in parameters]
    )
    command.__annotations__ = annotations
    command.__name__ = body.__name__
    command.__doc__ = body.__doc__
    return command


def search(settings: SearchSettings) -> None:
    """Run an Optuna study of CNN trials, record it in MLflow and register the best model."""
    from automl.cli.display import SearchDisplay, print_summary
    from automl.pipeline import Interrupted, run_search

    # The summary too is printed while signals are handled: a Ctrl-C pressed again while
    # it is read from the stores only hurries it.
    with sigterm_as_interrupt():
        try:
            with SearchDisplay(console, settings.trials) as display:
                outcome = run_search(settings, hooks=display.hooks)
        except Interrupted as stop:
            print_summary(console, stop.args[0])
            terminated = isinstance(stop.args[1], Terminated)
            code = 143 if terminated else 130
        else:
            print_summary(console, outcome)
            return
    # Stopped, its records closed: all that is left is exiting, which a burst of Ctrl-C
    # still arriving (or held back by a busy thread) must not turn into a traceback.
    signal.signal(signal.SIGINT, _exiting)
    signal.signal(signal.SIGTERM, _exiting)
    raise typer.Exit(code)


def _exiting(signum: int, frame: object) -> None:
    """A signal after the search stopped: nothing is left to stop."""


def create(settings: SearchSettings) -> None:
    """Create the study and queue its trials without running any: start workers next."""
    from rich.markup import escape

    from automl.cli.display import print_data_report
    from automl.search.hooks import Hooks
    from automl.search.scheduler.queue import queue_trials
    from automl.search.scheduler.session import prepare
    from automl.stores import mask_url

    with console.status("creating the study…") as status:
        hooks = Hooks(
            on_stage=lambda m: status.update(f"{escape(m)}…"),
            on_note=print_note,
            on_data=lambda report: print_data_report(console, report),
        )
        session = prepare(settings, hooks, mode="workers")
        for note in queue_trials(session).notes:  # the shared queue, for `automl worker`
            print_note(note)
    queued = sum(1 for t in session.study.trials if t.state.name == "WAITING")
    name = session.study.study_name
    console.print(
        f"study [bold]{name}[/] has {queued} queued trials; parent run "
        f"{session.parent_run_id}. Start workers anywhere with:\n  automl worker --study "
        f"{name} --storage {mask_url(settings.storage)} --tracking-uri "
        f"{mask_url(settings.tracking_uri)}\nand when they are done: automl study finish "
        f"{name} --storage ... --tracking-uri ..."
    )


search_command = settings_command(search)
create_command = settings_command(create)
