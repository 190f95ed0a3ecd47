"""What a person sees: live progress during a search and the summary after it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from automl import retry
from automl.insight.gains import bought
from automl.insight.story import key_params, plural
from automl.records import TrialRecord, by_merit, last_val_acc, ranked
from automl.search.hooks import Hooks

if TYPE_CHECKING:  # types only: `automl study status` must not load torch to print a table
    import optuna

    from automl.data import DataReport
    from automl.insight.evaluate import Evaluation
    from automl.insight.story import StoryLinks
    from automl.pipeline import SearchOutcome
    from automl.release.conclude import Registration
    from automl.training.loop import EpochResult

STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan"}
LEADERBOARD_ROWS = 10


class SearchDisplay:
    """A progress bar over trials (best so far, elapsed, ETA) and a line for the running trial.

    On a terminal it redraws in place; in a log (no terminal) it prints one line per trial.
    """

    def __init__(self, console: Console, trials: int) -> None:
        self.console = console
        self.live = console.is_terminal
        self.trials = trials
        self.done = 0
        self.trial_start = time.perf_counter()
        self.progress = _SearchProgress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            _Counted(),
            TimeElapsedColumn(),
            _Eta(),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None
        self.current: TaskID | None = None
        self.top: list[FrozenTrial] = []  # the best complete trials so far, best first

    def __enter__(self) -> SearchDisplay:
        retry.LISTENERS.append(self.note)  # a store that is away is said, not silent
        if self.live:
            self.progress.start()
            self.task = self.progress.add_task("trials", total=self.trials)
            self.current = self.progress.add_task("starting", total=None)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.note in retry.LISTENERS:
            retry.LISTENERS.remove(self.note)
        if self.live and self.current is not None:
            self.progress.remove_task(self.current)
        self.progress.top_line = ""
        if self.live:
            self.progress.stop()

    @property
    def hooks(self) -> Hooks:
        return Hooks(
            on_stage=self.stage,
            on_note=self.note,
            on_progress=self.work,
            on_data=self.data,
            on_trial_begin=self.trial_begin,
            on_epoch_end=self.epoch_end,
            on_trial_end=self.trial_end,
        )

    def stage(self, message: str) -> None:
        if self.live and self.current is not None:
            self.progress.update(self.current, description=f"[dim]{escape(message)}")
        else:
            self.console.print(f"[dim]{escape(message)}…")

    def note(self, message: str) -> None:
        """A note holds user text (paths, names, a hint in brackets): never markup."""
        self.console.print(f"[yellow]note[/]: {escape(message)}")

    def work(self, stage: str, done: int, total: int) -> None:
        """Long set-up work (inspecting and decoding images): a bar, or a line per tenth."""
        if self.live and self.current is not None:
            self.progress.update(self.current, description=f"{escape(stage)} {done:,}/{total:,}")
        elif done == total or done % max(1, total // 10) < 200:
            self.console.print(f"[dim]{escape(stage)}: {done:,}/{total:,}")

    def data(self, report: DataReport) -> None:
        print_data_report(self.console, report)

    def trial_begin(self, number: int, params: dict[str, Any]) -> None:
        self.trial_start = time.perf_counter()
        if self.live and self.current is not None:
            self.progress.update(self.current, description=f"trial {number}: building")

    def epoch_end(self, number: int, result: EpochResult, total: int) -> None:
        if self.live and self.current is not None:
            self.progress.update(
                self.current,
                description=(
                    f"trial {number}: epoch {result.epoch}/{total} "
                    f"val_acc {result.val_acc:.4f} ({result.images_per_second:,.0f} img/s)"
                ),
            )

    def trial_end(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """One line per finished trial, kept on screen above the live bar (as in a log),
        and on a terminal the five best so far beneath it."""
        self.done += 1
        self.top = by_merit([*self.top, trial])[:5]
        first = self.top[0] if self.top else None
        best = f"best {first.values[0]:.4f} (#{first.number})" if first else "no result yet"
        count = f"{self.done:>{len(str(self.trials))}}/{self.trials}"  # no shift at 10/30
        self.console.print(trial_line(trial, f"{count} {best}"), soft_wrap=True)
        if self.live and self.task is not None:
            self.progress.update(self.task, completed=self.done, description=f"trials · {best}")
            ranked = " · ".join(f"#{t.number} {t.values[0]:.4f}" for t in self.top)
            self.progress.top_line = f"[dim]top 5: {ranked}" if ranked else ""
            self.progress.refresh()


class _Counted(MofNCompleteColumn):
    """``3/10`` for the trials; nothing for the running trial's line, which has no count."""

    def render(self, task: Task) -> Text:
        return super().render(task) if task.total is not None else Text("")


