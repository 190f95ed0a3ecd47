"""The registry read without MLflow answers exactly what MLflow's own client answers, from a
local SQLite store and from a tracking server over the same store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from automl.errors import ConfigError
from automl.tracking import Registry
from automl.tracking.listing import list_versions
from tests.conftest import bin_env, free_port, mlflow_client, wait_for_http


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two models with tagged versions and aliases, a deleted version, and a prompt (which
    shares the tables and must not be listed)."""
    folder = tmp_path_factory.mktemp("listing")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    from automl.tracking.common import client_for

    client_for(uri)
    client = mlflow_client(uri)
    for name in ("beta", "alpha"):
        client.create_registered_model(name)
        for number in range(1, 4):
            client.create_model_version(
                name, str(folder / f"{name}-{number}"), run_id=None,
                tags={"val_acc": f"0.9{number}", "study": name},
            )  # fmt: skip
    client.set_registered_model_alias("alpha", "champion", "2")
    client.set_registered_model_alias("alpha", "candidate", "2")
    client.set_registered_model_alias("beta", "champion", "3")
    client.delete_model_version("beta", "1")
    import mlflow.genai

    mlflow.set_registry_uri(uri)
    mlflow.genai.register_prompt(name="a-prompt", template="Classify {{image}}")
    return uri


def _mlflow_view(uri: str) -> list[tuple[object, ...]]:
    registry = Registry(uri)
    found = [v for name in registry.model_names() for v in registry.versions(name)]
    return [(v.name, v.version, v.aliases, v.tags, v.created, v.run_id) for v in found]


def _fast_view(uri: str, name: str | None = None) -> list[tuple[object, ...]]:
    found = list_versions(uri, name)
    assert found is not None, "the fast path gave up on a store it should read"
    return [(v.name, v.version, v.aliases, v.tags, v.created, v.run_id) for v in found]


def test_sqlite_listing_matches_mlflow(store: str) -> None:
    expected = _mlflow_view(store)
    assert [row[:3] for row in expected] == [
        ("alpha", 1, ()), ("alpha", 2, ("candidate", "champion")), ("alpha", 3, ()),
        ("beta", 2, ()), ("beta", 3, ("champion",)),
    ]  # fmt: skip
    assert _fast_view(store) == expected
    assert _fast_view(store, "beta") == [row for row in expected if row[0] == "beta"]


def test_unknown_models_and_stores_are_one_line_errors(store: str, tmp_path: Path) -> None:
    known = r"no registered model named 'gamma' \(registered: alpha, beta\)"
    with pytest.raises(ConfigError, match=known):
        list_versions(store, "gamma")
    with pytest.raises(ConfigError, match="does not exist"):
        list_versions(f"sqlite:///{tmp_path / 'typo.db'}")
    assert not (tmp_path / "typo.db").exists()
    (tmp_path / "empty.db").touch()  # not an MLflow store: left to MLflow's client
    assert list_versions(f"sqlite:///{tmp_path / 'empty.db'}") is None
    assert list_versions("postgresql://nobody@127.0.0.1:1/none") is None


def test_server_listing_matches_mlflow(store: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    env = bin_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", process=server, output=log.read_text)
        assert _fast_view(url) == _mlflow_view(store)
        assert [row[1] for row in _fast_view(url, "alpha")] == [1, 2, 3]
        with pytest.raises(ConfigError, match="no registered model named 'gamma'"):
            list_versions(url, "gamma")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    assert list_versions(url) is None  # nothing answers any more: MLflow's client decides
