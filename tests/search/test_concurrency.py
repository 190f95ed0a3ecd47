"""Searches started at the same moment on one study and one pair of stores.

Each `automl search --trials N` runs exactly N trials, none twice, whatever else runs on
the study, and the first use of a new store is safe when several processes make it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from automl.stores import open_storage
from tests.conftest import PG, TINY_SPACE, automl_command, bin_env, mlflow_client, scratch_database

pytestmark = pytest.mark.slow
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def three_at_once(tmp_path: Path, storage: str, tracking: str, trials: int = 3) -> list[str]:
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    args = ["search", "--trials", str(trials), "--space", str(space), "--max-epochs", "1",
            "--device", "cpu", "--no-evaluate", "--study-name", "conc", "--storage", storage,
            "--tracking-uri", tracking]  # fmt: skip
    env = bin_env(OMP_NUM_THREADS="1")  # three processes on two cores
    processes = [
        subprocess.Popen(
            automl_command(*args),
            cwd=tmp_path,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert "Traceback" not in output, output
        assert f"this run: {trials} trials" in output, output
    return outputs


def check(storage: str, tracking: str, expected: int) -> None:
    study = optuna.load_study(study_name="conc", storage=open_storage(storage))
    trials = study.trials
    assert len(trials) == expected
    assert sorted(t.number for t in trials) == list(range(expected))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    client = mlflow_client(tracking)
    for trial in trials:  # every Optuna state matches its MLflow run
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == STATUS[trial.state.name]
        assert run.data.tags["trial_number"] == str(trial.number)


def test_three_searches_at_once_on_sqlite_new_then_existing(tmp_path):
    storage = f"sqlite:///{tmp_path / 'automl.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    three_at_once(tmp_path, storage, tracking)  # new study, new stores: made once, in turn
    check(storage, tracking, 9)
    three_at_once(tmp_path, storage, tracking)  # the study exists: exactly 9 more
    check(storage, tracking, 18)
    assert not list(tmp_path.glob(".*.new-*"))  # no draft store left behind


@pytest.mark.postgres
def test_three_searches_at_once_on_postgresql_new_then_existing(tmp_path):
    with scratch_database("conc") as database:
        storage = f"{PG}/{database}"
        tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
        three_at_once(tmp_path, storage, tracking)
        check(storage, tracking, 9)
        three_at_once(tmp_path, storage, tracking)
        check(storage, tracking, 18)
