"""Shared fixtures: real data, real temporary stores, tiny search spaces."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# A test runner started in the background of a non-interactive shell (`make test &`, nohup)
# starts with SIGINT ignored, and every child it starts inherits that: Ctrl-C, in this
# process and in the commands it starts, could not be tested. The suite runs as it would
# from a terminal, however it was started.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SPACE = REPO / "search_spaces" / "default.yaml"

# Small networks and two epochs: a real search that finishes in seconds on a CPU.
TINY_SPACE = """
architecture:
  stages: {type: int, low: 1, high: 2}
  per_stage:
    width: [8, 16]
    convs: 1
  activation: [relu, gelu]
  batch_norm: true
augmentation:
  strength: {type: float, low: 0.0, high: 0.5}
  translate: [true, false]
optimizer:
  name: [sgd, adamw]
  lr: {type: float, low: 0.02, high: 0.2, log: true}
  momentum: {type: float, low: 0.8, high: 0.95, when: {name: sgd}}
training:
  batch_size: [32, 64]
  epochs: 2
  schedule: onecycle
"""


@pytest.fixture(scope="session")
def digits():
    from automl.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def tiny_space_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


def search_settings(tmp_path: Path, space_text: str = TINY_SPACE, **values):
    """Settings for a small CPU search with both stores and the space in ``tmp_path``;
    ``values`` add to or override them (``trials`` and ``study_name`` at least)."""
    from automl.search.settings import SearchSettings

    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    defaults = {
        "space": space, "storage": f"sqlite:///{tmp_path / 'automl.db'}",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "max_epochs": 2, "device": "cpu", "evaluate": False,
        "ensemble": 1,  # one model, its trial's weights; ensembles are tested apart
    }  # fmt: skip
    return SearchSettings(**{**defaults, **values})


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, str]:
    """A fresh Optuna storage and MLflow tracking store in a temporary folder."""
    return {
        "storage": f"sqlite:///{tmp_path / 'automl.db'}",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }


ARTIFACTS = REPO / "test-artifacts"  # screenshots kept for people to look at (git-ignored)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(url: str, *, screenshot: Path | None = None, budget_ms: int = 20000) -> str:
    """Render ``url`` in headless Chromium; returns the DOM after scripts ran."""
    if CHROMIUM is None:
        pytest.skip("needs Chromium (.ci/run installs Debian's chromium)")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-quic", f"--virtual-time-budget={budget_ms}", "--window-size=1400,2400",
    ]  # fmt: skip
    if screenshot is not None:  # the same rendering: one start of the browser, not two
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        flags.append(f"--screenshot={screenshot}")
    with tempfile.TemporaryDirectory() as profile:
        run = [CHROMIUM, *flags, f"--user-data-dir={profile}", "--dump-dom", url]
        result = subprocess.run(run, capture_output=True, text=True, timeout=120)
    return result.stdout


def mlflow_client(uri: str):
    """A client whose registry is the same store (not the process-wide default)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri, registry_uri=uri)


PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bin_env(**extra: str) -> dict[str, str]:
    """The environment with this interpreter's scripts (automl, mlflow) first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **extra}


def pg_admin(sql: str) -> None:
    """One statement on the local PostgreSQL server (trust authentication)."""
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(sql)


@contextmanager
def scratch_database(suffix: str) -> Iterator[str]:
    """A fresh PostgreSQL database named for this test process, dropped afterwards; the
    test is skipped when PostgreSQL is not reachable. Yields its name."""
    name = f"automl_test_{os.getpid()}_{suffix}"
    try:
        pg_admin(f"drop database if exists {name}")
        pg_admin(f"create database {name}")
    except Exception as exc:
        pytest.skip(f"PostgreSQL is not reachable: {exc}")
    try:
        yield name
    finally:
        pg_admin(f"drop database if exists {name} with (force)")


def wait_for_http(
    url: str,
    *,
    limit: float = 180,
    process: subprocess.Popen | None = None,
    output: Callable[[], str] = lambda: "",
    expect: bytes | None = None,
) -> None:
    """Until ``url`` answers (with the body ``expect``, when given); fails at once, with
    ``output()``, when the server ``process`` exits first."""
    deadline = time.monotonic() + limit
    while True:
        if process is not None:
            assert process.poll() is None, output()
        try:
            body = urllib.request.urlopen(url, timeout=2).read()
            if expect is None or body == expect:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {limit:.0f} s"
        time.sleep(0.3)


def automl_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "automl", *args]


def start_interruptible(*args: str, **env: str) -> subprocess.Popen:
    """``automl ARGS`` in its own session, its output piped: signals sent to it reach it
    alone (SIGINT is not ignored: see the top of this file). Safe from any thread."""
    return subprocess.Popen(
        automl_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=bin_env(**env), start_new_session=True,
    )  # fmt: skip


def wait_for_running_trial(db: Path, process: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    rows = conn.execute(
                        "select count(*) from trials where state = 'RUNNING'"
                    ).fetchone()
                if rows and rows[0]:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.2)
    raise AssertionError("no trial started")
