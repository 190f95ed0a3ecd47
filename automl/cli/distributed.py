"""Distributed search: ``automl worker`` and ``automl study create|status|finish``."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import typer
from rich.table import Table

from automl.cli.common import (
    CheckpointDirOption,
    CheckpointSecondsOption,
    DataDirOption,
    DeviceOption,
    StorageOption,
    TrackingOption,
    WeightsDirOption,
    console,
    one_line,
    sigterm_as_interrupt,
)
from automl.cli.search import create_command
from automl.environment import STUDY
from automl.errors import Terminated
from automl.stores import DEFAULT_STORAGE, DEFAULT_TRACKING

study_app = typer.Typer(
    help="Create, inspect and finish studies run by workers.", no_args_is_help=True
)
study_app.command("create")(create_command)

StudyOption = Annotated[
    str, typer.Option("--study", help="The study to work on.", envvar=STUDY.name)
]


def worker(
    study: StudyOption,
    storage: StorageOption = DEFAULT_STORAGE,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
    device: DeviceOption = "auto",
    data_dir: DataDirOption = None,
    weights_dir: WeightsDirOption = None,
    checkpoint_dir: CheckpointDirOption = None,
    checkpoint_seconds: CheckpointSecondsOption = 0.0,
    wait: Annotated[
        float,
        typer.Option(
            help="Seconds to wait for the study and its queued trials (and a storage proxy) "
            "to appear."
        ),
    ] = 0.0,
    stay: Annotated[
        bool,
        typer.Option(
            help="When the queue is empty, stay while other workers' trials run, so that a "
            "dead worker's trial is retried here."
        ),
    ] = True,
) -> None:
    """Join a study and run its queued trials until none is left (and none runs elsewhere).

    Resumable trials (retries with a checkpoint) first. SIGTERM hands the running trial
    back at once, with a checkpoint of its last epoch, for the next worker to resume."""
    import time

    from automl.cli.display import SearchDisplay
    from automl.errors import ConfigError
    from automl.search.scheduler.runner import run_worker
    from automl.search.scheduler.session import join
    from automl.search.settings import SearchSettings

    local = SearchSettings(
        study_name=study, storage=storage, tracking_uri=tracking_uri, device=device,
        data_dir=data_dir, weights_dir=weights_dir, checkpoint_dir=checkpoint_dir,
        checkpoint_seconds=checkpoint_seconds,
    ).check_fields("checkpoint_dir", "checkpoint_seconds")  # fmt: skip
    deadline = time.monotonic() + wait
    while True:
        try:
            with console.status(f"joining study {study}…"):
                session = join(local)
            break
        except ConfigError as exc:  # not there yet (the study, or the storage proxy)
            waited = ("no study named", "no storage proxy answers")
            if not any(w in str(exc) for w in waited) or time.monotonic() >= deadline:
                raise
            time.sleep(5)
    queued = sum(1 for t in session.study.get_trials(deepcopy=False) if t.state.name == "WAITING")
    console.print(f"worker on study [bold]{study}[/] ({session.device}): {queued} trials queued")
    try:
        with sigterm_as_interrupt(), SearchDisplay(console, max(queued, 1)) as display:
            outcome = run_worker(
                session.with_hooks(display.hooks),
                wait=max(0.0, deadline - time.monotonic()),
                stay=stay,
            )
    except KeyboardInterrupt as stop:
        console.print(
            "[yellow]interrupted[/]: the running trial was handed back (failed, its "
            "checkpoint kept) and queued again for the next worker"
        )
        raise typer.Exit(143 if isinstance(stop, Terminated) else 130) from None
    counts = Counter(t.state.name.lower() for t in outcome.ran)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials"
    console.print(f"no queued trials left: this worker ran {summary} in {outcome.seconds:.1f} s")


@study_app.command("status")
def status(
    name: Annotated[str | None, typer.Argument(metavar="[STUDY]")] = None,
    storage: StorageOption = DEFAULT_STORAGE,
) -> None:
    """Trials by state, who runs what, the best so far; without a STUDY, the studies."""
    import optuna

    from automl.errors import ConfigError
    from automl.records import TrialRecord, by_merit
    from automl.stores import open_storage

    store = open_storage(storage, create=False)
    if name is None:
        _list_studies(optuna.get_all_study_summaries(store))
        return
    try:
        found = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(store)) or "none"
        raise ConfigError(f"no study named '{name}' in the storage (studies: {names})") from None
    trials = found.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    table = Table(title=f"study {name}", title_justify="left")
    table.add_column("state")
    table.add_column("trials", justify="right")
    for state in ("WAITING", "RUNNING", "COMPLETE", "PRUNED", "FAIL"):
        table.add_row(state.lower() if state != "WAITING" else "queued", str(counts.get(state, 0)))
    console.print(table)
    for trial in trials:
        if trial.state.name == "RUNNING":
            worker = TrialRecord.of(trial).worker or "?"
            console.print(f"trial {trial.number} running on {worker}")
    ranked = by_merit(trials)
    if ranked:
        best = ranked[0]
        console.print(f"best so far: trial {best.number}, val_acc {best.values[0]:.4f}")


def _list_studies(summaries: list[Any]) -> None:
    if not summaries:
        console.print("no studies in the storage")
        return
    table = Table(title="studies (automl study status STUDY for one)", title_justify="left")
    for column in ("study", "trials", "started"):
        table.add_column(column, justify="right" if column == "trials" else "left")
    for summary in sorted(summaries, key=lambda s: s.study_name):
        started = summary.datetime_start
        when = started.strftime("%Y-%m-%d %H:%M") if started else "-"
        table.add_row(one_line(summary.study_name), str(summary.n_trials), when)
    console.print(table)


@study_app.command("finish")
def finish_command(
    name: Annotated[str, typer.Argument(metavar="STUDY")],
    storage: StorageOption = DEFAULT_STORAGE,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
    data_dir: DataDirOption = None,
) -> None:
    """Once the workers are done: register the best model, evaluate it, close the study's run."""
    from automl.cli.display import SearchDisplay, print_summary
    from automl.pipeline import finish_study
    from automl.search.scheduler.session import join
    from automl.search.settings import SearchSettings

    with SearchDisplay(console, 1) as display:
        local = SearchSettings(
            study_name=name, storage=storage, tracking_uri=tracking_uri, data_dir=data_dir,
            device="cpu",
        )  # fmt: skip
        session = join(local, hooks=display.hooks)
        outcome = finish_study(session)
    print_summary(console, outcome)
