"""Many workers on one study through PostgreSQL and a real MLflow server on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.conftest import (
    ARTIFACTS,
    PG,
    TINY_SPACE,
    bin_env,
    chromium,
    free_port,
    mlflow_client,
    scratch_database,
    wait_for_http,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def databases():
    """Scratch databases for this test module, dropped at the end."""
    with scratch_database("optuna") as optuna_db, scratch_database("mlflow") as mlflow_db:
        yield {"optuna": f"{PG}/{optuna_db}", "mlflow": f"{PG}/{mlflow_db}"}


@pytest.fixture(scope="module")
def server(databases, tmp_path_factory):
    """A real `mlflow server`: PostgreSQL backend store, served artifacts, one worker."""
    port = free_port()
    artifacts = tmp_path_factory.mktemp("served-artifacts")
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", databases["mlflow"],
         "--serve-artifacts", "--artifacts-destination", str(artifacts),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=bin_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for_http(
        f"{url}/health", process=process, output=lambda: Path(log.name).read_text()[-3000:],
        expect=b"OK",
    )  # fmt: skip
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def automl(*args: str, **env: str) -> list[str]:
    return [sys.executable, "-m", "automl", *args]


# Workers started together share this machine's cores: each takes them all by default, and
# two oversubscribed workers train a trial several times slower than at one thread each
# (the killed-worker test took 124 s so, 35 s single-threaded).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def start_worker(study: str, databases, server, cwd: Path, **env: str) -> subprocess.Popen:
    command = automl("worker", "--study", study, "--storage", databases["optuna"],
                     "--tracking-uri", server, "--device", "cpu")  # fmt: skip
    return subprocess.Popen(
        command, cwd=cwd, env=bin_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def create_study(
    name: str, trials: int, databases, server, cwd: Path, space_text: str, epochs: int = 1
) -> None:
    space = cwd / f"{name}.yaml"
    space.write_text(space_text)
    result = subprocess.run(
        automl("study", "create", "--study-name", name, "--trials", str(trials),
               "--space", str(space), "--max-epochs", str(epochs), "--storage", databases["optuna"],
               "--tracking-uri", server),
        cwd=cwd, env=bin_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{trials} queued trials" in result.stdout


STORES: dict[str, object] = {}


def load(name: str, databases):
    """The study as it is now; one storage (one connection pool) for the whole module, so
    polling it does not exhaust the server's connections."""
    import optuna

    from automl.stores import open_storage

    url = databases["optuna"]
    if url not in STORES:
        STORES[url] = open_storage(url)
    return optuna.load_study(study_name=name, storage=STORES[url])


def child_runs(server: str, parent: str) -> list:
    client = mlflow_client(server)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'",
        max_results=1000,
    )
    return runs


STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def test_three_workers_finish_exactly_twelve_trials_under_one_parent(databases, server, tmp_path):
    create_study("three", 12, databases, server, tmp_path, TINY_SPACE)
    workers = [start_worker("three", databases, server, tmp_path, **ONE_THREAD) for _ in range(3)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    study = load("three", databases)
    trials = study.trials
    assert len(trials) == 12 and sorted(t.number for t in trials) == list(range(12))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) >= 2
    parent = study.user_attrs["mlflow_parent_run_id"]
    runs = child_runs(server, parent)
    assert sorted(int(r.data.tags["trial_number"]) for r in runs) == list(range(12))
    by_number = {int(r.data.tags["trial_number"]): r for r in runs}
    for trial in trials:
        assert by_number[trial.number].info.status == STATUS[trial.state.name]

    # The browser: the experiment page and the runs of the study, rendered by the real UI.
    client = mlflow_client(server)
    experiment = client.get_experiment_by_name("three")
    page = f"{server}/#/experiments/{experiment.experiment_id}/runs"
    dom = chromium(page, screenshot=ARTIFACTS / "mlflow-experiment.png")
    assert "study-three" in dom and ">three<" in dom
    ids = ",".join(f"%22{r.info.run_id}%22" for r in runs)
    compare = f"{server}/#/compare-runs?runs=[{ids}]&experiments=[%22{experiment.experiment_id}%22]"
    dom = chromium(compare, screenshot=ARTIFACTS / "mlflow-trial-runs.png")
    for number in range(12):
        assert f"trial-{number:04d}" in dom

    # Finishing the study registers its best model and closes its one parent run.
    finish = automl("study", "finish", "three", "--storage", databases["optuna"],
                    "--tracking-uri", server)  # fmt: skip
    result = subprocess.run(
        finish, cwd=tmp_path, env=bin_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_model_version_by_alias("three", "candidate") is not None


def test_a_killed_workers_trial_is_failed_and_run_again(databases, server, tmp_path):
    # Reports reach other processes up to 2 s late: a trial long enough (8 epochs of about
    # a second) to be still running when its first report is seen and the worker is killed.
    slow = SLOW_SPACE.replace("epochs: 20", "epochs: 8")
    create_study("killed", 3, databases, server, tmp_path, slow, epochs=8)
    fast = {"AUTOML_HEARTBEAT_SECONDS": "1", "AUTOML_GRACE_SECONDS": "4"}
    victim = start_worker("killed", databases, server, tmp_path, **fast)
    try:
        running = wait_for_an_epoch("killed", databases)  # mid-trial: configuration recorded
    except AssertionError:  # say what the worker was doing
        victim.kill()
        raise AssertionError(victim.communicate()[0][-4000:]) from None
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    dead = running.number
    helpers = [
        start_worker("killed", databases, server, tmp_path, **fast, **ONE_THREAD) for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in helpers]
    (tmp_path / "helpers.log").write_text("\n\n".join(outputs))
    assert all(w.returncode == 0 for w in helpers), tmp_path / "helpers.log"
    study = load("killed", databases)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(finished) == 3
    assert [t.number for t in failed] == [dead]
    assert failed[0].user_attrs["reason"] == "crashed"
    retry = [t for t in finished if t.system_attrs.get("failed_trial") == dead]
    assert len(retry) == 1 and retry[0].params == failed[0].params
    client = mlflow_client(server)
    assert client.get_run(failed[0].user_attrs["mlflow_run_id"]).info.status == "FAILED"
    retried_after = (retry[0].datetime_start.timestamp() - time.time()) + (
        time.monotonic() - killed_at
    )
    print(f"\nthe killed trial was retried {retried_after:.1f} s after the kill")


def wait_for_an_epoch(study: str, databases, seconds: float = 180):
    """The first running trial of ``study`` seen to have reported an epoch (mid-trial)."""
    deadline = time.monotonic() + seconds
    while True:
        for trial in load(study, databases).trials:
            if trial.state == TrialState.RUNNING and trial.intermediate_values:
                return trial
        assert time.monotonic() < deadline, "the worker never reported an epoch"
        time.sleep(0.2)


SLOW_SPACE = """
architecture: {stages: 2, per_stage: {width: 64, convs: 2}}
training: {epochs: 20, batch_size: 16}
"""


def test_a_worker_with_an_empty_queue_stays_to_retry_a_trial_running_elsewhere(
    databases, server, tmp_path
):
    """The last trial's worker dies after every other worker found the queue empty: the
    idle worker must still be there to run the retry."""
    slow = SLOW_SPACE.replace("epochs: 20", "epochs: 8")
    create_study("last", 1, databases, server, tmp_path, slow, epochs=8)
    timing = {"AUTOML_HEARTBEAT_SECONDS": "1", "AUTOML_GRACE_SECONDS": "15"}
    victim = start_worker("last", databases, server, tmp_path, **timing)
    wait_for_an_epoch("last", databases)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    helper = start_worker("last", databases, server, tmp_path, **timing)
    output = helper.communicate(timeout=300)[0]
    assert helper.returncode == 0, output
    assert "standing by" in output, output
    assert "ran 1 complete" in output, output
    states = sorted(t.state.name for t in load("last", databases).trials)
    assert states == ["COMPLETE", "FAIL"]


def test_sigterm_stops_a_worker_cleanly(databases, server, tmp_path):
    """`docker compose stop` sends SIGTERM: the trial is failed as preempted, its run
    KILLED, its configuration queued again with its checkpoint (an artifact of its run on
    the tracking server), and the worker exits 143."""
    create_study("stopped", 1, databases, server, tmp_path, SLOW_SPACE, epochs=20)
    worker = start_worker("stopped", databases, server, tmp_path)
    wait_for_an_epoch("stopped", databases)
    worker.send_signal(signal.SIGTERM)
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode == 143, output
    failed, queued = load("stopped", databases).trials
    assert failed.state == TrialState.FAIL and failed.user_attrs["reason"] == "preempted"
    assert queued.state == TrialState.WAITING and queued.user_attrs["retry_of"] == failed.number
    assert queued.user_attrs["checkpoint_epoch"] >= 1
    client = mlflow_client(server)
    run = client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == [
        f"checkpoint/state-{queued.user_attrs['checkpoint_epoch']:06d}.pt"
    ]
