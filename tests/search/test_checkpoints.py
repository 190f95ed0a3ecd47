"""Trial checkpoints for real: SIGTERM hands a trial back with its checkpoint, `kill -9`
leaves the last one behind, and the retry trains only the epochs that were left."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from automl.cli import main, sigterm_as_interrupt
from automl.records import TrialRecord
from automl.release.rebuild import trial_epochs
from automl.search.hooks import Hooks
from automl.search.scheduler.queue import add_tickets, claim, requeue
from automl.search.scheduler.runner import TrialsInterrupted, run_trials
from automl.search.scheduler.session import prepare
from automl.training.state import TrainingState
from tests.conftest import automl_command, bin_env, mlflow_client, search_settings

CHECKPOINT_EPOCH = "checkpoint_epoch"  # the trial attribute and run tag a retry resumes after
FAST_HEARTBEAT = {"AUTOML_HEARTBEAT_SECONDS": "1", "AUTOML_GRACE_SECONDS": "3"}
EPOCHS = 24  # room for a loaded machine to kill the second worker mid-trial, never after it
# One small network, so every trial is the same and an epoch takes a fraction of a second.
SPACE = f"""
architecture: {{stages: 1, per_stage: {{width: 8, convs: 1}}}}
optimizer: {{name: adamw, lr: 0.01}}
training: {{epochs: {EPOCHS}, batch_size: 64, schedule: onecycle}}
"""


def test_sigterm_hands_the_trial_back_and_the_next_search_resumes_it(tmp_path):
    """In one process, with the default store (the trial run's MLflow artifacts)."""
    space = SPACE.replace(f"epochs: {EPOCHS}", "epochs: 4")
    settings = search_settings(
        tmp_path, space, trials=1, study_name="ckpt", max_epochs=4, pruner="none"
    )

    def stop(number: int, result, total: int) -> None:  # a real SIGTERM, mid-trial
        if result.epoch == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises during the sleep

    notes: list[str] = []
    with pytest.raises(TrialsInterrupted), sigterm_as_interrupt():
        run_trials(prepare(settings, Hooks(on_note=notes.append, on_epoch_end=stop)))
    assert "trial 0 handed back: its retry resumes from its checkpoint after epoch 2" in notes
    session = prepare(settings, Hooks(on_note=notes.append))
    handed, queued = session.study.get_trials(deepcopy=False)
    assert (handed.state, handed.user_attrs["reason"]) == (TrialState.FAIL, "preempted")
    assert queued.state == TrialState.WAITING and queued.user_attrs[CHECKPOINT_EPOCH] == 2
    client = mlflow_client(settings.tracking_uri)
    first_run = handed.user_attrs["mlflow_run_id"]
    assert [a.path for a in client.list_artifacts(first_run, "checkpoint")] == [
        "checkpoint/state-000002.pt"  # epoch 1's went once epoch 2's was written
    ]
    assert client.get_run(first_run).data.tags[CHECKPOINT_EPOCH] == "2"
    torn = tmp_path / "state-000003.pt"  # a save cut short by kill -9 mid-copy
    torn.write_bytes(b"PK\x03\x04 cut short")
    client.log_artifact(first_run, str(torn), "checkpoint")

    run_trials(session)  # the next search adopts the retry and resumes it
    retry = session.study.get_trials(deepcopy=False)[1]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["resumed_at_epoch"] == 3 and TrialRecord.of(retry).epochs_run == 2
    assert len(retry.intermediate_values) == 4  # the whole curve, for the pruner
    assert TrialRecord.of(retry).epochs_trained == trial_epochs(retry) == 4  # a refit trains 4
    run = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert run.data.tags["resumed_from"] == first_run and run.data.tags["resumed_at_epoch"] == "3"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2, 3, 4]
    for run_id in (first_run, run.info.run_id):  # the trial is over: no checkpoint is left
        assert client.list_artifacts(run_id, "checkpoint") == []


def wait_for_checkpoint(folder: Path, process: subprocess.Popen, name: str | None, epoch: int):
    """Until a checkpoint file of ``folder`` other than ``name`` holds ``epoch`` or later;
    returns its name and epoch. Each new version of a file is read once."""
    deadline = time.monotonic() + 180
    seen: set[tuple[str, int]] = set()
    while time.monotonic() < deadline:
        assert process.poll() is None, "the worker ended before its checkpoint"
        for path in folder.glob("*/*.pt"):
            version = (path.name, path.stat().st_mtime_ns)
            if path.name == name or version in seen:
                continue
            seen.add(version)
            found = TrainingState.load(path).epoch  # written atomically: whole or absent
            if found >= epoch:
                return path.name, found
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at epoch {epoch}")


