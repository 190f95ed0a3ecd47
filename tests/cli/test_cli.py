"""The real CLI: help, exit codes, one-line errors, a subprocess search and an interrupt."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from automl.cli import main
from tests.conftest import automl_command, mlflow_client, wait_for_running_trial

SEARCH_OPTIONS = [
    "--trials", "--timeout", "--space", "--dataset", "--study-name", "--storage",
    "--tracking-uri", "--experiment", "--model-name", "--sampler", "--pruner",
    "--max-epochs", "--device", "--seed",
]  # fmt: skip


def run_cli(args, capsys, cwd: Path, monkeypatch):
    monkeypatch.chdir(cwd)
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_commands_and_every_search_option(capsys, tmp_path, monkeypatch):
    code, out, _ = run_cli(["--help"], capsys, tmp_path, monkeypatch)
    assert code == 0 and "search" in out
    code, out, _ = run_cli(["search", "--help"], capsys, tmp_path, monkeypatch)
    assert code == 0
    for option in SEARCH_OPTIONS:
        assert option in out, option


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sampler", "tp"], "--sampler: unknown sampler 'tp' (choose from"),
        (["--pruner", "medain"], "did you mean 'median'?"),
        (["--dataset", "digts"], "--dataset: unknown dataset 'digts'"),
        (["--trials", "0"], "--trials: must be at least 1, got 0"),
        (["--max-epochs", "0"], "--max-epochs: must be at least 1"),
        (["--timeout", "-5"], "--timeout: must be a positive number"),
        (["--device", "tpu"], "--device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
        (["--study-name", "a b"], "--study-name: 'a b' may use letters"),
        (["--storage", "not a url"], "--storage: 'not a url' is not a database URL"),
        (
            ["--storage", "sqlite:////no/such/dir/a.db"],
            "--storage: the folder /no/such/dir does not",
        ),
        (["--tracking-uri", "./mlruns"], "--tracking-uri: './mlruns' is a file store"),
        (
            ["--space", "missing.yaml"],
            "--space: missing.yaml: no such file "
            "(bundled spaces: cifar, default, images, photos, small)",
        ),
        (
            ["--storage", "postgresql://bob:hunter2@127.0.0.1:1/automl"],
            "--storage postgresql://bob:***@127.0.0.1:1/automl: cannot open the Optuna storage",
        ),
        (["--storage", "sqlite:////proc/automl.db"], "cannot open the Optuna storage"),
        (
            ["--storage", "postgresql+psycopg2://rt@127.0.0.1:1/db?password=hunter2"],
            "postgresql+psycopg2://rt@127.0.0.1:1/db?password=***: cannot open the Optuna",
        ),
        (["--trials", "abc"], "Invalid value for '--trials'"),
        (["--bogus-flag"], "No such option: --bogus-flag"),
        (["--trials"], "Option '--trials' requires an argument"),
        (["--timeout", "nan"], "--timeout: must be a positive number, got nan"),
        (["--timeout", "inf"], "--timeout: must be a positive number, got inf"),
        (["--max-latency-ms", "nan"], "--max-latency-ms: must be a positive number"),
        (["--seed", "-1"], "--seed: must be at least 0, got -1"),
        (["--seed", "1e23"], "Invalid value for '--seed'"),
        (["--trials", "10000000"], "--trials: must be at most 100,000"),
        (["--jobs", "5000"], "--jobs: must be at most 256"),
        (["--tracking-uri", "bogus://x"], "--tracking-uri: 'bogus://x': MLflow has no store"),
        (["--storage", "bogus://x"], "--storage: 'bogus://x': no database driver"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    args, message, capsys, tmp_path, monkeypatch, tiny_space_file
):
    base = ["search", "--trials", "1", "--space", str(tiny_space_file)]
    code, out, err = run_cli([*base, *args], capsys, tmp_path, monkeypatch)
    assert code == 2, (out, err)
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Traceback" not in out + err
    assert "hunter2" not in out + err
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "automl.db").exists()
    assert not (tmp_path / "mlartifacts").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict"], "Missing argument"),
        (["nonsense"], "No such command 'nonsense'"),
        (["models", "--bogus"], "No such option: --bogus"),
        (["export", "models:/m/1", "--format", "gif"], "--format"),
        (["study", "status", "--bogus"], "No such option: --bogus"),
        (["worker", "--wait", "soon"], "Invalid value for '--wait'"),
    ],
)
def test_usage_errors_of_every_command_are_one_line_exit_2(
    args, message, capsys, tmp_path, monkeypatch
):
    code, out, err = run_cli(args, capsys, tmp_path, monkeypatch)
    assert code == 2, (out, err)
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]


def test_invalid_space_file_reports_file_and_key(capsys, tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  epochs: {type: int, low: 5, high: 2}\n")
    code, _, err = run_cli(["search", "--space", str(bad)], capsys, tmp_path, monkeypatch)
    assert code == 2
    assert err.strip() == (
        f"error: {bad}: training.epochs: low <= high must hold, got low=5, high=2"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_asking_for_cuda_without_it_is_a_config_error(capsys, tmp_path, monkeypatch):
    code, _, err = run_cli(["search", "--device", "cuda"], capsys, tmp_path, monkeypatch)
    assert code == 2
    assert "CUDA is not available" in err


def test_spaces_resolve_from_any_folder(tmp_path, monkeypatch):
    from automl.search.space.bundled import BUNDLED_SPACES, DEFAULT_SPACE, resolve_space

    monkeypatch.chdir(tmp_path)
    assert resolve_space(DEFAULT_SPACE) == BUNDLED_SPACES / "default.yaml"
    assert resolve_space(Path("images")) == BUNDLED_SPACES / "images.yaml"
    assert resolve_space(Path("images.yaml")) == BUNDLED_SPACES / "images.yaml"
    own = tmp_path / "search_spaces" / "default.yaml"
    own.parent.mkdir()
    own.write_text("training: {epochs: 2}\n")
    assert resolve_space(DEFAULT_SPACE) == DEFAULT_SPACE  # a project's own file wins


@pytest.mark.slow
def test_subprocess_search_end_to_end(tmp_path, tiny_space_file):
    result = subprocess.run(
        automl_command(
            "search",
            "--trials",
            "3",
            "--max-epochs",
            "1",
            "--space",
            str(tiny_space_file),
            "--device",
            "cpu",
            "--seed",
            "3",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Leaderboard" in out
    assert "registered as models:/digits-tiny@candidate (version 1)" in out
    assert "see the study in the MLflow UI (start it with: mlflow ui):" in out
    assert re.search(r"\n    http://127.0.0.1:5000/#/compare-runs\?runs=%5B%22\w{32}%22", out)
    assert (tmp_path / "automl.db").exists() and (tmp_path / "mlflow.db").exists()
    assert any((tmp_path / "mlartifacts").rglob("network.pt2"))
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_fails_the_trial_kills_the_runs_and_a_rerun_finishes(sig, code, tmp_path):

    from automl.stores import open_storage

    space = tmp_path / "slow.yaml"
    space.write_text(
        "architecture: {stages: 2, per_stage: {width: 32, convs: 2}}\n"
        "training: {epochs: 50, batch_size: 16}\n"
    )
    args = ["search", "--trials", "3", "--space", str(space), "--max-epochs", "50",
            "--device", "cpu", "--pruner", "none"]  # fmt: skip
    process = subprocess.Popen(
        automl_command(*args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    wait_for_running_trial(tmp_path / "automl.db", process)
    time.sleep(1.0)
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "interrupted" in out
    assert "Traceback" not in err

    import optuna

    study = optuna.load_study(
        study_name="digits-slow", storage=open_storage(f"sqlite:///{tmp_path / 'automl.db'}")
    )
    states = optuna.trial.TrialState
    trial, *queued = study.trials
    assert trial.state == states.FAIL
    # SIGTERM is what a preemptible machine gets before it goes: the trial is handed back
    assert trial.user_attrs["reason"] == ("interrupted" if sig == signal.SIGINT else "preempted")
    # its configuration and the untouched tickets stay queued for the next search
    assert [t.state for t in queued] == [states.WAITING] * 3
    client = mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "KILLED"
    if sig != signal.SIGINT:
        return
    # --trials 2 runs exactly two trials: the interrupted configuration first, then one
    # more left by the stopped search; the third leftover stays queued for the next one.
    args[args.index("--max-epochs") + 1] = "1"
    args[args.index("--trials") + 1] = "2"
    rerun = subprocess.run(automl_command(*args, "--no-evaluate"), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming: 2 queued trials" in rerun.stdout and "this run: 2 trials" in rerun.stdout
    finished = [t for t in study.trials if t.state == states.COMPLETE]
    assert len(finished) == 2 and len(study.trials) == 4
    assert sum(t.state == states.WAITING for t in study.trials) == 1
    retried = [t for t in finished if t.user_attrs.get("retry_of") == trial.number]
    assert len(retried) == 1 and retried[0].params == trial.params


@pytest.mark.parametrize(
    ("args", "not_loaded"),
    [
        (["--help"], {"torch", "mlflow", "optuna"}),
        (["search", "--help"], {"torch", "mlflow", "optuna"}),
        (["dashboard", "--help"], {"torch", "mlflow", "optuna"}),
        (["models"], {"torch"}),
        (["study", "status", "x"], {"torch", "mlflow"}),
    ],
)
def test_commands_with_nothing_heavy_to_do_load_no_torch(tmp_path, args, not_loaded):
    """`automl --help` answers at once, and listing a study or the models loads no network
    code (benchmarks/cli_latency.py prints the times)."""
    from automl.stores import open_storage
    from automl.tracking.common import client_for

    client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    open_storage(f"sqlite:///{tmp_path / 'automl.db'}")
    probe = (
        "import sys\n"
        "from automl.cli import main\n"
        f"code = main({args!r})\n"
        "print(' '.join(m for m in ('torch', 'mlflow', 'optuna') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.stderr.count("Traceback") == 0, done.stderr
    loaded = set(done.stdout.splitlines()[-1].split())
    assert not loaded & not_loaded, (args, loaded)
