"""A trial's checkpoint kept as an artifact of its own MLflow run.

The store every worker already reaches: a retry on another machine downloads the
checkpoint of the run it continues. Artifact stores copy a file in place, so a process
killed mid-copy would leave a torn file where the last good checkpoint was. Each save is
therefore a new file (``checkpoint/state-EEEEEE.pt``, its epoch in the name) and the
older ones are deleted only once it is written: there is always a whole checkpoint,
and readers take the newest that reads (``saved``). Deleted once the trial is over,
so the artifact store does not grow with every trial's training state.

Calls go to the run's artifact repository directly: MLflow's own ``list_artifacts`` reads
the run (and its logged models) at every call, which would cost more than the save.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from automl.tracking.calls import _resilient, _timed
from automl.tracking.runs import Tracker

FOLDER = "checkpoint"
NAME = re.compile(r"state-(\d+)\.pt")
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

    def _saved(self, run_id: str) -> list[tuple[int, str]]:
        """(epoch, artifact path) of the run's checkpoint files, newest first."""
        found = []
        for item in self._repository(run_id).list_artifacts(FOLDER):
            match = NAME.fullmatch(Path(item.path).name)
            if match and not item.is_dir:
                found.append((int(match.group(1)), item.path))
        return sorted(found, reverse=True)

    @_timed
    def write(self, run_id: str, epoch: int, data: bytes) -> None:
        """One attempt: a training trial does not wait for a store that is away. The new
        file first, then the older ones go."""
        repository = self._repository(run_id)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder, f"state-{epoch:06d}.pt")
            path.write_bytes(data)
            repository.log_artifact(str(path), FOLDER)  # type: ignore[no-untyped-call]
        for older, artifact in self._saved(run_id):
            if older != epoch:
                repository.delete_artifacts(artifact)  # type: ignore[no-untyped-call]

    @_timed
    @_resilient
    def saved(self, run_id: str) -> list[str]:
        """The run's checkpoint files, newest first (none when it has none): a reader
        takes the first that reads whole."""
        return [artifact for _, artifact in self._saved(run_id)]

    @_timed
    @_resilient
    def read(self, run_id: str, artifact: str) -> bytes:
        with tempfile.TemporaryDirectory() as folder:
            repository = self._repository(run_id)
            local = repository.download_artifacts(artifact, folder)  # type: ignore[no-untyped-call]
            return Path(local).read_bytes()

    @_timed
    @_resilient
    def delete(self, run_id: str) -> None:
        if self._saved(run_id):
            self._repository(run_id).delete_artifacts(FOLDER)  # type: ignore[no-untyped-call]
