"""Shared fixtures: real data, real temporary stores, tiny search spaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

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
    with tempfile.TemporaryDirectory() as profile:
        run = [CHROMIUM, *flags, f"--user-data-dir={profile}"]
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [*run, f"--screenshot={screenshot}", url], capture_output=True, timeout=120
            )
        result = subprocess.run(
            [*run, "--dump-dom", url], capture_output=True, text=True, timeout=120
        )
    return result.stdout


def mlflow_client(uri: str):
    """A client whose registry is the same store (not the process-wide default)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri, registry_uri=uri)
