"""One trial's MLflow run, owned from its start to its end.

The objective says what happened (an epoch, the network's size, its weights, how the
trial ended); the recorder turns it into the run's params, metrics, tags, artifact and
status. A tracking store still away after the retries never ends a trial: what could not
be delivered is said once through ``on_lost`` and the trial goes on, its Optuna result
intact. A weights file that cannot be written (disk full) fails the trial, not the study.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from automl.errors import ArtifactWriteFailed, TrackingUnreachable
from automl.tracking.calls import TRACKING_ERRORS
from automl.tracking.runs import Tracker, TrialRun


class TrialRecorder:
    """Opens the trial's nested run at once; every later call is safe to make."""

    def __init__(
        self,
        tracker: Tracker,
        *,
        parent_run_id: str,
        study: str,
        number: int,
        params: Mapping[str, Any],
        on_lost: Callable[[str], None],
    ) -> None:
        self.on_lost = on_lost
        try:
            self.run: TrialRun = tracker.start_trial_run(parent_run_id, study, number, params)
        except TRACKING_ERRORS as exc:  # still away after the retries: nothing trained yet
            raise TrackingUnreachable(f"the MLflow tracking store is unreachable: {exc}") from None

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def log_epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        """Buffered: sent in batches, kept while the store is away."""
        self.run.log_epoch(step, metrics)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._safely(lambda: self.run.set_tags(tags))

    def save_weights(self, model: torch.nn.Module) -> None:
        """Without reachable tracking the trial keeps no weights (a registration retrains
        it from its params); an unwritable artifact store fails the trial."""
        try:
            self.run.log_weights(model)
        except OSError as exc:  # the artifact store's own failures (HTTP ones too)
            raise ArtifactWriteFailed(f"saving the weights failed: {exc}") from None
        except TRACKING_ERRORS as exc:
            self._lost(exc)

    def finish(
        self, state: str, *, reason: str | None = None, status: str | None = None, **tags: str
    ) -> None:
        """Send what is buffered and close the run; its status follows ``state``."""
        self._safely(lambda: self.run.finish(state, reason=reason, status=status, **tags))

    def _safely(self, call: Callable[[], None]) -> None:
        try:
            call()
        except TRACKING_ERRORS as exc:
            self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        self.on_lost(f"MLflow unreachable after retries; the trial's record is incomplete ({exc})")
