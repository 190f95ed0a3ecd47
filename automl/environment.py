"""Every environment variable automl reads, declared once: its name, type, default and
what it is for.

A variable is read when it is needed (``HEARTBEAT_SECONDS.get()``), never when a module
is imported, so a test or a long-lived process sees the value of the moment.
Variables that stand for a command-line option (``AUTOML_STORAGE`` for ``--storage``)
are read by the command line itself: their declaration here names them for the option
and for ``docs/reference/environment.md``, which is generated from this module.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from automl.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Variable(Generic[T]):
    """One environment variable: ``get()`` reads it now, or gives the default.

    A number is checked when read: its type, that it is finite, and its range
    (``at_least`` inclusive, ``above`` exclusive); a bad one stops the command in one line
    naming the variable, rather than failing later where its meaning is lost."""

    name: str
    kind: Callable[[str], T]
    default: T
    doc: str
    option: str | None = None  # the command-line option it stands for, if any
    at_least: float | None = None
    above: float | None = None

    def get(self) -> T:
        raw = os.environ.get(self.name)
        if raw is None or raw.strip() == "":
            return self.default
        try:
            value = self.kind(raw)
        except ValueError:
            raise ConfigError(f"{self.name}={raw}: expected {self._expected()}") from None
        if not self._in_range(value):
            raise ConfigError(f"{self.name}={raw}: expected {self._expected()}")
        return value

    def _in_range(self, value: object) -> bool:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return True
        if not math.isfinite(value):
            return False
        low_ok = self.at_least is None or value >= self.at_least
        return low_ok and (self.above is None or value > self.above)

    def _expected(self) -> str:
        what = "a whole number" if self.kind is int else "a finite number"
        if self.at_least is not None:
            return f"{what} of at least {self.at_least:g}"
        if self.above is not None:
            return f"{what} above {self.above:g}"
        return what


def _one(raw: str) -> bool:
    return raw.strip() == "1"


# -------------------------------------------------------------------- options' defaults

STORAGE = Variable(
    "AUTOML_STORAGE", str, "sqlite:///automl.db",
    "The Optuna storage URL (or grpc://HOST:PORT of a storage proxy).", option="--storage",
)  # fmt: skip
TRACKING_URI = Variable(
    "AUTOML_TRACKING_URI", str, "sqlite:///mlflow.db", "The MLflow tracking URI.",
    option="--tracking-uri",
)  # fmt: skip
CHECKPOINT_DIR = Variable(
    "AUTOML_CHECKPOINT_DIR", str, "",
    "A folder every worker reaches, for the running trials' checkpoints.",
    option="--checkpoint-dir",
)  # fmt: skip
CHECKPOINT_SECONDS = Variable(
    "AUTOML_CHECKPOINT_SECONDS", float, 0.0,
    "A running trial saves a checkpoint after an epoch at most this often.",
    option="--checkpoint-seconds",
)  # fmt: skip
UI_URL = Variable(
    "AUTOML_UI_URL", str, "",
    "The MLflow UI's address printed links open on. [default: the tracking server, else "
    "http://127.0.0.1:5000/, where `mlflow ui` serves]",
    option="--ui-url",
)  # fmt: skip
STUDY = Variable("AUTOML_STUDY", str, "", "The study an `automl worker` joins.", option="--study")
DASHBOARD_PUBLISHED_ON = Variable(
    "AUTOML_DASHBOARD_PUBLISHED_ON", str, "",
    "In a container: the address the dashboard's port is published on (decides whether "
    "`automl dashboard` warns about an exposed port).",
    option="--published-on",
)  # fmt: skip

# -------------------------------------------------------------------- behaviour

STORE_RETRY_SECONDS = Variable(
    "AUTOML_STORE_RETRY_SECONDS", float, 600.0,
    "How long a call to the Optuna storage is retried while the database is away.",
    at_least=0,
)  # fmt: skip
TRACKING_RETRY_SECONDS = Variable(
    "AUTOML_TRACKING_RETRY_SECONDS", float, 300.0,
    "How long a call to the MLflow tracking store is retried while it is away.",
    at_least=0,
)  # fmt: skip
HEARTBEAT_SECONDS = Variable(
    "AUTOML_HEARTBEAT_SECONDS", int, 30,
    "Seconds between the heartbeats of a running trial and of a running search.",
    at_least=1,
)  # fmt: skip
GRACE_SECONDS = Variable(
    "AUTOML_GRACE_SECONDS", int, 90,
    "Silence after which a running trial (or search) counts as dead: its trial is failed "
    "and queued again.",
    at_least=1,
)  # fmt: skip
PROXY_WAIT_SECONDS = Variable(
    "AUTOML_PROXY_WAIT_SECONDS", float, 2.0,
    "How long a worker waits for a storage proxy (grpc://) to answer before saying so.",
    above=0,
)  # fmt: skip
ALLOW_UNVERIFIED_MODELS = Variable(
    "AUTOML_ALLOW_UNVERIFIED_MODELS", _one, False,
    "1: load registered versions that recorded no SHA-256 of their files (registered "
    "before automl recorded them); refused otherwise.",
)  # fmt: skip


def declared() -> list[Variable[object]]:
    """Every variable above, in the order declared (the generated reference's order)."""
    return [value for value in globals().values() if isinstance(value, Variable)]
