"""What the search bought: the registered model against the best configuration the study
was given before it sampled anything (the space's baseline and portfolio), and what the
ensemble added over the best trial alone, in points of validation accuracy.

A search earns its keep only by beating what a user would have had without it; every
figure here is on the validation split, which every trial and the registered model are
measured on alike (the configurations given first are never tested on their own).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from automl.records import TrialRecord, by_merit


@dataclass(frozen=True)
class Gains:
    given: float | None  # the best given configuration's validation accuracy
    given_trial: int | None
    best: float | None  # the best trial's, sampled or given
    best_trial: int | None
    registered: float | None  # the registered model's (an ensemble's, mirrored ...)

    @classmethod
    def of(cls, trials: Iterable[Any], registered: float | None) -> Gains:
        ranked = by_merit(trials)
        given = [t for t in ranked if TrialRecord.of(t).origin is not None]
        top = ranked[0] if ranked else None
        return cls(
            float(given[0].values[0]) if given else None,
            given[0].number if given else None,
            float(top.values[0]) if top is not None else None,
            top.number if top is not None else None,
            registered,
        )

    @property
    def search_points(self) -> float | None:
        """Points the sampled trials added over the configurations given first."""
        if self.given is None or self.best is None:
            return None
        return 100 * (self.best - self.given)

    @property
    def conclusion_points(self) -> float | None:
        """Points the conclusion (ensemble, mirroring) added over the best trial alone."""
        if self.best is None or self.registered is None:
            return None
        return 100 * (self.registered - self.best)

    def line(self, registered_as: str = "the registered model") -> str:
        """One line for the summary and the parent run's note ("" with nothing to say);
        ``registered_as`` names what was registered ("the ensemble of 3", ...)."""
        parts = []
        if self.search_points is not None:
            source = (
                "the search found nothing better than"
                if self.best_trial == self.given_trial
                else f"search {self.search_points:+.1f} points over"
            )
            parts.append(
                f"{source} the best given configuration (trial {self.given_trial}, "
                f"val_acc {self.given:.4f})"
            )
        if self.conclusion_points is not None:
            parts.append(
                f"{registered_as} {self.conclusion_points:+.1f} points over the best trial alone"
            )
        return "; ".join(parts)


def bought(trials: Iterable[Any], registered: float, members: int = 0) -> str:
    """What the search bought, one line, for a registered model with validation accuracy
    ``registered`` (an ensemble of ``members`` trials, or 0 for one)."""
    name = f"the ensemble of {members}" if members else "the registered model"
    return Gains.of(trials, registered).line(name)
