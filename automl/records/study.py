"""A study's own record in the Optuna storage: what automl keeps on the study itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class StudyAttr:
    """Attributes of a study (user attributes unless said otherwise)."""

    RECIPE = "automl"  # how to run this study's trials anywhere (its study-scoped settings)
    PARENT_RUN_ID = "mlflow_parent_run_id"  # the MLflow run of the latest search on it
    SEARCH_BEAT = "automl.owner.{}"  # system attribute: a live search's last heartbeat


class RecipeKey:
    """Keys of the recipe beyond the study-scoped settings, which it holds by field name."""

    SPACE = "space"  # the space file's name
    MODEL_NAME = "model_name"  # the registered model's, resolved
    SPACE_YAML = "space_yaml"  # the space file's text: workers need no copy of it
    DATA_DIGEST = "data_digest"  # the data it was searched on
    PARENT_RUN_ID = "parent_run_id"  # the run every worker's trials nest under
    EXPERIMENT = "experiment"
    SPACE_NAME = "space_name"  # older recipes named the space file so


@dataclass(frozen=True)
class StudyRecord:
    """A typed read of what a study recorded."""

    study: Any  # optuna.Study

    @classmethod
    def of(cls, study: Any) -> StudyRecord:
        return cls(study)

    @property
    def parent_run_id(self) -> str | None:
        value = self.study.user_attrs.get(StudyAttr.PARENT_RUN_ID)
        return str(value) if value else None

    @property
    def recipe(self) -> dict[str, Any] | None:
        value = self.study.user_attrs.get(StudyAttr.RECIPE)
        return dict(value) if value else None

    @property
    def data_digest(self) -> str | None:
        """The digest of the data the study was searched on (None: no recipe yet)."""
        return (self.recipe or {}).get(RecipeKey.DATA_DIGEST)


def search_beat_key(owner: str) -> str:
    """The study system attribute where the search ``owner`` says it is alive."""
    return StudyAttr.SEARCH_BEAT.format(owner)
