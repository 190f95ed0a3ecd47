"""The scale benchmarks' bulk fill writes trials straight into Optuna's tables: the study it
leaves must read back through Optuna, and through automl's own storage, as a study a
search left (``benchmarks/_study_fill.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _study_fill import fill, photos_space

from automl.records import TrialAttr
from automl.stores import close_storage, open_storage
from automl.stores.compat import StudyStorage


def test_a_filled_study_reads_back_as_a_search_left_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    backend = open_storage(url)
    optuna.create_study(study_name="filled", storage=backend, direction="maximize")
    assert fill(url, "filled", 30, chunk=7) == 30
    assert fill(url, "filled", 5, running=True) == 35
    trials = optuna.load_study(study_name="filled", storage=backend).get_trials()
    assert [t.number for t in trials] == list(range(35))
    names = {p.name for p in photos_space().params}
    for trial in trials[:30]:
        assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert trial.intermediate_values and set(trial.user_attrs) >= {TrialAttr.PARAMS}
        assert (trial.value is not None) == (trial.state == TrialState.COMPLETE)
        assert names & set(trial.params)  # the photos space's own parameters
        assert all(d._contains(d.to_internal_repr(trial.params[n]))
                   for n, d in trial.distributions.items())  # fmt: skip
    assert {t.state for t in trials[30:]} == {TrialState.RUNNING}
    # Optuna creates the next trial after them, and a worker's storage reads them all.
    study = optuna.load_study(study_name="filled", storage=StudyStorage(backend))
    assert study.ask().number == 35
    assert len(study.get_trials(deepcopy=False)) == 36
    close_storage(backend)
