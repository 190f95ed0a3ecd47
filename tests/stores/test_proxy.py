"""``automl storage-proxy`` for real: the command in a subprocess over SQLite and over
PostgreSQL, workers through ``grpc://``: a tiny search, the atomic claim, heartbeats and a
dead worker's retry, a proxy that restarts; and the command's one-line refusals."""

from __future__ import annotations

import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from automl.cli import main
from automl.errors import StoreError
from automl.search.scheduler.queue import TrialResult, add_tickets, claim, work
from automl.stores import compat, open_storage
from tests.conftest import PG, bin_env, free_port, scratch_database, start_interruptible

BEATS = {"AUTOML_HEARTBEAT_SECONDS": "1", "AUTOML_GRACE_SECONDS": "3"}  # the proxy's


def start_proxy(url: str, port: int, *args: str) -> subprocess.Popen:
    """The command, once it says it serves (heartbeat 1 s, grace 3 s)."""
    process = start_interruptible(
        "storage-proxy", "--storage", url, "--port", str(port), *args, **BEATS
    )
    assert process.stdout is not None
    while "Ctrl-C stops it" not in (line := process.stdout.readline()):
        assert line, process.communicate(timeout=30)
    return process


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> tuple[str, str]:
    """Stopped as ``docker stop`` does: exit 0 and a summary."""
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert out.splitlines()[-1].startswith("storage proxy stopped after"), out
    return out, err


@dataclass(frozen=True)
class Proxy:
    url: str  # grpc://127.0.0.1:PORT
    database: str  # the database it serves


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def proxy(request, tmp_path_factory) -> Iterator[Proxy]:
    """A proxy over a new SQLite file or PostgreSQL database, for this module's tests."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('proxy') / 'automl.db'}"
        else:
            url = f"{PG}/{stack.enter_context(scratch_database('proxy'))}"
        port = free_port()
        process = start_proxy(url, port, "--report-every", "3600")
        try:
            yield Proxy(f"grpc://127.0.0.1:{port}", url)
        finally:
            out, _ = stop(process)
        assert " calls from " in out.splitlines()[-1] and ", 0 failed" in out


def study_on(url: str, name: str) -> optuna.Study:
    """A study as a worker opens it: on its own storage (its own channel and cache)."""
    storage = compat.StudyStorage(open_storage(url))
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)


@pytest.mark.slow
def test_a_tiny_search_runs_through_the_proxy(proxy, tmp_path, capsys, monkeypatch):
    space = tmp_path / "tiny.yaml"
    space.write_text("architecture: {stages: 1, per_stage: {width: 8, convs: 1}}\n"
                     "optimizer: {name: sgd, lr: {type: float, low: 0.02, high: 0.2}}\n"
                     "training: {epochs: 2, batch_size: 64}\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    code = main([
        "search", "--trials", "2", "--space", str(space), "--study-name", "via-proxy",
        "--storage", proxy.url, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--max-epochs", "2", "--device", "cpu", "--no-evaluate",
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, out + err
    study = optuna.load_study(study_name="via-proxy", storage=open_storage(proxy.url))
    trials = study.get_trials()
    assert len(trials) == 2 and all(t.state.is_finished() for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete and all(len(t.intermediate_values) >= 1 for t in complete)
    assert all(t.params and t.user_attrs.get("mlflow_run_id") for t in trials)  # batched writes
    assert study.best_trial.number in {t.number for t in complete}


def test_two_workers_never_claim_the_same_ticket(proxy):
    """Three workers at once, two through the proxy and one on the database itself: the
    proxy runs the same conditional UPDATE, so the two kinds share one queue safely."""
    add_tickets(study_on(proxy.url, "claims"), 30)
    taken: list[int] = []
    lock = threading.Lock()

    def worker(url: str) -> None:
        study = study_on(url, "claims")
        while (trial := claim(study)) is not None:
            with lock:
                taken.append(trial.number)

    urls = [proxy.url, proxy.url, proxy.database]
    threads = [threading.Thread(target=worker, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(taken) == list(range(30))  # each ticket once, none left
    states = {t.state for t in study_on(proxy.url, "claims").get_trials()}
    assert states == {TrialState.RUNNING}


DIE_MID_TRIAL = """
import os, signal, sys
import optuna
from automl.stores import compat
from automl.search.scheduler.queue import claim
from automl.stores import open_storage

