"""The study's story, told where people look: the MLflow UI and the search's last lines.

At the end of a search the parent run's description holds the leaderboard (each trial a
link to its run), with links to the top five side by side, to every trial of the study
in the runs table (filtered, sorted by val_acc, the ``state`` column shown) and to the
registered version; the experiment's description says what the study is and links the
same. The ranking is the terminal's too (``records.ranking``).

Only Optuna is imported at the top: ``automl study status`` ranks trials without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from optuna.trial import FrozenTrial, TrialState

from automl.insight import gains
from automl.records import RunTag, TrialRecord, last_val_acc, ranked
from automl.records.version import figure

if TYPE_CHECKING:
    import optuna

    from automl.tracking import Tracker
    from automl.tracking.ui import UiLinks

ROWS = 10  # trials in the parent run's leaderboard
NOTE_COLUMNS = ("#", "trial", "val_acc", "epochs", "state", "key params")
PAD = "&nbsp;&nbsp;"  # the UI draws a note's tables without cell padding: headers carry it
COMPARED = 5  # trials on the compare page
VIEW_PARAMS = 8  # sampled parameters shown as columns of the runs table
# The parameters that matter most in the searches measured (learning rate and optimizer
# first), so the runs table opens with them in view; the others follow by name.
FIRST_PARAMS = (
    "optim.lr", "optim.name", "train.batch_size", "train.epochs", "optim.weight_decay",
    "aug.strength", "arch.stages", "arch.backbone",
)  # fmt: skip


def by_importance(names: set[str]) -> list[str]:
    """Sampled parameters in the order the runs table shows them: ``FIRST_PARAMS``, then
    the stages' widths, then the rest by name."""

    def rank(name: str) -> tuple[int, str]:
        if name in FIRST_PARAMS:
            return FIRST_PARAMS.index(name), name
        return len(FIRST_PARAMS) + (0 if name.endswith(".width") else 1), name

    return sorted(names, key=rank)


def key_params(params: dict[str, Any]) -> str:
    """The few parameters that tell trials apart at a glance."""
    widths = [str(v) for k, v in sorted(params.items()) if k.endswith(".width")]
    parts = [str(params["arch.backbone"])] if params.get("arch.backbone", "none") != "none" else []
    if widths:
        parts.append("widths " + "/".join(widths))
    for name, label in (
        ("optim.name", ""),
        ("optim.lr", "lr "),
        ("train.batch_size", "bs "),
        ("aug.strength", "aug "),
    ):
        if name in params:
            value = params[name]
            parts.append(f"{label}{value:.3g}" if isinstance(value, float) else f"{label}{value}")
    return ", ".join(parts)


def plural(count: int, word: str) -> str:
    """``1 trial``, ``3 trials``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def state_text(trial: FrozenTrial) -> str:
    """``complete``, ``pruned @ 3`` (the epoch it was cut at) or ``failed (reason)``."""
    record = TrialRecord.of(trial)
    if trial.state == TrialState.PRUNED:
        reason = record.reason or "pruned"
        return f"pruned @ {record.epochs_run}" if reason == "pruned" else f"pruned ({reason})"
    if trial.state == TrialState.FAIL:
        return f"failed ({record.reason or 'error'})"
    return trial.state.name.lower()


@dataclass(frozen=True)
class StoryLinks:
    """Where to look in the MLflow UI: paths in the UI (``#/...``), made whole URLs on the
    UI's address by ``lines``; ``open`` is how to start the UI over a local store ("" for
    a server, which is the UI)."""

    open: str
    parent: str
    trials: str
    compare: str | None = None
    model: str | None = None

    def lines(self, base: str = "") -> list[tuple[str, str]]:
        """What each link shows and the link on the UI at ``base`` ("": relative)."""
        found = [
            ("leaderboard (this search's run)", self.parent),
            ("top five side by side", self.compare),
            ("every trial by val_acc", self.trials),
            ("registered model", self.model),
        ]
        return [(what, base + link) for what, link in found if link]


class Registered(Protocol):
    """What the story says of the model a search registered."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def uri(self) -> str: ...
    @property
    def trial_number(self) -> int: ...
    @property
    def val_acc(self) -> float: ...
    @property
    def test_acc(self) -> float: ...
    @property
    def members(self) -> tuple[int, ...]: ...
    @property
    def test_acc_single(self) -> float | None: ...


