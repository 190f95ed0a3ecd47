"""What the deployment tests share: the files, strong passwords, running a script."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, bin_env

COMPOSE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"
SECRETS_SH = DEPLOY / "secrets.sh"
MAKE_SECRETS = DEPLOY / "make-secrets.sh"
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
