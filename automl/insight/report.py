"""One self-contained HTML page about a study: it opens offline, images embedded.

Sections: summary (with links to the study's pages in the MLflow UI), leaderboard (a
compact table of the sampled parameters), pruned and failed trials, data, study plots,
evaluation of the registered model.
A small script records on ``<body>`` how many images loaded, so a headless browser test
can check the page as a person would see it.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.records import StudyRunTags, TrialRecord, by_merit

if TYPE_CHECKING:
    from automl.tracking.ui import UiLinks

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { border-bottom: 2px solid #4c72b0; padding-bottom: .3em; }
section { margin: 2em 0; }
table { border-collapse: collapse; margin: .5em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #eef2f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: .5em; vertical-align: top; }
figure img { max-width: 560px; border: 1px solid #ddd; }
figure.wide img { max-width: 100%; }
figcaption { font-size: 13px; color: #555; }
.note { color: #8a6d00; }
"""
LOADED = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
});
"""
SECTIONS = ("summary", "leaderboard", "stopped", "data", "study-plots", "evaluation")
WIDE = {"slice"}  # plots with many panels, shown at the page's width
FEW_TRIALS = 20  # importances resting on fewer complete trials are a hint, not a finding


@dataclass(frozen=True)
class MlflowPages:
    """Where the study lives in the MLflow UI: ``links`` full URLs, ``start`` the command
    that serves them ("" for a server), ``view`` the key of the saved view of its trials."""

    links: UiLinks
    start: str
    parent_run_id: str | None
    view: str | None
    model: tuple[str, int] | None  # the version the study registered


class Html(str):
    """A cell already written as HTML (a link)."""


class Measure(str):
    """A figure already formatted (``0.9926``), shown right-aligned."""


def _m(value: float) -> Measure:
    return Measure(f"{value:.4f}")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f'<td class="num">{value:.4g}</td>'
        if isinstance(value, int | Measure):
            return f'<td class="num">{value}</td>'
        if isinstance(value, Html):
            return f"<td>{value}</td>"
        return f"<td>{escape(str(value))}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(path: Path, caption: str, wide: bool = False) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    kind = ' class="wide"' if wide else ""
    return (
        f'<figure{kind}><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _link(href: str, text: str) -> Html:
    return Html(f'<a href="{escape(href)}">{escape(text)}</a>')


def _trial(trial: FrozenTrial, pages: MlflowPages | None) -> Any:
    """The trial's number, a link to its run when the UI is known."""
    run_id = TrialRecord.of(trial).run_id
    if pages is None or not run_id:
        return trial.number
    return _link(pages.links.run(run_id), str(trial.number))


def _mlflow(study: optuna.Study, pages: MlflowPages | None) -> str:
    """Links to the study's pages in the MLflow UI."""
    if pages is None:
        return ""
    found = []
    if pages.parent_run_id:
        found.append(_link(pages.links.run(pages.parent_run_id), "the study's run (leaderboard)"))
    top = [TrialRecord.of(t).run_id or "" for t in _ranked(study)[:5]]
    if any(top):
        found.append(_link(pages.links.compare([r for r in top if r]), "top five side by side"))
    if pages.view:
        found.append(_link(pages.links.view(pages.view), "every trial by val_acc"))
    if pages.model is not None:
        name, version = pages.model
        found.append(_link(pages.links.model_version(name, version), f"{name} v{version}"))
    start = f" (start it with <code>{escape(pages.start)}</code>)" if pages.start else ""
    return f"<p>In the MLflow UI{start}: {' · '.join(found)}.</p>" if found else ""


def _ranked(study: optuna.Study) -> list[FrozenTrial]:
    return by_merit(study.get_trials(deepcopy=False))


def _summary(study: optuna.Study, parent: dict[str, Any] | None) -> str:
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    rows: list[list[Any]] = [
        ["trials", len(trials)],
        *[[f"  {state.lower()}", n] for state, n in sorted(states.items())],
    ]
    if starts and ends:
        rows.append(["first trial started", min(starts).isoformat(timespec="seconds")])
        rows.append(["last trial ended", max(ends).isoformat(timespec="seconds")])
        busy = sum((t.duration.total_seconds() for t in trials if t.duration), 0.0)
        rows.append(["time in trials (s)", Measure(f"{busy:.1f}")])
    html = _table(["", ""], rows)
    complete = by_merit(trials)
    if not complete:
        return html + "<p class='note'>No trial has completed yet.</p>"
    best = complete[0]
    html += f"<p>Best trial <b>{best.number}</b>: val_acc <b>{best.values[0]:.4f}</b>.</p>"
    params = sorted(TrialRecord.of(best).params.items())
    rows = [[cell for pair in params[i : i + 3] for cell in pair] for i in range(0, len(params), 3)]
    html += _table(["parameter", "value"] * min(3, len(params)), rows)
    return html + (_registered(parent) if parent else "")


