"""What automl records, spelled once: the keys of a trial's Optuna attributes, a study's
attributes, the tags of its MLflow runs and of its registered versions, each read back
through a typed accessor, and the one rule that ranks trials.

Every layer may import this package (it imports nothing of automl but ``errors``), so a
reader never spells a key or re-derives a ranking itself.
"""

from automl.records.ranking import by_merit, last_val_acc, place, ranked
from automl.records.run import RunArtifact, RunTag, StudyRunTags, StudyState
from automl.records.study import StudyAttr, StudyRecord
from automl.records.trial import Ticket, TrialAttr, TrialRecord
from automl.records.version import VersionTag, VersionTags

__all__ = [
    "RunArtifact",
    "RunTag",
    "StudyAttr",
    "StudyRecord",
    "StudyRunTags",
    "StudyState",
    "Ticket",
    "TrialAttr",
    "TrialRecord",
    "VersionTag",
    "VersionTags",
    "by_merit",
    "last_val_acc",
    "place",
    "ranked",
]
