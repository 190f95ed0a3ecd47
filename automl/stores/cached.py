"""``StudyStorage``: the storage every study of a search is opened on.

Optuna's own storage reads every unfinished trial again (the queued tickets included) at
each sampling and pruning call and writes each parameter in a transaction of its own,
which a search of many short trials cannot afford. Around Optuna's cached RDB storage,
``StudyStorage``

- times every call (``OptunaClock``; a call made inside a timed call counts once), so a
  search can say what share of its time Optuna takes;
- retries reads and idempotent writes while the database is away (``automl.retry``);
  creating a trial and changing a trial's state are not retried here, since a retry after
  a lost reply could do them twice (the queue retries those with their own guards);
- reads cheaply: one light query of ids and states tells which trials changed since the
  last look, and only those are read again (a finished trial never changes, a queued one
  only by being claimed, and another worker's running one matters only to a caller that
  asks for running trials);
- keeps the trials this process runs itself: only this process changes them, so their
  writes (parameters, attributes, reports) are applied to a copy here, reading them back
  costs nothing, and they are sent in one transaction after sampling (``flush``), before
  the result is told (``release``), and otherwise at most ``FLUSH_SECONDS`` late, which is
  how long another worker may wait to see a running trial's latest report.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import threading
import time
from collections.abc import Callable, Container, Sequence
from datetime import datetime
from typing import Any, cast

from optuna import distributions
from optuna.storages import GrpcStorageProxy, RDBStorage
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from automl.retry import STORE, retrying
from automl.stores.clock import OptunaClock
from automl.stores.sql import Batch, Queries, SqlQueries

LOOK_SECONDS = 0.5  # how stale other workers' changes may be in a read
FLUSH_SECONDS = 2.0  # how long a write of an own running trial may wait to be sent


# Storage calls that are safe to repeat after an error whose reply may have been lost.
RETRIED = (
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies", "get_trial",
    "get_all_trials", "get_best_trial", "get_n_trials", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_params", "get_trial_user_attrs",
    "get_trial_system_attrs", "set_study_user_attr", "set_study_system_attr", "set_trial_param",
    "set_trial_user_attr", "set_trial_system_attr", "set_trial_intermediate_value",
    "_get_stale_trial_ids",
)  # fmt: skip
# Timed, never repeated: a second attempt could create a trial or change a state twice.
ONCE = ("create_new_study", "delete_study", "create_new_trial", "set_trial_state_values")


class StudyStorage(_CachedStorage):
    """Optuna's cached RDB storage: timed, retried, light to read, batching its own writes.

    On a ``GrpcStorageProxy`` (``grpc://``) it is the same storage: ``automl storage-proxy``
    runs its statements (``sql.SqlQueries``) on the proxy's own database connections."""

    def __init__(
        self, backend: RDBStorage | GrpcStorageProxy, clock: OptunaClock | None = None
    ) -> None:
        queries: Queries
        if isinstance(backend, GrpcStorageProxy):
            from automl.stores.proxy.client import ProxyClient  # needs grpcio

            backend = queries = ProxyClient.of(backend)
        else:
            queries = SqlQueries(backend)
        super().__init__(cast(RDBStorage, backend))  # the client answers what it asks
        self.queries = queries
        self.clock = clock or OptunaClock()
        self._highest: dict[int, int] = {}  # study id -> the highest trial id read
        self._names: dict[str, int] = {}  # study name -> id (Hyperband asks at every step)
        self._looked: dict[int, tuple[float, bool]] = {}  # study id -> (when, running too)
        self._own: dict[int, FrozenTrial] = {}  # trial id -> a trial this process runs
        self._batch = Batch()
        self._batch_lock = threading.Lock()
        self._timer: threading.Timer | None = None  # sends the batch FLUSH_SECONDS after it starts
        self._flush_lock = threading.Lock()  # batches reach the database in order

    @property
    def backend(self) -> RDBStorage:
        return self._backend

    def transition(self, trial_id: int, before: TrialState, after: TrialState) -> bool:
        self.changed()
        return self.queries.transition(trial_id, before, after)

    def get_study_id_from_name(self, study_name: str) -> int:
        if study_name not in self._names:
            self._names[study_name] = super().get_study_id_from_name(study_name)
        return self._names[study_name]

    def delete_study(self, study_id: int) -> None:
        self._names = {name: i for name, i in self._names.items() if i != study_id}
        super().delete_study(study_id)

    # ------------------------------------------------------------ trials this process runs

    def take(self, study_id: int, trial_id: int) -> bool:
        """Claim a queued trial (WAITING to RUNNING, if nobody did first) and keep it."""
        if not self.queries.transition(trial_id, TrialState.WAITING, TrialState.RUNNING):
            return False
        with self._lock:  # a ticket is read whole when it is queued and changes no more
            known = self._cached(trial_id)
        if known is not None and known.state == TrialState.WAITING:
            trial = copy.deepcopy(known)
            trial.state, trial.datetime_start = TrialState.RUNNING, datetime.now()
        else:
            trial = self._backend.get_trial(trial_id)
        with self._lock:
            self._studies.setdefault(study_id, _StudyInfo())
            self._add_trials_to_cache(study_id, [trial])
            self._studies[study_id].unfinished_trial_ids.add(trial_id)
            self._own[trial_id] = trial
        return True

    def release(self, trial_id: int) -> None:
        """Before its result is told: send the trial's writes, and stop keeping it if
        another worker failed it meanwhile (taken for dead), so telling sees that."""
        self.flush()
        if trial_id in self._own and self.queries.state_of(trial_id) != TrialState.RUNNING:
            with self._lock:
                self._own.pop(trial_id, None)
        self.changed()

    def flush(self) -> None:
        """Send every pending write of own trials, in one transaction (kept on failure)."""
        with self._flush_lock:
            with self._batch_lock:
                batch, self._batch = self._batch, Batch()
            if not batch:
                return
            try:
                with self.clock():
                    retrying(lambda: self.queries.write(batch), what=STORE, holding="trial writes")
            except BaseException:
                with self._batch_lock:
                    self._batch = batch.before(self._batch)
                raise

    def _pend(self, add: Callable[[Batch], None]) -> None:
        """Add a write to the batch; a timer sends it at most ``FLUSH_SECONDS`` later, so
        other workers see a running trial's reports while it runs."""
        with self._batch_lock:
            add(self._batch)
            if self._timer is None:
                self._timer = threading.Timer(FLUSH_SECONDS, self._flush_later)
                self._timer.daemon = True
                self._timer.start()

    def _flush_later(self) -> None:
        with self._batch_lock:
            self._timer = None
        with contextlib.suppress(Exception):  # kept, and sent with the next flush
            self.flush()

    def _keep(self, trial_id: int, change: Callable[[FrozenTrial], None]) -> bool:
        """Apply a write to an own trial here (the caller then adds it to the batch); False
        for a trial that is not ours, which is written at once, as Optuna would."""
        with self._lock:
            own = self._own.get(trial_id)
            if own is None:
                return False
            change(own)
        return True

    def set_trial_param(
        self, trial_id: int, name: str, value: float, distribution: distributions.BaseDistribution
    ) -> None:
        with self._lock:
            study_id, _ = self._trial_id_to_study_id_and_number[trial_id]
            known = self._studies[study_id].param_distribution.get(name)
        if known is not None:  # the same check Optuna makes, at the same moment
            distributions.check_distribution_compatibility(known, distribution)

        def change(trial: FrozenTrial) -> None:
            trial.params[name] = distribution.to_external_repr(value)
            trial.distributions[name] = distribution

        if not self._keep(trial_id, change):
            super().set_trial_param(trial_id, name, value, distribution)
            return
        if known is None:
            checked = (trial_id, name, value, distribution, None)
            self._pend(lambda batch: batch.checked.append(checked))
        else:
            text = distributions.distribution_to_json(distribution)
            row = {"param_name": name, "param_value": value, "distribution_json": text}
            self._pend(lambda batch: batch.add(models.TrialParamModel, trial_id, name, row))
        with self._lock:
            self._studies[study_id].param_distribution.setdefault(name, distribution)

    def _attr(self, model: Any, trial_id: int, key: str, value: Any) -> bool:
        attrs = "user_attrs" if model is models.TrialUserAttributeModel else "system_attrs"
        if not self._keep(trial_id, lambda t: getattr(t, attrs).__setitem__(key, value)):
            return False
        row = {"key": key, "value_json": json.dumps(value)}
        self._pend(lambda batch: batch.add(model, trial_id, key, row))
        return True

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._attr(models.TrialUserAttributeModel, trial_id, key, value):
            super().set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._attr(models.TrialSystemAttributeModel, trial_id, key, value):
            super().set_trial_system_attr(trial_id, key, value)

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        if not self._keep(trial_id, lambda t: t.intermediate_values.__setitem__(step, value)):
            super().set_trial_intermediate_value(trial_id, step, value)
            return
        model = models.TrialIntermediateValueModel
        stored, kind = model.intermediate_value_to_stored_repr(value)
        row = {"step": step, "intermediate_value": stored, "intermediate_value_type": kind}
        self._pend(lambda batch: batch.add(model, trial_id, step, row))

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        self.flush()
        self.changed()
        moved = super().set_trial_state_values(trial_id, state, values)
        with self._lock:
            self._own.pop(trial_id, None)
        if moved and state.is_finished():  # read once, as it is for good
            trial = self._backend.get_trial(trial_id)
            with self._lock:
                study_id, _ = self._trial_id_to_study_id_and_number[trial_id]
                self._add_trials_to_cache(study_id, [trial])
                self._studies[study_id].unfinished_trial_ids.discard(trial_id)
        return moved

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        self.changed()
        return super().create_new_trial(study_id, template_trial)

    def changed(self) -> None:
        """This process changed the study: the next read looks for changes at once."""
        self._looked.clear()

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            own = self._own.get(trial_id)
            if own is not None:
                return copy.deepcopy(own)
        return super().get_trial(trial_id)

    # ------------------------------------------------------------ reading others' trials

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        running = states is None or TrialState.RUNNING in states
        self._refresh(study_id, running=running)
        with self._lock:
            found = self._studies[study_id].trials.values()
            trials = sorted(
                (t for t in found if states is None or t.state in states), key=lambda t: t.number
            )
            # An own trial goes on changing here: callers get it as it is now, as a read
            # from the database would give it (Optuna's pruners rely on that).
            trials = [copy.deepcopy(t) if t._trial_id in self._own else t for t in trials]
        return copy.deepcopy(trials) if deepcopy else trials

    def _refresh(self, study_id: int, *, running: bool) -> None:
        """Read again the trials that changed since the last look (``running``: and other
        workers' running trials, whose reports and attributes change as they run).

        Only other workers change the study behind our back, and they are seen within
        ``LOOK_SECONDS``: Hyperband asks for the trials several times a step.
        """
        with self._lock:
            last, ran = self._looked.get(study_id, (-math.inf, False))
            if time.monotonic() - last < LOOK_SECONDS and (ran or not running):
                return
            self._looked[study_id] = (time.monotonic(), running)
            study = self._studies.setdefault(study_id, _StudyInfo())
            highest = self._highest.get(study_id, -1)
            now = self.queries.states(study_id, highest)
            stale = set()
            for trial_id in study.unfinished_trial_ids:
                if trial_id in self._own:
                    continue
                state = now.get(trial_id)  # None: it finished since
                cached = self._cached_state(trial_id)
                if state != cached or (running and state == TrialState.RUNNING):
                    stale.add(trial_id)
            if not stale and all(trial_id <= highest for trial_id in now):
                trials = []  # nothing changed: no read at all
            else:
                trials = self._backend._get_trials(
                    study_id, states=None, included_trial_ids=stale, trial_id_greater_than=highest
                )
                self._add_trials_to_cache(study_id, trials)
            for trial in trials:
                trial_id = trial._trial_id
                self._highest[study_id] = max(self._highest.get(study_id, -1), trial_id)
                if trial.state.is_finished():
                    study.unfinished_trial_ids.discard(trial_id)
                else:
                    study.unfinished_trial_ids.add(trial_id)
            for trial_id, own in self._own.items():  # ours are kept here, not read back
                if self._trial_id_to_study_id_and_number[trial_id][0] == study_id:
                    study.trials[own.number] = own

    def _cached_state(self, trial_id: int) -> TrialState | None:
        study_id, number = self._trial_id_to_study_id_and_number[trial_id]
        return self._studies[study_id].trials[number].state

    def _cached(self, trial_id: int) -> FrozenTrial | None:
        found = self._trial_id_to_study_id_and_number.get(trial_id)
        return None if found is None else self._studies[found[0]].trials.get(found[1])

    def change_user_attr(self, trial_id: int, key: str, before: Any, after: Any) -> bool:
        """Set a trial's attribute from ``before`` to ``after`` if nobody changed it first:
        one conditional statement, so of two processes at most one succeeds."""
        with self.clock():
            done = self.queries.change_user_attr(trial_id, key, before, after)
        if done:
            with self._lock:
                cached = self._cached(trial_id)
                if cached is not None:
                    cached.user_attrs[key] = after
        return done


def _timed(name: str, *, retried: bool) -> Callable[..., Any]:
    method = getattr(StudyStorage, name)

    def call(self: StudyStorage, *args: Any, **kwargs: Any) -> Any:
        with self.clock():
            if retried:
                return retrying(lambda: method(self, *args, **kwargs), what=STORE)
            return method(self, *args, **kwargs)

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


for _name in RETRIED:
    setattr(StudyStorage, _name, _timed(_name, retried=True))
for _name in ONCE:
    setattr(StudyStorage, _name, _timed(_name, retried=False))
