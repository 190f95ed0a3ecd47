"""``automl dashboard``: optuna-dashboard over the study storage, a live view of a search.

The dashboard reads the same storage the trials write, so its history, intermediate
values and importances follow a running search. It has no login, so it listens on the
loopback address unless told otherwise, warns when it is reachable from other machines,
and is read-only unless ``--allow-edits``: a view must not tell, skip or delete the trials
a search is running. Importing optuna-dashboard waits until the command runs.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import closing
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer

from automl.cli.common import StorageOption, console, errors, sigterm_as_interrupt
from automl.environment import DASHBOARD_PUBLISHED_ON
from automl.errors import ConfigError, StoreError
from automl.stores import (
    DEFAULT_STORAGE,
    check_storage_url,
    mask_url,
    open_storage,
    require_existing,
    sqlite_file,
)

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from optuna.storages import BaseStorage

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]

READS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def dashboard(
    storage: StorageOption = DEFAULT_STORAGE,
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 8080,
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Address to listen on; 0.0.0.0 exposes it to every machine (no login)."
        ),
    ] = "127.0.0.1",
    allow_edits: Annotated[
        bool,
        typer.Option(
            "--allow-edits",
            help="Let the page write to the storage (notes, tell or skip a trial, delete a "
            "study); read-only otherwise.",
        ),
    ] = False,
    published_on: Annotated[
        str | None,
        typer.Option(
            envvar=DASHBOARD_PUBLISHED_ON.name,
            hidden=True,
            help="In a container: the address its port is published on, which decides "
            "instead of --host whether to warn, or to answer loopback names only "
            "(docker-compose.yml sets it).",
        ),
    ] = None,
) -> None:
    """A live view of the studies while they run: optuna-dashboard over --storage."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port: must be 1..65535, got {port}")
    store = open_for_reading(storage)
    exposed = published_on or host
    server = listen(host, port)  # at once: a port in use is said before the slow import
    try:  # stopped cleanly from here on; requests made meanwhile wait in the socket's queue
        with sigterm_as_interrupt():
            announce(store, storage, page_url(host, port), exposed, allow_edits)
            from optuna_dashboard import wsgi  # imports scikit-learn (importances): seconds

            server.set_app(guarded(wsgi(store), allow_edits, loopback=is_loopback(exposed)))
            server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (docker stop): the normal way to stop
        console.print("dashboard stopped")
    finally:
        server.server_close()


def announce(store: BaseStorage, url: str, page: str, exposed: str, allow_edits: bool) -> None:
    """Where the page is, what it shows, how to stop it, and a warning when other
    machines can reach it (``exposed``: the address it listens or is published on)."""
    names = [s.study_name for s in store.get_all_studies()]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    console.print(
        f"optuna-dashboard on {page} — {len(names)} {'study' if len(names) == 1 else 'studies'}"
        f" in {mask_url(url)}" + (f": {shown}" if names else " (a search adds them live)")
    )
    if not is_loopback(exposed):
        errors.print(
            f"[yellow]warning[/]: the dashboard is reachable on {exposed}, without a login: "
            "whoever reaches it reads every study (keep it on 127.0.0.1, or behind a proxy "
            "that authenticates)",
            highlight=False,
        )
    console.print(f"{'edits allowed' if allow_edits else 'read-only'}; Ctrl-C stops it")


def open_for_reading(url: str) -> BaseStorage:
    """The study storage, refused in one line when it is not one: a missing local file
    (never created here), a file that is no database, or a database without Optuna's
    tables (the MLflow store named by mistake) is left untouched."""
    check_storage_url(url, "--storage")
    require_existing(url, "--storage", "Optuna storage")
    path = sqlite_file(url)
    if path is not None:
        try:
            read_only = f"file:{quote(str(path))}?mode=ro"  # a ? or # in the name stays in it
            with closing(sqlite3.connect(read_only, uri=True)) as connection:
                rows = connection.execute("select name from sqlite_master where type = 'table'")
                tables = {name for (name,) in rows}
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"--storage {mask_url(url)}: cannot read {path}: {exc}") from None
        if not {"studies", "trials", "version_info"} <= tables:
            raise StoreError(
                f"--storage {mask_url(url)}: {path} holds no Optuna studies "
                "(is it the MLflow store? studies are in automl.db by default)"
            )
    return open_storage(url, create=False)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def page_url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/dashboard"


def guarded(inner: WsgiApp, allow_edits: bool, *, loopback: bool) -> WsgiApp:
    """The dashboard behind two checks: writes refused unless allowed, and, on the loopback
    address, requests for another host name refused (a web page that points its own name
    at 127.0.0.1 must not read the studies through the user's browser; in a container,
    when its port is published on the loopback address)."""

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        why = None
        if not allow_edits and environ.get("REQUEST_METHOD", "GET") not in READS:
            why = b"read-only dashboard: start it with --allow-edits to change studies\n"
        if loopback and not is_loopback(host_name(environ.get("HTTP_HOST") or "localhost")):
            why = b"this dashboard answers localhost and loopback addresses only\n"
        if why is None:
            return inner(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8")])
        return [why]

    return app


def host_name(header: str) -> str:
    """The name in a Host header, without its port (``[::1]:8080`` is ``::1``)."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if ":" in header else header


def listen(host: str, port: int) -> WSGIServer:
    """A threaded WSGI server (the dashboard's pages poll while plots compute), quiet about
    each request, bound at once and given its app later; a port in use or an address not
    on this machine is one line, exit 2."""
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a page still polling does not hold up Ctrl-C
        address_family = socket.AF_INET6 if ":" in host else WSGIServer.address_family

    class Quiet(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    try:
        return Server((host.strip("[]"), port), Quiet)  # serve_forever answers once set_app
    except OSError as exc:
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there: {exc.strerror or exc}"
        ) from None
