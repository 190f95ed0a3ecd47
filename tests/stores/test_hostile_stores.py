"""Stores and settings tried as a hostile user would: bad values in the environment, a
store held locked, a full disk, a project folder copied elsewhere."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from automl import environment, retry
from automl.errors import ConfigError, StoreError
from tests.conftest import PG, automl_command, bin_env, pg_admin, scratch_database

BAD_VALUES = [
    ("AUTOML_HEARTBEAT_SECONDS", "abc"),
    ("AUTOML_HEARTBEAT_SECONDS", "0"),
    ("AUTOML_HEARTBEAT_SECONDS", "2.5"),
    ("AUTOML_GRACE_SECONDS", "nan"),
    ("AUTOML_GRACE_SECONDS", "-5"),
    ("AUTOML_PROXY_WAIT_SECONDS", "abc"),
    ("AUTOML_PROXY_WAIT_SECONDS", "inf"),
    ("AUTOML_PROXY_WAIT_SECONDS", "0"),
    ("AUTOML_STORE_RETRY_SECONDS", "nan"),
    ("AUTOML_TRACKING_RETRY_SECONDS", "-1"),
]


@pytest.mark.hostile("inputs")
@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_a_bad_variable_is_one_line_naming_it_when_read(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    variable = next(v for v in environment.declared() if v.name == name)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        variable.get()
    message = str(raised.value)
    assert message.startswith(f"{name}={value}: ") and "\n" not in message
    assert "automl.db" not in message  # no hint about a store that is fine


@pytest.mark.hostile("inputs")
def test_good_values_and_blanks_are_read() -> None:
    assert environment.HEARTBEAT_SECONDS.get() == 30
    for name, value, expected in [
        ("AUTOML_HEARTBEAT_SECONDS", " 5 ", 5),
        ("AUTOML_GRACE_SECONDS", "1", 1),
        ("AUTOML_PROXY_WAIT_SECONDS", "0.5", 0.5),
        ("AUTOML_STORE_RETRY_SECONDS", "0", 0.0),
        ("AUTOML_HEARTBEAT_SECONDS", "  ", 30),
    ]:
        variable = next(v for v in environment.declared() if v.name == name)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(name, value)
            assert variable.get() == expected


@pytest.mark.slow
@pytest.mark.hostile("inputs")
@pytest.mark.parametrize(
    ("name", "value", "args"),
    [
        ("AUTOML_HEARTBEAT_SECONDS", "0", ["study", "status", "x", "--storage", "STORE"]),
        ("AUTOML_GRACE_SECONDS", "nan", ["study", "status", "x", "--storage", "STORE"]),
        (
            "AUTOML_PROXY_WAIT_SECONDS",
            "abc",
            ["study", "status", "x", "--storage", "grpc://127.0.0.1:9"],
        ),
    ],
)
def test_a_command_with_a_bad_variable_exits_2_in_one_line(
    tmp_path, name: str, value: str, args: list[str]
) -> None:
    import optuna

    store = f"sqlite:///{tmp_path / 'automl.db'}"
    optuna.create_study(study_name="x", storage=store)  # a store that is fine
    args = [store if a == "STORE" else a for a in args]
    done = subprocess.run(
        automl_command(*args), capture_output=True, text=True, cwd=tmp_path,
        env=bin_env(**{name: value}), timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{name}={value}" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@contextmanager
def locked(db: Path, seconds: float) -> Iterator[threading.Event]:
    """Hold ``BEGIN EXCLUSIVE`` on ``db`` for ``seconds`` (or until the block ends), as
    another program might; yields once the lock is taken."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with closing(sqlite3.connect(db, isolation_level=None)) as connection:
            connection.execute("BEGIN EXCLUSIVE")
            taken.set()
            done.wait(seconds)
            connection.execute("ROLLBACK")

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(10)
    try:
        yield done
    finally:
        done.set()
        thread.join()


@pytest.fixture
def tracking_store(tmp_path: Path) -> str:
    from automl.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(uri, "locked")  # the store and its experiment exist
    return uri


@pytest.fixture
def said() -> Iterator[list[str]]:
    lines: list[str] = []
    retry.LISTENERS.append(lines.append)
    yield lines
    retry.LISTENERS.remove(lines.append)


@pytest.mark.slow
@pytest.mark.hostile("stores")
def test_a_locked_tracking_store_is_waited_for_and_said(
    tracking_store: str, tmp_path: Path, said: list[str]
) -> None:
    from automl.tracking import Tracker

    with locked(tmp_path / "mlflow.db", 3.0):
        tracker = Tracker(tracking_store, "locked")
        run = tracker.start_study_run("s", {}, {})
    assert tracker.run_info(run)["status"] == "RUNNING"
    assert "stopped answering" in said[0] and "database is locked" in said[0], said
    assert "answers again" in said[-1], said


