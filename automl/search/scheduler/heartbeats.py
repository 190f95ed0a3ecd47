"""Heartbeats: a running trial's, so a dead worker's trial is failed and queued again, and
a running search's, so the tickets of a search that is gone are adopted by the next.

Each beats from a thread while a block runs (``every``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import optuna

from automl.environment import HEARTBEAT_SECONDS
from automl.records.study import search_beat_key
from automl.records.trial import SHARED
from automl.search.scheduler.owners import Owner
from automl.stores import compat


@contextmanager
def every(seconds: float, call: Callable[[], None], name: str) -> Iterator[None]:
    """Call ``call`` at once, then every ``seconds``, from a thread while the block runs
    (a heartbeat); a call that fails is made up at the next one. The thread ends with
    the block."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):
                call()
            if stop.wait(seconds):
                return

    thread = threading.Thread(target=beat, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def keep_trial_alive(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record a heartbeat every interval while the trial runs (storages that support it)."""
    interval = compat.heartbeat_interval(compat.storage_of(study))
    if not interval:
        yield
        return
    with every(
        interval, lambda: compat.record_heartbeat(study, trial), f"heartbeat-{trial.number}"
    ):
        yield


@contextmanager
def keep_search_alive(study: optuna.Study, owner: Owner) -> Iterator[None]:
    """Say the search is alive while the block runs; when it ends, say it is gone, so its
    leftover tickets are adopted at once rather than after the grace period."""
    if owner.id == SHARED:
        yield
        return
    storage, key = compat.storage_of(study), search_beat_key(owner.id)
    study_id = compat.study_id(study)

    def beat() -> None:
        storage.set_study_system_attr(study_id, key, {"beat": time.time()})

    beat()  # before this search adopts anything; the timer beats again at once
    try:
        with every(HEARTBEAT_SECONDS.get(), beat, f"owner-{owner.id}"):
            yield
    finally:
        with contextlib.suppress(Exception):  # gone: its tickets are adopted at once
            storage.set_study_system_attr(study_id, key, {"beat": 0.0})
