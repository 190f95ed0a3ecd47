"""The resolved settings of one ``automl search``, checked before any store is touched."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from automl.data import check_dataset_name
from automl.errors import ConfigError, unknown_name

SAMPLERS = ("tpe", "random", "cmaes", "gp", "nsga2")
# Objective name -> Optuna direction. The first objective of a search is always accuracy.
OBJECTIVES = {
    "accuracy": "maximize",
    "robust_accuracy": "maximize",
    "latency": "minimize",
    "params": "minimize",
}
PRUNERS = ("hyperband", "median", "asha", "none")
DEFAULT_SPACE = Path("search_spaces") / "default.yaml"
BUNDLED_SPACES = Path(__file__).resolve().parent / "search_spaces"
DEFAULT_STORAGE = "sqlite:///automl.db"
DEFAULT_TRACKING = "sqlite:///mlflow.db"


@dataclass(frozen=True)
class SearchSettings:
    trials: int
    space: Path
    dataset: str = "digits"
    study_name: str | None = None
    storage: str = DEFAULT_STORAGE
    tracking_uri: str = DEFAULT_TRACKING
    experiment: str | None = None
    model_name: str | None = None
    sampler: str = "tpe"
    pruner: str = "hyperband"
    max_epochs: int = 20
    device: str = "auto"
    seed: int = 0
    timeout: float | None = None
    data_dir: Path | None = None
    image_size: int | None = None
    weights_dir: Path | None = None
    group_level: bool = False
    evaluate: bool = True  # evaluate the registered model and draw the study plots
    objectives: tuple[str, ...] = ("accuracy",)
    max_params: int | None = None
    max_latency_ms: float | None = None
    jobs: int = 1
    trials_per_gpu: int = 1
    compile: bool = False
    deterministic: bool = False  # deterministic kernels: same seed, same metrics (CPU and GPU)
    warm_start: str | None = None  # "STUDY[:K]": its K best configurations run first
    warm_start_storage: str | None = None  # where that study lives (default: --storage)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]

    @property
    def study(self) -> str:
        dataset = self.dataset
        if dataset.startswith("imagefolder:"):
            dataset = Path(dataset.split(":", 1)[1]).expanduser().resolve().name or "images"
        return self.study_name or re.sub(r"[^\w.\-]+", "-", f"{dataset}-{self.space.stem}")

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.study

    @property
    def registered_model(self) -> str:
        return self.model_name or self.study

    def check(self) -> SearchSettings:
        """Raise ``ConfigError`` for the first bad option: one line, before any work."""
        if self.trials < 1:
            raise ConfigError(f"--trials: must be at least 1, got {self.trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout: must be positive, got {self.timeout}")
        if self.max_epochs < 1:
            raise ConfigError(f"--max-epochs: must be at least 1, got {self.max_epochs}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"--sampler: {unknown_name('sampler', self.sampler, SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"--pruner: {unknown_name('pruner', self.pruner, PRUNERS)}")
        self._check_objectives()
        if self.jobs < 1 or self.trials_per_gpu < 1:
            raise ConfigError("--jobs and --trials-per-gpu: must be at least 1")
        if self.max_params is not None and self.max_params < 1:
            raise ConfigError(f"--max-params: must be at least 1, got {self.max_params}")
        if self.max_latency_ms is not None and self.max_latency_ms <= 0:
            raise ConfigError(f"--max-latency-ms: must be positive, got {self.max_latency_ms}")
        if not re.fullmatch(r"[\w.\-]{1,128}", self.study):
            raise ConfigError(
                f"--study-name: '{self.study}' may use letters, digits, '.', '_' and '-' only"
            )
        if not self.space.exists():
            bundled = ", ".join(bundled_spaces())
            raise ConfigError(f"--space: {self.space}: no such file (bundled spaces: {bundled})")
        check_dataset_name(self.dataset)
        if self.image_size is not None and not 4 <= self.image_size <= 1024:
            raise ConfigError(f"--image-size: must lie in [4, 1024], got {self.image_size}")
        resolve_device(self.device)
        check_storage_url(self.storage, "--storage")
        if self.warm_start_storage is not None:
            check_storage_url(self.warm_start_storage, "--warm-start-storage")
        check_tracking_uri(self.tracking_uri)
        return self

    def _check_objectives(self) -> None:
        for name in self.objectives:
            if name not in OBJECTIVES:
                raise ConfigError(f"--objective: {unknown_name('objective', name, OBJECTIVES)}")
        if self.objectives[0] != "accuracy" or len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(
                "--objective: list accuracy first, then other objectives once each "
                f"(e.g. accuracy,latency), got {','.join(self.objectives)}"
            )
        if len(self.objectives) > 1 and self.sampler == "cmaes":
            raise ConfigError("--sampler: cmaes optimizes one objective; use tpe, nsga2 or random")

    def public(self) -> dict[str, Any]:
        """Settings safe to print and log: passwords masked, paths as text."""
        values = asdict(self)
        values.pop("extra")
        values.update(self.extra)
        values["storage"] = mask_url(self.storage)
        values["tracking_uri"] = mask_url(self.tracking_uri)
        if self.warm_start_storage:
            values["warm_start_storage"] = mask_url(self.warm_start_storage)
        values["study_name"] = self.study
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def resolve_space(path: Path) -> Path:
    """A space file as given; else a bundled space by name (``images``) or the bundled default.

    So ``automl search`` works from any folder, not only from a checkout of the project.
    """
    if path.exists():
        return path
    bundled = BUNDLED_SPACES / (path.name if path.suffix else f"{path.name}.yaml")
    if (path == DEFAULT_SPACE or len(path.parts) == 1) and bundled.exists():
        return bundled
    return path


def bundled_spaces() -> list[str]:
    return sorted(p.stem for p in BUNDLED_SPACES.glob("*.yaml"))


def make_deterministic() -> None:
    """Deterministic kernels everywhere (slower on a GPU); the CPU loop is so already."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    """``auto`` takes the first CUDA device when there is one; asking for a missing one is fatal."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise ConfigError(f"--device: expected auto, cpu, cuda or cuda:N, got '{name}'")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device: '{name}' was asked for but CUDA is not available here")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"--device: '{name}' does not exist ({torch.cuda.device_count()} CUDA devices)"
        )
    return torch.device("cuda", index)


def mask_url(url: str) -> str:
    """Hide the password of a ``scheme://user:password@host`` URL."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def check_storage_url(url: str, option: str) -> None:
    """A URL SQLAlchemy understands; a SQLite file must be creatable where it points."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"{option}: '{mask_url(url)}' is not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_path(parsed.database, option)


def check_tracking_uri(uri: str) -> None:
    if uri.startswith(("http://", "https://", "databricks")):
        return
    if uri.startswith("file:") or "://" not in uri:
        raise ConfigError(
            f"--tracking-uri: '{uri}' is a file store, which MLflow 3 refuses; "
            "use sqlite:///mlflow.db or http://HOST:PORT"
        )
    check_storage_url(uri, "--tracking-uri")


def _check_sqlite_path(database: str | None, option: str) -> None:
    if not database or database == ":memory:":
        return
    path = Path(database).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(f"{option}: the file {path} is not writable")
        return
    if not folder.is_dir():
        raise ConfigError(f"{option}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{option}: the folder {folder} is not writable")
