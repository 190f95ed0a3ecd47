"""``automl ui``: ``mlflow ui`` over the store on a free port, the study's links printed as
whole URLs that open, and Ctrl-C stopping the server with the command (exit 0)."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from automl.cli import main
from automl.pipeline import run_search
from automl.records import StudyRecord
from tests.conftest import bin_env, search_settings

LINK = re.compile(r"^\s+(http://127\.0\.0\.1:(\d+)/\S+)$")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One tiny trial, registered: (folder, storage, tracking URI, parent run id)."""
    folder: Path = tmp_path_factory.mktemp("ui")
    settings = search_settings(folder, trials=1, study_name="shown", seed=0)
    outcome = run_search(settings)
    assert outcome.registration is not None
    parent = StudyRecord.of(outcome.study).parent_run_id
    return folder, settings.storage, settings.tracking_uri, parent


def server_processes(port: int) -> list[int]:
    """Live processes whose command line names ``port`` and MLflow (the server, uvicorn)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if str(port) in command.split() and "mlflow" in command and state != "Z":
            found.append(int(proc.name))
    return found


def lines_of(process: subprocess.Popen) -> tuple[queue.Queue[str], threading.Thread]:
    """The process's output lines, read as they come (a blocked read would hang the test),
    and the thread reading them, which ends with the output."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def until_links(
    lines: queue.Queue[str], process: subprocess.Popen, limit: float = 240
) -> list[str]:
    """The output up to the last link (the registered model's)."""
    seen: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=1).rstrip("\n"))
        except queue.Empty:
            assert process.poll() is None, (seen, process.stderr.read())
            continue
        if seen[-1].strip() == "registered model:":
            seen.append(lines.get(timeout=10).rstrip("\n"))
            return seen
    raise AssertionError(f"no links within {limit:.0f} s: {seen}")


@pytest.mark.slow
@pytest.mark.hostile("signals")
def test_ui_serves_the_store_prints_links_that_open_and_stops_on_ctrl_c(searched):
    folder, storage, tracking_uri, parent = searched
    process = subprocess.Popen(
        [sys.executable, "-m", "automl", "ui", "shown", "--storage", storage,
         "--tracking-uri", tracking_uri],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder, env=bin_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )  # fmt: skip
    try:
        lines, reader = lines_of(process)
        seen = until_links(lines, process)
        links = [match.group(1) for line in seen if (match := LINK.match(line))]
        assert len(links) == 4, seen  # leaderboard, top five, every trial, registered model
        port = int(LINK.match(f"  {links[0]}").group(2))
        assert seen[0].startswith(f"MLflow UI on http://127.0.0.1:{port}/"), seen
        assert all("workflowType=machine_learning" in link for link in links), links
        assert f"/runs/{parent}?" in links[0]
        for link in links:
            with urllib.request.urlopen(link, timeout=30) as page:
                assert page.status == 200
        base = links[0].partition("#")[0]
        with urllib.request.urlopen(f"{base}ajax-api/2.0/mlflow/runs/get?run_id={parent}") as r:
            assert json.load(r)["run"]["info"]["run_id"] == parent  # this store, served
        running = server_processes(port)
        assert running, "no mlflow ui process found"
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        reader.join(timeout=10)
        out, err = "".join(lines.queue), process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "MLflow UI stopped" in out and "Traceback" not in err, (out, err)
    assert not [pid for pid in running if pid in server_processes(port)]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there any more


@pytest.mark.slow
@pytest.mark.hostile("inputs")
def test_a_wrong_study_or_a_busy_port_is_one_line_before_any_server(searched, capsys):
    folder, storage, tracking_uri, _ = searched
    stores = ["--storage", storage, "--tracking-uri", tracking_uri]
    assert main(["ui", "nope", *stores]) == 2
    err = capsys.readouterr().err
    assert "no study named 'nope' in the storage (studies: shown)" in err
    assert len(err.strip().splitlines()) == 1, err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["ui", "shown", "--port", str(port), *stores]) == 2
    err = capsys.readouterr().err
    assert f"--port {port}: cannot listen there" in err and len(err.strip().splitlines()) == 1
    assert main(["ui", "--tracking-uri", "http://user:secret@mlflow.example:5000"]) == 2
    err = capsys.readouterr().err
    assert "a tracking server is its own UI" in err and "secret" not in err
    assert main(["ui", "--tracking-uri", f"sqlite:///{folder / 'none.db'}"]) == 2
    assert "no MLflow tracking store there" in capsys.readouterr().err
    assert not (folder / "none.db").exists()
