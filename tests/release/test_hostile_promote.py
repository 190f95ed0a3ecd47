"""Promotions and rollbacks raced against each other on a real SQLite registry: the alias
history stays a true record of who held the alias, so rollback undoes real moves only."""

from __future__ import annotations

import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from automl.errors import ConfigError
from automl.pipeline import run_search
from automl.release.promote import rollback
from automl.tracking import Registry
from tests.conftest import automl_command, mlflow_client, search_settings

pytestmark = pytest.mark.slow
NAME = "raced"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny search registers version 1; version 2 is the same files registered again
    (equal accuracy, so the gate passes either way)."""
    folder = tmp_path_factory.mktemp("raced")
    settings = search_settings(
        folder, trials=1, study_name="raced", max_epochs=1, model_name=NAME, seed=3
    )
    run_search(settings)
    uri = settings.tracking_uri
    registry = Registry(uri)
    first = mlflow_client(uri).get_model_version(NAME, "1")
    assert registry.register(NAME, str(first.source), dict(first.tags)) == 2
    return folder


@pytest.fixture
def uri(built: Path, tmp_path: Path) -> str:
    """A fresh copy of the registry for each test (no champion, no history)."""
    copy = tmp_path / "mlflow.db"
    with (
        closing(sqlite3.connect(built / "mlflow.db")) as source,
        closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)  # the write-ahead log included
    return f"sqlite:///{copy}"


def at_once(*commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run ``automl`` commands as processes started together; each one's outcome."""
    started = [
        subprocess.Popen(
            automl_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args in commands
    ]
    done = []
    for process in started:
        out, err = process.communicate(timeout=180)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


def history(uri: str) -> list[int]:
    return Registry(uri).alias_history(NAME, "champion")


def champion(uri: str) -> int:
    return int(mlflow_client(uri).get_model_version_by_alias(NAME, "champion").version)


@pytest.mark.hostile("consistency")
def test_promotions_and_rollbacks_at_once_record_true_moves_only(uri: str) -> None:
    """Each pair of commands runs at once: the second promotion finds the first's work
    done (and records nothing), the second rollback finds nothing left to undo."""
    promoting = ["promote", NAME, "--version", "1", "--tracking-uri", uri]
    results = at_once(promoting, promoting)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    said = sorted("already holds" in r.stdout for r in results)
    assert said == [False, True], [r.stdout for r in results]
    assert history(uri) == [1]
    with pytest.raises(ConfigError, match="nothing to roll back to"):
        rollback(Registry(uri), NAME)

    forcing = ["promote", NAME, "--version", "2", "--force", "--tracking-uri", uri]
    results = at_once(forcing, forcing)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert sorted("already holds" in r.stdout for r in results) == [False, True]
    assert history(uri) == [1, 2] and champion(uri) == 2

    rolling = ["rollback", NAME, "--tracking-uri", uri]
    results = sorted(at_once(rolling, rolling), key=lambda r: r.returncode)
    assert [r.returncode for r in results] == [0, 2], [r.stdout + r.stderr for r in results]
    assert "from version 2 to version 1" in results[0].stdout
    assert "nothing to roll back to" in results[1].stderr
    assert champion(uri) == 1 and history(uri) == [1]


@pytest.mark.hostile("consistency")
def test_a_history_with_repeats_never_rolls_back_to_the_same_version(uri: str) -> None:
    """A history written before moves were serialised ([1, 1]) is read as one move."""
    registry = Registry(uri)
    registry.set_alias(NAME, "champion", 1)
    registry.set_alias_history(NAME, "champion", [1, 1])
    with pytest.raises(ConfigError, match="nothing to roll back to"):
        rollback(registry, NAME)
    assert champion(uri) == 1