@pytest.mark.slow
def test_sigterm_then_kill_9_of_workers_loses_no_finished_epoch(tmp_path, monkeypatch):
    """Worker 1 gets SIGTERM: the trial is handed back at once with its checkpoint. Worker
    2 resumes it and is killed with `kill -9`. Worker 3 fails the dead trial after the
    grace period and resumes it from worker 2's last checkpoint, to the end."""
    stores = ["--storage", f"sqlite:///{tmp_path / 'automl.db'}",
              "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    (tmp_path / "space.yaml").write_text(SPACE)
    created = main(["study", "create", "--study-name", "spot", "--trials", "1", "--space",
                    str(tmp_path / "space.yaml"), "--max-epochs", str(EPOCHS), "--pruner",
                    "none", *stores])  # fmt: skip
    assert created == 0
    folder = tmp_path / "checkpoints"
    worker = ["worker", "--study", "spot", "--device", "cpu", "--no-stay", *stores,
              "--checkpoint-dir", str(folder), "--checkpoint-seconds", "0"]  # fmt: skip

    def start(log: str) -> subprocess.Popen:
        return subprocess.Popen(automl_command(*worker), cwd=tmp_path,
                                env=bin_env(**FAST_HEARTBEAT), stdout=(tmp_path / log).open("w"),
                                stderr=subprocess.STDOUT)  # fmt: skip

    first = start("first.log")
    name, _ = wait_for_checkpoint(folder, first, None, 1)
    signalled = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 143, (tmp_path / "first.log").read_text()
    print(f"\nSIGTERM to exit: {time.monotonic() - signalled:.1f} s")
    second = start("second.log")
    _, killed_at = wait_for_checkpoint(folder, second, name, 1)  # its own, past the first's
    second.kill()  # SIGKILL: nothing runs, the trial stays RUNNING
    second.wait()
    # The third worker runs here, with the same short grace period as the other two.
    monkeypatch.setenv("AUTOML_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("AUTOML_GRACE_SECONDS", "3")
    time.sleep(5)  # past the 3 s grace even on a whole-second clock and a loaded machine
    assert main(worker) == 0

    import optuna

    from automl.stores import open_storage

    study = optuna.load_study(study_name="spot", storage=open_storage(stores[1]))
    handed, crashed, finished = study.get_trials(deepcopy=False)
    assert (handed.state, handed.user_attrs["reason"]) == (TrialState.FAIL, "preempted")
    handed_at = handed.user_attrs[CHECKPOINT_EPOCH]
    assert crashed.state == TrialState.FAIL and crashed.user_attrs["reason"] == "crashed"
    assert crashed.user_attrs["resumed_at_epoch"] == handed_at + 1
    assert finished.state == TrialState.COMPLETE
    assert finished.user_attrs["resumed_from"] == crashed.user_attrs["mlflow_run_id"]
    # Killed after its checkpoint of epoch `killed_at`: it may have saved one more since.
    assert finished.user_attrs["resumed_at_epoch"] - 1 in (killed_at, killed_at + 1)
    assert len(finished.intermediate_values) == EPOCHS
    assert list(folder.glob("*/*")) == []  # every checkpoint deleted with its trial


def test_a_worker_claims_resumable_retries_first(tmp_path):
    settings = search_settings(tmp_path, trials=1, study_name="order")
    session = prepare(settings, Hooks())
    study = session.study
    add_tickets(study, 2)
    interrupted = claim(study)
    interrupted.set_user_attr(CHECKPOINT_EPOCH, 1)
    study.tell(interrupted, state=TrialState.FAIL)
    requeue(study, interrupted, "preempted")  # queued after the fresh ticket 1
    assert claim(study).number == 2  # the retry, with its checkpoint
    assert claim(study).number == 1


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--checkpoint-seconds", "-5"], {}, "--checkpoint-seconds: must be a number of seconds"),
        ([], {"AUTOML_CHECKPOINT_DIR": __file__}, "--checkpoint-dir: "),
    ],
)
def test_a_worker_refuses_bad_checkpoint_options_in_one_line(
    args, env, message, capsys, monkeypatch
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["worker", "--study", "none", "--storage", "sqlite:///nowhere.db", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