class _Eta(ProgressColumn):
    """The time left at the search's average pace so far (every trial finished since it
    started, over the time it took): a rate sampled over the last seconds only is
    wrong by a multiple when one trial takes longer than that window."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        elapsed = task.elapsed or 0.0
        if not task.completed or not elapsed:
            return Text("eta -:--:--", style="progress.remaining")
        left = elapsed / task.completed * max(0.0, task.total - task.completed)
        minutes, seconds = divmod(int(left), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"eta {hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


class _SearchProgress(Progress):
    """The bars, then one line with the five best trials so far beneath them."""

    top_line = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        if self.top_line:
            yield Text.from_markup(self.top_line)


def trial_line(trial: FrozenTrial, tail: str = "") -> str:
    """``trial   12 PRUNED   val_acc 0.5279 epochs   3   4.1s …`` and why it stopped."""
    state = trial.state.name
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    value = last_val_acc(trial)
    shown = f"val_acc {value:.4f}" if value is not None else ""
    record = TrialRecord.of(trial)
    why = ""
    if state in ("PRUNED", "FAIL"):
        why = record.message or record.reason or ""
    return (
        f"[{STATE_STYLE.get(state, 'white')}]trial {trial.number:>4} {state:<8}[/] "
        f"{shown:<15} epochs {record.epochs_run:>3} {seconds:5.1f}s {tail} {escape(why)}"
    ).rstrip()


def print_data_report(console: Console, report: DataReport, max_classes: int = 20) -> None:
    """What the data holds and what cleaning dropped, before any trial starts. Paths, class
    and file names are the user's text: shown as they are, never read as markup."""
    dropped = sum(len(v) for v in report.dropped.values())
    (height, width), channels = report.image_size, report.channels
    console.print(
        f"[bold]{escape(report.source)}[/]: {report.files_found:,} files, {report.kept:,} "
        f"kept, {dropped:,} dropped; {len(report.classes)} classes; {height}x{width}x{channels} "
        f"({escape(report.size_rule)}); largest/smallest class {report.imbalance:.2f}"
    )
    if report.dropped:
        table = Table(title="Dropped", title_justify="left")
        table.add_column("reason")
        table.add_column("files", justify="right")
        table.add_column("examples", overflow="fold")
        for reason, files in sorted(report.dropped.items()):
            examples = "; ".join(files[:3]) + (" …" if len(files) > 3 else "")
            table.add_row(Text(reason), str(len(files)), Text(examples))
        console.print(table)
    if (len(report.classes) <= max_classes and report.files_found != report.kept) or report.dropped:
        table = Table(title="Images per class and split", title_justify="left")
        table.add_column("class")
        for split in report.counts:
            table.add_column(split, justify="right")
        for name in report.classes:
            counts = (str(report.counts[s].get(name, 0)) for s in report.counts)
            table.add_row(Text(name), *counts)
        console.print(table)
    if report.small_images:
        console.print(
            f"[yellow]{len(report.small_images)} images are far smaller than {height}x{width}[/] "
            f"(e.g. {escape(report.small_images[0])}); they are upscaled"
        )
    if report.imbalance >= 3:
        console.print(
            "[yellow]the classes are imbalanced[/]: consider searching "
            + escape("training.balance: [none, weighted_loss, balanced_sampling]")
        )
    for note in report.notes:
        console.print(f"[yellow]note[/]: {escape(note)}")
    if report.cache:
        state = f"built now, {report.decoded:,} images decoded" if report.decoded else "reused"
        console.print(f"[dim]image cache {escape(report.cache)} ({state})")


