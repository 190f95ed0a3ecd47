"""``automl ui``: the MLflow UI over the tracking store, and the study's links into it.

``mlflow ui`` serves on port 5000 unless told otherwise, so a second one, or anything else
on that port, leaves the printed links opening the wrong page or none. This command starts
``mlflow ui`` on a free loopback port (``--port`` to choose), waits until it answers,
prints the study's links as whole URLs on that address, one per line, and serves until
Ctrl-C (or SIGTERM), which stops the server and exits 0.

The server runs in a process group of its own: Ctrl-C in the terminal reaches this command
alone, which then stops the server and everything it started (uvicorn) together.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from automl.cli.common import StorageOption, TrackingOption, console, sigterm_as_interrupt
from automl.errors import AutomlError, ConfigError, StoreError
from automl.search.scheduler.signals import hurried
from automl.stores import (
    DEFAULT_STORAGE,
    DEFAULT_TRACKING,
    absolute_sqlite,
    mask_url,
    require_existing,
)

if TYPE_CHECKING:
    import optuna

    from automl.insight.story import StoryLinks
    from automl.tracking import Tracker

HOST = "127.0.0.1"
STARTUP_SECONDS = 180.0  # it imports MLflow and checks the store's schema: seconds, or more
STOP_SECONDS = 10.0  # then it is killed


def ui(
    study_name: Annotated[
        str | None,
        typer.Argument(
            metavar="STUDY",
            help="The study whose pages to link; default: every study in --storage.",
        ),
    ] = None,
    port: Annotated[
        int,
        typer.Option(
            "--port",
            "-p",
            help="Port to serve on (loopback). [default: a free one]",
            show_default=False,
        ),
    ] = 0,
    storage: StorageOption = DEFAULT_STORAGE,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
) -> None:
    """The MLflow UI over --tracking-uri on a free local port, with the study's links."""
    from automl.tracking.ui import served, without_credentials

    if served(tracking_uri):
        raise ConfigError(
            f"--tracking-uri {without_credentials(tracking_uri)}: a tracking server is its own "
            "UI; open it in a browser"
        )
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: must be 0..65535 (0: a free one), got {port}")
    require_existing(tracking_uri, "--tracking-uri", "MLflow tracking store")
    pages = study_pages(tracking_uri, storage, study_name)  # a bad name: before starting
    port = free_port(port)
    with tempfile.TemporaryDirectory(prefix="automl-ui-") as folder:
        serve(tracking_uri, port, pages, Path(folder, "mlflow-ui.log"))
    console.print("MLflow UI stopped")


def serve(tracking_uri: str, port: int, pages: list[tuple[str, str]], log: Path) -> None:
    """Start the server, say where it is, and serve until Ctrl-C or SIGTERM; a server that
    ends on its own is one line (exit 1). It is stopped either way, a second signal only
    hurrying that."""
    with sigterm_as_interrupt():
        server = None
        try:
            server = start_server(tracking_uri, port, log)
            announce(wait_until_answering(server, port, log), tracking_uri, pages)
            code = server.wait()
            raise AutomlError(f"mlflow ui stopped on its own (exit {code}){last_line(log)}")
        except KeyboardInterrupt:  # the way to stop it
            pass
        finally:
            if server is not None:
                stop(server, port)


def study_pages(tracking_uri: str, storage: str, study_name: str | None) -> list[tuple[str, str]]:
    """What each link shows and its path in the UI (``#/...``): the study's pages, or
    without a study each study's trials; none before any search ran here."""
    import optuna

    from automl.stores import open_storage, sqlite_file
    from automl.tracking import Tracker

    path = sqlite_file(storage)
    if study_name is None and path is not None and not path.is_file():
        return []  # the UI alone
    store = open_storage(storage, create=False)
    names = [s.study_name for s in optuna.get_all_study_summaries(store)]
    if study_name is not None and study_name not in names:
        shown = ", ".join(names) or "none"
        raise ConfigError(f"no study named '{study_name}' in the storage (studies: {shown})")
    tracker = Tracker(tracking_uri, None)
    found: list[tuple[str, str]] = []
    for name in [study_name] if study_name is not None else names:
        story = recorded_story(tracker, optuna.load_study(study_name=name, storage=store))
        if story is None:
            continue
        own = [(f"{name}: every trial by val_acc", story.trials)]
        found += story.lines() if study_name else own
    return found


