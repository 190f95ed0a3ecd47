"""A search's lifecycle tried as a hostile user would: resumed with another space, killed
while concluding, cut by its budget, named after a folder; every record closed and said."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest

from automl.cli import main
from automl.pipeline import run_search
from automl.records import RunTag, StudyAttr, TrialAttr
from automl.records.study import search_beat_key
from automl.search.settings import SearchSettings
from automl.stores import compat, open_storage
from tests.conftest import mlflow_client, search_settings


def _study(settings: SearchSettings) -> optuna.Study:
    return optuna.load_study(study_name=settings.study_name, storage=open_storage(settings.storage))


def _parents(settings: SearchSettings) -> list:
    client = mlflow_client(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.study_name)
    return client.search_runs([experiment.experiment_id], "tags.kind = 'study'")


@pytest.fixture
def searched(tmp_path: Path) -> SearchSettings:
    """A finished one-trial, one-epoch search in ``tmp_path``."""
    settings = search_settings(tmp_path, trials=1, max_epochs=1, study_name="life")
    run_search(settings)
    return settings


@pytest.mark.hostile("inputs")
@pytest.mark.slow
def test_resuming_with_another_space_is_refused_in_one_line_before_anything_is_written(
    searched, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    args = ["search", "--trials", "1", "--study-name", "life", "--space", "default",
            "--storage", searched.storage, "--tracking-uri", searched.tracking_uri,
            "--max-epochs", "1", "--device", "cpu", "--no-evaluate"]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "--space" in err and "life" in err
    assert "Traceback" not in err
    assert len(_study(searched).trials) == 1  # no ticket queued, no trial started
    assert [p.info.status for p in _parents(searched)] == ["FINISHED"]  # no parent run


@pytest.mark.hostile("consistency")
@pytest.mark.slow
def test_every_abandoned_parent_run_is_closed_not_only_the_latest(searched, monkeypatch):
    """Two searches killed while concluding, the second started within the first's grace:
    the next search closes both parent runs, whose heartbeats are gone."""
    client = mlflow_client(searched.tracking_uri)
    study = _study(searched)
    experiment = client.get_experiment_by_name("life").experiment_id
    storage, study_id = compat.storage_of(study), compat.study_id(study)
    killed = []
    for _ in range(2):  # as a kill -9 while registering leaves them: RUNNING, beat recent
        run = client.create_run(experiment, tags={RunTag.KIND: "study", RunTag.MODE: "search"})
        storage.set_study_system_attr(study_id, search_beat_key(run.info.run_id),
                                      {"beat": time.time()})  # fmt: skip
        study.set_user_attr(StudyAttr.PARENT_RUN_ID, run.info.run_id)
        killed.append(run.info.run_id)
    monkeypatch.setenv("AUTOML_GRACE_SECONDS", "1")
    time.sleep(1.5)  # both heartbeats have gone silent
    run_search(searched.but(trials=1))
    for run_id in killed:
        assert client.get_run(run_id).info.status == "FAILED", run_id
    assert not [p for p in _parents(searched) if p.info.status == "RUNNING"]


@pytest.mark.hostile("consistency")
def test_a_live_search_parent_run_is_left_open(searched, monkeypatch):
    client = mlflow_client(searched.tracking_uri)
    study = _study(searched)
    experiment = client.get_experiment_by_name("life").experiment_id
    run = client.create_run(experiment, tags={RunTag.KIND: "study", RunTag.MODE: "search"})
    compat.storage_of(study).set_study_system_attr(
        compat.study_id(study), search_beat_key(run.info.run_id), {"beat": time.time() + 60}
    )
    from automl.search.scheduler.session import close_abandoned
    from automl.search.trial.checkpoints import open_store
    from automl.tracking import Tracker

    tracker = Tracker(searched.tracking_uri, "life")
    assert close_abandoned(study, tracker, open_store(searched, tracker)) == []
    assert client.get_run(run.info.run_id).info.status == "RUNNING"


@pytest.mark.hostile("consistency")
def test_a_completed_trial_keeps_no_checkpoint_epoch(tmp_path):
    settings = search_settings(
        tmp_path, trials=1, max_epochs=2, study_name="kept", checkpoint_seconds=0.001
    )
    run_search(settings)
    (trial,) = _study(settings).trials
    assert trial.state.name == "COMPLETE"
    assert trial.user_attrs.get(TrialAttr.CHECKPOINT_EPOCH) is None


@pytest.mark.hostile("inputs")
def test_a_folder_named_like_its_space_gives_its_name_once(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    settings = SearchSettings(dataset=f"imagefolder:{folder}", space=Path("photos.yaml"))
    assert settings.resolve().study_name == "photos"
    other = SearchSettings(dataset=f"imagefolder:{folder}", space=Path("small.yaml"))
    assert other.resolve().study_name == "photos-small"


@pytest.mark.hostile("inputs")
def test_study_status_without_a_name_lists_the_studies(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'automl.db'}"
    for name in ("first", "second"):
        optuna.create_study(study_name=name, storage=open_storage(storage))
    code = main(["study", "status", "--storage", storage])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "first" in out and "second" in out and "Missing" not in err


def _study_with_a_trial_of(tmp_path: Path, seconds: float) -> optuna.Study:
    """A study whose one complete trial took ``seconds``."""
    import datetime

    from optuna.distributions import FloatDistribution

    study = optuna.create_study(
        study_name="budget", storage=open_storage(f"sqlite:///{tmp_path / 'automl.db'}")
    )
    end = datetime.datetime.now()
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, value=0.5
        )
    )
    trial_id = compat.trial_id(study.trials[0])
    from sqlalchemy import create_engine, text

    # create_trial stamps both ends at once: give the trial its duration
    with create_engine(f"sqlite:///{tmp_path / 'automl.db'}").begin() as conn:
        conn.execute(
            text(
                "update trials set datetime_start = :s, datetime_complete = :e where trial_id = :t"
            ),
            {"s": end - datetime.timedelta(seconds=seconds), "e": end, "t": trial_id},
        )
    from automl.stores.clock import OptunaClock
    from automl.stores.compat import StudyStorage

    storage = StudyStorage(open_storage(f"sqlite:///{tmp_path / 'automl.db'}"), OptunaClock())
    return optuna.load_study(study_name="budget", storage=storage)


@pytest.mark.hostile("consistency")
@pytest.mark.parametrize(("left", "starts"), [(2.0, False), (30.0, True)])
def test_no_trial_starts_in_less_than_half_a_trials_time(tmp_path, left, starts):
    from automl.search.scheduler.owners import Owner
    from automl.search.scheduler.queue import TrialResult, add_tickets, work

    study = _study_with_a_trial_of(tmp_path, 20.0)
    owner, ran, notes = Owner("me"), [], []

    def objective(trial: optuna.Trial) -> TrialResult:
        ran.append(trial.number)
        return TrialResult(optuna.trial.TrialState.COMPLETE, (0.5,))

    def refill() -> bool:
        if ran:
            return False
        add_tickets(study, 1, owner=owner)
        return True

    work(study, objective, deadline=time.monotonic() + left, owner=owner, refill=refill,
         on_note=notes.append)  # fmt: skip
    assert bool(ran) is starts
    assert bool(notes) is not starts and all("too short for a trial" in n for n in notes)
    assert not [t for t in study.trials if t.state.name == "WAITING"]  # nothing left queued


@pytest.mark.hostile("consistency")
@pytest.mark.slow
def test_a_trial_cut_by_the_budget_never_reads_as_its_whole_schedule(tmp_path):
    from tests.conftest import TINY_SPACE

    long = TINY_SPACE.replace("epochs: 2", "epochs: 300")
    settings = search_settings(
        tmp_path, long, trials=3, study_name="cut", max_epochs=300, timeout=3, pruner="none"
    )
    outcome = run_search(settings)
    [trial] = outcome.study.trials
    assert trial.user_attrs[TrialAttr.CUT].startswith("budget ended after epoch")
    run = mlflow_client(settings.tracking_uri).get_run(trial.user_attrs[TrialAttr.RUN_ID])
    note = run.data.tags[RunTag.NOTE]
    assert "whole schedule" not in note and "cut by the budget" in note, note
