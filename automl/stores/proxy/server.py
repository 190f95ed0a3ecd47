"""``automl storage-proxy``'s server: Optuna's gRPC storage proxy over the study storage,
and automl's service beside it on the same port (see ``client``), for every worker.

The workers then hold no database connection; the proxy holds about one for each thread
of its pool (``THREADS``), however many workers there are. A call that fails because the
database is away is answered UNAVAILABLE, which workers retry as they would a lost
connection of their own; the proxy counts the calls, their clients and their failures for
its progress lines.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._grpc.auto_generated import api_pb2, api_pb2_grpc
from optuna.storages._grpc.servicer import OptunaStorageProxyService, _to_proto_trial
from optuna.study import StudyDirection
from optuna.trial import TrialState

from automl.retry import is_transient_store_error
from automl.stores import mask_url
from automl.stores.proxy.client import (
    METHODS,
    PROTOCOL,
    RAW_REPLIES,
    SERVICE,
    decode,
    encode,
)
from automl.stores.sql import Batch, SqlQueries

THREADS = 10  # calls served at once, and so the most database connections held


@dataclass
class Traffic:
    """Calls served, by how many clients (gRPC peers), and the failed ones."""

    calls: int = 0
    failed: int = 0
    clients: set[str] = field(default_factory=set)
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def seen(self, peer: str) -> None:
        with self.lock:
            self.calls += 1
            self.clients.add(peer)  # ipv4:ADDRESS:PORT, a port per client channel

    def fail(self, message: str) -> None:
        with self.lock:
            self.failed += 1
            self.last_error = message

    def take(self) -> Traffic:
        """What was served since the last take, and start counting afresh."""
        with self.lock:
            taken = Traffic(self.calls, self.failed, set(self.clients), self.last_error)
            self.calls, self.failed, self.last_error = 0, 0, ""
            self.clients = set()
        return taken


def _status(exc: BaseException) -> grpc.StatusCode:
    if is_transient_store_error(exc):
        return grpc.StatusCode.UNAVAILABLE  # workers retry it: the database is away
    if isinstance(exc, KeyError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, UpdateFinishedTrialError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


class _Guard(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts every call; turns an error no handler answered into its status, in one
    line without a password (a database URL in a driver's message)."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            self.traffic.seen(context.peer())
            try:
                return inner(request, context)
            except Exception as exc:
                if context.code() is not None:  # answered already (context.abort)
                    raise
                status = _status(exc)
                line = mask_url((str(exc).strip().splitlines() or [type(exc).__name__])[0])
                if status in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE):
                    self.traffic.fail(f"{details.method}: {line}")
                context.abort(status, line[:500])

        return handler._replace(unary_unary=behavior)


def _handlers(storage: RDBStorage) -> dict[str, Callable[..., Any]]:
    """automl's methods, each the statement a worker runs directly (see ``client``)."""
    queries = SqlQueries(storage)

    def hello(protocol: int) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL,
            "heartbeat_interval": storage.heartbeat_interval,
            "grace_period": storage.grace_period,
        }

    def trials(study_id: int, included: list[int], greater: int) -> bytes:
        found = storage._get_trials(study_id, None, set(included), greater)
        reply = api_pb2.GetTrialsReply(trials=[_to_proto_trial(t) for t in found])
        return bytes(reply.SerializeToString())

    def transition(trial_id: int, before: str, after: str) -> bool:
        return queries.transition(trial_id, TrialState[before], TrialState[after])

    def states(study_id: int, highest: int) -> list[tuple[int, str]]:
        return [(i, state.name) for i, state in queries.states(study_id, highest).items()]

    def best(study_id: int, direction: str) -> int:
        return int(storage._get_best_trial_id(study_id, StudyDirection[direction]))

    return {
        "Hello": hello,
        "Transition": transition,
        "Write": lambda batch: queries.write(Batch.from_json(batch)),
        "ChangeUserAttr": queries.change_user_attr,
        "StateOf": lambda trial_id: queries.state_of(trial_id).name,
        "States": states,
        "Trials": trials,
        "BestTrialId": best,
        "Heartbeat": storage.record_heartbeat,
        "StaleTrialIds": storage._get_stale_trial_ids,
    }


def _automl_service(storage: RDBStorage) -> grpc.GenericRpcHandler:
    handlers = _handlers(storage)
    assert set(handlers) == set(METHODS), "the client and the server name other methods"

    def method(call: Callable[..., Any], raw: bool) -> grpc.RpcMethodHandler:
        if raw:
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: call(**request), request_deserializer=decode
            )
        # Wrapped: gRPC answers a handler's None with no reply at all.
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: {"value": call(**request)},
            request_deserializer=decode,
            response_serializer=encode,
        )

    return grpc.method_handlers_generic_handler(
        SERVICE, {name: method(call, name in RAW_REPLIES) for name, call in handlers.items()}
    )


def address(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _try_bind(host: str, port: int) -> None:
    """Raise OSError (its reason: address in use, not on this machine) if the address
    cannot be listened on."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host.strip("[]"), port))


class ProxyServer:
    """The server, bound at once (a port in use is said before the storage is opened) and
    serving once given the storage."""

    def __init__(self, host: str, port: int, *, threads: int = THREADS) -> None:
        _try_bind(host, port)  # gRPC's own failure is a line of C++ log and a vague error
        self.traffic = Traffic()
        self.total = Traffic()
        self.server = grpc.server(
            ThreadPoolExecutor(threads, thread_name_prefix="storage-proxy"),
            interceptors=[_Guard(self.traffic)],
            # Without this, gRPC lets a second proxy share the port, each getting half the
            # calls: a port in use must be an error.
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
                # the clients' keepalive pings (every 30 s) are welcome, not "too many"
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 20000),
            ],
        )
        try:
            bound = self.server.add_insecure_port(address(host, port))
        except RuntimeError as exc:
            raise OSError(str(exc)) from None
        if bound == 0:
            raise OSError(f"cannot listen on {address(host, port)}")

    def serve(self, storage: RDBStorage) -> None:
        """Start answering: Optuna's service over the cached storage Optuna recommends for
        it (``get_storage``), automl's over the storage itself."""
        service = OptunaStorageProxyService(optuna.storages.get_storage(storage))
        api_pb2_grpc.add_StorageServiceServicer_to_server(service, self.server)  # type: ignore[no-untyped-call]
        self.server.add_generic_rpc_handlers((_automl_service(storage),))
        self.server.start()

    def progress(self) -> Traffic:
        """The traffic since the last call (and added to ``total``)."""
        taken = self.traffic.take()
        with self.total.lock:
            self.total.calls += taken.calls
            self.total.failed += taken.failed
            self.total.clients |= taken.clients
        return taken

    def stop(self, grace: float = 2.0) -> None:
        self.server.stop(grace).wait()