def _registered(parent: dict[str, Any]) -> str:
    """The registered model, named as what it is: an ensemble's figures are the
    ensemble's, its best member's own beside them."""
    tags = StudyRunTags.of(parent.get("tags", {}))
    if not tags.registered_model:
        return ""
    metrics = parent.get("metrics", {})
    tested = metrics.get("test_accuracy", metrics.get("test_acc"))  # test_acc: runs before
    pairs = (("val_acc", metrics.get("best_val_acc")), ("test_acc", tested))
    figures = [f"{name} <b>{value:.4f}</b>" for name, value in pairs if value is not None]
    shown = f": {', '.join(figures)}" if figures else ""
    html = f"<p>Registered model: <code>{escape(tags.registered_model)}</code>"
    if not tags.members:
        return f"{html}{shown}.</p>"
    members = ", ".join(map(str, tags.members))
    alone = tags.test_acc_single
    single = f", test_acc {alone:.4f}" if alone is not None else ""
    return (
        f"{html}, the <b>ensemble</b> of trials {members}{shown}. Its best member, trial "
        f"{tags.members[0]}, alone{single} (val_acc in the leaderboard below).</p>"
    )


def _value(value: Any) -> Any:
    return f"{value:.3g}" if isinstance(value, float) else value


def _leaderboard(
    study: optuna.Study,
    pages: MlflowPages | None = None,
    rows: int = 15,
) -> str:
    """The best complete trials, one column per sampled parameter (fixed ones are in the
    summary's table), values rounded: the table fits the page."""
    ranked = _ranked(study)[:rows]
    if not ranked:
        return "<p class='note'>No completed trials.</p>"
    names = sorted({k for t in study.get_trials(deepcopy=False) for k in t.distributions})
    table = []
    for rank, t in enumerate(ranked, 1):
        seconds = t.duration.total_seconds() if t.duration else 0.0
        params = TrialRecord.of(t).params
        table.append(
            [
                rank,
                _trial(t, pages),
                _m(t.values[0]),
                TrialRecord.of(t).epochs_run,
                round(seconds, 1),
                *(_value(params.get(n, "")) for n in names),
            ]
        )
    header = ["rank", "trial", "val_acc", "epochs", "seconds", *names]
    return f'<div style="overflow-x:auto">{_table(header, table)}</div>'