def recorded_story(tracker: Tracker, study: optuna.Study) -> StoryLinks | None:
    """The links the search printed at its end, rebuilt from what it recorded (None when
    the study has no MLflow run yet)."""
    from automl.insight.story import COMPARED, StoryLinks
    from automl.records import RunTag, StudyRecord, TrialRecord, ranked
    from automl.tracking.ui import UiLinks, has_view, view_key

    parent_id = StudyRecord.of(study).parent_run_id
    if not parent_id:
        return None
    parent = tracker.run_info(parent_id)
    experiment = str(parent["experiment_id"])
    links, key = UiLinks(experiment), view_key(study.study_name)
    best = ranked(study.get_trials(deepcopy=False))[:COMPARED]
    top = [run for trial in best if (run := TrialRecord.of(trial).run_id)]
    name, _, version = str(parent["tags"].get(RunTag.REGISTERED_VERSION, "")).rpartition("/")
    return StoryLinks(
        open="",
        parent=links.run(parent_id),
        trials=links.view(key) if has_view(tracker, experiment, key) else links.experiment(),
        compare=links.compare(top) if top else None,
        model=links.model_version(name, version) if name and version else None,
    )


def free_port(port: int) -> int:
    """``port`` if this machine can listen on it (0: one the system picks); a port in use is
    one line."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise ConfigError(
                f"--port {port}: cannot listen there: {exc.strerror or exc}"
            ) from None
        return int(probe.getsockname()[1])


def start_server(tracking_uri: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``mlflow ui`` over the store, in a process group of its own, its output in ``log``."""
    from automl.tracking import artifact_root_for

    command = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", absolute_sqlite(tracking_uri),
        "--host", HOST, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    root = artifact_root_for(absolute_sqlite(tracking_uri))
    if root is not None:  # where the searches keep theirs, not ./mlartifacts here
        command += ["--artifacts-destination", root]
    with log.open("w") as output:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def wait_until_answering(server: subprocess.Popen[bytes], port: int, log: Path) -> str:
    """The UI's address once it answers; a server that exits first, or never answers, is
    one line with the last thing it said."""
    base = f"http://{HOST}:{port}/"
    deadline = time.monotonic() + STARTUP_SECONDS
    with console.status(f"starting mlflow ui on {base}…"):
        while True:
            if server.poll() is not None:
                raise StoreError(
                    f"mlflow ui exited at start (exit {server.returncode}){last_line(log)}"
                )
            try:
                with urllib.request.urlopen(base + "health", timeout=2) as answer:
                    if answer.status == 200:
                        return base
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise StoreError(
                    f"mlflow ui did not answer on {base} within {STARTUP_SECONDS:.0f} s"
                    f"{last_line(log)}"
                )
            time.sleep(0.3)


def announce(base: str, tracking_uri: str, pages: list[tuple[str, str]]) -> None:
    """Where the UI is, and each link whole on its own line, never wrapped."""
    console.print(
        f"MLflow UI on {base} over {mask_url(tracking_uri)}; Ctrl-C stops it",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    for what, link in pages:
        console.print(f"  {what}:", markup=False, highlight=False, soft_wrap=True)
        console.print(f"    {base}{link}", markup=False, highlight=False, soft_wrap=True)


def stop(server: subprocess.Popen[bytes], port: int) -> None:
    """Stop the server and what it started: SIGTERM to its group (uvicorn closes cleanly)
    until it has exited and its port is closed, then SIGKILL to whatever is left."""
    signal_group(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline and (server.poll() is None or listening(port)):
        if hurried():  # a second Ctrl-C: at once
            break
        time.sleep(0.1)
    signal_group(server.pid, signal.SIGKILL)
    server.wait()


def signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone, or reused
        os.killpg(group, signum)


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((HOST, port)) == 0


def last_line(log: Path) -> str:
    """``: <the last line the server wrote>``, or "" when it wrote nothing."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return f": {lines[-1][:300]}" if lines else ""
