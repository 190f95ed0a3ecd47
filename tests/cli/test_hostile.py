"""Every command used as a hostile user would: odd names (slashes, quotes, SQL, unicode,
markup, terminal escapes, 5,000 characters), missing models, aliases, studies and stores.

Each outcome is one clear line on stderr and exit 2, and nothing is written: no store made
where none was, no experiment, registered model or study added to one that exists.
"""

from __future__ import annotations

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automl.cli import LONGEST, main
from automl.stores import open_storage
from automl.tracking import Tracker
from tests.conftest import mlflow_client

NAMES = [
    "a/b",
    "it's",
    'say "hi"',
    "x'; DROP TABLE experiments;--",
    "ünïcødé-模型",
    "A" * 5000,
    "[bold]x[/]",
    "\x1b[31mred\x1b[0m",
    "line\nbreak",
    "..",
    " ",
]


def commands(name: str, tmp: str) -> list[list[str]]:
    registered = f"models:/{name}@champion"
    return [
        ["models", name],
        ["promote", name],
        ["rollback", name],
        ["predict", registered, f"{tmp}/digit.png"],
        ["export", f"models:/{name}/1", "-o", f"{tmp}/out.onnx"],
        ["serve", registered],
        ["evaluate", registered],
        ["retrain", registered, "--dataset", "digits"],
        ["drift", registered, "--dataset", "digits"],
        ["study", "status", name],
        ["study", "finish", name],
        ["worker", "--study", name, "--wait", "0"],
        ["report", name],
    ]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A tracking store and an Optuna storage that exist, with one experiment and study."""
    folder = tmp_path_factory.mktemp("hostile")
    Tracker(f"sqlite:///{folder / 'mlflow.db'}", "existing")
    optuna.create_study(
        study_name="existing", storage=open_storage(f"sqlite:///{folder}/automl.db")
    )
    return folder


def snapshot(folder) -> tuple:
    client = mlflow_client(f"sqlite:///{folder / 'mlflow.db'}")
    studies = optuna.get_all_study_summaries(open_storage(f"sqlite:///{folder}/automl.db"))
    return (
        sorted(e.name for e in client.search_experiments()),
        sorted(m.name for m in client.search_registered_models()),
        sorted(s.study_name for s in studies),
        # SQLite's -wal and -shm files exist while any connection is open (this test's
        # own, or a cached engine): they hold no new data, so only other files count.
        sorted(p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm"))),
    )


def one_clear_line(capsys, args: list[str]) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (args[:2], out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args[:2], err)
    assert "Traceback" not in err and "\x1b" not in err, err
    assert len(lines[0]) <= LONGEST + 10, len(lines[0])
    return lines[0]


@pytest.mark.hostile("inputs")
@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_odd_names_are_one_line_exit_2_and_write_nothing(stores, capsys, monkeypatch, name):
    monkeypatch.chdir(stores)
    before = snapshot(stores)
    for args in commands(name, str(stores)):
        line = one_clear_line(capsys, args)
        if "[bold]" in name:  # shown as typed, not taken as markup
            assert "[bold]x[/]" in line or "name a registered version" in line, line
    assert snapshot(stores) == before


@pytest.mark.hostile("stores")
def test_a_missing_local_store_is_said_and_not_made(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in commands("digits-default", str(tmp_path)):
        line = one_clear_line(capsys, args)
        assert "does not exist" in line or "name a registered version" in line, line
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, automl.db or lock file


@pytest.mark.hostile("security")
def test_a_terminal_escape_in_a_name_is_shown_not_acted_on(stores, capsys, monkeypatch):
    monkeypatch.chdir(stores)
    line = one_clear_line(capsys, ["models", "\x1b[2Jgone"])
    assert "\\x1b[2Jgone" in line


@pytest.mark.hostile("inputs")
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.text(min_size=1, max_size=300))
def test_any_model_or_study_name_is_one_line_or_a_listing(stores, capsys, monkeypatch, name):
    monkeypatch.chdir(stores)
    for args in (["models", name], ["study", "status", name], ["rollback", name]):
        code = main(args)
        out, err = capsys.readouterr()
        assert code == 2, (args, out, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
