"""deploy/k8s, the kustomize base: rendered offline by kubectl's own kustomize and its wiring
checked (images, commands and environment as in docker-compose.yml, every password from the
Secret, probes, GPUs, non-root pods, Services, volumes, network policies); its components
rendered through an overlay; its Secret script and its wait script run for real."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.common import (
    K8S,
    KUBECTL,
    SECRET,
    STRONG,
    compose_env,
    compose_service,
    containers,
    env,
    expand,
    kubectl_minor,
    kustomize,
    main,
    named,
    pods,
    selects,
    sh,
)

pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="needs kubectl (Debian's kubernetes-client; .ci/run installs it)"
)
PROXY = "grpc://storage-proxy:13000"
TRACKING = "http://mlflow:5000"
DISRUPTED = {"type": "DisruptionTarget", "status": "True"}  # evicted, preempted, drained
SERVERS = {"postgres", "mlflow", "storage-proxy", "dashboard"}  # long-running, behind a Service

# Components and overlays of directories need kustomize v4 (kubectl 1.21); the base alone
# renders with the v2.0.3 of Debian bookworm's kubectl 1.20 too.
needs_components = pytest.mark.skipif(
    KUBECTL is not None and kubectl_minor() < 21,
    reason="kubectl < 1.21 embeds kustomize v2.0.3, which has no components",
)


@pytest.fixture(scope="module")
def render() -> list[dict]:
    return kustomize(K8S)


def test_the_objects_their_namespace_and_labels(render):
    found = {
        (doc["kind"], re.sub(r"-[a-z0-9]{10}$", "", doc["metadata"]["name"])) for doc in render
    }
    assert found == {
        ("ConfigMap", "automl-settings"), ("ConfigMap", "automl-study"),
        ("ConfigMap", "wait-for"), ("ConfigMap", "postgres-init"),
        ("StatefulSet", "postgres"), ("Service", "postgres"), ("NetworkPolicy", "postgres"),
        ("Deployment", "mlflow"), ("Service", "mlflow"), ("PersistentVolumeClaim", "mlartifacts"),
        ("Deployment", "storage-proxy"), ("Service", "storage-proxy"),
        ("NetworkPolicy", "storage-proxy"), ("Job", "study-create"), ("Job", "worker"),
        ("PersistentVolumeClaim", "checkpoints"), ("Deployment", "dashboard"),
        ("Service", "dashboard"), ("NetworkPolicy", "dashboard"), ("Deployment", "cli"),
    }  # fmt: skip
    for doc in render:  # kustomize's namespace and labels, on every object, pod and selector
        assert doc["metadata"]["namespace"] == "automl", doc["metadata"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "automl"
    for name, pod in pods(render).items():
        assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "automl", name
    for kind in ("Deployment", "StatefulSet"):
        for name, workload in named(render, kind).items():
            assert workload["spec"]["selector"]["matchLabels"]["app.kubernetes.io/part-of"], name
    assert "part-of" not in (K8S / "mlflow.yaml").read_text()  # added by kustomize only


def test_images_are_ours_and_set_by_kustomize(render):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]}
    assert images["postgres"] == compose_service("postgres")["image"]  # postgres:16
    expected = {"postgres": "postgres", "mlflow": "automl-mlflow"}
    for name, pod in pods(render).items():
        for container in containers(pod):
            assert container["image"] == images[expected.get(name, "automl-worker")], name
            assert container["imagePullPolicy"] == "IfNotPresent"
    # the names the manifests use are the ones `kustomize edit set image` replaces
    raw = " ".join(p.read_text() for p in K8S.glob("*.yaml"))
    assert set(re.findall(r"image: (\S+)", raw)) == set(images)


def test_commands_and_environment_mirror_compose(render):
    pod = pods(render)
    worker, create, cli = (main(pod[n]) for n in ("worker", "study-create", "cli"))
    assert worker["args"] == compose_service("worker")["command"]  # worker --wait 86400
    assert main(pod["dashboard"])["args"] == compose_service("dashboard")["command"]
    assert main(pod["storage-proxy"])["args"] == ["storage-proxy", "--host", "0.0.0.0",
                                                  "--port", "13000"]  # fmt: skip
    assert create["args"] == ["study", "create", "--study-name", "$(AUTOML_STUDY)",
                              "--trials", "$(AUTOML_TRIALS)"]  # fmt: skip
    assert "args" not in main(pod["mlflow"]) and "command" not in main(pod["mlflow"])
    # the MLflow server: compose's settings, its passwords from the Secret's keys named as
    # compose's secret files; S3 and MLFLOW_BIND (compose's published address) apart
    mlflow = env(render, main(pod["mlflow"]))
    s3_only = {
        "MLFLOW_BIND",
        "MLFLOW_S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    for key, value in compose_env("mlflow").items():
        assert key in s3_only or mlflow[key] == value, (key, mlflow.get(key), value)
    assert "MLFLOW_BIND" not in mlflow  # so the entrypoint refuses MLFLOW_AUTH=none
    # the database settings compose gives the worker are the proxy's and dashboard's here
    database = {k: v for k, v in compose_env("worker").items() if k.startswith("AUTOML_DB_")}
    assert set(database) == {"AUTOML_DB_HOST", "AUTOML_DB_USER", "AUTOML_DB_NAME",
                             "AUTOML_DB_PASSWORD"}  # fmt: skip
    for name in ("storage-proxy", "dashboard"):
        values = env(render, main(pod[name]))
        assert {k: values[k] for k in database} == database, name
        assert values["AUTOML_DB_PORT"] == "5432" and "AUTOML_STORAGE" not in values
    assert env(render, main(pod["dashboard"]))["AUTOML_DASHBOARD_PUBLISHED_ON"] == "127.0.0.1"
    # the study's clients: through the proxy, with no database password
    for container in (worker, create, cli):
        values = env(render, container)
        assert values["AUTOML_STORAGE"] == PROXY and values["AUTOML_TRACKING_URI"] == TRACKING
        assert values["AUTOML_STUDY"] == compose_env("worker")["AUTOML_STUDY"]  # digits
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            assert values[key] == compose_env("worker")[key], key
        assert not [k for k in values if k.startswith("AUTOML_DB_")]
    assert env(render, worker)["AUTOML_CHECKPOINT_DIR"] == "/checkpoints"
    assert compose_env("worker")["AUTOML_TRACKING_URI"] == TRACKING
    postgres = env(render, main(pod["postgres"]))
    assert postgres["POSTGRES_USER"] == compose_env("postgres")["POSTGRES_USER"]
    assert postgres["POSTGRES_PASSWORD"] == compose_env("postgres")["POSTGRES_PASSWORD"]


def test_no_secret_value_anywhere(render):
    assert not named(render, "Secret")  # users create it: make-secrets.sh
    kustomization = (K8S / "kustomization.yaml").read_text()
    assert "secretGenerator" not in kustomization
    for name, pod in pods(render).items():
        for container in containers(pod):
            for item in container.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN", item["name"]):
                    ref = item["valueFrom"]["secretKeyRef"]  # never a value
                    assert ref["name"] == SECRET and "optional" not in ref, (name, item)
    for config in named(render, "ConfigMap").values():
        assert not [k for k in config["data"] if re.search(r"pass|secret|token", k, re.I)]
    text = yaml.safe_dump_all(render)
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text)  # no user:password@ in a URL
    assert not re.search(r"(?i)password\W*[:=]\s*['\"]?\w", text.replace("_password", ""))


def test_long_running_servers_have_probes(render):
    pod = pods(render)
    for name in SERVERS:
        container = main(pod[name])
        ports = {p["name"] for p in container["ports"]}
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container[kind]
            assert probe.get("periodSeconds"), (name, kind)
            for how in ("httpGet", "tcpSocket"):
                if how in probe:
                    assert probe[how]["port"] in ports, (name, kind)
    # MLflow and the dashboard answer the Host names they allow; the kubelet sends an address
    allowed = env(render, main(pod["mlflow"]))["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    for name in ("mlflow", "dashboard"):
        for kind in ("readinessProbe", "livenessProbe"):
            headers = main(pod[name])[kind]["httpGet"]["httpHeaders"]
            assert headers == [{"name": "Host", "value": "localhost"}] and "localhost" in allowed
    assert main(pod["mlflow"])["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "-h 127.0.0.1" in " ".join(main(pod["postgres"])["readinessProbe"]["exec"]["command"])


def test_workers_are_an_indexed_gpu_job_that_survives_preemption(render):
    job = named(render, "Job")["worker"]["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["parallelism"] == job["completions"] >= 1
    spec = job["template"]["spec"]
    assert spec["restartPolicy"] == "Never"  # required by podFailurePolicy
    assert spec["terminationGracePeriodSeconds"] >= 60  # checkpoint and hand the trial back
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {
        "containerName": "worker", "operator": "In", "values": [2]}}  # fmt: skip
    ignored = [r for r in rules if r["action"] == "Ignore"]
    assert any(r.get("onExitCodes", {}).get("values") == [143] for r in ignored)  # SIGTERM
    assert any(r.get("onPodConditions") == [DISRUPTED] for r in ignored)
    limits = main(job["template"])["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        spec["tolerations"]
    )
    for name, pod in pods(render).items():  # only the workers take a GPU
        if name != "worker":
            for container in containers(pod):
                assert "nvidia.com/gpu" not in str(container["resources"]), name
    # the checkpoints are on a claim every worker mounts at once
    mount = next(m for m in main(job["template"])["volumeMounts"] if m["name"] == "checkpoints")
    assert mount["mountPath"] == env(render, main(job["template"]))["AUTOML_CHECKPOINT_DIR"]
    claim = named(render, "PersistentVolumeClaim")["checkpoints"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    # a Job's pods cannot change: the servers' settings are in a ConfigMap no Job reads, so
    # that changing one does not make `kubectl apply` refuse the Jobs
    for name, job in named(render, "Job").items():
        assert "automl-settings" not in str(job), name
    create = named(render, "Job")["study-create"]["spec"]
    assert create["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]
    assert "ttlSecondsAfterFinished" not in create  # a deleted Job would be applied again


def dockerfile_uid(path: Path) -> int:
    return int(re.findall(r"^USER (\d+):", path.read_text(), re.M)[-1])


def test_every_pod_runs_as_non_root_with_a_read_only_root(render):
    ours = {dockerfile_uid(REPO / "Dockerfile"), dockerfile_uid(REPO / "mlflow" / "Dockerfile")}
    assert ours == {10001}
    for name, pod in pods(render).items():
        spec = pod["spec"]
        context = spec["securityContext"]
        assert (
            context["runAsNonRoot"] is True
            and context["seccompProfile"]["type"] == "RuntimeDefault"
        )
        assert context["runAsUser"] == (999 if name == "postgres" else 10001), name
        assert context["fsGroup"] == context["runAsGroup"] == context["runAsUser"]
        assert spec["automountServiceAccountToken"] is False
        # service links would set MLFLOW_PORT=tcp://..., which mlflow's entrypoint reads
        assert spec["enableServiceLinks"] is False, name
        for container in containers(pod):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["readOnlyRootFilesystem"] is True
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
        writable = {m["mountPath"] for m in main(pod).get("volumeMounts", [])}
        assert "/tmp" in writable, name
        if main(pod)["image"].startswith("automl-worker"):
            assert "/home/automl" in writable, name  # HOME: the data set and hub caches


def test_services_select_their_pods_on_their_ports(render):
    pod = pods(render)
    for name, service in named(render, "Service").items():
        chosen = [
            n
            for n, p in pod.items()
            if selects(service["spec"]["selector"], p["metadata"]["labels"])
        ]
        assert chosen == [name], (name, chosen)
        ports = {p["name"]: p["containerPort"] for p in main(pod[name])["ports"]}
        ports |= {number: number for number in ports.values()}  # by name or by number
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], (name, port)
    assert named(render, "StatefulSet")["postgres"]["spec"]["serviceName"] == "postgres"
    assert named(render, "Service")["postgres"]["spec"]["clusterIP"] == "None"
    # the addresses the clients use are these Services
    assert named(render, "Service")["storage-proxy"]["spec"]["ports"][0]["port"] == 13000
    assert named(render, "Service")["mlflow"]["spec"]["ports"][0]["port"] == 5000


def test_volumes_and_references_exist(render):
    claims, config = named(render, "PersistentVolumeClaim"), named(render, "ConfigMap")
    for name, pod in pods(render).items():
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        templates = named(render, "StatefulSet").get(name, {}).get("spec", {})
        volumes |= {t["metadata"]["name"]: t for t in templates.get("volumeClaimTemplates", [])}
        for container in containers(pod):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, (name, mount)
            env(render, container)  # every configMapKeyRef resolves (KeyError otherwise)
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (name, volume)
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config, (name, volume)
    assert claims["mlartifacts"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert named(render, "Deployment")["mlflow"]["spec"]["strategy"]["type"] == "Recreate"
    sql = config["postgres-init"]["data"]["10-databases.sql"]
    assert "CREATE DATABASE optuna" in sql and "CREATE DATABASE mlflow" in sql


def test_network_policies_let_in_exactly_the_clients(render):
    pod = pods(render)
    labels = {name: p["metadata"]["labels"] for name, p in pod.items()}

    def admitted(policy: str) -> set[str]:
        rules = named(render, "NetworkPolicy")[policy]["spec"]["ingress"]
        return {n for rule in rules for source in rule["from"] for n, pod_labels in labels.items()
                if selects(source["podSelector"], pod_labels)}  # fmt: skip

    def clients(pattern: str) -> set[str]:
        return {n for n, p in pod.items() for c in containers(p)
                if any(re.fullmatch(pattern, str(v)) for v in env(render, c).values())}  # fmt: skip

    assert admitted("postgres") == clients("postgres") - {"postgres"} == {
        "mlflow", "storage-proxy", "dashboard"}  # fmt: skip
    assert (
        admitted("storage-proxy") == clients(re.escape(PROXY)) == {"worker", "study-create", "cli"}
    )
    assert admitted("dashboard") == set()  # port-forward only: it has no login


def test_init_containers_wait_for_the_services_their_pod_needs(render):
    services = {
        (n, p["port"]) for n, s in named(render, "Service").items() for p in s["spec"]["ports"]
    }
    waits = {}
    for name, pod in pods(render).items():
        for container in pod["spec"].get("initContainers", []):
            values = env(render, container)
            args = [expand(arg, values) for arg in container["command"]]
            assert args[:2] == ["python", "/opt/wait-for/wait-for.py"]
            waits[name] = {(h, int(p)) for h, p in (a.rsplit(":", 1) for a in args[2:])}
            assert waits[name] <= services, name
    assert waits == {
        "mlflow": {("postgres", 5432)}, "storage-proxy": {("postgres", 5432)},
        "dashboard": {("postgres", 5432)},
        "worker": {("storage-proxy", 13000), ("mlflow", 5000)},
        "study-create": {("storage-proxy", 13000), ("mlflow", 5000)},
    }  # fmt: skip


def test_the_wait_script_returns_once_the_port_answers():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Timer(1.0, server.listen).start()  # bound, not listening: refused until then
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(K8S / "wait-for.py"), f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    server.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"waiting for 127.0.0.1:{port}")
    assert done.stdout.endswith(f"127.0.0.1:{port} answers\n")
    assert time.monotonic() - started >= 1.0


def test_make_secrets_makes_the_keys_the_base_reads(render, tmp_path):
    made = sh(K8S / "make-secrets.sh", "--dry-run", str(tmp_path / "secrets"))
    assert made.returncode == 0, made.stderr
    secret = yaml.safe_load(made.stdout)
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", SECRET)
    assert secret["metadata"]["namespace"] == "automl"
    read = {v[2] for p in pods(render).values() for c in containers(p)
            for v in env(render, c).values() if isinstance(v, tuple)}  # fmt: skip
    assert set(secret["data"]) == read == {"postgres_password", "mlflow_admin_password"}
    for key, value in secret["data"].items():  # the compose deployment's files, 128 bits each
        assert base64.b64decode(value).decode() == (tmp_path / "secrets" / key).read_text()
        assert len((tmp_path / "secrets" / key).read_text()) == 32
    (tmp_path / "secrets" / "postgres_password").write_text(STRONG)  # yours: kept, used
    again = yaml.safe_load(
        sh(K8S / "make-secrets.sh", "--dry-run", str(tmp_path / "secrets")).stdout
    )
    assert base64.b64decode(again["data"]["postgres_password"]).decode() == STRONG
    (tmp_path / "secrets" / "mlflow_admin_password").write_text("change-me-please")
    weak = sh(K8S / "make-secrets.sh", "--dry-run", str(tmp_path / "secrets"))
    assert weak.returncode == 1 and weak.stdout == ""  # no Secret
    last = weak.stderr.strip().splitlines()[-1]  # after deploy/make-secrets.sh's "kept" lines
    assert last.startswith("refusing to start: mlflow_admin_password"), last
    assert "is a placeholder" in last and "change-me" not in last


def overlay(tmp_path: Path, text: str) -> list[dict]:
    base = os.path.relpath(K8S, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(text.replace("BASE", base))
    return kustomize(tmp_path)


@needs_components
def test_an_overlay_sets_the_images(tmp_path):
    image = "{name: automl-worker, newName: registry.example/automl-worker, newTag: '7'}"
    render = overlay(tmp_path, f"resources: [BASE]\nimages: [{image}]\n")
    images = {c["image"] for p in pods(render).values() for c in containers(p)}
    assert images == {"registry.example/automl-worker:7", "automl-mlflow:latest", "postgres:16"}


@needs_components
def test_the_external_postgres_component(tmp_path):
    literals = "[db_host=db.corp.internal, db_port='6432']"
    settings = f"[{{name: automl-settings, behavior: merge, literals: {literals}}}]"
    components = "[BASE/components/external-postgres]"
    render = overlay(tmp_path, f"resources: [BASE]\ncomponents: {components}\n"
                     f"configMapGenerator: {settings}\n")  # fmt: skip
    assert "postgres" not in pods(render) and "postgres" not in named(render, "Service")
    assert "postgres-init" not in named(render, "ConfigMap")
    assert "postgres" not in named(render, "NetworkPolicy")
    for name in ("mlflow", "storage-proxy", "dashboard"):
        values = env(render, main(pods(render)[name]))
        host = values.get("MLFLOW_DB_HOST", values.get("AUTOML_DB_HOST"))
        port = values.get("MLFLOW_DB_PORT", values.get("AUTOML_DB_PORT"))
        assert (host, port) == ("db.corp.internal", "6432"), name
        assert ("secret", SECRET, "postgres_password") in values.values()


@needs_components
def test_the_s3_artifacts_component(tmp_path):
    render = overlay(tmp_path, "resources: [BASE]\ncomponents: [BASE/components/s3-artifacts]\n")
    mlflow = pods(render)["mlflow"]
    values = env(render, main(mlflow))
    assert str(values["MLFLOW_ARTIFACTS_DESTINATION"]).startswith("s3://")
    assert values["AWS_SECRET_ACCESS_KEY"] == ("secret", "automl-s3", "secret_access_key")
    assert values["AWS_ACCESS_KEY_ID"] == ("secret", "automl-s3", "access_key_id")
    assert "mlartifacts" not in named(render, "PersistentVolumeClaim")
    assert "mlartifacts" not in str(mlflow["spec"]["volumes"]) + str(main(mlflow)["volumeMounts"])
    assert [e["name"] for e in main(mlflow)["env"]].count("MLFLOW_ARTIFACTS_DESTINATION") == 1
