"""The tags of a search's MLflow runs: the parent run of each search (``study-NAME``) and
the nested run of each trial (``trial-NNNN``).

MLflow's own keys (``mlflow.note.content`` ...) are named here too, so no other module
spells a tag; ``StudyRunTags`` reads a parent run's tags back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

REGISTERED_PREFIX = "models:/"


class RunTag:
    """Tags of study and trial runs."""

    # Both kinds of run
    STUDY = "study"
    STATE = "state"  # COMPLETE, PRUNED @ 3, FAIL: reason (trial); DONE, INTERRUPTED (study)
    REASON = "reason"
    MESSAGE = "message"
    NOTE = "mlflow.note.content"  # MLflow's: the run's description, Markdown on its page
    SOURCE_NAME = "mlflow.source.name"  # MLflow's: what made the run
    GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's: the code's commit
    SEED = "seed"
    # A trial's run
    TRIAL_NUMBER = "trial_number"
    WORKER = "worker"
    EPOCHS = "epochs"  # epochs a complete trial trained
    ORIGIN = "origin"
    RESUMED_FROM = "resumed_from"
    RESUMED_AT = "resumed_at_epoch"
    CHECKPOINT_EPOCH = "checkpoint_epoch"
    EPOCHS_CAP = "epochs_cap"
    WEIGHTS = "weights"
    CUT = "cut"
    HAS_WEIGHTS = "has_weights"
    # NAME/V on a trial's run; models:/NAME@alias on a study's
    REGISTERED_MODEL = "registered_model"
    # A study's (parent) run
    DATASET = "dataset"
    DATA_DIGEST = "data_digest"
    KIND = "kind"  # study, retrain, drift
    MODE = "mode"  # search, or workers (the study's trials run by `automl worker`)
    BEST_TRIAL = "best_trial"
    BEST_TRIAL_RUN_ID = "best_trial_run_id"
    REGISTERED_VERSION = "registered_version"  # NAME/V
    ENSEMBLE = "ensemble"  # the trials its registered model averages, best first: "3,1,7"
    TEST_ACC_SINGLE = "test_acc_single"  # that ensemble's best member alone (four decimals)
    VERSION_PREFIX = "version."  # version.<package>: the versions the search ran with


class RunArtifact:
    """Artifacts of a study run (and of a registered version: the evaluation)."""

    SPACE = "search_space.yaml"
    RESOLVED_CONFIG = "resolved_config.json"
    DATA_REPORT = "data_report.json"
    EVALUATION = "evaluation"  # a folder: figures and metrics of the registered model
    STUDY_PLOTS = "study_plots"  # a folder


class StudyState:
    """The values of a study run's ``state`` tag."""

    DONE = "DONE"
    INTERRUPTED = "INTERRUPTED"
    ABANDONED = "ABANDONED"  # its search died; the next search on the study closed it


@dataclass(frozen=True)
class StudyRunTags:
    """A typed read of a study run's tags."""

    tags: Mapping[str, str]

    @classmethod
    def of(cls, tags: Mapping[str, str]) -> StudyRunTags:
        return cls(tags)

    @property
    def mode(self) -> str:
        return self.tags.get(RunTag.MODE, "search")

    @property
    def registered_model(self) -> str | None:
        """The URI the search registered its model as (``models:/NAME@candidate``)."""
        return self.tags.get(RunTag.REGISTERED_MODEL) or None

    @property
    def registered_name(self) -> str | None:
        """The name of the model the search registered."""
        uri = self.registered_model
        if not uri:
            return None
        return uri.removeprefix(REGISTERED_PREFIX).partition("@")[0] or None

    @property
    def best_trial(self) -> str | None:
        return self.tags.get(RunTag.BEST_TRIAL)

    @property
    def members(self) -> tuple[int, ...]:
        """The trials the registered model averages, best first (empty: one trial)."""
        raw = self.tags.get(RunTag.ENSEMBLE) or ""
        return tuple(int(n) for n in raw.split(",") if n.strip().isdigit())

    @property
    def test_acc_single(self) -> float | None:
        """The registered ensemble's best member alone on the test split."""
        try:
            return float(self.tags[RunTag.TEST_ACC_SINGLE])
        except (KeyError, ValueError):
            return None
