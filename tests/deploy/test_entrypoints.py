"""The password checks and the entrypoints run for real: MLflow server (PostgreSQL store,
basic auth, secrets from files), worker, and the postgres and MinIO wrappers."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from tests.conftest import bin_env, free_port, scratch_database, wait_for_http
from tests.deploy.common import (
    COMPOSE,
    DEPLOY,
    MAKE_SECRETS,
    MLFLOW_ENTRYPOINT,
    SECRET_NAMES,
    SECRETS_SH,
    STRONG,
    WORKER_ENTRYPOINT,
    compose_default,
    refused,
    sh,
)

# --- deploy/secrets.sh and deploy/make-secrets.sh, run for real ----------------------------


def read_secret(tmp_path: Path, value: str | None = None, **env: str):
    """``secret_read DB_PASSWORD`` (from DB_PASSWORD_FILE holding ``value``, when given)."""
    if value is not None:
        (tmp_path / "db_password").write_text(value)
        env["DB_PASSWORD_FILE"] = str(tmp_path / "db_password")
    script = f'. "{SECRETS_SH}"; secret_read DB_PASSWORD; echo "started"'
    return subprocess.run(["sh", "-c", script], env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "is empty"),
        ("short-pw1", "shorter than 12"),
        ("change-me", "placeholder"),
        ("CHANGE-ME-before-prod", "placeholder"),
        ("Password12345!", "placeholder"),
        ("minioadmin2024", "placeholder"),
        ("Postgres-2024!!", "placeholder"),
        ("example-strong-password", "placeholder"),
        ("first-line-is-long\nsecond", "line break"),
    ],
)
def test_secrets_sh_refuses_empty_short_and_placeholder_passwords(tmp_path, value, why):
    result = read_secret(tmp_path, value)
    line = refused(result, "DB_PASSWORD", why, str(tmp_path / "db_password"))
    assert "started" not in result.stdout
    if value:
        assert value not in line and value.split("\n")[0] not in line  # never printed


def test_secrets_sh_accepts_a_strong_password_from_the_variable_or_the_file(tmp_path):
    for result in (read_secret(tmp_path, STRONG + "\n"), read_secret(tmp_path, DB_PASSWORD=STRONG)):
        assert (result.returncode, result.stdout, result.stderr) == (0, "started\n", "")
    refused(read_secret(tmp_path, STRONG, DB_PASSWORD=STRONG), "both set")
    missing = read_secret(tmp_path, DB_PASSWORD_FILE=str(tmp_path / "nowhere"))
    refused(missing, "DB_PASSWORD", "cannot be read", str(tmp_path / "nowhere"))
    refused(read_secret(tmp_path), "DB_PASSWORD is empty")  # neither set


def test_make_secrets_creates_strong_files_and_never_overwrites(tmp_path):
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o755)
    (folder / "postgres_password").write_text("an-existing-password-of-mine")
    first = subprocess.run(["sh", str(MAKE_SECRETS), str(folder)], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert f"kept    {folder}/postgres_password" in first.stdout
    assert (folder / "postgres_password").read_text() == "an-existing-password-of-mine"
    # the folder keeps other users of the machine out; the files are readable by others
    # because Compose mounts them with their mode and the containers run as uid 10001
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    made = {name: (folder / name).read_text() for name in SECRET_NAMES[1:]}
    for name, value in made.items():
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644
        assert re.fullmatch(r"[0-9a-f]{32}", value), value  # 128 bits, MinIO takes <= 40
        assert read_secret(tmp_path, value).returncode == 0
    assert len(set(made.values())) == len(made)

    again = subprocess.run(["sh", str(MAKE_SECRETS), str(folder)], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0 and "created" not in again.stdout
    assert {name: (folder / name).read_text() for name in SECRET_NAMES[1:]} == made

    # AUTOML_SECRETS_DIR, as the compose file reads it, names another folder
    elsewhere = tmp_path / "elsewhere"
    env = {"PATH": os.environ["PATH"], "AUTOML_SECRETS_DIR": str(elsewhere)}
    fresh = subprocess.run(["sh", str(MAKE_SECRETS)], capture_output=True, text=True,
                           timeout=60, env=env)  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr
    assert sorted(path.name for path in elsewhere.iterdir()) == sorted(SECRET_NAMES)


def test_the_postgres_and_minio_wrappers_check_the_secret_then_hand_over(tmp_path):
    weak, strong = tmp_path / "weak", tmp_path / "strong"
    weak.write_text("postgres")
    strong.write_text(STRONG)
    postgres = DEPLOY / "postgres-entrypoint.sh"
    refused(sh(postgres, "postgres", POSTGRES_PASSWORD_FILE=str(weak)), "POSTGRES_PASSWORD")
    # past the check, the official entrypoint is exec'd: absent outside the image (127)
    handed = sh(postgres, "postgres", POSTGRES_PASSWORD_FILE=str(strong))
    assert handed.returncode == 127 and "docker-entrypoint.sh" in handed.stderr

    minio = DEPLOY / "minio-entrypoint.sh"
    refused(sh(minio, "server", MINIO_ROOT_PASSWORD_FILE=str(weak)), "MINIO_ROOT_PASSWORD")
    # a bare name is read under /run/secrets, as MinIO does
    refused(sh(minio, "server", MINIO_ROOT_PASSWORD_FILE="minio_root_password"),
            "/run/secrets/minio_root_password")  # fmt: skip
    refused(sh(minio, "server", MINIO_ROOT_PASSWORD="minioadmin"), "MINIO_ROOT_PASSWORD")
    handed = sh(minio, "server", MINIO_ROOT_PASSWORD_FILE=str(strong))
    assert handed.returncode == 127 and "/usr/bin/docker-entrypoint.sh" in handed.stderr


# --- the MLflow entrypoint, run for real ---------------------------------------------------


def mlflow_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A SQLite store: the database file appears as soon as ``mlflow server`` starts."""
    (tmp_path / "uri").write_text(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return {
        "MLFLOW_BACKEND_STORE_URI_FILE": str(tmp_path / "uri"),
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(free_port()), **extra,
    }  # fmt: skip


@pytest.mark.parametrize("bind", ["0.0.0.0", "192.0.2.7", None])
def test_mlflow_entrypoint_refuses_no_auth_when_the_server_is_exposed(tmp_path, bind):
    env = mlflow_env(tmp_path, MLFLOW_AUTH="none")
    if bind is None:  # no MLFLOW_BIND: the container's own default, every interface
        del env["MLFLOW_HOST"]
    else:
        env["MLFLOW_BIND"] = bind
    result = sh(MLFLOW_ENTRYPOINT, **env)
    refused(result, "MLFLOW_AUTH=none", bind or "0.0.0.0")
    assert "starting" not in result.stdout and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("password", ["change-me", "Admin12345678!", ""])
def test_mlflow_entrypoint_refuses_a_placeholder_admin_password(tmp_path, password):
    (tmp_path / "admin").write_text(password)
    env = mlflow_env(tmp_path, MLFLOW_ADMIN_PASSWORD_FILE=str(tmp_path / "admin"))
    result = sh(MLFLOW_ENTRYPOINT, **env)  # MLFLOW_AUTH unset: basic, the default
    refused(result, "MLFLOW_ADMIN_PASSWORD", str(tmp_path / "admin"))
    assert "starting" not in result.stdout and not (tmp_path / "mlflow.db").exists()
    weak_store = sh(MLFLOW_ENTRYPOINT, MLFLOW_ADMIN_PASSWORD=STRONG, MLFLOW_DB_HOST="db",
                    MLFLOW_DB_PASSWORD="mlflow")  # fmt: skip
    refused(weak_store, "MLFLOW_DB_PASSWORD")
    refused(sh(MLFLOW_ENTRYPOINT, MLFLOW_AUTH="off"), "MLFLOW_AUTH must be basic or none")


@pytest.mark.slow
def test_mlflow_entrypoint_without_auth_when_published_on_loopback_only(tmp_path):
    """The opt-out, and today's MLFLOW_BACKEND_STORE_URI_FILE, still work."""
    env = mlflow_env(tmp_path, MLFLOW_AUTH="none", MLFLOW_BIND="127.0.0.1")
    log = tmp_path / "server.log"
    server = subprocess.Popen(["sh", str(MLFLOW_ENTRYPOINT)], env=bin_env(**env),
                              stdout=log.open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
    try:
        wait_for_http(f"{url}/health", process=server, output=lambda: log.read_text()[-3000:])
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert urllib.request.urlopen(search, timeout=10).status == 200  # no credentials
        assert "auth: none" in log.read_text() and (tmp_path / "mlflow.db").exists()
    finally:
        with suppress(ProcessLookupError):  # it may have died first
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


ADMIN_PASSWORD = "admin-%-Secret-4u/42"  # a % that the generated basic_auth.ini must escape
DB_PASSWORD = "db@pass/w%rd:#?-42"  # trust authentication accepts any password


def api(url: str, path: str, user: str | None = None, password: str | None = None,
        body: dict | None = None, host: str | None = None) -> tuple[int, dict]:  # fmt: skip
    """One REST call; (status, JSON body or {})."""
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = "Basic " + b64encode(f"{user}:{password}".encode()).decode()
    if host is not None:
        headers["Host"] = host
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """The entrypoint for real, as the compose file runs it: basic auth by default, the
    store URL built from its parts and a password file, the admin password from a file."""
    tmp_path = tmp_path_factory.mktemp("mlflow-server")
    with scratch_database("auth") as database:
        (tmp_path / "db_password").write_text(DB_PASSWORD)
        (tmp_path / "admin_password").write_text(ADMIN_PASSWORD + "\n")
        mlflow = yaml.safe_load(COMPOSE.read_text())["services"]["mlflow"]["environment"]
        port = free_port()
        env = bin_env(
            MLFLOW_DB_HOST="127.0.0.1", MLFLOW_DB_USER="postgres", MLFLOW_DB_NAME=database,
            MLFLOW_DB_PASSWORD_FILE=str(tmp_path / "db_password"),
            MLFLOW_ADMIN_PASSWORD_FILE=str(tmp_path / "admin_password"),
            MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "artifacts"),
            MLFLOW_HOST="127.0.0.1", MLFLOW_PORT=str(port), MLFLOW_BIND="127.0.0.1",
            MLFLOW_SERVER_ALLOWED_HOSTS=compose_default(mlflow["MLFLOW_SERVER_ALLOWED_HOSTS"]),
        )  # fmt: skip
        for name in ("MLFLOW_AUTH", "MLFLOW_DEFAULT_PERMISSION", "MLFLOW_BACKEND_STORE_URI"):
            env.pop(name, None)  # the entrypoint's defaults
        log = tmp_path / "server.log"
        server = subprocess.Popen(
            ["sh", str(MLFLOW_ENTRYPOINT)], env=env, stdout=log.open("w"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{url}/health", process=server, output=lambda: log.read_text()[-3000:])
            yield url, log
        finally:
            with suppress(ProcessLookupError):  # it may have died first
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.postgres
def test_entrypoint_serves_with_basic_auth_and_secrets_from_files(auth_server, capsys, monkeypatch):
    from automl.cli import main

    url, log = auth_server
    search = "/api/2.0/mlflow/experiments/search?max_results=10"
    assert api(url, search)[0] == 401
    assert api(url, search, "admin", "a-wrong-password-42")[0] == 401
    assert api(url, search, "admin", ADMIN_PASSWORD)[0] == 200
    # the workers' Host header (http://mlflow:5000) passes the compose file's allowed hosts
    assert api(url, search, "admin", ADMIN_PASSWORD, host="mlflow:5000")[0] == 200
    assert api(url, search, "admin", ADMIN_PASSWORD, host="evil.example:5000")[0] == 403
    text = log.read_text()
    for secret in (ADMIN_PASSWORD, DB_PASSWORD, quote(DB_PASSWORD, safe="")):
        assert secret not in text

    # NO_PERMISSIONS by default: another user reads nothing they were not granted
    status, created = api(url, "/api/2.0/mlflow/experiments/create", "admin", ADMIN_PASSWORD,
                          body={"name": "admins-only"})  # fmt: skip
    assert status == 200, created
    experiment = created["experiment_id"]
    user = {"username": "analyst", "password": "analyst-Password-2-long"}
    assert api(url, "/api/2.0/mlflow/users/create", "admin", ADMIN_PASSWORD, body=user)[0] == 200
    get = f"/api/2.0/mlflow/experiments/get?experiment_id={experiment}"
    assert api(url, get, "admin", ADMIN_PASSWORD)[0] == 200
    assert api(url, get, user["username"], user["password"])[0] == 403
    status, found = api(url, search, user["username"], user["password"])
    assert status == 200
    assert experiment not in {e["experiment_id"] for e in found.get("experiments", [])}

    assert main(["models", "--tracking-uri", url]) == 2
    assert "You are not authenticated" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    assert main(["models", "--tracking-uri", url]) == 0
    assert "no registered models yet" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.postgres
def test_worker_entrypoint_logs_in_to_mlflow_with_the_password_file(auth_server, tmp_path):
    url, _ = auth_server
    (tmp_path / "admin_password").write_text(ADMIN_PASSWORD + "\n")
    worker = sh(WORKER_ENTRYPOINT, "models", "--tracking-uri", url,
                MLFLOW_TRACKING_USERNAME="admin",
                MLFLOW_TRACKING_PASSWORD_FILE=str(tmp_path / "admin_password"))  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    assert "no registered models yet" in worker.stdout
    assert ADMIN_PASSWORD not in worker.stdout + worker.stderr


# --- the worker entrypoint, run for real ---------------------------------------------------


def test_worker_entrypoint_refuses_a_placeholder_before_automl_runs(tmp_path):
    (tmp_path / "db_password").write_text("Automl2024!")
    db = {"AUTOML_DB_HOST": "127.0.0.1", "AUTOML_DB_PASSWORD_FILE": str(tmp_path / "db_password")}
    result = sh(WORKER_ENTRYPOINT, "--version", **db)
    refused(result, "AUTOML_DB_PASSWORD", str(tmp_path / "db_password"))
    assert result.stdout == ""
    (tmp_path / "mlflow_password").write_text("change-me")
    tracking = sh(WORKER_ENTRYPOINT, "--version",
                  MLFLOW_TRACKING_PASSWORD_FILE=str(tmp_path / "mlflow_password"))  # fmt: skip
    refused(tracking, "MLFLOW_TRACKING_PASSWORD")
    # neither a storage nor its parts: automl as it is, with its own defaults
    plain = sh(WORKER_ENTRYPOINT, "--version")
    assert plain.returncode == 0 and plain.stdout.startswith("automl ")


@pytest.mark.slow
@pytest.mark.postgres
def test_worker_entrypoint_builds_a_working_storage_url_from_the_password_file(tmp_path):
    import psycopg

    (tmp_path / "db_password").write_text(DB_PASSWORD + "\n")
    with scratch_database("worker") as database:
        result = sh(WORKER_ENTRYPOINT, "study", "status", "no-such-study",
                    AUTOML_DB_HOST="127.0.0.1", AUTOML_DB_USER="postgres",
                    AUTOML_DB_NAME=database,
                    AUTOML_DB_PASSWORD_FILE=str(tmp_path / "db_password"))  # fmt: skip
        output = result.stdout + result.stderr
        # connected (the URL parsed, password and all) and looked the study up
        assert result.returncode == 2 and "no study named 'no-such-study'" in output, output
        assert "cannot open" not in output
        for secret in (DB_PASSWORD, quote(DB_PASSWORD, safe="")):
            assert secret not in output
        # in this database, not in automl's default SQLite file
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as conn:
            tables = conn.execute(
                "select count(*) from information_schema.tables where table_name = 'studies'"
            ).fetchone()
        assert tables == (1,)


@pytest.mark.postgres
def test_the_dashboard_service_command_serves_the_postgres_study_on_loopback_names(tmp_path):
    """What the compose service runs: the entrypoint builds the storage URL from the
    password file, and the dashboard, published on 127.0.0.1, answers loopback names only."""
    (tmp_path / "db_password").write_text(DB_PASSWORD + "\n")
    port = free_port()
    with scratch_database("dashboard") as database:
        env = bin_env(AUTOML_DB_HOST="127.0.0.1", AUTOML_DB_USER="postgres",
                      AUTOML_DB_NAME=database, AUTOML_DASHBOARD_PUBLISHED_ON="127.0.0.1",
                      AUTOML_DB_PASSWORD_FILE=str(tmp_path / "db_password"))  # fmt: skip
        process = subprocess.Popen(
            ["sh", str(WORKER_ENTRYPOINT), "dashboard", "--host", "127.0.0.1", "--port",
             str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            api = f"http://127.0.0.1:{port}/api/studies"
            wait_for_http(api, limit=60, process=process)
            assert json.loads(urllib.request.urlopen(api, timeout=10).read()) == {
                "study_summaries": []
            }
            rebound = urllib.request.Request(api, headers={"Host": f"automl.example:{port}"})
            with pytest.raises(urllib.error.HTTPError) as refused_host:
                urllib.request.urlopen(rebound, timeout=10)
            assert refused_host.value.code == 403
        finally:
            process.send_signal(signal.SIGTERM)  # the entrypoint exec'd automl: it gets it
            out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and err == "", err  # published on loopback: no warning
    assert "postgresql+psycopg2://postgres:***@127.0.0.1:5432/" in out
    for secret in (DB_PASSWORD, quote(DB_PASSWORD, safe="")):
        assert secret not in out
    assert out.splitlines()[-1] == "dashboard stopped"


@pytest.mark.postgres
def test_the_storage_proxy_service_serves_the_postgres_study_and_workers_reach_it(tmp_path):
    """What the compose services run: the proxy's command through the entrypoint (URL
    built from the password file), its health check, and a worker's entrypoint that keeps
    AUTOML_STORAGE=grpc://... (WORKER_STORAGE) rather than building the database URL."""
    (tmp_path / "db_password").write_text(DB_PASSWORD + "\n")
    service = yaml.safe_load(COMPOSE.read_text())["services"]["storage-proxy"]
    port = str(free_port())
    command = [port if word == "13000" else word for word in service["command"]]
    db = {"AUTOML_DB_HOST": "127.0.0.1", "AUTOML_DB_USER": "postgres",
          "AUTOML_DB_PASSWORD_FILE": str(tmp_path / "db_password")}  # fmt: skip
    with scratch_database("proxy") as database:
        process = subprocess.Popen(
            ["sh", str(WORKER_ENTRYPOINT), *command], env=bin_env(AUTOML_DB_NAME=database, **db),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            head = ""
            while "Ctrl-C stops it" not in (line := process.stdout.readline()):
                assert line, process.communicate(timeout=30)
                head += line
            _, python, *args = service["healthcheck"]["test"]  # CMD python ...
            assert python == "python"
            check = [sys.executable, *(a.replace("port=13000", f"port={port}") for a in args)]
            healthy = subprocess.run(check, env=bin_env(), capture_output=True, timeout=60)
            assert healthy.returncode == 0, healthy.stderr
            worker = sh(WORKER_ENTRYPOINT, "study", "status", "no-such-study",
                        AUTOML_STORAGE=f"grpc://127.0.0.1:{port}", AUTOML_DB_NAME="not_this",
                        **db)  # fmt: skip
            assert worker.returncode == 2, worker.stderr
            assert "no study named 'no-such-study'" in worker.stderr  # asked through the proxy
        finally:
            process.send_signal(signal.SIGTERM)  # the entrypoint exec'd automl: it gets it
            out, err = process.communicate(timeout=30)
            out = head + out
    assert process.returncode == 0, err
    assert "storage proxy on grpc://0.0.0.0:" in out and "postgres:***@127.0.0.1" in out
    assert err.startswith("warning: the storage proxy listens on 0.0.0.0")  # not published
    for secret in (DB_PASSWORD, quote(DB_PASSWORD, safe="")):
        assert secret not in out + err
    assert out.splitlines()[-1].startswith("storage proxy stopped after")
    unhealthy = subprocess.run(check, env=bin_env(), capture_output=True, timeout=60)
    assert unhealthy.returncode != 0
