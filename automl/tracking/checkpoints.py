"""A trial's checkpoint kept as an artifact of its own MLflow run.

The store every worker already reaches: a retry on another machine downloads the
checkpoint of the run it continues. One fixed artifact path per run, written whole with
each save (a later save replaces it), read back as bytes, deleted once the trial is over
so the artifact store does not grow with every trial's training state.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from automl.tracking.calls import _resilient, _timed
from automl.tracking.runs import Tracker

FOLDER = "checkpoint"
NAME = "state.pt"
PATH = f"{FOLDER}/{NAME}"


class RunCheckpoints:
    """Checkpoint bytes of trial runs, through one tracker (its store's retries and timing)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.what = tracker.what  # how ``_resilient`` names the store while it is away

    @property
    def seconds(self) -> float:
        """The tracker's time in tracking calls, which these calls add to."""
        return self.tracker.seconds

    @seconds.setter
    def seconds(self, value: float) -> None:
        self.tracker.seconds = value

    @_timed
    @_resilient
    def write(self, run_id: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder, NAME)
            path.write_bytes(data)
            self.tracker.client.log_artifact(run_id, str(path), FOLDER)

    @_timed
    @_resilient
    def read(self, run_id: str) -> bytes | None:
        """The run's checkpoint, or None when it has none."""
        client = self.tracker.client
        if not any(item.path == PATH for item in client.list_artifacts(run_id, FOLDER)):
            return None
        with tempfile.TemporaryDirectory() as folder:
            return Path(client.download_artifacts(run_id, PATH, folder)).read_bytes()

    @_timed
    @_resilient
    def delete(self, run_id: str) -> None:
        client = self.tracker.client
        if not client.list_artifacts(run_id, FOLDER):
            return
        uri = client.get_run(run_id).info.artifact_uri
        repository = get_artifact_repository(uri, tracking_uri=self.tracker.tracking_uri)
        repository.delete_artifacts(FOLDER)  # type: ignore[no-untyped-call]
