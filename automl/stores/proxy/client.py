"""The worker's side of ``automl storage-proxy`` (``grpc://HOST:PORT``): Optuna's
``GrpcStorageProxy``, plus what automl's queue needs and Optuna's proxy cannot do.

Optuna's proxy forwards the public storage API. A search also needs an atomic claim of a
queued trial, writes batched into one transaction, a light look for changes, heartbeats
and the list of dead workers' trials (Optuna's client implements no heartbeat at all).
``automl storage-proxy`` serves a second gRPC service beside Optuna's, on the same port,
whose methods run the very statements a worker runs on its own connections
(``sql.SqlQueries``, the heartbeat table, the stale-trial query) on the proxy's: so a
worker behaves the same through the proxy as directly on the database, and the two kinds
may share one study. Requests and replies are JSON; trials travel as Optuna's own protobuf.

The heartbeat interval and grace period are the proxy's (its ``AUTOML_HEARTBEAT_SECONDS``
and ``AUTOML_GRACE_SECONDS``), told to each client when it connects; whether a trial is
stale is judged on the database's clock, as directly.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Container
from typing import Any, NoReturn

import grpc
from optuna.distributions import BaseDistribution
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import GrpcStorageProxy
from optuna.storages._grpc.auto_generated import api_pb2, api_pb2_grpc
from optuna.storages._grpc.client import GrpcClientCache
from optuna.storages._grpc.servicer import _from_proto_trial
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from automl.errors import StoreError
from automl.stores.sql import Batch

SERVICE = "automl.StorageProxy"  # beside Optuna's optuna.StorageService
PROTOCOL = 1
# Reconnect within seconds of a proxy's restart, not gRPC's default of up to two minutes;
# a call to a proxy that vanished without closing (a machine gone, a network cut) fails
# within 40 s (a keepalive ping unanswered) and is retried, rather than waiting on TCP.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
]
# Methods whose reply is Optuna's protobuf, not JSON.
RAW_REPLIES = frozenset({"Trials"})
METHODS = (
    "Hello", "Transition", "Write", "ChangeUserAttr", "StateOf", "States", "Trials",
    "BestTrialId", "Heartbeat", "StaleTrialIds",
)  # fmt: skip


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def decode(data: bytes) -> Any:
    return json.loads(data)


class ProxyUnavailable(ConnectionError):
    """The proxy, or the database behind it, does not answer now (retried as such)."""


def raise_from(exc: grpc.RpcError, where: str) -> NoReturn:
    """The error a storage raises directly, for the status the proxy answered with."""
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.NOT_FOUND:
        raise KeyError(details) from None
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        raise UpdateFinishedTrialError(details) from None
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        raise ValueError(details) from None
    if code == grpc.StatusCode.UNAVAILABLE:
        raise ProxyUnavailable(f"storage proxy {where}: {details}") from exc
    raise exc


class ProxyClient(GrpcStorageProxy):
    """Optuna's proxy client with automl's methods: what ``StudyStorage`` asks of an
    ``RDBStorage`` (``_get_trials``, heartbeats, ``sql.Queries``), answered by the proxy."""

    def __init__(self, *, host: str, port: int) -> None:
        super().__init__(host=host, port=port)
        hello = self._hello()
        self.heartbeat_interval: int | None = hello["heartbeat_interval"]
        self.grace_period: int | None = hello["grace_period"]

    @classmethod
    def of(cls, proxy: GrpcStorageProxy) -> ProxyClient:
        if isinstance(proxy, ProxyClient):
            return proxy
        proxy.close()  # this client has its own channel
        with warnings.catch_warnings():  # Optuna's proxy is experimental (since 4.2)
            warnings.simplefilter("ignore", ExperimentalWarning)
            return cls(host=proxy._host, port=proxy._port)

    @property
    def where(self) -> str:
        return f"grpc://{self._host}:{self._port}"

    def _setup(self) -> None:
        self._channel = grpc.insecure_channel(f"{self._host}:{self._port}", CHANNEL_OPTIONS)
        self._stub = api_pb2_grpc.StorageServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._cache = GrpcClientCache(self._stub)
        self._methods: dict[str, Callable[..., Any]] = {
            name: self._channel.unary_unary(
                f"/{SERVICE}/{name}",
                request_serializer=encode,
                response_deserializer=None if name in RAW_REPLIES else decode,
            )
            for name in METHODS
        }

    def _call(self, name: str, **request: Any) -> Any:
        try:
            reply = self._methods[name](request)
        except grpc.RpcError as exc:
            raise_from(exc, self.where)
        return reply if name in RAW_REPLIES else reply["value"]

    def _hello(self) -> dict[str, Any]:
        try:
            hello: dict[str, Any] = self._methods["Hello"]({"protocol": PROTOCOL})["value"]
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise StoreError(
                    f"--storage {self.where}: this storage proxy has no automl queue (claims, "
                    "heartbeats): start it with `automl storage-proxy`, not Optuna's own"
                ) from None
            raise_from(exc, self.where)
        if hello.get("protocol") != PROTOCOL:
            raise StoreError(
                f"--storage {self.where}: the storage proxy speaks protocol "
                f"{hello.get('protocol')}, this automl {PROTOCOL}: run the same automl version"
            )
        return hello

    # ------------------------------------------------------ what _CachedStorage asks of RDB

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        return self.get_trial(self.create_new_trial(study_id, template_trial))

    def _set_trial_param(
        self,
        trial_id: int,
        name: str,
        value: float,
        distribution: BaseDistribution,
        previous: BaseDistribution | None,
    ) -> None:
        self.set_trial_param(trial_id, name, value, distribution)  # the proxy checks it

    def _get_best_trial_id(self, study_id: int, direction: StudyDirection) -> int:
        return int(self._call("BestTrialId", study_id=study_id, direction=direction.name))

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        raw = self._call(
            "Trials",
            study_id=study_id,
            included=sorted(included_trial_ids),
            greater=trial_id_greater_than,
        )
        trials = [_from_proto_trial(t) for t in api_pb2.GetTrialsReply.FromString(raw).trials]
        return [t for t in trials if states is None or t.state in states]

    def record_heartbeat(self, trial_id: int) -> None:
        self._call("Heartbeat", trial_id=trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return [int(i) for i in self._call("StaleTrialIds", study_id=study_id)]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> None:
        return None  # the queue retries stale trials itself (queue.fail_stale)

    # ------------------------------------------------------------------ sql.Queries

    def transition(self, trial_id: int, before: TrialState, after: TrialState) -> bool:
        return bool(
            self._call("Transition", trial_id=trial_id, before=before.name, after=after.name)
        )

    def write(self, batch: Batch) -> None:
        self._call("Write", batch=batch.to_json())

    def change_user_attr(self, trial_id: int, key: str, before: Any, after: Any) -> bool:
        return bool(
            self._call("ChangeUserAttr", trial_id=trial_id, key=key, before=before, after=after)
        )

    def state_of(self, trial_id: int) -> TrialState:
        return TrialState[self._call("StateOf", trial_id=trial_id)]

    def states(self, study_id: int, highest: int) -> dict[int, TrialState]:
        rows = self._call("States", study_id=study_id, highest=highest)
        return {int(trial_id): TrialState[state] for trial_id, state in rows}
