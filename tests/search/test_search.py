"""A real search end to end: Optuna on SQLite, real training, MLflow on SQLite, the registry."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import mlflow
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from automl.pipeline import run_search
from automl.search.hooks import Hooks
from automl.search.settings import SearchSettings
from automl.tracking.runs import shown

pytestmark = pytest.mark.slow

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
STATE_TAG = {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED @ 1", "FAIL": "FAIL: error"}


class PruneEveryThird(optuna.pruners.BasePruner):
    """Prunes trials 1, 4, 7... after their first epoch: a pruner with a fixed answer."""

    def prune(self, study, trial):
        return trial.number % 3 == 1


def fail_trial(number: int) -> Hooks:
    def begin(trial_number, params):
        if trial_number == number:
            raise RuntimeError("injected fault")

    return Hooks(on_trial_begin=begin)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Six trials: two pruned, one failed, three complete; then a resumed run of two more."""
    folder: Path = tmp_path_factory.mktemp("search")
    space = folder / "tiny.yaml"
    from tests.conftest import TINY_SPACE, mlflow_client

    space.write_text(TINY_SPACE)
    settings = SearchSettings(
        trials=6,
        space=space,
        study_name="e2e",
        storage=f"sqlite:///{folder / 'automl.db'}",
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
        max_epochs=2,
        seed=1,
        device="cpu",
        ensemble=1,  # the best trial alone: its own weights and tags (ensembles: test_conclude)
    )
    first = run_search(settings, pruner=PruneEveryThird(), hooks=fail_trial(2))
    client = mlflow_client(settings.tracking_uri)
    return settings, first, client


def test_study_has_the_expected_states(searched):
    _, outcome, _ = searched
    states = [t.state for t in outcome.study.trials]
    assert len(states) == 6
    assert states.count(TrialState.PRUNED) == 2
    assert states.count(TrialState.FAIL) == 1
    assert states.count(TrialState.COMPLETE) == 3
    failed = outcome.study.trials[2]
    assert failed.user_attrs["reason"] == "error"
    assert "injected fault" in failed.user_attrs["message"]
    pruned = outcome.study.trials[1]
    assert pruned.user_attrs["reason"] == "pruned"


def test_one_parent_run_with_one_nested_run_per_trial(searched):
    _, outcome, client = searched
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("kind") == "study"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == outcome.parent_run_id
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == [f"trial-{i:04d}" for i in range(6)]
    assert len(runs) == 7


def test_run_status_params_metrics_and_tags_match_each_trial(searched):
    _, outcome, client = searched
    for trial in outcome.study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == STATUS[trial.state.name]
        assert run.data.tags["state"] == STATE_TAG[trial.state.name]  # a column in the UI
        assert run.data.tags["trial_number"] == str(trial.number)
        assert run.data.tags["study"] == "e2e"
        params = trial.user_attrs["params"]
        assert run.data.params == {k: shown(v) for k, v in params.items()}  # rounded to read
        floats = [run.data.params[k] for k, v in params.items() if isinstance(v, float)]
        assert floats and all(len(v) <= 10 for v in floats)
        assert {k.split(".")[0] for k in params} == {"arch", "aug", "optim", "train"}
        note = run.data.tags["mlflow.note.content"]  # the run page says how it ended
        if trial.state == TrialState.FAIL:
            assert "injected fault" in run.data.tags["message"]
            assert note.startswith("**Failed** (error): ") and "injected fault" in note
            continue
        history = client.get_metric_history(run.info.run_id, "val_acc")
        # MLflow counts epochs; Optuna's steps are shares of the schedule on a 20-step grid.
        assert [m.step for m in history] == list(range(1, len(trial.intermediate_values) + 1))
        assert [m.value for m in history] == pytest.approx(
            [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)]
        )
        for name in ("train_loss", "val_loss", "lr", "epoch_seconds", "images_per_second"):
            assert len(client.get_metric_history(run.info.run_id, name)) == len(history)
        if trial.state == TrialState.PRUNED:
            assert note.startswith("**Pruned** after epoch 1, not failed: stopped early")
            assert run.data.tags["reason"] == "pruned"
            assert len(history) == 1  # the curve up to the pruning point is kept
        else:
            assert note == f"**Complete**: trained its whole schedule ({len(history)} epochs)."
            assert "accuracy" not in run.data.metrics  # the objective is val_acc: not twice


