"""Pins every behaviour of Optuna's internals that automl relies on (``automl.stores``).

An Optuna release that changes one of them fails here, with the behaviour named, instead
of losing or doubling trials in a search.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from automl.stores import compat, open_storage


def _study(tmp_path: Path, name: str = "pin", heartbeat: bool = False) -> optuna.Study:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    if heartbeat:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            store = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    else:
        store = open_storage(url)
    storage = compat.StudyStorage(store)
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)


def test_pop_waiting_takes_the_oldest_ticket_and_never_creates_one(tmp_path):
    study = _study(tmp_path)
    assert compat.pop_waiting(study) is None
    assert study.trials == []  # unlike ask(), an empty queue creates nothing
    study.enqueue_trial({"x": 1})
    study.enqueue_trial({"x": 2})
    trial = compat.pop_waiting(study)
    assert trial is not None and trial.number == 0
    assert study.trials[0].state == TrialState.RUNNING
    assert study.trials[1].state == TrialState.WAITING
    assert trial.suggest_int("x", 0, 5) == 1  # the ticket's fixed params


def test_two_workers_never_pop_the_same_ticket(tmp_path):
    first = _study(tmp_path)
    for _ in range(20):
        first.enqueue_trial({})
    taken: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        study = _study(tmp_path)  # its own storage and cache, as another process has
        while (trial := compat.pop_waiting(study)) is not None:
            with lock:
                taken.append(trial.number)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == list(range(20))


def test_the_cached_view_sees_other_workers_claims_and_results(tmp_path):
    mine, theirs = _study(tmp_path), _study(tmp_path)
    for _ in range(3):
        mine.enqueue_trial({})
    assert len(mine.get_trials(states=(TrialState.WAITING,))) == 3
    trial = compat.pop_waiting(theirs)
    assert trial is not None
    time.sleep(compat.LOOK_SECONDS)  # another worker's changes are seen within this
    running = mine.get_trials(states=(TrialState.RUNNING,))
    assert [t.number for t in running] == [trial.number]
    theirs.tell(trial, 0.5)
    time.sleep(compat.LOOK_SECONDS)
    complete = mine.get_trials(states=(TrialState.COMPLETE,))
    assert [(t.number, t.value) for t in complete] == [(trial.number, 0.5)]
    assert len(mine.get_trials(states=(TrialState.WAITING,))) == 2
    theirs.enqueue_trial({})  # a ticket another process queued
    time.sleep(compat.LOOK_SECONDS)
    assert len(mine.get_trials(states=(TrialState.WAITING,))) == 3


def test_queued_trials_are_read_once_not_at_every_call(tmp_path, monkeypatch):
    study = _study(tmp_path)
    for _ in range(50):
        study.enqueue_trial({})
    storage = compat.storage_of(study)
    assert isinstance(storage, compat.StudyStorage)
    study.get_trials()  # the first read takes every ticket
    read: list[int] = []
    original = storage.backend._get_trials

    def counting(*args, **kwargs):
        trials = original(*args, **kwargs)
        read.append(len(trials))
        return trials

    monkeypatch.setattr(storage.backend, "_get_trials", counting)
    for _ in range(3):
        time.sleep(compat.LOOK_SECONDS)
        study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert sum(read) == 0  # nothing changed: no trial read again
    trial = compat.pop_waiting(study)
    assert trial is not None
    read.clear()
    study.get_trials()
    assert sum(read) == 0  # the ticket this process took is kept here, not read back
    assert compat.pop_waiting(_study(tmp_path)) is not None  # another worker takes one
    time.sleep(compat.LOOK_SECONDS)
    study.get_trials(states=(TrialState.COMPLETE,))
    assert sum(read) == 1  # only the ticket claimed elsewhere


def test_own_trials_writes_are_batched_and_read_back_at_once(tmp_path):
    study = _study(tmp_path)
    study.enqueue_trial({})
    trial = compat.pop_waiting(study)
    assert trial is not None
    x = trial.suggest_int("x", 0, 10)
    y = trial.suggest_float("y", 0.0, 1.0)
    trial.set_user_attr("run", "r1")
    trial.report(0.25, 1)
    assert trial.user_attrs["run"] == "r1"  # read back as written
    other = _study(tmp_path)  # another process's view: nothing sent yet
    assert other.trials[0].params == {} and other.trials[0].user_attrs == {}
    compat.flush(study)  # one transaction sends them all
    seen = _study(tmp_path).trials[0]
    assert seen.params == {"x": x, "y": y} and seen.user_attrs == {"run": "r1"}
    assert seen.intermediate_values == {1: 0.25}
    trial.report(0.5, 2)  # with no read or flush, still sent within FLUSH_SECONDS
    time.sleep(compat.FLUSH_SECONDS + 1)
    assert _study(tmp_path).trials[0].intermediate_values == {1: 0.25, 2: 0.5}
    trial.set_user_attr("reason", "done")
    compat.release(study, trial)  # before telling: sent, and read from the database again
    study.tell(trial, 0.5)
    final = _study(tmp_path).trials[0]
    assert final.state == TrialState.COMPLETE and final.user_attrs["reason"] == "done"


def test_a_list_of_trials_does_not_change_when_an_own_trial_does(tmp_path):
    """Optuna's successive halving lists the trials, then marks the current one's rung and
    counts the rung values in its list: a list that changed under it would count the
    current trial twice and prune differently."""
    study = _study(tmp_path)
    study.enqueue_trial({})
    trial = compat.pop_waiting(study)
    assert trial is not None
    listed = study.get_trials(deepcopy=False)
    compat.storage_of(study).set_trial_system_attr(compat.trial_id(trial), "rung", 0.5)
    assert "rung" not in listed[0].system_attrs
    assert study.get_trials(deepcopy=False)[0].system_attrs["rung"] == 0.5


def test_telling_a_trial_another_worker_failed_meanwhile_skips(tmp_path):
    """A worker taken for dead whose trial was failed and retried elsewhere must not
    overwrite that result when it finishes after all."""
    study = _study(tmp_path)
    study.enqueue_trial({})
    trial = compat.pop_waiting(study)
    assert trial is not None
    other = _study(tmp_path)
    assert compat.transition(other, compat.trial_id(trial), TrialState.RUNNING, TrialState.FAIL)
    compat.release(study, trial)
    frozen = study.tell(trial, 0.9, skip_if_finished=True)
    assert frozen.state == TrialState.FAIL
    assert _study(tmp_path).trials[0].state == TrialState.FAIL


def test_stale_trials_are_running_trials_whose_heartbeat_stopped(tmp_path):
    study = _study(tmp_path, heartbeat=True)
    study.enqueue_trial({})
    trial = compat.pop_waiting(study)
    assert trial is not None
    assert compat.heartbeat_interval(compat.storage_of(study)) == 1
    compat.record_heartbeat(study, trial)
    assert compat.stale_trial_ids(study) == []
    time.sleep(2.5)
    assert compat.stale_trial_ids(study) == [compat.trial_id(trial)]


def test_the_clock_counts_storage_calls_and_nested_calls_once(tmp_path):
    study = _study(tmp_path)
    clock = compat.storage_of(study).clock  # type: ignore[attr-defined]
    before = clock.seconds
    with clock():
        start = time.perf_counter()
        study.enqueue_trial({})
        study.get_trials()
        inside = time.perf_counter() - start
    assert clock.seconds - before == pytest.approx(inside, rel=0.5, abs=0.01)
    assert clock.seconds - before >= inside


def test_reads_are_retried_while_the_database_is_away(tmp_path, monkeypatch):
    from sqlalchemy.exc import OperationalError

    monkeypatch.setenv("AUTOML_STORE_RETRY_SECONDS", "10")
    study = _study(tmp_path)
    storage = compat.storage_of(study)
    original = storage.backend.get_study_directions
    failures = iter([OperationalError("select", {}, Exception("server closed"))])

    def flaky(study_id):
        error = next(failures, None)
        if error is not None:
            raise error
        return original(study_id)

    monkeypatch.setattr(storage.backend, "get_study_directions", flaky)
    storage._studies.clear()
    assert storage.get_study_directions(study._study_id) == study.directions
