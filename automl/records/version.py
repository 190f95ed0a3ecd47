"""The tags of a registered version: what it is, how it was concluded, what it was tested
on, and its figures.

A version is written by the search's conclusion and by ``automl retrain``, and read by
promotion, evaluation, drift checks, retraining and ``automl models``; ``VersionTags``
is how they all read it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class VersionTag:
    """Tags of a registered version."""

    # What it is: these make two registrations the same model (``identity``)
    STUDY = "study"
    TRIAL_NUMBER = "trial_number"
    CONCLUSION = "conclusion"  # single, or refit / ensemble 3,1,7 / tta joined by " + "
    # The data it was trained and tested on, and how to load it again
    DATASET = "dataset"
    DATA_DIGEST = "data_digest"
    TEST_DIGEST = "test_digest"
    DATASET_OPTIONS = "dataset_options"  # JSON: image_size, group_level, channels, classes
    PARAMS = "params"  # versions registered before the params travelled with the model
    WEIGHTS = "weights"  # the pretrained weights its backbone started from
    # Its figures (four decimals; the exact values are metrics of its run)
    VAL_ACC = "val_acc"
    TEST_ACC = "test_acc"
    TRIAL_RUN_ID = "trial_run_id"
    OBJECTIVES = "objectives"  # JSON: its figure on each objective (a Pareto front's)
    PARETO = "pareto"
    # How it was concluded
    REFIT = "refit"  # train+val
    REFIT_EPOCHS = "refit_epochs"
    TEST_ACC_SEARCH = "test_acc_search"  # before the refit
    ENSEMBLE = "ensemble"  # the trials it averages, best first: "3,1,7"
    ENSEMBLE_WEIGHTS = "ensemble_weights"  # JSON: each member's weight, {"3": 0.5, ...}
    TEST_ACC_SINGLE = "test_acc_single"  # its best member alone
    TTA = "tta"  # mirror or none: what the validation split chose
    VAL_ACC_UNMIRRORED = "val_acc_unmirrored"
    VAL_ACC_MIRRORED = "val_acc_mirrored"
    TEST_ACC_UNMIRRORED = "test_acc_unmirrored"
    # A retrained version's lineage
    PARENT_MODEL = "parent_model"
    PARENT_VERSION = "parent_version"
    PARENT_DATASET = "parent_dataset"
    PARENT_ENSEMBLE = "parent_ensemble"
    RETRAIN_START = "retrain.start"  # weights or scratch
    RETRAIN_NEW_HEAD = "retrain.new_head"
    RETRAIN_RUN_ID = "retrain_run_id"
    # The SHA-256 of each of its files at registration, JSON: {"MLmodel": "ab12...", ...}
    FILE_DIGESTS = "automl.file_digests"
    FILE_DIGEST_PREFIX = "automl.sha256/"  # versions before: one tag a file, then its path


def figure(value: float | None) -> str:
    """A measured figure as a tag: four decimals are what anyone compares or reads, and the
    exact value is a metric of the run (``none`` when there is no figure)."""
    return "none" if value is None else f"{value:.4f}"


def mirror_tags(mirrored: bool, plain: float, both: float) -> dict[str, str]:
    """What the validation split said of test-time mirroring, as a version's tags: whether
    it was taken and the accuracies it was decided on; none when there was no validation
    split to decide on (the figures are NaN)."""
    if math.isnan(plain):
        return {}
    return {
        VersionTag.TTA: "mirror" if mirrored else "none",
        VersionTag.VAL_ACC_UNMIRRORED: figure(plain),
        VersionTag.VAL_ACC_MIRRORED: figure(both),
    }


@dataclass(frozen=True)
class VersionTags:
    """A typed read of a version's tags."""

    tags: Mapping[str, str]

    @classmethod
    def of(cls, tags: Mapping[str, str]) -> VersionTags:
        return cls(tags)

    def _float(self, key: str) -> float | None:
        try:
            return float(self.tags[key])
        except (KeyError, ValueError):
            return None

    @property
    def dataset(self) -> str | None:
        return self.tags.get(VersionTag.DATASET)

    @property
    def test_digest(self) -> str | None:
        return self.tags.get(VersionTag.TEST_DIGEST)

    @property
    def records_test_split(self) -> bool:
        """Whether it says which data it was tested on (versions registered by hand may not)."""
        return self.dataset is not None and self.test_digest is not None

    @property
    def dataset_options(self) -> dict[str, Any]:
        return dict(json.loads(self.tags.get(VersionTag.DATASET_OPTIONS) or "{}"))

    @property
    def study(self) -> str | None:
        return self.tags.get(VersionTag.STUDY)

    @property
    def trial_number(self) -> str | None:
        return self.tags.get(VersionTag.TRIAL_NUMBER)

    @property
    def val_acc(self) -> float | None:
        return self._float(VersionTag.VAL_ACC)

    @property
    def test_acc(self) -> float | None:
        return self._float(VersionTag.TEST_ACC)

    @property
    def test_acc_single(self) -> float | None:
        return self._float(VersionTag.TEST_ACC_SINGLE)

    @property
    def ensemble(self) -> str | None:
        """The trials it averages as recorded ("3,1,7"), or None for one network."""
        return self.tags.get(VersionTag.ENSEMBLE) or None

    @property
    def members(self) -> tuple[int, ...]:
        return tuple(int(n) for n in (self.ensemble or "").split(",") if n)

    @property
    def member_weights(self) -> dict[int, float]:
        """Each member's weight in the average (equal for versions registered before the
        members were weighted)."""
        recorded = json.loads(self.tags.get(VersionTag.ENSEMBLE_WEIGHTS) or "{}")
        if recorded:
            return {int(number): float(weight) for number, weight in recorded.items()}
        return {number: 1 / len(self.members) for number in self.members}

    @property
    def file_digests(self) -> dict[str, str]:
        """The SHA-256 of each file recorded at registration, by path ({} when none was):
        one JSON tag, or, for versions registered before it, a tag a file. Raises
        ``ValueError`` when the JSON tag is not a mapping of path to digest."""
        raw = self.tags.get(VersionTag.FILE_DIGESTS)
        if raw is None:
            prefix = VersionTag.FILE_DIGEST_PREFIX
            return {k[len(prefix) :]: v for k, v in self.tags.items() if k.startswith(prefix)}
        recorded = json.loads(raw)
        if not isinstance(recorded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in recorded.items()
        ):
            raise ValueError(f"{VersionTag.FILE_DIGESTS} is not a JSON object of path to digest")
        return dict(recorded)

    @property
    def params(self) -> str | None:
        """The ``params`` tag of versions registered before params travelled with models."""
        return self.tags.get(VersionTag.PARAMS)
