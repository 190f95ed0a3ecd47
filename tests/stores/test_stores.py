"""Store URLs and local stores: every credential masked wherever a URL is shown or
recorded; a new store never left half-made; a broken one named in one line with the way out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from automl.stores import mask_url

SECRET = "S3cret-PW"


@pytest.mark.hostile("security")
@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg2://rt:{SECRET}@127.0.0.1:5432/db",
        f"postgresql+psycopg2://rt@127.0.0.1:5432/db?password={SECRET}",
        f"postgresql://rt@h/db?sslmode=require&PASSWORD={SECRET}",
        f"postgresql://rt@h/db?passwd={SECRET}&x=1",
        f"mysql://h/db?pwd={SECRET}",
        f"http://h:5000/?token={SECRET}",
        f"http://h:5000/?Access_Key={SECRET}&secret={SECRET}",
        f"postgresql://h/db?sslpassword={SECRET}",
        f"s3://bucket/x?X-Amz-Credential={SECRET}",
        f"could not connect: postgresql://a:{SECRET}@h/db?key={SECRET} (timeout)",
    ],
)
def test_every_credential_is_masked(url):
    masked = mask_url(url)
    assert SECRET not in masked
    assert "***" in masked


@pytest.mark.parametrize(
    "url",
    ["sqlite:///automl.db", "postgresql://rt@h:5432/db?sslmode=require", "http://h:5000"],
)
def test_urls_without_credentials_are_unchanged(url):
    assert mask_url(url) == url


@pytest.mark.hostile("security")
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
def test_any_password_in_userinfo_or_query_is_masked(secret):
    secret = secret.replace("@", "").replace("/", "").replace("&", "").replace("#", "")
    if not secret.strip() or any(c.isspace() for c in secret) or ";" in secret:
        return
    if set(secret) <= {"*"}:  # the mask itself, '***': nothing to tell apart
        return
    if secret in "postgresql://u@h/db":  # the rest of the URL holds it: nothing to tell apart
        return
    for url in (f"postgresql://u:{secret}@h/db", f"postgresql://u@h/db?password={secret}"):
        assert f"{secret}@" not in mask_url(url) and f"={secret}" not in mask_url(url)


def test_a_relative_local_store_is_named_by_its_absolute_path(tmp_path, monkeypatch):
    """MLflow keeps one store per URI string: a relative one would stay bound to the folder
    it was first opened in, whatever the working folder later."""
    from automl.stores import absolute_sqlite

    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert absolute_sqlite("sqlite:///a/b.db?timeout=5") == f"sqlite:///{tmp_path}/a/b.db?timeout=5"
    assert absolute_sqlite("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_sqlite("http://host:5000") == "http://host:5000"
    assert absolute_sqlite("sqlite:///:memory:") == "sqlite:///:memory:"


@pytest.mark.hostile("stores")
def test_a_store_killed_while_it_is_made_is_not_left_half_made(tmp_path):
    """kill -9 while a new local store is built: nothing at its name, and the next
    command makes a whole one."""
    import signal
    import subprocess
    import sys
    import time

    import optuna

    from automl.stores import open_storage

    url = f"sqlite:///{tmp_path / 'automl.db'}"
    builder = (
        "import sqlite3, sys, time\n"
        "from automl.stores import build_beside\n"
        "def slow(draft):\n"
        "    sqlite3.connect(draft.removeprefix('sqlite:///')).execute('create table t (x)')\n"
        "    time.sleep(120)\n"
        f"build_beside({url!r}, slow)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", builder])
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".automl.db.new-*")):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "automl.db").exists()  # a stray draft, never a half-made store
    study = optuna.create_study(study_name="after", storage=open_storage(url))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="after", storage=open_storage(url)).trials) == 2


@pytest.mark.hostile("stores")
@pytest.mark.parametrize(
    ("store", "args", "option"),
    [
        ("mlflow.db", ["models"], "--tracking-uri sqlite:///mlflow.db"),
        ("automl.db", ["study", "status", "x"], "--storage sqlite:///automl.db"),
    ],
)
def test_a_broken_store_is_one_line_naming_the_file_and_the_way_out(
    tmp_path, monkeypatch, capsys, store, args, option
):
    from automl.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / store).write_bytes(b"half made, not a database " * 100)
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {option}: cannot open the "), lines[0]
    assert "file is not a database" in lines[0]
    assert f"(mv {store} {store}.broken)" in lines[0]


@pytest.mark.hostile("stores")
def test_a_half_migrated_tracking_store_is_one_line_with_the_way_out(tmp_path):
    """A store whose last migration was cut off: its columns exist, its recorded revision
    is the one before (MLflow then fails on "duplicate column name"). A new process opens
    it, as the next command would."""
    import sqlite3
    import subprocess

    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    from automl.tracking.common import client_for
    from tests.conftest import automl_command, bin_env

    url = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client_for(url)
    scripts = ScriptDirectory.from_config(_get_alembic_config(url))
    previous = scripts.get_revision(scripts.get_current_head()).down_revision
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("update alembic_version set version_num = ?", (previous,))
    result = subprocess.run(automl_command("models"), cwd=tmp_path, env=bin_env(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: --tracking-uri sqlite:///mlflow.db: cannot open the ML")
    assert "(mv mlflow.db mlflow.db.broken)" in lines[0]
