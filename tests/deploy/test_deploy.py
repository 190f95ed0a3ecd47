"""Deployment files: the compose wiring, and the MLflow server entrypoint run for real."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from base64 import b64encode

import pytest
import yaml

from tests.conftest import REPO, bin_env, free_port, scratch_database, wait_for_http

COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_and_their_wiring(compose):
    services = compose["services"]
    assert {"postgres", "mlflow", "worker"} <= set(services)
    postgres, mlflow, worker = services["postgres"], services["mlflow"], services["worker"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any("postgres-data:" in v for v in postgres["volumes"])
    assert any(
        v.startswith("./deploy/postgres-init.sh:/docker-entrypoint-initdb.d/")
        for v in postgres["volumes"]
    )
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "5000:5000" in mlflow["ports"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert mlflow["environment"]["MLFLOW_WORKERS"] == "1"
    assert mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert mlflow["build"] == "./mlflow"
    assert worker["build"] == "."
    assert worker["command"][0] == "worker"
    assert worker["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert worker["environment"]["AUTOML_STORAGE"].endswith("@postgres:5432/optuna")
    assert worker["environment"]["AUTOML_TRACKING_URI"] == "http://mlflow:5000"
    gpu = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["driver"] == "nvidia"
    assert "ports" not in worker and "container_name" not in worker  # scalable


def test_no_password_is_written_in_the_files():
    for path in (COMPOSE, REPO / "mlflow" / "Dockerfile", REPO / "Dockerfile"):
        text = path.read_text()
        for line in text.splitlines():
            if "PASSWORD" in line and ":" in line and not line.strip().startswith("#"):
                assert "${" in line or "MLFLOW_ADMIN_PASSWORD_FILE" in line, line


def test_the_init_script_creates_both_databases():
    script = (REPO / "deploy" / "postgres-init.sh").read_text()
    assert "CREATE DATABASE optuna" in script and "CREATE DATABASE mlflow" in script


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs Debian's docker-compose")
def test_docker_compose_validates_the_file():
    env = {**os.environ, "POSTGRES_PASSWORD": "only-for-validation"}
    ok = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], env=env,
                        capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    env.pop("POSTGRES_PASSWORD")
    missing = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], env=env,
                             capture_output=True, text=True, cwd="/")  # fmt: skip
    assert missing.returncode != 0 and "set POSTGRES_PASSWORD" in missing.stderr


@pytest.fixture
def auth_server(tmp_path):
    """The entrypoint for real: basic auth on, the store URI and password from files."""
    with scratch_database("auth") as database:
        password = "a-long-admin-password-42"
        (tmp_path / "uri").write_text(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}")
        (tmp_path / "password").write_text(password)
        port = free_port()
        env = bin_env(
            MLFLOW_BACKEND_STORE_URI_FILE=str(tmp_path / "uri"),
            MLFLOW_ADMIN_PASSWORD_FILE=str(tmp_path / "password"),
            MLFLOW_ADMIN_USERNAME="admin", MLFLOW_AUTH="basic",
            MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "artifacts"),
            MLFLOW_HOST="127.0.0.1", MLFLOW_PORT=str(port),
        )  # fmt: skip
        log = tmp_path / "server.log"
        server = subprocess.Popen(
            ["sh", str(REPO / "mlflow" / "entrypoint.sh")], env=env, stdout=log.open("w"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{url}/health", process=server, output=lambda: log.read_text()[-3000:])
            yield url, password, log
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.postgres
def test_entrypoint_serves_with_basic_auth_and_secrets_from_files(auth_server, capsys, monkeypatch):
    from automl.cli import main

    url, password, log = auth_server
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(api, timeout=10)
    assert refused.value.code == 401
    token = b64encode(f"admin:{password}".encode()).decode()
    request = urllib.request.Request(api, headers={"Authorization": f"Basic {token}"})
    assert urllib.request.urlopen(request, timeout=10).status == 200
    assert password not in log.read_text()

    assert main(["models", "--tracking-uri", url]) == 2
    assert "You are not authenticated" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    assert main(["models", "--tracking-uri", url]) == 0
    assert "no registered models yet" in capsys.readouterr().out