def test_best_model_registered_with_alias_tags_and_reproducible_accuracy(searched, digits):
    settings, outcome, client = searched
    reg = outcome.registration
    assert reg is not None and not reg.reused
    best = outcome.study.best_trial
    assert reg.trial_number == best.number
    version = client.get_model_version_by_alias("e2e", "candidate")
    assert int(version.version) == reg.version
    assert version.tags["study"] == "e2e"
    assert version.tags["trial_number"] == str(best.number)
    assert version.tags["dataset"] == "digits"
    assert version.tags["val_acc"] == f"{best.value:.4f}"  # rounded: short to read
    assert version.tags["test_acc"] == f"{reg.test_acc:.4f}"
    assert "params" not in version.tags  # params.json beside the network instead
    long = ("dataset_options", "automl.file_digests")  # JSON records, long by design
    assert all(len(v) <= 80 for k, v in version.tags.items() if k not in long)
    test_acc = reg.test_acc

    mlflow.set_tracking_uri(settings.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/e2e@candidate")
    images = digits.test.images.permute(0, 2, 3, 1).numpy()
    predicted = model.predict(images)
    accuracy = float((predicted["class_index"].to_numpy() == digits.test.labels.numpy()).mean())
    assert accuracy == pytest.approx(test_acc, abs=1e-6)
    assert set(predicted["label"]) <= set("0123456789")
    assert np.allclose(np.stack(predicted["probabilities"]).sum(1), 1.0, atol=1e-5)
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 8, 8, 1)
    assert model.metadata.get_input_schema().inputs[0].type == np.uint8
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"expected shape \(-1, 8, 8, 1\)"):
        model.predict(images[:, :4, :4])  # the signature is checked: a clear refusal
    local = Path(mlflow.artifacts.download_artifacts(f"models:/e2e/{reg.version}"))
    assert (
        json.loads((local / "artifacts" / "params.json").read_text()) == best.user_attrs["params"]
    )

    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.metrics["test_accuracy"] == pytest.approx(test_acc, abs=1e-6)
    assert parent.data.metrics["trials_complete"] == 3
    assert parent.data.tags["registered_model"] == "models:/e2e@candidate"
    assert parent.data.tags["registered_version"] == f"e2e/{reg.version}"

    # Lineage: the version comes from the trial's own run, which names it and stays finished.
    trial_run = client.get_run(best.user_attrs["mlflow_run_id"])
    assert version.run_id == trial_run.info.run_id == reg.run_id
    assert version.tags["trial_run_id"] == trial_run.info.run_id
    assert parent.data.tags["best_trial_run_id"] == trial_run.info.run_id
    assert trial_run.data.tags["registered_model"] == f"e2e/{reg.version}"
    assert trial_run.info.status == "FINISHED"
    assert trial_run.info.end_time <= version.creation_timestamp  # trained, then registered
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == trial_run.info.run_id
    assert logged.experiment_id == trial_run.info.experiment_id


def test_only_trials_that_beat_the_best_so_far_log_weights(searched):
    _, outcome, client = searched
    best_so_far = -1.0
    for trial in outcome.study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        has = run.data.tags.get("has_weights") == "true"
        if trial.state == TrialState.COMPLETE and trial.value > best_so_far:
            assert has
            best_so_far = trial.value
        else:
            assert not has


# ---------------------------------------------------------------------------- the story

LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")  # a Markdown link: text, target
ML = "workflowType=machine_learning"  # every link opens MLflow 3 in its machine-learning mode


def expected_ranking(study) -> list:
    """Complete trials by val_acc, then pruned ones by their last report, then failed."""
    trials = study.trials
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    pruned.sort(key=lambda t: -t.intermediate_values[max(t.intermediate_values)])
    return complete + pruned + [t for t in trials if t.state == TrialState.FAIL]


