"""Study and trial runs.

A study invocation is a parent run; each trial a nested child run whose status follows
the Optuna state (COMPLETE -> FINISHED, PRUNED -> KILLED, FAIL -> FAILED). Metrics are
buffered and sent in batches, and every call is timed so the share of wall time spent
tracking can be reported.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from mlflow.entities import Dataset, DatasetInput, Experiment, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from requests.exceptions import RequestException

from automl.errors import AutomlError, StoreError
from automl.records.run import RunTag as Tag
from automl.retry import came_back, hold, is_away, retrying, tell, tracking_service, went_away
from automl.stores import check_writable, is_locked, mask_url, sqlite_file
from automl.tracking.calls import TRACKING_ERRORS, _resilient, _timed, is_transient
from automl.tracking.common import client_for, first_line
from automl.tracking.outcome import ended_tags

RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
WEIGHTS_PATH = "model/weights.pt"
FLUSH_SECONDS = 2.0
PROBE_SECONDS = 10.0  # while the store is away, a training trial tries it this often
MAX_PARAM_LENGTH = 6000


def shown(value: Any) -> str:
    """A param as MLflow shows it: a float to four significant digits (a learning rate of
    0.0031622776601683794 reads 0.003162); the exact values stay in Optuna and in the
    registered model's ``params.json``, which is what rebuilds a configuration."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _params(values: Mapping[str, Any]) -> list[Param]:
    return [Param(k, shown(v)[:MAX_PARAM_LENGTH]) for k, v in values.items()]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def artifact_root_for(tracking_uri: str) -> str | None:
    """Local stores keep artifacts in ``mlartifacts`` beside the database; servers decide."""
    match = re.fullmatch(r"sqlite:///(.+)", tracking_uri)
    if not match:
        return None
    return str(Path(match.group(1)).expanduser().resolve().parent / "mlartifacts")


class TrialRun:
    """One trial's nested run: params at once, metrics in batches, status at the end."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self._metrics: list[Metric] = []
        self._last_flush = time.monotonic()
        self.epochs = 0  # the last epoch with a val_acc: where a pruned trial stopped

    def log_epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        new = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._metrics += new
        if "val_acc" in metrics:
            self.epochs = max(self.epochs, step)
        what = self.tracker.what
        away = is_away(what)
        if away:
            hold(what, "metric values", len(new))
        # While the store is away, training is not slowed by a try at every epoch.
        wait = PROBE_SECONDS if away else FLUSH_SECONDS
        if time.monotonic() - self._last_flush >= wait:
            self._try_flush()

    def _try_flush(self) -> None:
        """During training: one attempt; if the store is away the metrics stay buffered
        (and the outage is said, once)."""
        what = self.tracker.what
        try:
            self.tracker._log_batch_once(self.run_id, metrics=self._metrics, tags=[])
        except TRACKING_ERRORS as exc:
            self._last_flush = time.monotonic()
            if is_transient(exc) and went_away(what, exc):
                hold(what, "metric values", len(self._metrics))
            return
        came_back(what)
        self._metrics = []
        self._last_flush = time.monotonic()

    def flush(self, tags: Mapping[str, str] | None = None) -> None:
        """Send everything buffered, retrying while the store is away."""
        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        if self._metrics or tag_list:
            self.tracker._log_batch(self.run_id, metrics=self._metrics, tags=tag_list)
        self._metrics = []
        self._last_flush = time.monotonic()

    def log_weights(self, model: torch.nn.Module) -> None:
        self.tracker.log_weights(self.run_id, model)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tracker._log_batch(
            self.run_id, metrics=[], tags=[RunTag(k, v) for k, v in tags.items()]
        )

    def finish(
        self, state: str, reason: str | None = None, status: str | None = None, **tags: str
    ) -> None:
        """Send what is buffered and close the run; the status follows ``state`` by default."""
        self.flush(ended_tags(state, reason, self.epochs, **tags))
        self.tracker._terminate(self.run_id, status or RUN_STATUS[state])


def _check_server(uri: str) -> None:
    """A quick answer about a server that is down, before MLflow's long retries."""
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=10)
    except RequestException as exc:
        raise StoreError(
            f"--tracking-uri {mask_url(uri)}: the MLflow tracking server does not answer "
            f"({type(exc).__name__})"
        ) from None


