"""The settings of one search, declared once, as data.

Every field of ``SearchSettings`` carries what the rest of the program needs to know of
it: its command-line option and help, its check, and its scope. A field holds what the
user gave (``None``: not given); ``resolve`` fills in the rest (the space sized for the
data, the epoch limit from the space, the study's name) in one explicit step.

- ``study``: the study's recipe. Whoever runs the study's trials (a ``--jobs`` process, an
  ``automl worker`` on another machine) uses the value the study was created with.
- ``local``: where this process finds things (stores, device, folders); never recorded.
- ``run``: this invocation only (how many trials, for how long, what to do afterwards).

The options of ``automl search`` and ``automl study create`` are generated from these
fields, ``to_recipe`` / ``from_recipe`` write and read the recipe, and the objective and
the job processes receive the settings whole: a new option is one field here, checked
before any store is touched, and listed in ``docs/reference/cli.md`` (generated).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from automl import environment
from automl.errors import AutomlError, ConfigError, unknown_name
from automl.records.study import RecipeKey
from automl.search.options import (
    Option,
    at_least,
    objective_list,
    one_of,
    option,
    parse_jobs,
    positive,
    seconds,
    within,
    writable_folder,
)
from automl.search.space.bundled import bundled_spaces, resolve_space
from automl.stores import (
    DEFAULT_STORAGE,
    DEFAULT_TRACKING,
    check_storage_url,
    check_tracking_uri,
    mask_url,
)

SAMPLERS = ("tpe", "random", "cmaes", "gp", "nsga2")
PRUNERS = ("hyperband", "median", "asha", "none")
ENSEMBLE = 3  # trials a single-objective search registers as one model, by default
FALLBACK_EPOCHS = 20  # --max-epochs when the space says nothing (or cannot be read yet)
SMALL_SIDE = 16  # images up to this side get the bundled `small` space by default
NATIVE_SIDE = {"digits": 8}  # built-in data sets this small (the others are 28 px or more)


@dataclass(frozen=True)
class SearchSettings:
    """One search's settings as given (``None``: not given); ``resolve`` fills in what was
    not given. The CLI, the recipe of a study and the tests build it."""

    trials: int = option(
        100,
        "Trials this run runs, exactly (a stopped search's leftovers count among them).",
        "run",
        flags=("--trials", "-n"),
        check=at_least(1, 100_000),
    )
    timeout: float | None = option(
        None,
        "Budget in seconds for the trials: running ones stop after their current epoch, which "
        "counts; loading the data before and registering after come on top.",
        "run",
        check=positive,
    )
    space: Path | None = option(
        None,
        "Search space YAML file, or a bundled one by name (default, small, photos, images, "
        "cifar). [default: small for images up to 16 px, such as digits; photos for other "
        "image folders; else default]",
        "study",
        parse=resolve_space,
    )
    dataset: str = option(
        "digits",
        "digits (built in), mnist, fashion-mnist, kmnist, cifar10, cifar100, svhn, "
        "or imagefolder:PATH.",
        "study",
    )
    study_name: str | None = option(
        None, "Optuna study; an existing one is resumed. [default: DATASET-SPACE]", "local"
    )
    storage: str = option(
        DEFAULT_STORAGE,
        "Optuna storage URL (shared by all workers), or grpc://HOST:PORT of an automl "
        "storage-proxy.",
        "local",
        envvar=environment.STORAGE.name,
        secret=True,
    )
    tracking_uri: str = option(
        DEFAULT_TRACKING,
        "MLflow tracking URI.",
        "local",
        envvar=environment.TRACKING_URI.name,
        secret=True,
    )
    ui_url: str = option(
        "",
        "The MLflow UI's address the printed links open on (`mlflow ui --port 5055`: "
        "http://127.0.0.1:5055). [default: the tracking server, else http://127.0.0.1:5000]",
        "local",
        envvar=environment.UI_URL.name,
        show_default=False,
        secret=True,
        check=lambda url: (
            None
            if not url or re.fullmatch(r"https?://[^\s/?#]+(/\S*)?", url)
            else f"must be an http(s)://HOST[:PORT] address, got '{mask_url(url)}'"
        ),
    )
    experiment: str | None = option(None, "MLflow experiment. [default: the study name]", "study")
    model_name: str | None = option(
        None, "Registered model name. [default: the study name]", "study"
    )
    sampler: str = option(
        "tpe",
        "|".join(SAMPLERS) + " (nsga2: several objectives)",
        "study",
        check=one_of("sampler", SAMPLERS),
    )
    pruner: str = option("hyperband", "|".join(PRUNERS), "study", check=one_of("pruner", PRUNERS))
    max_epochs: int | None = option(
        None,
        "Upper bound on any trial's epochs. [default: the space's longest schedule]",
        "study",
        check=at_least(1, 10_000),
    )
    device: str = option("auto", "auto|cpu|cuda|cuda:N", "local")
    seed: int = option(
        0, "Seed of the sampler and of every trial.", "study", check=at_least(0, 2**32 - 1)
    )
    data_dir: Path | None = option(
        None, "Where data sets are stored. [default: ~/.cache/automl/data]", "local"
    )
    image_size: int | None = option(
        None,
        "Side images are resized to (image folders). [default: median, <=128]",
        "study",
        check=within(4, 1024),
    )
    weights_dir: Path | None = option(
        None, "Pretrained backbone weights (.pth); then torch's hub cache.", "local"
    )
    group_level: bool = option(
        False, "Image folder laid out as GROUP/CLASS/...: fairness per group.", "study"
    )
    evaluate: bool = option(True, "Evaluate the registered model and draw the study plots.", "run")
    refit: bool = option(
        False,
        "Retrain the winner on train + validation (its epochs, its temperature) before "
        "testing and registering it.",
        "run",
    )
    ensemble: int | None = option(
        None,
        "Register at most K complete trials as one model averaging their calibrated "
        "probabilities, chosen and weighted on the validation split (greedy forward "
        f"selection from the best); 1: the best alone. [default: {ENSEMBLE}; 1 with "
        "--refit or several objectives]",
        "run",
        check=at_least(1, 20),
        metavar="K",
    )
    tta: bool = option(
        True, "Average each image's answer with its mirror image's when that gets more "
        "validation images right (photos; not digits).", "run",
    )  # fmt: skip
    objectives: tuple[str, ...] = option(
        ("accuracy",),
        "accuracy, or accuracy plus any of latency, params, robust_accuracy "
        "(comma-separated): a multi-objective search registers its Pareto front.",
        "study",
        flags=("--objective",),
        name="objective",
        typed=str,
        parse=objective_list,
        show_default="accuracy",
    )
    max_params: int | None = option(
        None, "Reject networks with more parameters, before training.", "study",
        check=at_least(1, 10**12),
    )  # fmt: skip
    max_latency_ms: float | None = option(
        None, "Reject networks slower than this per image, before training.", "study",
        check=positive,
    )  # fmt: skip
    jobs: int = option(
        1,
        "Trials run in parallel, one process each; auto: one per GPU, else one "
        "single-threaded trial per CPU core (up to 8).",
        "run",
        check=at_least(1, 256),
        typed=str,
        parse=parse_jobs,
        metavar="N|auto",
    )
    trials_per_gpu: int = option(
        1, "Parallel trials packed on one GPU (with --jobs).", "run", check=at_least(1, 64)
    )
    checkpoint_dir: Path | None = option(
        None,
        "Shared folder for the running trials' checkpoints, reachable by every worker. "
        "[default: each trial's MLflow run]",
        "local",
        envvar=environment.CHECKPOINT_DIR.name,
        check=writable_folder,
    )
    checkpoint_seconds: float = option(
        0.0,
        "A running trial saves a checkpoint after each epoch, or at most this often.",
        "local",
        envvar=environment.CHECKPOINT_SECONDS.name,
        check=seconds,
    )
    compile: bool = option(
        False, "torch.compile each trial's network (pays off on long trials).", "study"
    )
    deterministic: bool = option(
        False, "Deterministic kernels: same seed, same metrics (slower on GPU).", "study"
    )
    warm_start: str | None = option(
        None,
        "Run the K best configurations (default 5) of an earlier study first.",
        "study",
        metavar="STUDY[:K]",
    )
    warm_start_storage: str | None = option(
        None,
        "The Optuna storage of the --warm-start study [default: --storage].",
        "local",
        secret=True,
    )

    def resolve(self) -> SearchSettings:
        """These settings with what was not given filled in: the bundled space sized for
        the data, an epoch limit as long as the space's longest schedule, and the study's
        name from the data and the space. Reads the space file (a missing or broken one is
        ``check``'s to report); resolving resolved settings changes nothing."""
        # Small images (the 8x8 digits) get the narrow, shallow `small` space, where wider
        # and deeper networks only cost time; photos get `photos`, deep enough for its
        # stages to see the whole image.
        space = self.space if self.space is not None else resolve_space(Path(self.sized_space))
        max_epochs = self.max_epochs
        if max_epochs is None:
            from automl.search.space.loading import longest_schedule

            max_epochs = longest_schedule(Path(space)) or FALLBACK_EPOCHS
        study_name = self.study_name or _study_name(self.dataset, Path(space))
        return replace(self, space=Path(space), max_epochs=max_epochs, study_name=study_name)

    @property
    def epoch_limit(self) -> int:
        """``max_epochs`` as resolved."""
        return self.max_epochs or FALLBACK_EPOCHS

    @property
    def space_file(self) -> Path:
        """The space file, once resolved."""
        if self.space is None:
            raise _unresolved("space")
        return Path(self.space)

    def _named(self) -> str:
        if self.study_name is None:
            raise _unresolved("study_name")
        return self.study_name

    @property
    def progress_grid(self) -> int:
        """Steps of the grid trials report their progress on (``strategy.pruners.grid_steps``)."""
        from automl.search.strategy.pruners import grid_steps

        return grid_steps(self.epoch_limit)

    @property
    def members(self) -> int:
        """The most trials the registered model averages: ``--ensemble``, or by default
        ``ENSEMBLE`` for one objective without ``--refit`` (averaging the three best beat
        the single best on every data set measured: ``docs/design.md``), else the best
        alone."""
        if self.ensemble is not None:
            return self.ensemble
        return 1 if self.refit or len(self.objectives) > 1 else ENSEMBLE

    @property
    def sized_space(self) -> str:
        """The bundled space this data gets when no ``--space`` is given."""
        side = NATIVE_SIDE.get(self.dataset, self.image_size)
        if side is not None and side <= SMALL_SIDE:
            return "small"
        if self.dataset.startswith("imagefolder:"):
            return "photos"  # a folder's side, when not given, is its median (up to 128)
        return "default"

    # ------------------------------------------------------------------ derived names

    @property
    def directions(self) -> list[str]:
        from automl.search.strategy.objectives import OBJECTIVES

        return [OBJECTIVES[name].direction for name in self.objectives]

    @property
    def alone(self) -> bool:
        """A database server means workers elsewhere; SQLite with one job means this
        process runs the study's trials alone."""
        return self.jobs == 1 and self.storage.startswith("sqlite")

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment: ``--experiment``, or the study's name."""
        return self.experiment or self._named()

    @property
    def registered_model(self) -> str:
        """The registered model's name: ``--model-name``, or the study's name."""
        return self.model_name or self._named()

    # ------------------------------------------------------------------ building

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> SearchSettings:
        """Settings from command-line values, keyed by each option's parameter name."""
        given: dict[str, Any] = {}
        for item in fields(cls):
            spec = _option(item)
            key = spec.name or item.name
            if key in values:
                value = values[key]
                if value == item.default:  # not given: its meaning is the field's to resolve
                    given[item.name] = value
                    continue
                given[item.name] = spec.parse(value) if spec.parse and value is not None else value
        return cls(**given)

    def to_recipe(self) -> dict[str, Any]:
        """The study-scoped settings as plain values, with the space file's text, so any
        process anywhere runs the study's trials as its creator would."""
        recipe = {
            item.name: _plain(getattr(self, item.name))
            for item in fields(self)
            if _option(item).scope == "study"
        }
        recipe.update({
            RecipeKey.SPACE: self.space_file.name,
            RecipeKey.SPACE_YAML: self.space_file.read_text(),
            RecipeKey.EXPERIMENT: self.experiment_name,
            RecipeKey.MODEL_NAME: self.registered_model,
        })  # fmt: skip
        return recipe

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], local: SearchSettings) -> SearchSettings:
        """A study's settings: its recipe, with this process's ``local`` and ``run`` values."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            if _option(item).scope != "study":
                values[item.name] = getattr(local, item.name)
            elif item.name in recipe:
                values[item.name] = recipe[item.name]
        space = recipe.get(RecipeKey.SPACE) or recipe[RecipeKey.SPACE_NAME]  # older recipes
        values["space"] = Path(space)  # a name: the recipe holds the file's text
        values["objectives"] = tuple(values.get("objectives", ("accuracy",)))
        values["max_epochs"] = values.get("max_epochs") or FALLBACK_EPOCHS
        return cls(**values)

    # ------------------------------------------------------------------ checking

    def check(self) -> SearchSettings:
        """Raise ``ConfigError`` for the first bad option: one line, before any work.
        Checks resolved settings (``resolve`` first)."""
        self.check_fields(*(item.name for item in fields(self)))
        self._check_objectives()
        if not re.fullmatch(r"[\w.\-]{1,128}", self._named()):
            raise ConfigError(
                f"--study-name: '{self.study_name}' may use letters, digits, '.', '_' and '-' only"
            )
        if not self.space_file.exists():
            bundled = ", ".join(bundled_spaces())
            raise ConfigError(f"--space: {self.space}: no such file (bundled spaces: {bundled})")
        from automl.data import check_dataset_name
        from automl.training.device import resolve_device

        check_dataset_name(self.dataset)
        resolve_device(self.device)
        check_storage_url(self.storage, "--storage")
        if self.warm_start_storage is not None:
            check_storage_url(self.warm_start_storage, "--warm-start-storage")
        check_tracking_uri(self.tracking_uri)
        return self

    def check_fields(self, *names: str) -> SearchSettings:
        """Each named field's own check (a command taking a few of the options)."""
        for item in (item for item in fields(self) if item.name in names):
            spec = _option(item)
            value = getattr(self, item.name)
            problem = spec.check(value) if spec.check and value is not None else None
            if problem:
                raise ConfigError(f"{spec.flag(item.name)}: {problem}")
        return self

    def _check_objectives(self) -> None:
        from automl.search.strategy.objectives import OBJECTIVES

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
        if (self.ensemble or 1) > 1 and (len(self.objectives) > 1 or self.refit):
            other = "--refit" if self.refit else "--objective with several objectives"
            raise ConfigError(
                f"--ensemble: averages single-objective trials as searched; not with {other}"
            )

    def public(self) -> dict[str, Any]:
        """Settings safe to print and log: passwords masked, paths as text."""
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        for item in fields(self):
            if _option(item).secret and values[item.name]:
                values[item.name] = mask_url(values[item.name])
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}

    def but(self, **changes: Any) -> SearchSettings:
        """A copy with some values changed (a job's own device, say)."""
        return replace(self, **changes)


def option_of(name: str) -> Option:
    """The option of field ``name`` (other commands reuse the same flags and help)."""
    for item in fields(SearchSettings):
        if item.name == name:
            return _option(item)
    raise KeyError(name)


def _option(item: dataclasses.Field[Any]) -> Option:
    spec: Option = item.metadata["option"]
    return spec


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _study_name(dataset: str, space: Path) -> str:
    """A study's name when none is given: the data's and the space's (``digits-small``);
    the data's alone when both are the same word (a folder ``photos`` in the space
    ``photos`` is ``photos``, not ``photos-photos``)."""
    if dataset.startswith("imagefolder:"):
        dataset = Path(dataset.split(":", 1)[1]).expanduser().resolve().name or "images"
    name = dataset if dataset == space.stem else f"{dataset}-{space.stem}"
    return re.sub(r"[^\w.\-]+", "-", name)


def _unresolved(name: str) -> AutomlError:
    return AutomlError(f"the settings' {name} is not resolved yet: call resolve() first")
