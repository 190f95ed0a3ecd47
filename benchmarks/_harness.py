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
