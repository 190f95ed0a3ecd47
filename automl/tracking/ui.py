"""How the MLflow UI tells a study's story: links to the UI's own pages, a saved view of
the runs table, and the descriptions of the study's parent run and of its experiment.

The URL forms are the MLflow 3 UI's (hash routes): a run page, the compare page, a model
version page, and the runs table opened on a view kept in the experiment's tags
(``mlflow.sharedViewState.<key>``, the form the UI's own "share view" writes), which sets
its filter, its sort and its columns. Links in descriptions stay relative (``#/...``): they
work inside the UI whatever host name a person reaches it by (a worker's server URL, such
as ``http://mlflow:5000`` in docker compose, is not the browser's). Printed links are full
URLs on the UI's address: ``--ui-url`` (``AUTOML_UI_URL``), else the tracking server,
else where ``mlflow ui`` serves by default. Every link into an experiment says
``workflowType=machine_learning``: MLflow 3 otherwise opens an experiment in its GenAI
mode (traces, evaluations) and remembers the last mode in the browser.

No link or shown URL carries a password: a store URL shown is masked (``mask_url``), and
a link's address drops its credentials (``without_credentials``: the browser asks).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from automl.records.run import RunTag
from automl.stores import mask_url
from automl.tracking.runs import Tracker

VIEW_TAG = "mlflow.sharedViewState."  # experiment tag prefix of the UI's saved views
MAX_NOTE = 5000  # characters of a description (MLflow takes 8000 for a run tag)
LOCAL_UI = "http://127.0.0.1:5000/"  # where `mlflow ui` serves by default
ML_MODE = "workflowType=machine_learning"  # else MLflow 3 may open its GenAI mode


def served(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def column(kind: str, key: str) -> str:
    """A runs-table column as the UI names it: ``metrics.`val_acc```, ``tags.`state```."""
    return f"{kind}.`{key}`"


@dataclass(frozen=True)
class UiLinks:
    """Links to the MLflow UI's pages for one experiment; ``base`` "" keeps them relative
    to the UI (``#/...``), a server's URL makes them full."""

    experiment_id: str
    base: str = ""

    def full(self, tracking_uri: str, local: str = "", ui_url: str = "") -> UiLinks:
        """The same links as full URLs on ``ui_url`` when given, on the server when the
        tracking URI is one; else on ``local`` ("" keeps them relative)."""
        if ui_url or served(tracking_uri):
            return self.on(address(tracking_uri, ui_url))
        return self.on(local)

    def on(self, base: str) -> UiLinks:
        """The same links on the UI at ``base`` (as ``address`` gives it; "": relative)."""
        return replace(self, base=address("", base) if base else "")

    def run(self, run_id: str) -> str:
        return f"{self.base}#/experiments/{self.experiment_id}/runs/{run_id}?{ML_MODE}"

    def compare(self, run_ids: Iterable[str]) -> str:
        """The UI's compare page (``?runs=["id",...]&experiments=["id"]``), encoded so the
        link survives Markdown and terminals."""
        runs = quote(json.dumps(list(run_ids), separators=(",", ":")))
        experiments = quote(json.dumps([self.experiment_id]))
        return f"{self.base}#/compare-runs?runs={runs}&experiments={experiments}&{ML_MODE}"

    def view(self, key: str) -> str:
        """The runs table opened on the saved view ``key`` (see ``save_view``)."""
        return (
            f"{self.base}#/experiments/{self.experiment_id}/runs?viewStateShareKey={key}&{ML_MODE}"
        )

    def model_version(self, name: str, version: int | str) -> str:
        return f"{self.base}#/models/{quote(name, safe='')}/versions/{version}?{ML_MODE}"

    def experiment(self) -> str:
        return f"{self.base}#/experiments/{self.experiment_id}/runs?{ML_MODE}"


def links_for(tracker: Tracker) -> UiLinks:
    return UiLinks(str(tracker.experiment_id))


def address(tracking_uri: str, ui_url: str = "") -> str:
    """Where a person opens the UI: ``ui_url`` when given (``--ui-url``), else the
    server, else the address `mlflow ui` serves; without credentials, ending in ``/``."""
    chosen = urlsplit(ui_url or (tracking_uri if served(tracking_uri) else LOCAL_UI))
    page = urlunsplit((chosen.scheme, chosen.netloc, chosen.path, "", ""))  # no query: links
    return without_credentials(page).rstrip("/") + "/"


def without_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` (a link opened in a browser, which asks for
    them) and with any secret its query holds masked."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return mask_url(urlunsplit(parts))


def open_command(tracking_uri: str) -> str:
    """How a person opens the UI over this store (any password in it masked)."""
    if served(tracking_uri):
        return f"open {without_credentials(tracking_uri)}"
    if tracking_uri == "sqlite:///mlflow.db":
        return "mlflow ui"
    return f"mlflow ui --backend-store-uri {mask_url(tracking_uri)}"


def view_key(name: str) -> str:
    """A key safe in a URL and in a tag name."""
    return "automl-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "study")


DURATION = "duration"  # the runs table's own column, always shown: it can only be placed


def runs_view(
    *,
    search_filter: str,
    order_by: str,
    columns: list[str],
    widths: Mapping[str, int] | None = None,
    ascending: bool = False,
) -> dict[str, Any]:
    """The runs table's state: its filter, its sort (a ``column``), the columns shown in
    this order after the run's name (``DURATION`` among them places the run's duration),
    and the widths (pixels) of those that need more than the default."""
    return {
        "searchFilter": search_filter,
        "orderByKey": order_by,
        "orderByAsc": ascending,
        "selectedColumns": [c for c in columns if c != DURATION],
        "columnOrder": [column("attributes", "Run Name"), *columns],
        "columnWidths": dict(widths or {}),
    }


def save_view(tracker: Tracker, key: str, name: str, state: Mapping[str, Any]) -> None:
    """Keep a view of the runs table in the experiment, as the UI's own saved views are
    kept: it is listed by ``name`` on the runs page and opened by ``UiLinks.view(key)``."""
    now = int(time.time() * 1000)  # a later search replaces the view: created now
    envelope = {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    with tracker.timed():
        tracker.client.set_experiment_tag(
            tracker._experiment_id, f"{VIEW_TAG}{key}", json.dumps(envelope)
        )


def describe_experiment(tracker: Tracker, markdown: str) -> None:
    """The experiment's description: its first paragraph is shown atop every page of the
    experiment (Markdown, links working), the rest one click away."""
    with tracker.timed():
        tracker.client.set_experiment_tag(tracker._experiment_id, RunTag.NOTE, markdown[:MAX_NOTE])


def describe_run(tracker: Tracker, run_id: str, markdown: str) -> None:
    """A run's description: rendered as Markdown on its page."""
    tracker.set_run_tags(run_id, {RunTag.NOTE: markdown[:MAX_NOTE]})


def has_view(tracker: Tracker, experiment_id: str, key: str) -> bool:
    """Whether the experiment keeps the saved view ``key`` (searches before it did not)."""
    with tracker.timed():
        return f"{VIEW_TAG}{key}" in tracker.client.get_experiment(experiment_id).tags