@pytest.mark.slow
@pytest.mark.hostile("stores")
def test_a_tracking_store_locked_past_the_budget_is_one_line(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, said: list[str]
) -> None:
    from automl.tracking import Tracker

    monkeypatch.setenv("AUTOML_TRACKING_RETRY_SECONDS", "2")
    start = time.monotonic()
    with locked(tmp_path / "mlflow.db", 60.0), pytest.raises(StoreError) as raised:
        Tracker(tracking_store, "locked").start_study_run("s", {}, {})
    assert time.monotonic() - start < 15
    message = str(raised.value)
    assert "locked" in message and "another process" in message and "\n" not in message
    assert raised.value.exit_code == 2


def copy_store(source: Path, target: Path) -> None:
    target.mkdir()
    with (
        closing(sqlite3.connect(source)) as old,
        closing(sqlite3.connect(target / source.name)) as new,
    ):
        old.backup(new)  # the write-ahead log included


@pytest.mark.slow
@pytest.mark.hostile("stores")
def test_a_copied_project_folder_says_where_its_artifacts_still_go(
    tracking_store: str, tmp_path: Path, said: list[str]
) -> None:
    from automl.tracking import Tracker

    Tracker(tracking_store, "locked")
    assert said == []  # in its own folder: nothing to say
    copy_store(tmp_path / "mlflow.db", tmp_path / "copy")
    Tracker(f"sqlite:///{tmp_path / 'copy' / 'mlflow.db'}", "locked")
    assert len(said) == 1, said
    line = said[0]
    assert str(tmp_path / "mlartifacts") in line and str(tmp_path / "copy") in line
    assert "--experiment" in line and "UPDATE experiments" in line


@pytest.fixture
def small_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A real Optuna storage on SQLite whose file may not grow any more: SQLite answers
    "database or disk is full" (SQLITE_FULL), as on a full disk."""
    import optuna
    from sqlalchemy import event

    from automl.stores import open_database

    monkeypatch.setenv("AUTOML_STORE_RETRY_SECONDS", "3")  # before the fix: 3 s of retries
    storage = open_database(f"sqlite:///{tmp_path / 'automl.db'}")
    optuna.create_study(study_name="full", storage=storage)

    def no_growth(connection: sqlite3.Connection, record: object) -> None:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(storage.engine, "connect", no_growth)
    storage.engine.dispose()  # new connections, each with the limit
    yield storage
    storage.engine.dispose()


@pytest.mark.hostile("stores")
def test_a_full_disk_under_the_optuna_storage_is_said_at_once(
    small_storage: Any, said: list[str]
) -> None:
    study_id = small_storage.get_study_id_from_name("full")
    start = time.monotonic()
    with pytest.raises(retry.DiskFull) as raised:
        retry.retrying(
            lambda: small_storage.set_study_user_attr(study_id, "big", "x" * 200_000),
            what=retry.STORE,
        )
    assert time.monotonic() - start < 2, "a full disk is not waited for"
    message = str(raised.value)
    assert "disk is full" in message and "database or disk is full" in message
    assert "exceeding max length" not in message and "\n" not in message
    assert not any("stopped answering" in line for line in said), said


@pytest.mark.hostile("stores")
def test_no_space_left_on_a_device_is_said_at_once(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOML_STORE_RETRY_SECONDS", "3")  # before the fix: 3 s of retries

    def write() -> None:
        with open("/dev/full", "w") as full:  # every write: ENOSPC
            full.write("x")

    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    start = time.monotonic()
    with pytest.raises(OSError, match="No space left on device"):  # the caller names the file
        retry.retrying(write, what=retry.STORE, transient=lambda exc: True)
    assert time.monotonic() - start < 2 and said == []


@pytest.mark.postgres
@pytest.mark.hostile("stores")
def test_a_postgres_restart_is_named_as_a_restart(said: list[str]) -> None:
    """A restarting server ends every connection (57P01, "terminating connection due to
    administrator command"); ending this test's own connection so is the same to it."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    with scratch_database("restart") as name:
        engine = sqlalchemy.create_engine(f"{PG}/{name}", poolclass=NullPool)
        with engine.connect() as connection:
            pid = connection.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar()
            pg_admin(f"SELECT pg_terminate_backend({pid})")
            tries: list[str] = []

            def query() -> int:
                tries.append("try")
                if len(tries) == 1:  # the connection the restart ended
                    return int(connection.execute(sqlalchemy.text("SELECT 1")).scalar() or 0)
                return 1

            assert retry.retrying(query, what=retry.STORE) == 1
        engine.dispose()
    assert "restarting" in said[0] and "server closed the connection" in said[0], said


@pytest.mark.postgres
@pytest.mark.hostile("consistency")
def test_changes_take_turns_on_a_postgres_store_too() -> None:
    """The alias lock on a database server: an advisory lock, held by one at a time."""
    from automl.stores import taking_turns

    with scratch_database("turns") as name:
        inside: list[int] = []
        overlaps: list[int] = []

        def change(i: int) -> None:
            with taking_turns(f"{PG}/{name}", "aliases"):
                if inside:
                    overlaps.append(i)
                inside.append(i)
                time.sleep(0.2)
                inside.remove(i)

        threads = [threading.Thread(target=change, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert overlaps == []
