"""The compose file: its wiring, its safe defaults (loopback ports, authentication,
secrets, non-root images), validated by Debian's docker-compose."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.common import (
    COMPOSE,
    DEPLOY,
    MAKE_SECRETS,
    SECRET_NAMES,
    compose_default,
    needs_compose,
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


# --- the compose file ----------------------------------------------------------------------


def test_services_and_their_wiring(compose):
    services = compose["services"]
    assert {"postgres", "mlflow", "worker", "minio"} <= set(services)
    postgres, mlflow, worker = services["postgres"], services["mlflow"], services["worker"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any("postgres-data:" in v for v in postgres["volumes"])
    assert any(
        v.startswith("./deploy/postgres-init.sh:/docker-entrypoint-initdb.d/")
        for v in postgres["volumes"]
    )
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = mlflow["environment"]
    assert (env["MLFLOW_DB_HOST"], env["MLFLOW_DB_USER"], env["MLFLOW_DB_NAME"]) == (
        "postgres", "automl", "mlflow",
    )  # fmt: skip
    assert env["MLFLOW_WORKERS"] == "1"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert mlflow["build"] == {"context": ".", "dockerfile": "mlflow/Dockerfile"}
    assert worker["build"] == "."
    assert worker["command"][0] == "worker"
    assert worker["depends_on"]["mlflow"]["condition"] == "service_healthy"
    env = worker["environment"]
    assert (env["AUTOML_DB_HOST"], env["AUTOML_DB_USER"], env["AUTOML_DB_NAME"]) == (
        "postgres", "automl", "optuna",
    )  # fmt: skip
    assert env["AUTOML_TRACKING_URI"] == "http://mlflow:5000"
    # empty unless WORKER_STORAGE names the storage proxy: the entrypoint builds it then
    assert env["AUTOML_STORAGE"] == "${WORKER_STORAGE:-}"
    gpu = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["driver"] == "nvidia"
    assert "ports" not in worker and "container_name" not in worker  # scalable
    assert services["minio"]["profiles"] == ["s3"]


def test_safe_defaults_are_written_in_the_file(compose):
    mlflow = compose["services"]["mlflow"]
    env = mlflow["environment"]
    assert compose_default(env["MLFLOW_AUTH"]) == "basic"
    assert compose_default(env["MLFLOW_DEFAULT_PERMISSION"]) == "NO_PERMISSIONS"
    # the entrypoint learns where the port is published, to refuse MLFLOW_AUTH=none there
    assert env["MLFLOW_BIND"] == "${MLFLOW_BIND:-127.0.0.1}"
    assert mlflow["ports"] == ["${MLFLOW_BIND:-127.0.0.1}:${MLFLOW_PORT:-5000}:5000"]
    for port in compose["services"]["minio"]["ports"]:
        assert port.startswith("${MINIO_BIND:-127.0.0.1}:")
    # the workers log in to MLflow as its admin, with the admin's password secret
    worker = compose["services"]["worker"]["environment"]
    assert worker["MLFLOW_TRACKING_USERNAME"] == env["MLFLOW_ADMIN_USERNAME"]
    assert worker["MLFLOW_TRACKING_PASSWORD_FILE"] == env["MLFLOW_ADMIN_PASSWORD_FILE"]


def test_every_password_is_a_secret_file_never_an_environment_value(compose):
    declared = compose["secrets"]
    assert set(declared) == set(SECRET_NAMES)
    for name, secret in declared.items():
        assert secret == {"file": f"${{AUTOML_SECRETS_DIR:-./secrets}}/{name}"}
    for service_name, service in compose["services"].items():
        mounted = set(service.get("secrets", []))
        for key, raw in service.get("environment", {}).items():
            value = str(raw)
            # nothing interpolated from a password variable of the host (.env)
            assert not re.search(r"\$\{\w*(PASSWORD|SECRET)", value), (service_name, key)
            if re.search(r"PASSWORD|SECRET", key):
                assert key.endswith("_FILE"), (service_name, key)
                name = value.removeprefix("/run/secrets/")  # MinIO takes the bare name
                assert name in mounted, (service_name, key, value)
    assert compose["services"]["minio"]["environment"]["MINIO_ROOT_PASSWORD_FILE"] == (
        "minio_root_password"
    )
    example = (DEPLOY / "env.example").read_text()
    assert not re.search(r"^\s*\w*(PASSWORD|SECRET\w*)\s*=", example, re.M)
    for path in (REPO / "Dockerfile", REPO / "mlflow" / "Dockerfile"):
        assert not re.search(r"^(ENV|ARG)\b.*(PASSWORD|SECRET)", path.read_text(), re.M | re.I)


def test_secrets_stay_out_of_git_and_of_build_contexts():
    assert "secrets/" in (REPO / ".gitignore").read_text().splitlines()
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "secrets" in ignored and ".env" in ignored


def test_both_images_run_as_uid_10001(compose):
    worker = (REPO / "Dockerfile").read_text()
    mlflow = (REPO / "mlflow" / "Dockerfile").read_text()
    for text in (worker, mlflow):
        assert "useradd --uid 10001" in text
        assert re.findall(r"^USER (.+)$", text, re.M)[-1] == "10001:10001"
    # named volumes start with the owner of the folder they are mounted on
    for volume in compose["services"]["worker"]["volumes"]:
        target = volume.split(":")[1]
        assert target.startswith("/home/automl/.cache/") and target in worker
    assert "chown -R automl:automl /home/automl" in worker
    assert compose["services"]["mlflow"]["volumes"] == ["mlartifacts:/mlartifacts"]
    assert "chown mlflow:mlflow /mlartifacts" in mlflow
    # the scripts the images run are the ones tested here
    assert "COPY deploy/secrets.sh deploy/worker-entrypoint.sh /usr/local/lib/automl/" in worker
    assert 'ENTRYPOINT ["/usr/local/lib/automl/worker-entrypoint.sh"]' in worker
    assert "COPY mlflow/entrypoint.sh /usr/local/lib/automl/mlflow-entrypoint.sh" in mlflow
    assert "COPY deploy/secrets.sh /usr/local/lib/automl/secrets.sh" in mlflow


def test_the_init_script_creates_both_databases():
    script = (DEPLOY / "postgres-init.sh").read_text()
    assert "CREATE DATABASE optuna" in script and "CREATE DATABASE mlflow" in script


def compose_config(secrets: Path, **env: str) -> subprocess.CompletedProcess:
    """``docker-compose config`` in a clean environment (no .env of the checkout)."""
    empty = secrets.parent / "empty.env"
    empty.write_text("")
    clean = {"PATH": os.environ["PATH"], "AUTOML_SECRETS_DIR": str(secrets), **env}
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--env-file", str(empty), "config"],
        env=clean, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def secrets_dir(tmp_path) -> Path:
    made = subprocess.run(["sh", str(MAKE_SECRETS), str(tmp_path / "secrets")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return tmp_path / "secrets"


@needs_compose
def test_docker_compose_validates_the_file(secrets_dir):
    empty = secrets_dir.parent / "empty.env"
    empty.write_text("")
    ok = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--env-file", str(empty), "config", "-q"],
        env={**os.environ, "AUTOML_SECRETS_DIR": str(secrets_dir)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr


@needs_compose
def test_ports_are_published_on_loopback_unless_opted_in(secrets_dir):
    default = compose_config(secrets_dir)
    assert default.returncode == 0, default.stderr
    services = yaml.safe_load(default.stdout)["services"]
    assert services["mlflow"]["ports"] == ["127.0.0.1:5000:5000/tcp"]
    assert services["minio"]["ports"] == ["127.0.0.1:9000:9000/tcp", "127.0.0.1:9001:9001/tcp"]
    env = services["mlflow"]["environment"]
    assert (env["MLFLOW_AUTH"], env["MLFLOW_BIND"]) == ("basic", "127.0.0.1")
    assert env["MLFLOW_DEFAULT_PERMISSION"] == "NO_PERMISSIONS"
    assert services["mlflow"]["secrets"] == [{"source": name} for name in SECRET_NAMES]
    config = yaml.safe_load(default.stdout)["secrets"]
    assert config["postgres_password"]["file"] == str(secrets_dir / "postgres_password")

    exposed = compose_config(secrets_dir, MLFLOW_BIND="0.0.0.0", MLFLOW_PORT="8080",
                             MINIO_BIND="192.0.2.7")  # fmt: skip
    assert exposed.returncode == 0, exposed.stderr
    services = yaml.safe_load(exposed.stdout)["services"]
    assert services["mlflow"]["ports"] == ["0.0.0.0:8080:5000/tcp"]
    assert services["mlflow"]["environment"]["MLFLOW_BIND"] == "0.0.0.0"  # seen by the check
    assert services["minio"]["ports"][1] == "192.0.2.7:9001:9001/tcp"


def test_the_dashboard_service_reads_the_study_database_on_loopback(compose):
    dashboard = compose["services"]["dashboard"]
    worker = compose["services"]["worker"]
    assert dashboard["build"] == worker["build"] == "."  # the worker image: uid 10001
    assert dashboard["command"][:3] == ["dashboard", "--host", "0.0.0.0"]
    assert "--allow-edits" not in dashboard["command"]  # read-only
    assert dashboard["ports"] == ["${DASHBOARD_BIND:-127.0.0.1}:${DASHBOARD_PORT:-8080}:8080"]
    env = dashboard["environment"]
    # the command learns where the port is published: it warns beyond loopback, and on it
    # answers loopback host names only
    assert env["AUTOML_DASHBOARD_PUBLISHED_ON"] == "${DASHBOARD_BIND:-127.0.0.1}"
    for key in ("AUTOML_DB_HOST", "AUTOML_DB_USER", "AUTOML_DB_NAME", "AUTOML_DB_PASSWORD_FILE"):
        assert env[key] == worker["environment"][key]
    assert "AUTOML_STORAGE" not in env and dashboard["secrets"] == ["postgres_password"]
    assert dashboard["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/api/meta" in " ".join(dashboard["healthcheck"]["test"])


@needs_compose
def test_the_dashboard_is_published_on_loopback_unless_opted_in(secrets_dir):
    default = yaml.safe_load(compose_config(secrets_dir).stdout)["services"]["dashboard"]
    assert default["ports"] == ["127.0.0.1:8080:8080/tcp"]
    assert default["environment"]["AUTOML_DASHBOARD_PUBLISHED_ON"] == "127.0.0.1"
    exposed = compose_config(secrets_dir, DASHBOARD_BIND="0.0.0.0", DASHBOARD_PORT="8081")
    assert exposed.returncode == 0, exposed.stderr
    service = yaml.safe_load(exposed.stdout)["services"]["dashboard"]
    assert service["ports"] == ["0.0.0.0:8081:8080/tcp"]
    assert service["environment"]["AUTOML_DASHBOARD_PUBLISHED_ON"] == "0.0.0.0"  # it warns


def test_the_storage_proxy_serves_the_study_database_to_the_compose_network_only(compose):
    proxy = compose["services"]["storage-proxy"]
    worker = compose["services"]["worker"]
    assert proxy["build"] == worker["build"] == "."  # the worker image: uid 10001
    # the interface the Kubernetes manifests use too
    assert proxy["command"] == ["storage-proxy", "--host", "0.0.0.0", "--port", "13000"]
    assert "ports" not in proxy  # no authentication: only the project's network reaches it
    env = proxy["environment"]
    for key in ("AUTOML_DB_HOST", "AUTOML_DB_USER", "AUTOML_DB_NAME", "AUTOML_DB_PASSWORD_FILE"):
        assert env[key] == worker["environment"][key]
    assert "AUTOML_STORAGE" not in env and proxy["secrets"] == ["postgres_password"]
    assert proxy["depends_on"]["postgres"]["condition"] == "service_healthy"
    check = " ".join(proxy["healthcheck"]["test"])
    assert "GrpcStorageProxy(host='127.0.0.1', port=13000).get_all_studies()" in check
    assert "deploy" not in proxy  # no GPU
    example = (DEPLOY / "env.example").read_text()
    assert "# WORKER_STORAGE=grpc://storage-proxy:13000" in example


@needs_compose
def test_workers_use_the_storage_proxy_when_told(secrets_dir):
    default = yaml.safe_load(compose_config(secrets_dir).stdout)["services"]
    assert default["worker"]["environment"]["AUTOML_STORAGE"] == ""
    assert "ports" not in default["storage-proxy"]
    told = compose_config(secrets_dir, WORKER_STORAGE="grpc://storage-proxy:13000")
    assert told.returncode == 0, told.stderr
    worker = yaml.safe_load(told.stdout)["services"]["worker"]
    assert worker["environment"]["AUTOML_STORAGE"] == "grpc://storage-proxy:13000"