@dataclass(frozen=True)
class Search:
    """What the story is told from: the study and what this search did."""

    study: optuna.Study
    parent_run_id: str
    registration: Registered | None
    ran: list[int]  # the trials this search ran
    objectives: tuple[str, ...]
    space: str  # the space file's name
    dataset: str
    tracking_uri: str
    interrupted: bool = False


def tell(search: Search, tracker: Tracker) -> StoryLinks:
    """Write the story into MLflow (descriptions, the saved view) and return its links."""
    from automl.tracking.ui import (
        DURATION,
        column,
        describe_experiment,
        describe_run,
        links_for,
        open_command,
        runs_view,
        save_view,
        served,
        view_key,
    )

    study = search.study
    trials = study.get_trials(deepcopy=False)
    name = study.study_name
    links = links_for(tracker)
    quoted = name.replace("'", "\\'")
    metrics = ["val_acc", *search.objectives[1:]]
    sampled = by_importance({k for t in trials for k in t.distributions})[:VIEW_PARAMS]
    columns = [
        column("tags", "state"),
        *(column("metrics", m) for m in metrics),
        DURATION,
        *(column("params", p) for p in sampled),
        column("attributes", "Models"),
    ]
    view = runs_view(
        search_filter=f"attributes.run_name LIKE 'trial-%' AND tags.study = '{quoted}'",
        order_by=column("metrics", "val_acc"),
        columns=columns,
        widths={column("tags", "state"): 150},
    )
    key = view_key(name)
    save_view(tracker, key, f"{name}: trials by val_acc", view)
    describe_run(tracker, search.parent_run_id, parent_story(search, links, key))
    reg = search.registration
    if reg is not None and reg.members:  # the report names the ensemble from these
        tracker.set_run_tags(search.parent_run_id, ensemble_tags(reg))
    describe_experiment(tracker, experiment_story(search, links, key))
    top = _top(trials)
    return StoryLinks(
        open="" if served(search.tracking_uri) else open_command(search.tracking_uri),
        parent=links.run(search.parent_run_id),
        trials=links.view(key),
        compare=links.compare(top) if top else None,
        model=links.model_version(reg.name, reg.version) if reg else None,
    )


def ensemble_tags(reg: Registered) -> dict[str, str]:
    """The parent run's record of an ensemble it registered: its members, best first,
    and its best member's test figure alone."""
    return {
        RunTag.ENSEMBLE: ",".join(map(str, reg.members)),
        RunTag.TEST_ACC_SINGLE: figure(reg.test_acc_single),
    }


def _run_id(trial: FrozenTrial) -> str:
    return TrialRecord.of(trial).run_id or ""


def _top(trials: list[FrozenTrial]) -> list[str]:
    """The run ids of the trials compared side by side."""
    return [r for r in map(_run_id, ranked(trials)[:COMPARED]) if r]


def _trial_link(trial: FrozenTrial, links: UiLinks) -> str:
    name = f"trial-{trial.number:04d}"
    run_id = _run_id(trial)
    return f"[{name}]({links.run(run_id)})" if run_id else name


def _counts(trials: list[FrozenTrial]) -> str:
    states = [t.state for t in trials]
    parts = [
        f"{states.count(state)} {word}"
        for state, word in (
            (TrialState.COMPLETE, "complete"),
            (TrialState.PRUNED, "pruned"),
            (TrialState.FAIL, "failed"),
            (TrialState.RUNNING, "running"),
            (TrialState.WAITING, "queued"),
        )
        if state in states
    ]
    return f"{plural(len(trials), 'trial')} ({', '.join(parts)})" if parts else "no trials"


def _link_line(search: Search, links: UiLinks, key: str, parent: bool) -> str:
    top = _top(search.study.get_trials(deepcopy=False))
    found = []
    if top:
        found.append(f"[top five side by side]({links.compare(top)})")
    found.append(f"[every trial by val_acc]({links.view(key)})")
    if parent:
        found.append(f"[the latest search]({links.run(search.parent_run_id)})")
    reg = search.registration
    if reg is not None:
        found.append(
            f"[registered model {reg.name} v{reg.version}]"
            f"({links.model_version(reg.name, reg.version)})"
        )
    return " · ".join(found)