def test_the_parent_run_and_the_experiment_tell_the_study(searched):
    from rich.console import Console

    from automl.cli.display import print_summary

    settings, outcome, client = searched
    experiment = client.get_experiment_by_name("e2e")
    eid, reg = experiment.experiment_id, outcome.registration
    note = client.get_run(outcome.parent_run_id).data.tags["mlflow.note.content"]
    links = dict(LINK.findall(note))
    ranking = expected_ranking(outcome.study)
    for trial in ranking:  # six trials: every one in the leaderboard, a link to its run
        run_id = trial.user_attrs["mlflow_run_id"]
        assert links[f"trial-{trial.number:04d}"] == f"#/experiments/{eid}/runs/{run_id}?{ML}"
    rows = [line for line in note.splitlines() if line.startswith("| ") and "trial-" in line]
    assert [int(re.search(r"trial-(\d+)", r).group(1)) for r in rows] == [t.number for t in ranking]
    assert "| pruned @ 1 |" in rows[3] and "| failed (error) |" in rows[5]
    compare = links["top five side by side"]
    runs = re.fullmatch(rf"#/compare-runs\?runs=(.+)&experiments=(.+)&{ML}", compare)
    top_five = [t.user_attrs["mlflow_run_id"] for t in ranking[:5]]
    assert json.loads(unquote(runs.group(1))) == top_five
    assert json.loads(unquote(runs.group(2))) == [eid]
    view = links["every trial by val_acc"]
    assert view == f"#/experiments/{eid}/runs?viewStateShareKey=automl-e2e&{ML}"
    version = f"#/models/e2e/versions/{reg.version}?{ML}"
    assert links[f"registered model e2e v{reg.version}"] == version

    # The saved view: the UI runs its filter (the study's trials only), sorts by val_acc
    # and shows the state column first.
    saved = json.loads(experiment.tags["mlflow.sharedViewState.automl-e2e"])
    state = json.loads(saved["state"])
    assert saved["name"] == "e2e: trials by val_acc"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`val_acc`", False)
    assert state["selectedColumns"][:2] == ["tags.`state`", "metrics.`val_acc`"]
    found = client.search_runs([eid], state["searchFilter"], max_results=100)
    assert sorted(r.info.run_name for r in found) == [f"trial-{i:04d}" for i in range(6)]

    # The experiment's first paragraph (shown atop its pages) links the same.
    first = experiment.tags["mlflow.note.content"].split("\n\n")[0]
    assert dict(LINK.findall(first)) == {
        "top five side by side": compare,
        "every trial by val_acc": view,
        "the latest search": f"#/experiments/{eid}/runs/{outcome.parent_run_id}?{ML}",
        f"registered model e2e v{reg.version}": version,
    }

    # The search's last lines: the command that opens the UI, then the same paths.
    console = Console(record=True, width=400)
    print_summary(console, outcome)
    printed = console.export_text()
    assert f"mlflow ui --backend-store-uri {settings.tracking_uri}" in printed
    for link in (compare, view, version, f"#/experiments/{eid}/runs/{outcome.parent_run_id}"):
        assert link in printed


