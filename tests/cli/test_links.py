"""What a person reads and clicks: the links a search prints and the report writes, the
`automl models` header, and the lines of the progress display.

A tracking URI holding a password never shows it; links are whole URLs on the UI's
address (``--ui-url``), one per line, opening MLflow 3 in its machine-learning mode; user
text is never read as markup.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from rich.console import Console

from automl.cli import main
from automl.cli.display import SearchDisplay, print_links
from automl.insight.story import StoryLinks
from automl.tracking.ui import UiLinks, address, open_command
from tests.conftest import TINY_SPACE, bin_env, free_port, search_settings, wait_for_http

SECRET = "PASSWORD"  # the password of every URI below: it must appear nowhere
ML_MODE = "workflowType=machine_learning"


# --------------------------------------------------------------------- links, unit


@pytest.mark.hostile("security")
@pytest.mark.parametrize(
    "uri",
    [
        f"http://alice:{SECRET}@127.0.0.1:5055",
        f"https://alice:{SECRET}@mlflow.example.org/team/",
        f"http://127.0.0.1:5055/?token={SECRET}",
    ],
)
def test_no_link_and_no_start_command_carries_the_password(uri):
    links = UiLinks("3").full(uri)
    shown = [
        links.run("r1"), links.view("automl-x"), links.compare(["r1", "r2"]),
        links.model_version("m", 2), links.experiment(), open_command(uri), address(uri),
        address("sqlite:///m.db", ui_url=uri),
    ]  # fmt: skip
    assert not [line for line in shown if SECRET in line]
    assert links.run("r1").startswith(("http://127.0.0.1:5055/#/", "https://mlflow.example"))
    database = f"postgresql://alice:{SECRET}@db/mlflow"
    assert SECRET not in open_command(database)


def test_every_link_opens_mlflow_in_its_machine_learning_mode():
    links = UiLinks("3")
    for link in (links.run("r"), links.view("k"), links.compare(["r"]), links.experiment(),
                 links.model_version("m", 1)):  # fmt: skip
        _, _, query = link.partition("?")
        assert ML_MODE in query.split("&"), link


def _story() -> StoryLinks:
    """The links a search on the digits tells, as paths in the UI."""
    return StoryLinks(
        open="mlflow ui",
        parent="#/experiments/1/runs/" + "f" * 32 + f"?{ML_MODE}",
        trials=f"#/experiments/1/runs?viewStateShareKey=automl-digits-small&{ML_MODE}",
        compare="#/compare-runs?runs=%5B%22" + "a" * 32 + "%22%2C%22" + "b" * 32 + "%22%5D"
        "&experiments=%5B%221%22%5D&" + ML_MODE,
        model=f"#/models/digits-small/versions/1?{ML_MODE}",
    )


def test_links_are_whole_urls_on_the_ui_url_one_per_line_never_wrapped():
    console = Console(record=True, width=60, file=io.StringIO())
    story = _story()
    print_links(console, story, "sqlite:///mlflow.db", ui_url="http://127.0.0.1:5055")
    lines = console.export_text().splitlines()
    for _, link in story.lines():
        whole = f"http://127.0.0.1:5055/{link}"
        assert f"    {whole}" in lines  # alone on its line, whole, though wider than 60
    assert "mlflow ui" in lines[0]


@pytest.mark.hostile("security")
def test_a_password_given_in_the_ui_url_is_not_printed():
    console = Console(record=True, width=200, file=io.StringIO())
    print_links(console, _story(), "sqlite:///mlflow.db", f"http://bob:{SECRET}@ui.example:80")
    printed = console.export_text()
    assert SECRET not in printed and "http://ui.example:80/#/models/digits-small" in printed


def test_the_ui_url_is_checked_in_one_line():
    from automl.errors import ConfigError
    from automl.search.settings import SearchSettings

    with pytest.raises(ConfigError, match="--ui-url: must be an http"):
        SearchSettings(ui_url="127.0.0.1:5055").check_fields("ui_url")


# --------------------------------------------------------------------- display nits


def _trial(number: int, value: float, seconds: float = 3.0) -> optuna.trial.FrozenTrial:
    start = datetime(2026, 1, 1)
    return optuna.trial.FrozenTrial(
        number=number, state=TrialState.COMPLETE, value=None, values=[value],
        datetime_start=start, datetime_complete=start + timedelta(seconds=seconds),
        params={"optim.lr": 0.1}, distributions={"optim.lr": FloatDistribution(0.01, 1.0)},
        user_attrs={}, system_attrs={}, intermediate_values={1: value}, trial_id=number,
    )  # fmt: skip


def test_the_per_trial_line_keeps_its_columns_from_9_to_10_of_30():
    console = Console(record=True, width=200, file=io.StringIO())
    display = SearchDisplay(console, 30)
    for number in range(10):
        display.trial_end(optuna.create_study(), _trial(number, 0.5 + number / 100))
    lines = [line for line in console.export_text().splitlines() if line.startswith("trial")]
    assert lines[8].index("best") == lines[9].index("best")
    assert " 9/30 best" in lines[8] and "10/30 best" in lines[9]


def test_the_running_trials_line_shows_no_count_and_the_eta_is_the_average_pace():
    clock = [0.0]
    console = Console(record=True, width=200, force_terminal=True, file=io.StringIO())
    display = SearchDisplay(console, 10)
    display.progress.get_time = lambda: clock[0]  # the bar's own clock, set by the test
    with display:
        assert display.task is not None and display.current is not None
        for done in (1, 2):  # two trials of 50 s each
            clock[0] = 50.0 * done
            display.progress.update(display.task, completed=done)
        clock[0] = 100.0
        rendered = console.export_text()
        columns = display.progress.columns
        task = display.progress.tasks[display.task]
        current = display.progress.tasks[display.current]
        cells = [str(column(current)) for column in columns[3:]]
        eta = str(columns[-1](task))
    assert "0/?" not in rendered and not any("?" in cell for cell in cells)
    assert eta.endswith("0:06:40")  # 8 trials left at 50 s each


# --------------------------------------------------------------------- markup


@pytest.mark.hostile("inputs")
@pytest.mark.parametrize(
    "text",
    [
        "imagefolder:/data/[/]photos: 3 files skipped",
        "consider searching training.balance: [none, weighted_loss, balanced_sampling]",
        "[bold red]not styled[/]",
    ],
)
def test_a_note_holding_user_text_is_printed_as_written(text):
    console = Console(record=True, width=300, file=io.StringIO())
    display = SearchDisplay(console, 3)
    display.note(text)
    display.stage(text)
    display.work(text, 3, 3)
    printed = console.export_text()
    assert printed.count(text) == 3


# --------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def server_search(tmp_path_factory):
    """A real MLflow server reached through a URI holding a password, a real tiny search
    recorded there, and its printed summary."""
    from automl.cli.display import print_summary
    from automl.pipeline import run_search

    folder: Path = tmp_path_factory.mktemp("secret")
    port = free_port()
    log = folder / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination",
         str(folder / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=bin_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), stdout=log.open("w"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process=process, expect=b"OK",
                      output=lambda: log.read_text()[-3000:])  # fmt: skip
        uri = f"http://alice:{SECRET}@127.0.0.1:{port}"
        settings = search_settings(
            folder, TINY_SPACE, trials=2, study_name="secret", tracking_uri=uri, max_epochs=1
        )
        outcome = run_search(settings)
        console = Console(record=True, width=100, file=io.StringIO())
        print_summary(console, outcome)
        yield settings, console.export_text(), folder
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.hostile("security")
def test_a_password_in_the_tracking_uri_is_shown_nowhere(server_search, capsys, tmp_path):
    settings, summary, _ = server_search
    host = settings.tracking_uri.rpartition("@")[2]
    assert SECRET not in summary
    links = re.findall(r"^    (http\S+)$", summary, re.MULTILINE)
    assert len(links) >= 3 and all(link.startswith(f"http://{host}/#/") for link in links)

    assert main(["models", "--tracking-uri", settings.tracking_uri]) == 0
    out, err = capsys.readouterr()
    assert "Registered models in http://alice:***@" in " ".join(out.split()) + " "
    assert SECRET not in out + err

    report = tmp_path / "report.html"
    args = ["report", "secret", "-o", str(report), "--storage", settings.storage]
    assert main([*args, "--tracking-uri", settings.tracking_uri]) == 0
    html = report.read_text()
    assert SECRET not in html + capsys.readouterr().out
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert hrefs and all(h.startswith(f"http://{host}/#/") and ML_MODE in h for h in hrefs)


@pytest.mark.slow
def test_the_report_links_open_on_the_ui_url(server_search, tmp_path):
    settings, _, _ = server_search
    report = tmp_path / "report.html"
    args = ["report", "secret", "-o", str(report), "--storage", settings.storage]
    ui = "http://127.0.0.1:5055"
    assert main([*args, "--tracking-uri", settings.tracking_uri, "--ui-url", ui]) == 0
    hrefs = re.findall(r'href="([^"]+)"', report.read_text())
    assert hrefs and all(h.startswith(f"{ui}/#/") for h in hrefs)
