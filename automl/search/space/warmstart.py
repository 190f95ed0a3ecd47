"""Warm starts: the best configurations of an earlier study become the first trials of a new
one, so a search on new data does not start from zero.

A configuration is taken only if every parameter still exists in the current space and
its value is one the space can still produce; otherwise it is skipped, with the parameter
that no longer fits named. Parameters new to the space are sampled as usual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from automl.errors import ConfigError
from automl.records import by_merit
from automl.search.space import SearchSpace
from automl.search.space.specs import CategoricalSpec, FixedSpec, FloatSpec, IntSpec
from automl.stores import close_storage, open_storage

DEFAULT_K = 5


@dataclass(frozen=True)
class WarmStart:
    study: str
    configurations: list[dict[str, Any]]  # Optuna params of the trials that still fit
    origins: list[str]  # "study#trial" of each configuration
    skipped: list[str]  # why the others were left out, one line each


def parse(spec: str) -> tuple[str, int]:
    """``STUDY`` or ``STUDY:K``."""
    match = re.fullmatch(r"([\w.\-]+)(?::(\d+))?", spec)
    if not match or (match.group(2) is not None and int(match.group(2)) < 1):
        raise ConfigError(f"--warm-start: expected STUDY or STUDY:K (K >= 1), got '{spec}'")
    return match.group(1), int(match.group(2) or DEFAULT_K)


def fitting(space: SearchSpace, params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The params to enqueue (fixed ones left to the space), or why the configuration no
    longer fits the space."""
    kept: dict[str, Any] = {}
    for name, value in params.items():
        spec = space.spec_of(name)
        if spec is None:
            return {}, f"parameter '{name}' is no longer in the space"
        if isinstance(spec, FixedSpec):
            if spec.value != value:
                return {}, f"parameter '{name}' = {value!r} is now fixed to {spec.value!r}"
            continue
        if isinstance(spec, CategoricalSpec) and value not in spec.choices:
            return {}, f"parameter '{name}' = {value!r} is not one of {spec.choices}"
        if isinstance(spec, IntSpec | FloatSpec):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or (isinstance(spec, IntSpec) and value != int(value)):
                kind = "an integer" if isinstance(spec, IntSpec) else "a number"
                return {}, f"parameter '{name}' = {value!r} is not {kind} any more"
            if not spec.low <= value <= spec.high:
                return {}, f"parameter '{name}' = {value!r} is outside [{spec.low}, {spec.high}]"
            step = spec.step
            if step and abs((value - spec.low) / step - round((value - spec.low) / step)) > 1e-9:
                return {}, f"parameter '{name}' = {value!r} is off the space's step of {step}"
        kept[name] = value
    return kept, None


def best_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The ``k`` best complete trials by the study's first objective."""
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return by_merit(study.get_trials(deepcopy=False), maximize=maximize)[:k]


def warm_start(spec: str, storage: str, space: SearchSpace) -> WarmStart:
    """The K best configurations of study ``spec`` (``STUDY[:K]``) in ``storage``."""
    name, k = parse(spec)
    path = storage.removeprefix("sqlite:///")
    if storage.startswith("sqlite:///") and path != ":memory:" and not Path(path).exists():
        raise ConfigError(f"--warm-start: {path}: no such Optuna storage (a SQLite file)")
    store = open_storage(storage, "--warm-start-storage", create=False)
    try:
        return _best_fitting(name, k, store, space)
    finally:
        close_storage(store)  # read once; the search has its own connections


def _best_fitting(
    name: str, k: int, store: optuna.storages.BaseStorage, space: SearchSpace
) -> WarmStart:
    try:
        source = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        known = optuna.study.get_all_study_names(store)
        names = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "") if known else "none"
        raise ConfigError(f"--warm-start: no study named '{name}' (studies: {names})") from None
    configurations, origins, skipped = [], [], []
    for trial in best_trials(source, k):
        params, why = fitting(space, trial.params)  # the sampled params only
        if why is None:
            configurations.append(params)
            origins.append(f"{name}#{trial.number}")
        else:
            skipped.append(f"warm start: trial {trial.number} of '{name}' skipped: {why}")
    return WarmStart(name, configurations, origins, skipped)