@pytest.fixture(scope="module")
def ui(searched, tmp_path_factory):
    """The MLflow UI over the search's store, as `mlflow ui` serves it."""
    from tests.conftest import bin_env, free_port, wait_for_http

    settings = searched[0]
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", settings.tracking_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=bin_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), stdout=log.open("w"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for_http(
        f"{url}/health", process=process, output=lambda: log.read_text()[-3000:], expect=b"OK"
    )
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@pytest.mark.browser
def test_the_mlflow_ui_shows_the_story_in_two_clicks(searched, ui):
    from tests.conftest import ARTIFACTS, chromium

    _, outcome, _ = searched
    story = outcome.story
    ranking = expected_ranking(outcome.study)
    names = [f"trial-{t.number:04d}" for t in ranking]

    # The parent run's page: the leaderboard, each trial a link to its run.
    dom = chromium(f"{ui}/{story.parent}", screenshot=ARTIFACTS / "mlflow-parent-story.png")
    leaderboard = re.findall(r'<td><a target="_blank" href="([^"]+)">(trial-\d{4})</a></td>', dom)
    assert [name for _, name in leaderboard] == names
    assert "<td>pruned @ 1</td>" in dom and "<td>failed (error)</td>" in dom
    compare = html.unescape(re.search(r'href="(#/compare-runs[^"]+)"', dom).group(1))
    view = html.unescape(re.search(r'href="(#/experiments/[^"]+viewStateShareKey[^"]+)"', dom)[1])

    # Following the best trial's link opens its run page.
    trial = chromium(f"{ui}/{html.unescape(leaderboard[0][0])}")
    assert f">{names[0]}<" in trial and "trained its whole schedule" in trial

    # The compare link: the five best trials side by side.
    dom = chromium(f"{ui}/{compare}", screenshot=ARTIFACTS / "mlflow-compare-top-five.png")
    assert "Comparing 5 Runs from 1 Experiment" in dom
    assert all(name in dom for name in names[:5]) and names[5] not in dom

    # Every trial of the study, by val_acc, the state column telling pruned from failed.
    dom = chromium(f"{ui}/{view}", screenshot=ARTIFACTS / "mlflow-trials-by-val-acc.png")
    assert "tags.`state`" in dom and "<strong>6</strong> matching runs" in dom
    for label in ("COMPLETE", "PRUNED @ 1", "FAIL: error"):
        assert f">{label}<" in dom

    # Two clicks from the UI's home page: the experiment (its list of recent experiments
    # links it), then "top five side by side" in the description shown atop every page of
    # the experiment (this one as its landing page).
    assert f'href="{html.escape(compare)}"' in dom


