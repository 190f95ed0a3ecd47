"""Everything automl records in or reads from MLflow; the only package that imports mlflow.

``runs`` writes studies and trials, ``models`` logs and loads the self-contained image
models, ``registry`` handles registered models, versions, aliases and their tags, and
``recorder`` owns one trial's run from start to end.
"""

from automl.tracking.common import store_errors_in
from automl.tracking.models import (
    ImageModel,
    checked_model_folder,
    load_image_model,
    log_image_model,
)
from automl.tracking.recorder import TrialRecorder
from automl.tracking.registry import Registry, VersionInfo
from automl.tracking.runs import TRACKING_ERRORS, Tracker, TrialRun, artifact_root_for

__all__ = [
    "TRACKING_ERRORS",
    "ImageModel",
    "Registry",
    "Tracker",
    "TrialRecorder",
    "TrialRun",
    "VersionInfo",
    "artifact_root_for",
    "checked_model_folder",
    "load_image_model",
    "log_image_model",
    "store_errors_in",
]
