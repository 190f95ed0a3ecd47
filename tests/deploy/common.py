"""What the deployment tests share: the files, strong passwords, running a script, reading
the compose file and a kustomize render."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, bin_env

COMPOSE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"
SECRETS_SH = DEPLOY / "secrets.sh"
MAKE_SECRETS = DEPLOY / "make-secrets.sh"
K8S = DEPLOY / "k8s"
KUBECTL = shutil.which("kubectl")
SECRET = "automl-secrets"  # the Kubernetes Secret, keyed as compose's secret files
MLFLOW_ENTRYPOINT = REPO / "mlflow" / "entrypoint.sh"
WORKER_ENTRYPOINT = DEPLOY / "worker-entrypoint.sh"
SECRET_NAMES = ("postgres_password", "mlflow_admin_password", "minio_root_password")
STRONG = "Xq7-vR2p@w9/L%k4#zT"  # characters a URL and an ini file would misread
needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="needs Debian's docker-compose"
)


def compose_default(value: str) -> str:
    """The default of a ``${VAR:-default}`` value in the compose file."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    assert match, value
    return match.group(1)


def sh(script: Path, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """A script run for real with this interpreter's automl and mlflow first on PATH."""
    return subprocess.run(["sh", str(script), *args], env=bin_env(**env), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def refused(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 1 with one line on stderr, ``refusing to start: ...``, naming ``words``."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, (result.returncode, result.stderr)
    assert lines[0].startswith("refusing to start: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# --- compose services and Kubernetes objects, read the same way -------------------------


def compose_service(name: str) -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"][name]


def compose_env(name: str) -> dict[str, object]:
    """A compose service's environment with its defaults, a secret file as ("secret", ...)."""
    values: dict[str, object] = {}
    for key, raw in compose_service(name)["environment"].items():
        value = compose_default(raw) if str(raw).startswith("${") else str(raw)
        if key.endswith("_FILE"):
            values[key.removesuffix("_FILE")] = ("secret", SECRET, Path(value).name)
        else:
            values[key] = value
    return values


# Kubernetes: the objects `kubectl kustomize` renders, offline.


def kustomize(path: Path) -> list[dict]:
    """The objects a kustomization renders, as kubectl applies them (no cluster needed)."""
    done = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def kubectl_minor() -> int:
    out = subprocess.run([KUBECTL, "version", "--client", "-o", "json"], capture_output=True,
                         text=True, timeout=60).stdout  # fmt: skip
    return int(re.sub(r"\D.*", "", json.loads(out)["clientVersion"]["minor"]))  # "32+"


def named(render: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in render if doc["kind"] == kind}


def pods(render: list[dict]) -> dict[str, dict]:
    """Each workload's pod template, by workload name."""
    return {doc["metadata"]["name"]: doc["spec"]["template"] for doc in render
            if doc["kind"] in ("Deployment", "StatefulSet", "Job")}  # fmt: skip


def containers(pod: dict, *, init: bool = True) -> list[dict]:
    spec = pod["spec"]
    return (spec.get("initContainers", []) if init else []) + spec["containers"]


def main(pod: dict) -> dict:
    (container,) = pod["spec"]["containers"]
    return container


def env(render: list[dict], container: dict) -> dict[str, object]:
    """Environment values resolved: a literal, a ConfigMap's value, or ("secret", NAME, KEY)."""
    config = named(render, "ConfigMap")
    values: dict[str, object] = {}
    for item in container.get("env", []):
        source = item.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            values[item["name"]] = ("secret", ref["name"], ref["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            values[item["name"]] = config[ref["name"]]["data"][ref["key"]]
        else:
            values[item["name"]] = item["value"]
    return values


def selects(selector: dict, labels: dict) -> bool:
    """A Service's selector (a map) or a label selector (matchLabels, matchExpressions)."""
    plain = not {"matchLabels", "matchExpressions"} & set(selector)
    match = all(labels.get(k) == v for k, v in (selector if plain else selector.get(
        "matchLabels", {})).items())  # fmt: skip
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        match = match and labels.get(expression["key"]) in expression["values"]
    return match


def expand(arg: str, values: dict[str, object]) -> str:
    """An argument as the kubelet passes it: $(NAME) replaced by that variable's value."""
    return re.sub(r"\$\((\w+)\)", lambda m: str(values[m.group(1)]), arg)
