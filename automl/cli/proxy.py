"""``automl storage-proxy``: one process holds the study database's connections for
every worker, on any number of machines (``--storage grpc://HOST:PORT`` on their side).

Each worker directly on PostgreSQL holds connections of its own; hundreds of them exhaust
the server's. Through the proxy they hold none, and the proxy at most one a thread. It is
Optuna's gRPC storage proxy with automl's queue beside it (claims, batched writes,
heartbeats: ``stores/proxy/client.py``). It has no authentication and no TLS, so it
listens on the loopback address unless told otherwise, and warns when it does not.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Annotated

import typer

from automl.cli.common import StorageOption, console, errors, sigterm_as_interrupt
from automl.cli.dashboard import is_loopback
from automl.environment import GRACE_SECONDS, HEARTBEAT_SECONDS
from automl.errors import ConfigError
from automl.stores import (
    DEFAULT_STORAGE,
    PROXY_PORT,
    check_storage_url,
    check_study_tables,
    mask_url,
    open_database,
    proxy_address,
)

if TYPE_CHECKING:
    from automl.stores.proxy.server import Traffic


def storage_proxy(
    storage: StorageOption = DEFAULT_STORAGE,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on; 0.0.0.0 lets every machine in (no authentication).",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = PROXY_PORT,
    report_every: Annotated[
        float, typer.Option(help="Seconds between progress lines (calls served, clients).")
    ] = 60.0,
) -> None:
    """Serve the study storage to workers anywhere: they use --storage grpc://HOST:PORT."""
    from automl.stores.proxy.server import ProxyServer, address

    if not 1 <= port <= 65535:
        raise ConfigError(f"--port: must be 1..65535, got {port}")
    if proxy_address(storage, "--storage") is not None:
        raise ConfigError(
            f"--storage {storage}: a storage proxy serves a database (postgresql://..., "
            "sqlite:///...), not another proxy"
        )
    check_storage_url(storage, "--storage")
    check_study_tables(storage, "--storage")  # the MLflow store named by mistake
    try:
        server = ProxyServer(host, port)  # a port in use is said before the storage opens
    except OSError as exc:
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there: {exc.strerror or exc}"
        ) from None
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per study created
        store = open_database(storage)  # an empty database gets Optuna's tables
    except BaseException:
        server.stop(0)
        raise
    started = time.monotonic()
    try:
        with sigterm_as_interrupt():
            server.serve(store)
            names = [s.study_name for s in store.get_all_studies()]
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if names[5:] else "")
            here = socket.gethostname() if host in ("0.0.0.0", "::", "[::]") else host
            console.print(
                f"storage proxy on grpc://{address(host, port)} for {mask_url(storage)} — "
                f"{len(names)} {'study' if len(names) == 1 else 'studies'}"
                + (f": {shown}" if names else "")
            )
            if not is_loopback(host):
                errors.print(
                    f"[yellow]warning[/]: the storage proxy listens on {host} without "
                    "authentication or TLS: whoever reaches it can read, change and delete "
                    "every study (keep it on 127.0.0.1, or on a network only workers reach)",
                    highlight=False,
                )
            console.print(
                f"workers: --storage grpc://{address(here, port)} (or AUTOML_STORAGE); "
                f"heartbeats every {HEARTBEAT_SECONDS.get()} s, a trial silent for "
                f"{GRACE_SECONDS.get()} s "
                "is failed and queued again by the next worker; Ctrl-C stops it",
                highlight=False,
            )
            while True:
                time.sleep(report_every)
                report(server.progress(), report_every)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (docker stop): the normal way to stop
        pass
    finally:
        server.stop()
    server.progress()
    served = server.total
    minutes = (time.monotonic() - started) / 60
    console.print(
        f"storage proxy stopped after {minutes:.1f} min: {served.calls:,} calls from "
        f"{plural(len(served.clients), 'client')}, {served.failed} failed"
    )


def report(traffic: Traffic, seconds: float) -> None:
    """One line for the last interval, only when something was served."""
    if not traffic.calls:
        return
    line = (
        f"{time.strftime('%H:%M:%S')} {traffic.calls:,} calls in {seconds:g} s "
        f"({traffic.calls / seconds:.0f}/s) from {plural(len(traffic.clients), 'client')}"
    )
    if traffic.failed:
        line += f", {traffic.failed} failed (last: {traffic.last_error})"
    console.print(line, highlight=False)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
