"""Each figure is one metric of a run: a registered and evaluated search does not log its
model's test accuracy twice under two names (``test_acc`` beside ``test_accuracy``)."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from automl.insight.report import build_report
from automl.pipeline import run_search
from automl.tracking import Tracker
from tests.conftest import mlflow_client, search_settings


def spellings(metrics: dict[str, float]) -> list[list[str]]:
    """Metric names that spell one figure two ways (``accuracy`` and ``acc``)."""
    found: dict[str, list[str]] = defaultdict(list)
    for name in metrics:
        found[re.sub(r"accuracy", "acc", name.lower())].append(name)
    return [sorted(names) for names in found.values() if len(names) > 1]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("once")
    settings = search_settings(folder, trials=1, study_name="once", seed=0, evaluate=True)
    outcome = run_search(settings)
    assert outcome.registration is not None
    return settings, outcome


@pytest.mark.slow
@pytest.mark.hostile("consistency")
def test_a_registered_and_evaluated_search_logs_each_figure_once(evaluated):
    settings, outcome = evaluated
    client = mlflow_client(settings.tracking_uri)
    parent = client.get_run(outcome.parent_run_id).data.metrics
    assert spellings(parent) == []
    assert parent["test_accuracy"] == pytest.approx(outcome.registration.test_acc, abs=1e-6)
    source = outcome.registration.run_id  # the version's source run, a trial's
    assert spellings(client.get_run(source).data.metrics) == []


@pytest.mark.slow
def test_the_report_reads_the_test_figure_of_the_search_run(evaluated):
    settings, outcome = evaluated
    parent = Tracker(settings.tracking_uri, None).run_info(outcome.parent_run_id)
    html = build_report(
        outcome.study, parent=parent, data_report=None, plots=None, plots_skipped={},
        evaluation=None,
    )  # fmt: skip
    registered = html[html.index("Registered model") :].split("</p>")[0]
    assert f"test_acc <b>{outcome.registration.test_acc:.4f}</b>" in registered
