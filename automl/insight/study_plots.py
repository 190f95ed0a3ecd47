"""Pictures of a study: what the sampler tried, what pruning cut, which parameters mattered.

PNG files through Optuna's matplotlib backend, and one interactive HTML page through its
plotly backend when plotly is installed. A plot that cannot be drawn (too few trials,
say) is skipped with the reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import optuna
from optuna.trial import TrialState

TOP_PARAMS = 8  # parallel-coordinate and slice plots show the most important parameters
DPI = 100
SLICE_COLUMNS = 3  # panels a row of the slice plot


def _important_params(study: optuna.Study) -> list[str] | None:
    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None
    return list(importances)[:TOP_PARAMS] or None


def _plots(study: optuna.Study, backend: Any) -> dict[str, Callable[[], Any]]:
    params = _important_params(study)
    plots: dict[str, Callable[[], Any]] = {}
    if len(study.directions) > 1:
        names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
        plots["pareto_front"] = lambda: backend.plot_pareto_front(study, target_names=names)
        target = {"target": lambda t: t.values[0], "target_name": names[0]}
    else:
        target = {}
    plots["optimization_history"] = lambda: backend.plot_optimization_history(study, **target)
    plots["intermediate_values"] = lambda: backend.plot_intermediate_values(study)
    plots["param_importances"] = lambda: backend.plot_param_importances(study, **target)
    plots["parallel_coordinate"] = lambda: backend.plot_parallel_coordinate(
        study, params=params, **target
    )
    if backend.__name__.endswith("matplotlib"):
        plots["slice"] = lambda: _slice(study, params, **target)  # type: ignore[arg-type]
    else:  # plotly's is interactive: its panels can be zoomed
        plots["slice"] = lambda: backend.plot_slice(study, params=params, **target)
    return plots


def _slice(
    study: optuna.Study,
    params: list[str] | None,
    target: Callable[[optuna.trial.FrozenTrial], float] | None = None,
    target_name: str = "Objective Value",
) -> Any:
    """The objective against each parameter, a panel each, three to a row, each large
    enough to read: Optuna's own puts every panel in one row, a few pixels wide each."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    names = params or sorted({k for t in trials for k in t.params})
    if not names:
        raise ValueError("no sampled parameter")
    value = target or (lambda t: float(t.values[0]))
    columns = min(SLICE_COLUMNS, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names, strict=False):
        have = [t for t in trials if name in t.params]
        xs = [t.params[name] for t in have]
        if any(isinstance(x, str | bool) for x in xs):  # categories, in a stable order
            labels = sorted({str(x) for x in xs})
            axis.set_xticks(range(len(labels)), labels)
            axis.set_xlim(-0.5, len(labels) - 0.5)
            xs = [labels.index(str(x)) for x in xs]
        elif have and getattr(have[0].distributions.get(name), "log", False):
            axis.set_xscale("log")
        axis.scatter(xs, [value(t) for t in have], c=[t.number for t in have], cmap="viridis")
        axis.set_title(name, fontsize=11)
        axis.grid(alpha=0.3)
    for axis in axes[:, 0]:
        axis.set_ylabel(target_name)
    for axis in list(axes.flat)[len(names) :]:
        axis.set_visible(False)
    figure.suptitle("Slice: the objective against each parameter (colour: trial number)")
    return axes


def study_plots(study: optuna.Study, folder: Path) -> tuple[list[Path], dict[str, str]]:
    """Write the plots into ``folder``; returns the files and {plot: why it was skipped}."""
    folder.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return [], {"all": "fewer than two completed trials"}
    from optuna.visualization import matplotlib as backend

    written: list[Path] = []
    skipped: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, draw in _plots(study, backend).items():
            try:
                axes = draw()
            except (ValueError, RuntimeError, TypeError, ZeroDivisionError) as exc:
                skipped[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                continue
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            figure = first.figure
            if name != "slice":  # drawn to its own size
                width, height = figure.get_size_inches()
                figure.set_size_inches(max(width, 11), max(height, 5.5))
            figure.tight_layout()
            path = folder / f"{name}.png"
            figure.savefig(path, dpi=DPI)
            plt.close(figure)
            written.append(path)
        html = _interactive(study, folder / "study_plots.html")
        if html is not None:
            written.append(html)
    return written, skipped


def _interactive(study: optuna.Study, path: Path) -> Path | None:
    """All plots in one HTML page with plotly.js embedded once (works offline)."""
    try:
        import optuna.visualization as backend
        import plotly  # noqa: F401
    except ImportError:
        return None
    parts = []
    for name, draw in _plots(study, backend).items():
        try:
            figure = draw()
        except (ValueError, RuntimeError, TypeError, ZeroDivisionError, ImportError):
            continue
        parts.append(f"<h2>{name.replace('_', ' ')}</h2>")
        parts.append(figure.to_html(full_html=False, include_plotlyjs=len(parts) == 1))
    if not parts:
        return None
    page = f"<!doctype html><meta charset='utf-8'><title>{study.study_name}</title>{''.join(parts)}"
    path.write_text(page)
    return path
