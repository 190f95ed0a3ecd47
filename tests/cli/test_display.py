"""What a person sees during and after a search: a line per finished trial (kept above the
live bar on a terminal), the five best so far, and a leaderboard that shows pruned trials."""

from __future__ import annotations

import datetime as dt
import re

import optuna
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from automl.cli.display import SearchDisplay, leaderboard


def trial(number: int, state: TrialState, value: float | None, reports: dict[int, float], **attrs):
    start = dt.datetime(2026, 11, 30, 12, 0, 0)
    made = create_trial(
        state=state,
        value=value,
        params={"arch.stage0.width": 16},
        distributions={"arch.stage0.width": IntDistribution(8, 64)},
        intermediate_values=reports,
        user_attrs=attrs,
    )
    made.number = number
    made.datetime_start, made.datetime_complete = start, start + dt.timedelta(seconds=3 + number)
    return made


TRIALS = [
    trial(0, TrialState.COMPLETE, 0.9926, {1: 0.9, 2: 0.9926}),
    trial(1, TrialState.PRUNED, None, {1: 0.5279}, message="val_acc 0.5279 at epoch 1 fell behind"),
    trial(2, TrialState.FAIL, None, {}, message="diverged: loss is nan"),
    trial(3, TrialState.COMPLETE, 0.9665, {1: 0.8, 2: 0.9665}),
]


def rendered(console_width: int = 200, terminal: bool = True) -> str:
    console = Console(force_terminal=terminal, record=True, width=console_width)
    study = optuna.create_study(direction="maximize")
    with SearchDisplay(console, trials=len(TRIALS)) as display:
        for finished in TRIALS:
            display.trial_end(study, finished)
    return console.export_text()


def test_every_finished_trial_keeps_a_line_with_why_it_stopped_on_a_terminal():
    text = rendered()
    lines = re.findall(r"trial +\d+ (?:COMPLETE|PRUNED|FAIL)[^\n]*", text)
    assert len(lines) == 4, text
    assert "COMPLETE" in lines[0] and "val_acc 0.9926" in lines[0] and "epochs   2" in lines[0]
    assert "PRUNED" in lines[1] and "val_acc 0.5279" in lines[1]
    assert "fell behind" in lines[1]
    assert "FAIL" in lines[2] and "diverged: loss is nan" in lines[2]
    assert "4/4 best 0.9926 (#0)" in lines[3]
    assert "top 5: #0 0.9926 · #3 0.9665" in text  # drawn beneath the bars


def test_a_log_gets_the_same_lines():
    text = rendered(terminal=False)
    assert sum(line.startswith("trial ") for line in text.splitlines()) == 4
    assert "PRUNED" in text and "fell behind" in text


def test_the_leaderboard_ranks_complete_trials_then_shows_pruned_ones_marked():
    console = Console(record=True, width=200)
    console.print(leaderboard(TRIALS))
    rows = [line for line in console.export_text().splitlines() if "│" in line]
    assert len(rows) == 3, rows  # the failed trial has no accuracy to show
    cells = [[cell.strip() for cell in row.split("│")[1:-1]] for row in rows]
    assert cells[0][:4] == ["1", "0", "complete", "0.9926"]
    assert "0.9665" in rows[1] and "complete" in rows[1]
    assert "pruned @ 1" in rows[2] and "0.5279" in rows[2] and " - " in rows[2]
