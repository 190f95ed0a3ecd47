"""The search-and-time pattern the benchmark scripts share, so each script keeps only what
it measures: a search whose stores live in a scratch folder, run and timed, and its figures
printed.

Scripts run as ``python benchmarks/NAME.py`` have this folder on ``sys.path`` and import it
as a sibling module: ``from _harness import scratch_settings, timed_search``. The automl
names the scripts need for a search are imported here, so a move inside the package is
followed in one file.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automl.pipeline import SearchOutcome, run_search
from automl.search.settings import SearchSettings


def scratch_settings(folder: str | Path, **values: Any) -> SearchSettings:
    """Settings for a search whose Optuna study and MLflow store are SQLite files in
    ``folder``: a benchmark neither reads nor leaves anything in the user's stores, and
    runs never share a study. ``values`` are the other settings."""
    return SearchSettings(
        storage=f"sqlite:///{folder}/automl.db",
        tracking_uri=f"sqlite:///{folder}/mlflow.db",
        **values,
    )


def timed_search(settings: SearchSettings, **kwargs: Any) -> tuple[SearchOutcome, float]:
    """``run_search(settings, **kwargs)`` and its wall seconds, the clock around the call
    alone (imports and data set-up outside it), as every benchmark reports a search."""
    start = time.perf_counter()
    outcome = run_search(settings, **kwargs)
    return outcome, time.perf_counter() - start


def registered_accuracy(outcome: SearchOutcome) -> tuple[float, float]:
    """Test and validation accuracy of the model the search registered; NaN for both when
    it registered none (every trial pruned or failed), so the row still prints."""
    reg = outcome.registration
    return (reg.test_acc, reg.val_acc) if reg else (float("nan"), float("nan"))


def column_means(rows: Sequence[Sequence[float]]) -> list[float]:
    """The mean of each column of per-seed rows: the figures of a "means over seeds" line."""
    return [float(np.mean(column)) for column in zip(*rows, strict=True)]


def print_rows(rows: Sequence[tuple[str, str]]) -> None:
    """``(name, value)`` rows with the values lined up in one column, so figures read down
    the page."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


@dataclass(frozen=True)
class BaselineRun:
    """The space's baseline trained without a search: its figures as a search's row."""

    test_acc: float
    val_acc: float
    epochs: int  # every member's epochs, summed
    members: int
    wall: float  # seconds, the epoch probe, training and testing included
    epoch_seconds: float  # one epoch of the baseline: the machine's speed gauge


def baseline_for_budget(
    settings: SearchSettings, budget: float, members: int = 1, reserve: float = 0.1
) -> BaselineRun:
    """What a user gets from the space's baseline alone in ``budget`` seconds: its
    one-cycle schedule stretched over as many epochs as fit, from one timed epoch (of a
    throwaway copy), ``members`` seeds sharing the budget and averaged (each calibrated),
    tested with mirroring when the validation split says it helps, as a search registers.
    ``reserve`` is the budget's share kept for testing and calibrating."""
    from optuna.trial import FixedTrial

    from automl.data import load_dataset
    from automl.search.space import load_space
    from automl.training.calibration import calibrate
    from automl.training.device import resolve_device
    from automl.training.ensemble import Ensemble, mirror_if_better
    from automl.training.loop import Normalizer, measure
    from automl.training.train import Overrides, fit_config, seeded_network

    start = time.perf_counter()
    settings = settings.resolve()
    assert settings.space is not None
    space, device = load_space(settings.space), resolve_device(settings.device)
    data = load_dataset(settings.dataset, settings.data_dir, image_size=settings.image_size)
    config = space.config(FixedTrial(space.baseline))
    probe = time.perf_counter()
    fit_config(seeded_network(config, data, 0), config, data, device=device, seed=0,
               overrides=Overrides(epochs=1))  # fmt: skip
    epoch_seconds = time.perf_counter() - probe
    left = budget * (1 - reserve) - (time.perf_counter() - start)
    epochs = max(1, int(left / members / epoch_seconds))
    networks = []
    for member in range(members):
        network = seeded_network(config, data, settings.seed * 1_000 + member)
        fit_config(network, config, data, device=device, seed=settings.seed * 1_000 + member,
                   overrides=Overrides(epochs=epochs))  # fmt: skip
        networks.append(calibrate(network, data, device=device)[0])
    model = Ensemble(networks).eval() if members > 1 else networks[0]
    model, _, _ = mirror_if_better(model, data, device)
    norm = Normalizer(data.mean, data.std)
    test_acc = measure(model, data.test, norm, device)[1]
    val_acc = measure(model, data.val, norm, device)[1]
    wall = time.perf_counter() - start
    return BaselineRun(test_acc, val_acc, epochs * members, members, wall, epoch_seconds)
