"""A trial's checkpoint kept as an artifact of its own MLflow run.

The store every worker already reaches: a retry on another machine downloads the
checkpoint of the run it continues. One fixed artifact path per run, written whole with
each save (a later save replaces it), read back as bytes, deleted once the trial is over
so the artifact store does not grow with every trial's training state.

Calls go to the run's artifact repository directly: MLflow's own ``list_artifacts`` reads
the run (and its logged models) at every call, which would cost more than the save.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from automl.tracking.calls import _resilient, _timed
from automl.tracking.runs import Tracker

FOLDER = "checkpoint"
NAME = "state.pt"
PATH = f"{FOLDER}/{NAME}"
KEEP = 64  # repositories remembered (one a run; a process runs one trial at a time)


class RunCheckpoints:
    """Checkpoint bytes of trial runs, through one tracker (its store's retries and timing)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.what = tracker.what  # how ``_resilient`` names the store while it is away
        self._repositories: dict[str, ArtifactRepository] = {}

    @property
    def seconds(self) -> float:
        """The tracker's time in tracking calls, which these calls add to."""
        return self.tracker.seconds

    @seconds.setter
    def seconds(self, value: float) -> None:
        self.tracker.seconds = value

    def _repository(self, run_id: str) -> ArtifactRepository:
        if run_id not in self._repositories:
            uri = self.tracker.artifact_uris.get(run_id)
            if uri is None:  # a run another process started: read it once
                uri = self.tracker.client.get_run(run_id).info.artifact_uri
            if len(self._repositories) >= KEEP:
                self._repositories.pop(next(iter(self._repositories)))
            tracking = self.tracker.tracking_uri
            self._repositories[run_id] = get_artifact_repository(uri, tracking_uri=tracking)
        return self._repositories[run_id]

    def _has(self, run_id: str) -> bool:
        listed = self._repository(run_id).list_artifacts(FOLDER)
        return any(item.path == PATH for item in listed)

    @_timed
    def write(self, run_id: str, data: bytes) -> None:
        """One attempt: a training trial does not wait for a store that is away."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder, NAME)
            path.write_bytes(data)
            self._repository(run_id).log_artifact(str(path), FOLDER)  # type: ignore[no-untyped-call]

    @_timed
    @_resilient
    def read(self, run_id: str) -> bytes | None:
        """The run's checkpoint, or None when it has none."""
        if not self._has(run_id):
            return None
        with tempfile.TemporaryDirectory() as folder:
            repository = self._repository(run_id)
            local = repository.download_artifacts(PATH, folder)  # type: ignore[no-untyped-call]
            return Path(local).read_bytes()

    @_timed
    @_resilient
    def delete(self, run_id: str) -> None:
        if self._has(run_id):
            self._repository(run_id).delete_artifacts(FOLDER)  # type: ignore[no-untyped-call]
