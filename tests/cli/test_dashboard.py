"""``automl dashboard`` for real: optuna-dashboard over a study in a temporary SQLite
store, its API read while a trial runs, stopped by Ctrl-C or SIGTERM; stores that are
not one are refused in one line and left as they were."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from automl.cli import main
from tests.conftest import free_port, start_interruptible, wait_for_http


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A study of four trials that reported three epochs each, the last one pruned (made
    once: only the first test adds to it, a running trial at its end)."""
    import optuna

    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'automl.db'}"
    study = optuna.create_study(study_name="digits-live", storage=url, direction="maximize")
    for number in range(4):
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        width = trial.suggest_int("width", 8, 64)
        for epoch in range(3):
            trial.report(0.5 + 0.1 * epoch + lr + width / 1000, epoch)
        if number == 3:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, 0.7 + lr + width / 1000)
    return url


def start(url: str, port: int, *args: str, **env: str) -> subprocess.Popen:
    return start_interruptible("dashboard", "--storage", url, "--port", str(port), *args, **env)


def get(url: str, **headers: str) -> dict:
    request = urllib.request.Request(url, headers=headers)
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def refusal(url: str, method: str = "GET", **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, headers=headers)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    return refused.value.code, refused.value.read().decode()


def stopped(process: subprocess.Popen, signum: int) -> tuple[str, str]:
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert out.splitlines()[-1] == "dashboard stopped"
    return out, err


def test_the_dashboard_shows_a_running_study_and_stops_on_ctrl_c(store):
    import optuna

    port = free_port()
    process = start(store, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/api/studies", limit=60, process=process,
                      output=lambda: process.communicate(timeout=5)[1])  # fmt: skip
        summaries = get(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["digits-live"]
        detail = f"{base}/api/studies/{summaries[0]['study_id']}"
        trials = get(detail)["trials"]
        assert [t["state"] for t in trials] == ["Complete"] * 3 + ["Pruned"]
        assert [v["step"] for v in trials[3]["intermediate_values"]] == [0, 1, 2]
        importances = get(f"{detail}/param_importances")["param_importances"][0]
        assert {i["name"] for i in importances} == {"lr", "width"}
        assert b"<html" in urllib.request.urlopen(f"{base}/dashboard", timeout=30).read()

        # a trial starts and reports its first epoch: the view shows it within seconds
        study = optuna.load_study(study_name="digits-live", storage=store)
        running = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)})
        running.report(0.42, 0)
        deadline = time.monotonic() + 10
        while len(trials := get(detail)["trials"]) < 5:
            assert time.monotonic() < deadline, "the running trial never appeared"
            time.sleep(0.3)
        assert trials[4]["state"] == "Running"
        assert trials[4]["intermediate_values"] == [{"step": 0, "value": 0.42}]

        # read-only: a page cannot delete the study or finish the trial a search runs
        code, body = refusal(detail, method="DELETE")
        assert code == 403 and "--allow-edits" in body
        assert len(optuna.get_all_study_names(store)) == 1
        # on 127.0.0.1 it answers its own names only (no DNS rebinding of another site)
        code, _ = refusal(f"{base}/api/studies", Host=f"attacker.example:{port}")
        assert code == 403
        assert get(f"{base}/api/studies", Host=f"localhost:{port}")["study_summaries"]
    finally:
        if process.poll() is None:
            out, err = stopped(process, signal.SIGINT)
    assert f"optuna-dashboard on {base}/dashboard — 1 study in {store}: digits-live" in out
    assert "Ctrl-C stops it" in out and err == ""


def test_sigterm_stops_it_at_once_and_a_published_address_beyond_loopback_warns(store):
    """As ``docker stop`` does, while it is still starting (importing optuna-dashboard)."""
    process = start(store, free_port(), AUTOML_DASHBOARD_PUBLISHED_ON="0.0.0.0")
    assert process.stdout is not None
    while "Ctrl-C stops it" not in (line := process.stdout.readline()):
        assert line, process.communicate(timeout=30)
    _, err = stopped(process, signal.SIGTERM)
    warning = err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: the dashboard is reachable on")
    assert "0.0.0.0" in warning[0] and "without a login" in warning[0]


def mlflow_like(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("create table experiments (id integer)")


@pytest.mark.parametrize(
    ("make", "name", "message"),
    [
        (None, "missing.db", "no Optuna storage there"),
        (lambda p: p.write_text("not a database " * 200), "notes.db", "file is not a database"),
        (mlflow_like, "mlflow.db", "holds no Optuna studies (is it the MLflow store?"),
    ],
)
def test_a_store_that_is_not_a_study_storage_is_one_line_and_left_as_it_was(
    tmp_path, capsys, make, name, message
):
    path = tmp_path / name
    if make is not None:
        make(path)
    before = path.read_bytes() if path.exists() else None
    code = main(["dashboard", "--storage", f"sqlite:///{path}", "--port", str(free_port())])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert (path.read_bytes() if path.exists() else None) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if make else [])


def test_a_port_in_use_is_one_line(store, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["dashboard", "--storage", store, "--port", str(port)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", out
    assert err.strip().splitlines() == [
        f"error: --host 127.0.0.1 --port {port}: cannot listen there: Address already in use"
    ]
