"""Everything automl records in or reads from MLflow; the only package that imports mlflow.

``runs`` writes studies and trials, ``models`` logs and loads the self-contained image
models, ``registry`` handles registered models, versions, aliases and their tags,
``recorder`` owns one trial's run from start to end, and ``run_checkpoints`` keeps a trial's
training state as an artifact of its run.

Names are loaded on first use: ``automl models`` needs the registry, not torch, which
``models`` and ``runs`` bring in (seconds and hundreds of MB for a command that lists).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from automl.tracking.calls import TRACKING_ERRORS
    from automl.tracking.common import store_errors_in
    from automl.tracking.listing import VersionInfo
    from automl.tracking.models import (
        ImageModel,
        checked_model_folder,
        load_image_model,
        log_image_model,
    )
    from automl.tracking.outcome import ended_tags
    from automl.tracking.recorder import TrialRecorder
    from automl.tracking.registry import Registry
    from automl.tracking.run_checkpoints import RunCheckpoints
    from automl.tracking.runs import Tracker, TrialRun, artifact_root_for

_WHERE = {
    "store_errors_in": "common",
    "ImageModel": "models",
    "checked_model_folder": "models",
    "load_image_model": "models",
    "log_image_model": "models",
    "ended_tags": "outcome",
    "TrialRecorder": "recorder",
    "Registry": "registry",
    "VersionInfo": "listing",
    "TRACKING_ERRORS": "calls",
    "RunCheckpoints": "run_checkpoints",
    "Tracker": "runs",
    "TrialRun": "runs",
    "artifact_root_for": "runs",
}

__all__ = [
    "TRACKING_ERRORS",
    "ImageModel",
    "Registry",
    "RunCheckpoints",
    "Tracker",
    "TrialRecorder",
    "TrialRun",
    "VersionInfo",
    "artifact_root_for",
    "checked_model_folder",
    "ended_tags",
    "load_image_model",
    "log_image_model",
    "store_errors_in",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'automl.tracking' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"automl.tracking.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
