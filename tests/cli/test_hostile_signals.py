"""Signals at every stage of a real search, sent as a hostile user would: SIGTERM while
concluding, a burst of Ctrl-C, Ctrl-C of ``automl search | tee log``, kill -9 of a search
with job processes. Whatever comes, the records agree once the process is gone: the
Optuna trial's state, its MLflow run's status and the parent run's."""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from automl.errors import STOP
from automl.search.scheduler.signals import hurried, stopping_on_signals
from automl.stores import open_storage
from tests.conftest import (
    TINY_SPACE,
    automl_command,
    bin_env,
    mlflow_client,
    start_interruptible,
    wait_for_running_trial,
)


def _space(tmp_path: Path, epochs: int) -> Path:
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE.replace("epochs: 2", f"epochs: {epochs}"))
    return space


def _args(tmp_path: Path, *, trials: int, epochs: int, name: str = "sig") -> list[str]:
    return ["search", "--trials", str(trials), "--max-epochs", str(epochs),
            "--space", str(_space(tmp_path, epochs)), "--device", "cpu", "--pruner", "none",
            "--study-name", name, "--ensemble", "1",
            "--storage", f"sqlite:///{tmp_path / 'automl.db'}",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip


def _records(tmp_path: Path, name: str = "sig") -> tuple[list, object, str]:
    """The study's trials, the MLflow client and the parent run's status."""
    study = optuna.load_study(
        study_name=name, storage=open_storage(f"sqlite:///{tmp_path / 'automl.db'}")
    )
    client = mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status
    return study.trials, client, parent


def _assert_records_agree(tmp_path: Path, name: str = "sig") -> None:
    """No run RUNNING; every started trial's run closed as its state says."""
    trials, client, parent = _records(tmp_path, name)
    assert parent == "KILLED"
    status = {"COMPLETE": {"FINISHED"}, "PRUNED": {"FINISHED"}, "FAIL": {"KILLED", "FAILED"}}
    started = [t for t in trials if t.state.name != "WAITING"]
    assert started
    for trial in started:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status in status[trial.state.name], (trial.number, trial.state)


# ---------------------------------------------------------------------------- in-process


@pytest.mark.hostile("signals")
def test_a_second_signal_while_the_first_is_acted_on_only_hurries():
    with pytest.raises(KeyboardInterrupt), stopping_on_signals():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:  # closing the records: a second Ctrl-C lands here
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            assert hurried()
            raise
    assert STOP == [] and not hurried()


@pytest.mark.hostile("signals")
def test_a_process_dies_with_its_parent_even_by_kill_9(tmp_path):
    """The parent-death signal a ``--jobs`` process asks for: its search killed outright,
    it is sent SIGTERM at once."""
    pid_file = tmp_path / "child.pid"
    child = (
        "import os, sys, time\n"
        "from automl.search.scheduler.signals import die_with\n"
        "die_with(int(sys.argv[1]))\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    parent = (
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid())])\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    process.kill()
    process.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


# ---------------------------------------------------------------------------- real searches


@pytest.mark.hostile("signals")
@pytest.mark.slow
def test_sigterm_while_concluding_closes_the_parent_killed_with_a_summary_and_143(tmp_path):
    process = start_interruptible(*_args(tmp_path, trials=1, epochs=1))
    seen = []
    assert process.stdout is not None
    while line := process.stdout.readline():
        seen.append(line)
        if "registering" in line:
            process.send_signal(signal.SIGTERM)
            break
    out, err = process.stdout.read(), process.stderr.read()  # what readline kept, too
    process.wait(timeout=120)
    assert process.returncode == 143, "".join(seen) + out + err
    assert "Traceback" not in err
    assert "interrupted" in "".join(seen) + out  # the summary says what was done
    trials, client, parent = _records(tmp_path)
    assert parent == "KILLED"
    assert [t.state.name for t in trials] == ["COMPLETE"]
    assert client.get_run(trials[0].user_attrs["mlflow_run_id"]).info.status == "FINISHED"


@pytest.mark.hostile("signals")
@pytest.mark.slow
def test_a_burst_of_ctrl_c_during_a_trial_still_closes_every_record(tmp_path):
    process = start_interruptible(*_args(tmp_path, trials=2, epochs=40))
    wait_for_running_trial(tmp_path / "automl.db", process)
    time.sleep(1.5)
    for _ in range(4):  # Ctrl-C, then again 0.1, 0.2 and 0.3 s later: closing the records
        process.send_signal(signal.SIGINT)
        time.sleep(0.1)
    out, err = process.communicate(timeout=120)
    # 130, or killed by a Ctrl-C still arriving as the interpreter shuts down (once its
    # handlers are gone): a shell reports both as 130
    assert process.returncode in (130, -signal.SIGINT), out + err
    assert "Traceback" not in err, err
    assert "interrupted" in out
    _assert_records_agree(tmp_path)


@pytest.mark.hostile("signals")
@pytest.mark.slow
def test_ctrl_c_of_a_search_piped_to_tee_closes_every_record(tmp_path):
    """The pipe's reader dies on the same Ctrl-C: the search's output has nowhere to go,
    and its records are closed all the same."""
    log = tmp_path / "log"
    command = f"{shlex.join(automl_command(*_args(tmp_path, trials=2, epochs=40)))} | tee {log}"
    shell = subprocess.Popen(
        ["bash", "-c", command], cwd=tmp_path, env=bin_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        # a background job of a non-interactive shell starts with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )  # fmt: skip
    wait_for_running_trial(tmp_path / "automl.db", shell)
    time.sleep(1.5)
    os.killpg(shell.pid, signal.SIGINT)  # Ctrl-C reaches the whole pipeline
    _, err = shell.communicate(timeout=120)
    assert "Traceback" not in err.decode(), err.decode()
    _assert_records_agree(tmp_path)


def _running(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("select count(*) from trials where state = 'RUNNING'")
                       .fetchone()[0])  # fmt: skip
    except sqlite3.OperationalError:  # not created yet
        return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.hostile("signals")
@pytest.mark.slow
def test_job_processes_die_with_a_search_killed_outright(tmp_path):
    process = start_interruptible(*_args(tmp_path, trials=6, epochs=40), "--jobs", "2")
    deadline = time.monotonic() + 180
    while _running(tmp_path / "automl.db") < 2:  # both processes are in a trial
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.5)
    jobs = [
        c for c in _children(process.pid)
        if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()
    ]  # fmt: skip
    assert len(jobs) == 1
    before, _, _ = _records(tmp_path)
    process.kill()  # kill -9: no handler runs in the search itself
    process.communicate()
    deadline = time.monotonic() + 60
    while _state(jobs[0]) not in ("gone", "Z"):
        assert time.monotonic() < deadline, "the job process ran on without its search"
        time.sleep(0.2)
    trials, client, _ = _records(tmp_path)
    said = [(t.number, t.state.name, t.user_attrs.get("reason")) for t in trials]
    was = {t.number: t.state.name for t in before}
    ended = [t for t in trials if was.get(t.number) == "RUNNING" and t.state.name != "RUNNING"]
    assert len(ended) == 1 and ended[0].user_attrs["reason"] == "preempted", said  # the job's
    assert client.get_run(ended[0].user_attrs["mlflow_run_id"]).info.status == "KILLED"
    finished = ("COMPLETE", "PRUNED", "FAIL")
    assert sum(t.state.name in finished for t in trials) == 1 + sum(
        state in finished for state in was.values()
    ), said  # and no trial after it