class Tracker:
    """An MLflow tracking store and one experiment in it."""

    def __init__(self, tracking_uri: str, experiment: str | None) -> None:
        """``experiment`` None opens the store for reading runs only."""
        self.seconds = 0.0
        self.tracking_uri = tracking_uri
        served = tracking_uri.startswith(("http://", "https://"))
        # How outages are named on screen: the server, or the local store.
        name = (
            f"the MLflow tracking server {mask_url(tracking_uri)}"
            if served
            else "the MLflow tracking store"
        )
        self.what = tracking_service(tracking_uri, name)
        start = time.perf_counter()
        if experiment is not None:  # it will write
            self._wait_while_locked()
        self.client = client_for(tracking_uri, create=experiment is not None)
        if tracking_uri.startswith(("http://", "https://")):
            _check_server(tracking_uri)
        try:
            found = self.client.get_experiment_by_name(experiment or "Default")
            if experiment is None:
                self.experiment_id = None
            elif found is None:
                self.experiment_id = self._create_experiment(experiment)
            else:
                self.experiment_id = found.experiment_id
                _say_if_elsewhere(tracking_uri, found)
        except Exception as exc:  # any failure to reach the store is fatal at start
            raise StoreError(
                f"--tracking-uri {mask_url(tracking_uri)}: cannot open the MLflow tracking store: "
                f"{first_line(exc)}"
            ) from None
        self.experiment = experiment
        self.artifact_uris: dict[str, str] = {}  # trial runs this tracker started
        self.seconds += time.perf_counter() - start

    def _wait_while_locked(self) -> None:
        """A local store that another process holds locked (an open transaction) is
        waited for as a store that is away is, and said the same way; past the budget,
        one line. Without this the first write would fail after MLflow's own silent wait."""
        try:
            retrying(lambda: check_writable(self.tracking_uri), what=self.what, transient=is_locked)
        except sqlite3.OperationalError as exc:
            if not is_locked(exc):
                raise
            raise StoreError(
                f"--tracking-uri {mask_url(self.tracking_uri)}: {sqlite_file(self.tracking_uri)} "
                f"is locked by another process ({first_line(exc)}) and stayed locked for "
                f"{self.what.budget.get():g} s ({self.what.budget.name}); end that process's "
                "transaction, then run again"
            ) from None

    def _create_experiment(self, name: str) -> str:
        """Create the experiment; another process creating it at the same moment wins and
        its experiment is used (get-or-create)."""
        root = artifact_root_for(self.tracking_uri)
        location = Path(root, _slug(name)).as_uri() if root else None
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except MlflowException as exc:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise exc from None
            return str(found.experiment_id)

    @property
    def _experiment_id(self) -> str:
        if self.experiment_id is None:
            raise AutomlError("this tracker was opened for reading; it has no experiment")
        return str(self.experiment_id)

    # ---------------------------------------------------------------- study runs

    def start_study_run(
        self, study: str, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str:
        return self.start_run(f"study-{study}", params, {Tag.STUDY: study, **tags})

    @_timed
    def start_run(self, name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """A top-level run in this experiment (a study, a retrain, a drift check); each
        write waits while the store is away or locked, so a retry never makes two runs."""
        run_id = self._create_run(name, tags)
        for chunk in _chunks(_params(params), 100):
            self._log_batch_params(run_id, chunk)
        return run_id

    @_resilient
    def _create_run(self, name: str, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(self._experiment_id, run_name=name, tags=dict(tags))
        return str(run.info.run_id)

    @_resilient
    def _log_batch_params(self, run_id: str, params: list[Param]) -> None:
        self.client.log_batch(run_id, params=params)

    def experiment_of(self, run_id: str) -> str | None:
        """The name of the experiment holding ``run_id`` (None when the run is gone)."""
        try:
            experiment_id = self.client.get_run(run_id).info.experiment_id
            return str(self.client.get_experiment(experiment_id).name)
        except Exception:
            return None

    @_timed
    def log_study_artifacts(self, run_id: str, files: Mapping[str, str | Path]) -> None:
        """Log files given as ``{artifact name: local path}`` at the run's root."""
        with tempfile.TemporaryDirectory() as folder:
            for name, path in files.items():
                target = Path(folder, name)
                target.write_bytes(Path(path).read_bytes())
                self.client.log_artifact(run_id, str(target))

    @_timed
    def log_folder(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    @_timed
    def log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for chunk in _chunks(items, 1000):
            self.client.log_batch(run_id, metrics=chunk)

    @_timed
    def set_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    @_timed
    def log_study_text(self, run_id: str, name: str, text: str) -> None:
        self.client.log_text(run_id, text, name)

    @_timed
    def log_dataset(
        self, run_id: str, *, name: str, digest: str, source: str, profile: Mapping[str, Any]
    ) -> None:
        """Record the data set as a run input, so runs can be compared and filtered by data."""
        dataset = Dataset(
            name=name,
            digest=digest,
            source_type="local" if not source.startswith("http") else "http",
            source=json.dumps({"uri": source}),
            profile=json.dumps(dict(profile)),
        )
        context = InputTag(key="mlflow.data.context", value="train/val/test")
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[context])])

    @_timed
    def finish_study_run(
        self, run_id: str, status: str, metrics: Mapping[str, float], tags: Mapping[str, str]
    ) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        self.client.set_terminated(run_id, status)

    # ---------------------------------------------------------------- trial runs

    @_timed
    @_resilient
    def start_trial_run(
        self, parent_run_id: str, study: str, number: int, params: Mapping[str, Any]
    ) -> TrialRun:
        name = f"trial-{number:04d}"
        run = self.client.create_run(
            self._experiment_id,
            run_name=name,
            tags={
                MLFLOW_PARENT_RUN_ID: parent_run_id,
                MLFLOW_RUN_NAME: name,
                Tag.STUDY: study,
                Tag.TRIAL_NUMBER: str(number),
                Tag.STATE: "RUNNING",
                Tag.WORKER: f"{socket.gethostname()}:{os.getpid()}",
            },
        )
        run_id = str(run.info.run_id)
        self.artifact_uris[run_id] = str(run.info.artifact_uri)
        for chunk in _chunks(_params(params), 100):
            self.client.log_batch(run_id, params=chunk)
        return TrialRun(self, run_id)

    @_timed
    def _log_batch_once(self, run_id: str, *, metrics: list[Metric], tags: list[RunTag]) -> None:
        for start in range(0, max(len(metrics), 1), 1000):
            chunk = metrics[start : start + 1000]
            self.client.log_batch(run_id, metrics=chunk, tags=tags if start == 0 else [])

    @_resilient
    def _log_batch(self, run_id: str, *, metrics: list[Metric], tags: list[RunTag]) -> None:
        self._log_batch_once(run_id, metrics=metrics, tags=tags)

    @_timed
    @_resilient
    def close_run(self, run_id: str, status: str, tags: Mapping[str, str]) -> None:
        """Close a run left open by a process that died (status FAILED or KILLED)."""
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, status)

    @_timed
    @_resilient
    def _terminate(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    @_timed
    @_resilient
    def log_weights(self, run_id: str, model: torch.nn.Module) -> None:
        """Save the trained weights so the best model exists whichever process trained it."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder, Path(WEIGHTS_PATH).name)
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
            self.client.log_artifact(run_id, str(path), str(Path(WEIGHTS_PATH).parent))
            self.client.set_tag(run_id, Tag.HAS_WEIGHTS, "true")

    def download(self, run_id: str, path: str, folder: Path) -> Path | None:
        """An artifact (file or folder) of a run, or None when the run has none there."""
        try:
            return Path(self.client.download_artifacts(run_id, path, str(folder)))
        except Exception:  # absent artifacts raise store-specific errors
            return None

    def run_info(self, run_id: str) -> dict[str, Any]:
        """Status, times, params, metrics and tags of a run, as plain values."""
        run = self.client.get_run(run_id)
        return {
            "experiment_id": run.info.experiment_id,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "end_time": run.info.end_time,
            "params": dict(run.data.params),
            "metrics": dict(run.data.metrics),
            "tags": dict(run.data.tags),
        }

    @_timed
    def load_weights(self, run_id: str) -> dict[str, torch.Tensor]:
        """The weights a trial logged, loaded without unpickling anything but tensors."""
        with tempfile.TemporaryDirectory() as folder:
            path = self.client.download_artifacts(run_id, WEIGHTS_PATH, folder)
            state: dict[str, torch.Tensor] = torch.load(path, weights_only=True)
        return state

    def run_url(self, run_id: str) -> str:
        return f"#/experiments/{self.experiment_id}/runs/{run_id}"

    @contextmanager
    def timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


def _say_if_elsewhere(tracking_uri: str, experiment: Experiment) -> None:
    """MLflow keeps an experiment's artifact location as an absolute path: in a project
    folder copied or moved elsewhere, a local store goes on writing artifacts to the old
    folder's ``mlartifacts/``. Say so, with the ways out, rather than let it happen."""
    root = artifact_root_for(tracking_uri)
    location = urllib.parse.urlparse(str(experiment.artifact_location or ""))
    if root is None or location.scheme not in ("", "file"):
        return  # a server decides where artifacts go
    where = Path(urllib.parse.unquote(location.path))
    folder = Path(root).parent
    if where.is_relative_to(folder):
        return
    here = Path(root, _slug(str(experiment.name))).as_uri()
    tell(
        f"the experiment '{experiment.name}' keeps its artifacts in {where}, outside this "
        f"store's folder {folder} (was the project copied or moved?): this search's files "
        f"go there too. To keep them here, search with --experiment NEW_NAME, or point the "
        f"experiment here: sqlite3 {folder / Path(str(sqlite_file(tracking_uri))).name} "
        f"\"UPDATE experiments SET artifact_location = '{here}' WHERE experiment_id = "
        f'{experiment.experiment_id}"'
    )


def _slug(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "-", name).strip("-") or "experiment"