def _objective_value(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name == "params":
        return f"{value:,.0f}"
    if name == "latency":
        return f"{value:.3f} ms"
    return f"{value:.4f}"


def leaderboard(
    trials: Iterable[FrozenTrial],
    rows: int = LEADERBOARD_ROWS,
    objectives: list[str] | None = None,
    title: str = "Leaderboard",
) -> Table:
    """Completed trials by accuracy (with several objectives, a column for each), then,
    in the rows left, the pruned ones by the accuracy they were cut at, marked as such:
    a short study still shows what was tried."""
    names = ["val_acc", *(objectives or [])[1:]]
    table = Table(title=title, title_justify="left")
    for column in ("rank", "trial", "state", *names, "epochs", "seconds"):
        table.add_column(column, justify="right")
    table.add_column("key params")
    for rank, trial in enumerate(ranked(trials)[:rows], 1):
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        params = TrialRecord.of(trial).params
        if trial.state == TrialState.COMPLETE:
            state, values = "complete", list(trial.values)
        else:  # its last report; the other objectives were never measured
            state = f"[yellow]pruned @ {TrialRecord.of(trial).epochs_run}[/]"
            values = [last_val_acc(trial), *[None] * (len(names) - 1)]
        table.add_row(
            str(rank) if trial.state == TrialState.COMPLETE else "-",
            str(trial.number),
            state,
            *(_objective_value(n, v) for n, v in zip(names, values, strict=True)),
            str(TrialRecord.of(trial).epochs_run),
            f"{seconds:.1f}",
            Text(key_params(params)),  # values from a space file: text, not markup
        )
    return table


def print_summary(console: Console, outcome: SearchOutcome) -> None:
    """After a search: the leaderboard, what ran, what was registered and evaluated, what
    to note, and where the MLflow UI shows it."""
    console.print()
    _print_trials(console, outcome)
    if outcome.registration is not None:
        _print_registration(console, outcome.registration, outcome.pareto[1:], outcome.study)
    elif not outcome.interrupted:
        console.print("[yellow]no trial completed: nothing was registered[/]")
        console.print(f"[yellow]{escape(_why_nothing_completed(outcome))}[/]")
    if outcome.evaluation is not None:
        _print_evaluation(console, outcome.evaluation)
    for note in outcome.notes:
        console.print(f"[yellow]note[/]: {escape(note)}")
    if outcome.interrupted:
        console.print(
            "[yellow]interrupted[/]: the running trials were failed and queued again; "
            "run the same command again to finish the search"
        )
    if outcome.story is not None:
        print_links(console, outcome.story, outcome.settings.tracking_uri, outcome.settings.ui_url)


def _why_nothing_completed(outcome: SearchOutcome) -> str:
    from automl.search.strategy.nothing_completed import why_nothing_completed

    data, timeout = outcome.data, outcome.settings.timeout
    return why_nothing_completed(outcome.trials_run, len(data.train), data.num_classes, timeout)


def _print_trials(console: Console, outcome: SearchOutcome) -> None:
    study = outcome.study
    trials = study.get_trials(deepcopy=False)
    states = outcome.states
    objectives = list(outcome.settings.objectives)
    console.print(leaderboard(trials, objectives=objectives))
    if len(objectives) > 1:
        front = outcome.study.best_trials
        console.print(
            leaderboard(front, rows=len(front), objectives=objectives, title="Pareto front")
        )
    counts = ", ".join(
        f"[{STATE_STYLE.get(s, 'white')}]{states[s]} {s.lower()}[/]"
        for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
        if states.get(s)
    )
    ran = len(outcome.trials_run)
    console.print(
        f"study [bold]{escape(study.study_name)}[/]: {plural(len(trials), 'trial')} ({counts}); "
        f"this run: {plural(ran, 'trial')}, {plural(outcome.epochs_run, 'epoch')} in "
        f"{outcome.wall_seconds:.1f} s"
    )


def _print_registration(
    console: Console, reg: Registration, front: list[Registration], study: optuna.Study
) -> None:
    """What was registered, named as what it is: an ensemble's figures are the ensemble's,
    with its best member's own beside them (the progress bar's best is that member's)."""
    how = "already registered as" if reg.reused else "registered as"
    which = f"best trial {reg.trial_number}"
    if reg.members:
        weighed = zip(reg.members, reg.weights or [None] * len(reg.members), strict=True)
        which = "ensemble of trials " + ", ".join(
            f"{n} (weight {w:.2f})" if w is not None else str(n) for n, w in weighed
        )
    console.print(
        f"{which}: val_acc {reg.val_acc:.4f}, test_acc "
        f"[bold]{reg.test_acc:.4f}[/]; {how} [bold]{escape(reg.uri)}[/] (version {reg.version})"
    )
    if reg.members:
        own = last_val_acc(study.get_trials(deepcopy=False)[reg.trial_number])
        alone = [f"val_acc {own:.4f}"] if own is not None else []
        if reg.test_acc_single is not None:
            alone.append(f"test_acc {reg.test_acc_single:.4f}")
        console.print(
            f"  its best member, trial {reg.trial_number}, alone: "
            f"{', '.join(alone) or 'no figures'} (--ensemble 1 registers it alone)"
        )
    if len(study.directions) == 1:
        line = bought(study.get_trials(deepcopy=False), reg.val_acc, len(reg.members))
        if line:
            console.print(f"what the search bought (val_acc): {line}", highlight=False)
    if reg.note:
        console.print(f"[yellow]note[/]: {escape(reg.note)}")
    if reg.reloaded_test_acc is not None and abs(reg.reloaded_test_acc - reg.test_acc) > 1e-6:
        console.print(
            f"[red]warning[/]: the reloaded model scores {reg.reloaded_test_acc:.4f} on test"
        )
    for other in front:
        console.print(
            f"Pareto front: trial {other.trial_number} (val_acc {other.val_acc:.4f}, test_acc "
            f"{other.test_acc:.4f}) registered as {escape(other.uri)}"
        )


def _print_evaluation(console: Console, evaluation: Evaluation) -> None:
    from automl.insight.evaluate import summary_rows  # torch: only after a search

    table = Table(title="Evaluation of the registered model (test split)", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in summary_rows(evaluation):
        table.add_row(name, value)
    console.print(table)


def print_links(console: Console, story: StoryLinks, tracking_uri: str, ui_url: str = "") -> None:
    """Where the MLflow UI tells the study's story: each link a whole URL on the UI's
    address (``--ui-url``, the server, or where ``mlflow ui`` serves), alone on its line
    and never wrapped, so a terminal opens it and a copy takes all of it."""
    from automl.tracking.ui import address  # mlflow: only after a search

    base = address(tracking_uri, ui_url)
    start = f" (start it with: {story.open})" if story.open else ""
    console.print(f"see the study in the MLflow UI{start}:", markup=False, highlight=False)
    for what, link in story.lines(base):
        console.print(f"  {what}:", markup=False, highlight=False)
        console.print(f"    {link}", soft_wrap=True, markup=False, highlight=False)