def _best(search: Search, links: UiLinks) -> str:
    """What was registered, named as what it is: an ensemble's figures are the ensemble's,
    and its best member's own figures stand beside them, so no number is read as another's."""
    reg = search.registration
    if reg is None:
        return "No trial completed: nothing was registered."
    trials = search.study.get_trials(deepcopy=False)
    best = trials[reg.trial_number]
    figures = f"val_acc **{reg.val_acc:.4f}**, test_acc **{reg.test_acc:.4f}**"
    if not reg.members:
        return f"Best: {_trial_link(best, links)}, {figures}; registered as `{reg.uri}`."
    members = ", ".join(_trial_link(trials[n], links) for n in reg.members)
    own = last_val_acc(best)
    alone = [f"val_acc {own:.4f}"] if own is not None else []
    if reg.test_acc_single is not None:
        alone.append(f"test_acc {reg.test_acc_single:.4f}")
    return (
        f"Registered as `{reg.uri}`: the **ensemble** of {members}, {figures}. Its best "
        f"member {_trial_link(best, links)} alone: {', '.join(alone) or 'no figures'}."
    )


def bought(search: Search) -> str:
    """What the search bought, as a sentence ("" when there is nothing to compare)."""
    reg = search.registration
    if reg is None or len(search.objectives) > 1:
        return ""
    line = gains.bought(search.study.get_trials(deepcopy=False), reg.val_acc, len(reg.members))
    return f"What the search bought (validation accuracy): {line}." if line else ""


def parent_story(search: Search, links: UiLinks, key: str) -> str:
    """The parent run's description: what happened, the links, the leaderboard."""
    trials = search.study.get_trials(deepcopy=False)
    ran = search.ran
    this = f"this search ran {len(ran)}" if ran else "this search ran none"
    if ran:
        this += f" (#{min(ran)}–#{max(ran)})" if len(ran) > 1 else f" (#{ran[0]})"
    stopped = " It was interrupted." if search.interrupted else ""
    lines = [
        f"Study **{search.study.study_name}**: {_counts(trials)}; {this}.{stopped} "
        f"{_best(search, links)} {bought(search)}".rstrip(),
        "",
        _link_line(search, links, key, parent=False),
        "",
        "|" + "|".join(f"{PAD}{h}{PAD}" for h in NOTE_COLUMNS) + "|",
        "|--:|:--|--:|--:|:--|:--|",
    ]
    rank = 0
    for trial in ranked(trials, failed=True)[:ROWS]:
        value = last_val_acc(trial)
        complete = trial.state == TrialState.COMPLETE
        rank += complete
        record = TrialRecord.of(trial)
        lines.append(
            f"| {rank if complete else '–'} | {_trial_link(trial, links)} | "
            f"{'–' if value is None else f'{value:.4f}'} | {record.epochs_run} | "
            f"{state_text(trial)} | {key_params(record.params)} |"
        )
    lines += [
        "",
        "Pruned trials were stopped early by the pruner, which is not a failure (MLflow shows "
        "them as KILLED); each trial's `state` tag says COMPLETE, PRUNED @ epoch or FAIL.",
    ]
    return "\n".join(lines)


def experiment_story(search: Search, links: UiLinks, key: str) -> str:
    """The experiment's description: what the study is, and the same links."""
    trials = search.study.get_trials(deepcopy=False)
    objectives = ", ".join(search.objectives)
    return "\n".join(
        [
            f"AutoML study **{search.study.study_name}**: "
            + _link_line(search, links, key, parent=True),
            "",
            f"An Optuna search of CNN architectures, augmentations and optimizer settings "
            f"(space `{search.space}`) on `{search.dataset}`, objective {objectives}: "
            f"{_counts(trials)}. {_best(search, links)} Each search is a run "
            f"(`study-{search.study.study_name}`) whose description holds the leaderboard; "
            f"its trials are runs nested under it.",
        ]
    )