study = optuna.load_study(study_name="dies", storage=compat.StudyStorage(open_storage(sys.argv[1])))
trial = claim(study)  # with its first heartbeat
trial.suggest_int("width", 8, 64)
trial.report(0.3, 1)
compat.flush(study)
print(trial.number, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_dead_workers_trial_is_failed_and_retried_through_the_proxy(proxy):
    study = study_on(proxy.url, "dies")
    add_tickets(study, 1)
    died = subprocess.run([sys.executable, "-c", DIE_MID_TRIAL, proxy.url], capture_output=True,
                          text=True, timeout=120, env=bin_env())  # fmt: skip
    assert died.returncode == -signal.SIGKILL, died.stderr
    dead = int(died.stdout)
    assert study.get_trials()[dead].state == TrialState.RUNNING
    assert compat.heartbeat_interval(compat.storage_of(study)) == 1  # the proxy's setting
    deadline = time.monotonic() + 30  # its heartbeat stops: stale after the 3 s grace
    while not compat.stale_trial_ids(study):
        assert time.monotonic() < deadline, "the dead worker's trial never went stale"
        time.sleep(0.5)

    closed: list[int] = []
    ran = work(
        study,
        lambda trial: TrialResult(TrialState.COMPLETE, (trial.suggest_int("width", 8, 64),)),
        on_stale=lambda trial: closed.append(trial.number),
    )
    assert ran == 1 and closed == [dead]
    failed, retry = study.get_trials()
    assert failed.state == TrialState.FAIL and failed.user_attrs["reason"] == "crashed"
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == dead
    assert retry.params == failed.params and retry.user_attrs["ticket"] == "retry"


def port_outside_the_ephemeral_range() -> int:
    """A free port a client's own connections never take: a client that reconnects to a
    port nothing listens on may be given that very port as its own (a TCP self-connect),
    and then the restarted proxy could not listen there."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1024, low - 10000), low), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


@pytest.mark.hostile("proxy")
def test_a_worker_rides_out_a_proxy_restart(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOML_STORE_RETRY_SECONDS", "60")  # a failure fails in a minute
    url, port = f"sqlite:///{tmp_path / 'automl.db'}", port_outside_the_ephemeral_range()
    first = start_proxy(url, port)
    study = study_on(f"grpc://127.0.0.1:{port}", "restart")
    add_tickets(study, 2)
    first.kill()  # gone without a word
    first.communicate(timeout=30)
    again: list[subprocess.Popen | BaseException] = []

    def restart() -> None:
        try:
            again.append(start_proxy(url, port))
        except BaseException as exc:
            again.append(exc)

    timer = threading.Timer(1.0, restart)
    timer.start()
    try:
        ran = work(study, lambda trial: TrialResult(TrialState.COMPLETE, (1.0,)))
    except Exception:
        timer.join()
        raise AssertionError(f"restarted: {again}") from None
    timer.join()
    assert isinstance(again[0], subprocess.Popen), again
    try:  # read through the proxy while it runs: a read after it stops retries and fails
        seen = [t.state for t in study.get_trials()]
    finally:
        stop(again[0])
    assert ran == 2
    assert seen == [TrialState.COMPLETE] * 2
    stored = optuna.load_study(study_name="restart", storage=url).get_trials()
    assert [t.state for t in stored] == [TrialState.COMPLETE] * 2  # what reached the database


@pytest.mark.hostile("proxy")
def test_optunas_own_proxy_is_refused_in_one_line(tmp_path):
    """Optuna's proxy has no atomic claim nor heartbeats: a search must not run on it."""
    from optuna.storages._grpc.server import make_server

    port = free_port()
    server = make_server(open_storage(f"sqlite:///{tmp_path / 'a.db'}"), "127.0.0.1", port)
    server.start()
    try:
        with pytest.raises(StoreError, match=r"no automl queue .* `automl storage-proxy`"):
            compat.StudyStorage(open_storage(f"grpc://127.0.0.1:{port}"))
    finally:
        server.stop(None)


def test_a_proxy_beyond_loopback_warns_and_ctrl_c_stops_it(tmp_path):
    process = start_proxy(f"sqlite:///{tmp_path / 'a.db'}", free_port(), "--host", "0.0.0.0")
    _, err = stop(process, signal.SIGINT)
    warning = err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: the storage proxy listens on")
    assert "without authentication" in warning[0]


# --- one line, exit 2, nothing created ------------------------------------------------------


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def one_line_error(args: list[str], capsys) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    return lines[0]


@pytest.mark.hostile("proxy")
@pytest.mark.parametrize("command", [["study", "status", "s"], ["worker", "--study", "s"]])
def test_a_storage_proxy_that_does_not_answer_is_one_line(command, capsys):
    url = f"grpc://127.0.0.1:{closed_port()}"
    line = one_line_error([*command, "--storage", url], capsys)
    assert f"--storage {url}: no storage proxy answers there within 2 s" in line


@pytest.mark.hostile("proxy")
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("grpc://127.0.0.1:99999", "the port must be 1..65535"),
        ("grpc://user:secret@host:13000/db", "is not a storage proxy address"),
    ],
)
def test_a_malformed_proxy_address_is_one_line(url, message, capsys):
    line = one_line_error(["study", "status", "s", "--storage", url], capsys)
    assert message in line and "secret" not in line


@pytest.mark.hostile("proxy")
def test_the_proxy_refuses_bad_ports_addresses_and_stores_before_creating_anything(
    tmp_path, capsys
):
    missing = tmp_path / "new.db"
    new = ["storage-proxy", "--storage", f"sqlite:///{missing}"]
    assert "--port: must be 1..65535, got 0" in one_line_error([*new, "--port", "0"], capsys)
    assert "got 70000" in one_line_error([*new, "--port", "70000"], capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = one_line_error([*new, "--port", port], capsys)
    assert f"--port {port}: cannot listen there: Address already in use" in line
    line = one_line_error([*new, "--host", "192.0.2.1", "--port", str(closed_port())], capsys)
    assert "--host 192.0.2.1" in line and "cannot listen there" in line
    assert not missing.exists()

    mlflow_db = tmp_path / "mlflow.db"
    with sqlite3.connect(mlflow_db) as connection:
        connection.execute("create table experiments (id integer)")
    line = one_line_error(["storage-proxy", "--storage", f"sqlite:///{mlflow_db}"], capsys)
    assert "holds tables but not Optuna's (is it the MLflow store?" in line
    line = one_line_error(["storage-proxy", "--storage", "grpc://127.0.0.1:13000"], capsys)
    assert "not another proxy" in line
    line = one_line_error(["storage-proxy", "--storage", "not a url"], capsys)
    assert "is not a database URL" in line
    pg = f"{PG.replace('postgres@', 'postgres:hunter2hunter2@')}/no_such_database_here"
    line = one_line_error(["storage-proxy", "--storage", pg, "--port", str(closed_port())], capsys)
    assert "cannot open the Optuna storage" in line and "hunter2" not in line


def test_the_proxy_is_listed_in_the_help(capsys):
    assert main(["storage-proxy", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--storage", "--host", "--port", "grpc://HOST:PORT"):
        assert option in out, option
