"""What a search did: its trials, its conclusion and where to look, in one value."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import optuna

from automl.records import TrialRecord
from automl.release.conclude import Registration
from automl.search.scheduler.runner import TrialsRun

if TYPE_CHECKING:
    from automl.data import ImageData
    from automl.insight.evaluate import Evaluation
    from automl.insight.story import StoryLinks
    from automl.search.settings import SearchSettings
    from automl.tracking import Tracker


@dataclass(frozen=True)
class Conclusion:
    """What concluding a search did: the versions it registered (the first holds the alias
    ``candidate``; a Pareto front's others follow) and the evaluation of the first."""

    registrations: tuple[Registration, ...] = ()
    registration_seconds: float = 0.0
    evaluation: Evaluation | None = None
    insight_seconds: float = 0.0

    @property
    def registration(self) -> Registration | None:
        return self.registrations[0] if self.registrations else None


@dataclass(frozen=True)
class SearchOutcome:
    """A search's trials, its conclusion, and where the MLflow UI tells its story."""

    settings: SearchSettings
    study: optuna.Study
    data: ImageData
    parent_run_id: str
    tracker: Tracker
    run: TrialsRun
    conclusion: Conclusion
    wall_seconds: float
    story: StoryLinks | None = None  # None when the tracking store could not take it
    notes: tuple[str, ...] = field(default_factory=tuple)  # said after the summary

    @property
    def trials_run(self) -> list[optuna.trial.FrozenTrial]:
        return self.run.trials

    @property
    def interrupted(self) -> bool:
        return self.run.interrupted

    @property
    def optimize_seconds(self) -> float:
        """From the first claim to the last trial's end."""
        return self.run.seconds

    @property
    def optuna_seconds(self) -> float:
        return self.run.optuna_seconds

    @property
    def tracking_seconds_search(self) -> float:
        """MLflow calls up to the end of the last trial."""
        return self.run.tracking_seconds

    @property
    def registration(self) -> Registration | None:
        return self.conclusion.registration

    @property
    def pareto(self) -> list[Registration]:
        return list(self.conclusion.registrations)

    @property
    def registration_seconds(self) -> float:
        return self.conclusion.registration_seconds

    @property
    def evaluation(self) -> Evaluation | None:
        return self.conclusion.evaluation

    @property
    def insight_seconds(self) -> float:
        return self.conclusion.insight_seconds

    @property
    def states(self) -> Counter[str]:
        return Counter(t.state.name for t in self.study.get_trials(deepcopy=False))

    @property
    def epochs_run(self) -> int:
        return sum(TrialRecord.of(t).epochs_run for t in self.trials_run)