def _stopped(study: optuna.Study, pages: MlflowPages | None) -> str:
    """Pruned trials (stopped early by the pruner, not failures) and failed ones, and why."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.PRUNED, TrialState.FAIL):
            continue
        reports = t.intermediate_values
        last = _m(reports[max(reports)]) if reports else "-"
        record = TrialRecord.of(t)
        reason = record.reason or ""
        state = "pruned" if t.state == TrialState.PRUNED else "failed"
        why = record.message or reason
        rows.append([_trial(t, pages), state, record.epochs_run, last, reason, why[:300]])
    if not rows:
        return "<p>No trial was pruned or failed.</p>"
    header = ["trial", "state", "epochs", "last val_acc", "reason", "why"]
    return _table(header, rows)


def _data(report: dict[str, Any] | None) -> str:
    if report is None:
        return "<p class='note'>No data report was recorded with this study.</p>"
    height, width = report["image_size"]
    html = (
        f"<p><b>{escape(report['source'])}</b>: {report['files_found']} files, "
        f"{report['kept']} kept, {report.get('dropped_total', 0)} dropped; "
        f"{len(report['classes'])} classes; "
        f"{height}x{width}x{report['channels']} ({escape(report['size_rule'])}); "
        f"largest/smallest class {report.get('imbalance', 1.0):.2f}.</p>"
    )
    splits = list(report["counts"])
    if len(report["classes"]) <= 50:
        rows = [[c, *(report["counts"][s].get(c, 0) for s in splits)] for c in report["classes"]]
        html += _table(["class", *splits], rows)
    if report.get("dropped"):
        rows = [
            [reason, len(files), "; ".join(files[:5])]
            for reason, files in sorted(report["dropped"].items())
        ]
        html += "<h3>Dropped</h3>" + _table(["reason", "files", "examples"], rows)
    return html


def _plots(folder: Path | None, skipped: dict[str, str], complete: int) -> str:
    pngs = sorted(folder.glob("*.png")) if folder else []
    html = ""
    if any(p.stem == "param_importances" for p in pngs) and complete < FEW_TRIALS:
        html += (
            f"<p class='note'>The parameter importances rest on {complete} complete trials "
            f"(fewer than {FEW_TRIALS}): read them as a hint, not a finding.</p>"
        )
    html += "".join(_figure(p, p.stem.replace("_", " "), p.stem in WIDE) for p in pngs)
    if skipped:
        html += "".join(f"<p class='note'>{escape(k)}: {escape(v)}</p>" for k, v in skipped.items())
    return html or "<p class='note'>No study plots.</p>"


def _evaluation(folder: Path | None) -> str:
    if folder is None or not (folder / "evaluation.json").exists():
        return (
            "<p class='note'>The registered model has not been evaluated (run automl evaluate).</p>"
        )
    data = json.loads((folder / "evaluation.json").read_text())
    metrics = data["metrics"]
    keys = [
        "test_accuracy",
        "macro_f1",
        "worst_class_recall",
        "class_recall_gap",
        "ece",
        "mean_corruption_acc",
    ]
    html = _table(["measure", "value"], [[k, _m(metrics[k])] for k in keys if k in metrics])
    html += f"<p>Worst class: <b>{escape(str(data['worst_class']))}</b>.</p>"
    html += "<h3>Per class</h3>" + _table(
        ["class", "precision", "recall", "f1", "support"],
        [
            [r["class"], r["precision"], r["recall"], r["f1"], r["support"]]
            for r in data["per_class"]
        ],
    )
    rows = [[name, *(_m(v) for v in per.values())] for name, per in data["robustness"].items()]
    html += f"<h3>Robustness ({data['robustness_images']} test images)</h3>"
    html += _table(["corruption", "severity 1", "severity 2", "severity 3"], rows)
    if data.get("groups"):
        rows = [
            [g, float(v["accuracy"]), float(v["worst_class_recall"]), v["worst_class"]]
            for g, v in data["groups"].items()
        ]
        html += "<h3>Per group</h3>" + _table(
            ["group", "accuracy", "worst class recall", "worst class"], rows
        )
    captions = {
        "confusion_matrix": "confusion matrix",
        "reliability_diagram": "reliability diagram (calibration)",
        "robustness": "accuracy under corruptions",
        "saliency": "integrated gradients: correct and misclassified",
        "groups": "quality per group",
    }
    html += "".join(
        _figure(folder / f"{n}.png", c)
        for n, c in captions.items()
        if (folder / f"{n}.png").exists()
    )
    return html


def build_report(
    study: optuna.Study,
    *,
    parent: dict[str, Any] | None,
    data_report: dict[str, Any] | None,
    plots: Path | None,
    plots_skipped: dict[str, str],
    evaluation: Path | None,
    pages: MlflowPages | None = None,
) -> str:
    """The page; ``pages``: where the study is in the MLflow UI."""
    complete = len(_ranked(study))
    sections = {
        "summary": ("Summary", _mlflow(study, pages) + _summary(study, parent)),
        "leaderboard": ("Leaderboard", _leaderboard(study, pages)),
        "stopped": ("Pruned and failed trials", _stopped(study, pages)),
        "data": ("Data", _data(data_report)),
        "study-plots": ("Study plots", _plots(plots, plots_skipped, complete)),
        "evaluation": ("Evaluation of the registered model", _evaluation(evaluation)),
    }
    body = "".join(
        f'<section id="{key}"><h2>{escape(title)}</h2>{content}</section>'
        for key, (title, content) in sections.items()
    )
    made = datetime.now().isoformat(timespec="seconds")
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>automl report: {escape(study.study_name)}</title><style>{STYLE}</style></head>"
        f"<body><h1>Study {escape(study.study_name)}</h1><p>Made {made} by automl.</p>{body}"
        f"<script>{LOADED}</script></body></html>"
    )