def test_resume_runs_new_trials_in_the_same_study_under_a_new_parent(searched):
    settings, first, client = searched
    first_best = first.registration.trial_number
    again = SearchSettings(**{**settings.__dict__, "trials": 2})
    second = run_search(again)
    numbers = [t.number for t in second.study.trials]
    assert numbers == list(range(8))
    assert [t.number for t in second.trials_run] == [6, 7]
    assert second.parent_run_id != first.parent_run_id
    runs = client.search_runs(
        [client.get_experiment_by_name("e2e").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{second.parent_run_id}'",
    )
    assert sorted(r.info.run_name for r in runs) == ["trial-0006", "trial-0007"]
    if second.study.best_trial.number == first_best:
        assert second.registration.reused
    else:
        assert second.registration.version == first.registration.version + 1


EVALUATION_FILES = {
    "confusion_matrix.png", "confusion_matrix.csv", "reliability_diagram.png", "robustness.png",
    "robustness.csv", "saliency.png", "per_class.csv", "evaluation.json",
}  # fmt: skip
STUDY_PLOTS = {
    "optimization_history.png", "intermediate_values.png", "param_importances.png",
    "parallel_coordinate.png", "slice.png", "study_plots.html",
}  # fmt: skip


def test_evaluation_and_study_plots_are_recorded(searched):
    _, outcome, client = searched
    names = {Path(f.path).name for f in client.list_artifacts(outcome.parent_run_id, "evaluation")}
    assert names == EVALUATION_FILES
    plots = {Path(f.path).name for f in client.list_artifacts(outcome.parent_run_id, "study_plots")}
    assert plots == STUDY_PLOTS
    metrics = client.get_run(outcome.parent_run_id).data.metrics
    expected = [
        "test_accuracy", "macro_f1", "worst_class_recall", "class_recall_gap", "ece",
        "mean_corruption_acc",
    ]  # fmt: skip
    for key in expected:
        assert key in metrics, key
    # One robustness figure: the 18 per corruption and severity are in the evaluation files.
    assert not [key for key in metrics if key.startswith("corruption_acc")]
    robustness = client.download_artifacts(outcome.parent_run_id, "evaluation/robustness.csv")
    assert "blur,3," in Path(robustness).read_text()
    assert metrics["test_accuracy"] == pytest.approx(outcome.registration.test_acc, abs=1e-6)
    version = client.get_model_version("e2e", str(outcome.registration.version))
    model_id = version.source.removeprefix("models:/")
    on_model = {
        Path(f.path).name for f in client.list_logged_model_artifacts(model_id, "evaluation")
    }
    assert on_model == EVALUATION_FILES
    assert outcome.evaluation is not None
    assert 0.0 <= outcome.evaluation.mean_corruption_accuracy <= 1.0


@pytest.mark.browser
def test_report_has_every_section_and_its_images_load(searched, tmp_path, capsys, monkeypatch):
    from automl.cli import main
    from tests.conftest import ARTIFACTS, chromium

    settings, _, _ = searched
    out = tmp_path / "report.html"
    code = main(["report", "e2e", "-o", str(out), "--storage", settings.storage,
                 "--tracking-uri", settings.tracking_uri])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    html = out.read_text()
    for section in ("summary", "leaderboard", "stopped", "data", "study-plots", "evaluation"):
        assert f'<section id="{section}">' in html
    assert "No study plots" not in html and "has not been evaluated" not in html
    # Links to the MLflow UI that `mlflow ui` serves; the pruned and failed trials and why;
    # importances from few trials said to be a hint; the slice plot at the page's width.
    study = optuna.load_study(study_name="e2e", storage=settings.storage)
    parent = study.user_attrs["mlflow_parent_run_id"]
    assert f"start it with <code>mlflow ui --backend-store-uri {settings.tracking_uri}" in html
    assert re.search(
        rf'href="http://127\.0\.0\.1:5000/#/experiments/\d+/runs/{parent}\?workflowType=', html
    )
    assert "viewStateShareKey=automl-e2e" in html and "#/compare-runs?runs=" in html
    stopped = html.split('<section id="stopped">')[1].split("</section>")[0]
    for trial in study.trials:
        run = trial.user_attrs["mlflow_run_id"]
        cell = rf'/runs/{run}[^"]*">{trial.number}</a></td><td>'
        listed = re.search(cell, stopped) is not None
        assert listed == (trial.state in (TrialState.PRUNED, TrialState.FAIL))
    assert "injected fault" in stopped
    complete = sum(t.state == TrialState.COMPLETE for t in study.trials)
    assert f"importances rest on {complete} complete trials (fewer than 20)" in html
    assert '<figure class="wide"><img alt="slice"' in html
    dom = chromium(out.as_uri(), screenshot=ARTIFACTS / "report.png")

    total = int(re.search(r'data-images-total="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom).group(1))
    assert total >= 9 and loaded == total
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


@pytest.mark.browser
def test_the_version_page_names_the_trial_run_and_shows_the_input_schema(searched, tmp_path):
    """The real MLflow UI over the study's store: lineage and signature, as a user sees them."""
    import subprocess
    import sys

    from tests.conftest import ARTIFACTS, bin_env, chromium, free_port, wait_for_http

    settings, outcome, client = searched
    reg = outcome.registration
    port, log = free_port(), tmp_path / "server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", settings.tracking_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=bin_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", process=server, output=log.read_text, expect=b"OK")
        shot = ARTIFACTS / "mlflow-model-version.png"
        dom = chromium(f"{url}/#/models/e2e/versions/{reg.version}", screenshot=shot)
        experiment = client.get_experiment_by_name("e2e").experiment_id
        trial_page = chromium(
            f"{url}/#/experiments/{experiment}/runs/{reg.run_id}",
            screenshot=ARTIFACTS / "mlflow-trial-run.png",
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert f"trial-{reg.trial_number:04d}" in dom  # the source run is the trial's own
    assert reg.run_id in dom  # ... linked to its page
    assert "Inputs (1)" in dom and "Outputs (4)" in dom  # the signature; was "Inputs (0)"
    assert "uint8 images <code>(-1, 8, 8, 1)</code>" in dom  # the description says which
    assert shot.stat().st_size > 10_000
    # The trial's page lists the version it produced.
    assert f"#/models/e2e/versions/{reg.version}" in trial_page, trial_page[-3000:]
