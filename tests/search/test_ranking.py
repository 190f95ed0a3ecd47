"""Ties on validation accuracy are broken by validation loss, never against the accuracy."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from automl.search.ranking import VAL_LOSS, beats, best_complete, ranked


def study_of(*trials: tuple[float, float | None]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for value, loss in trials:
        attrs = {} if loss is None else {VAL_LOSS: loss}
        study.add_trial(create_trial(value=value, user_attrs=attrs, state=TrialState.COMPLETE))
    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={0: 1.0}))
    return study


def test_the_lowest_loss_wins_among_equal_accuracies():
    study = study_of((1.0, 0.30), (0.99, 0.01), (1.0, 0.05), (1.0, None))
    assert study.best_trial.number == 0  # Optuna's own choice: the first of the ties
    assert best_complete(study).number == 2
    assert [t.number for t in ranked(study.trials)] == [2, 0, 3, 1]


def test_a_new_result_beats_the_best_on_accuracy_or_on_loss_at_equal_accuracy():
    study = study_of((1.0, 0.30))
    assert beats(study, 1.0, 0.10)
    assert not beats(study, 1.0, 0.30) and not beats(study, 1.0, 0.50)
    assert not beats(study, 0.99, 0.0001)
    assert beats(optuna.create_study(direction="maximize"), 0.1, 9.0)  # nothing to beat yet
    with pytest.raises(ValueError):
        best_complete(optuna.create_study(direction="maximize"))
