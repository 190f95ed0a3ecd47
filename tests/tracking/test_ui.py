"""Links to the MLflow UI's pages and the words a trial's run ends with."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, unquote, urlsplit

from automl.tracking.outcome import ended_tags, state_label
from automl.tracking.ui import UiLinks, open_command, view_key


def test_links_stay_in_the_ui_for_a_local_store_and_are_full_for_a_server():
    links = UiLinks("7")
    assert links.run("abc") == "#/experiments/7/runs/abc?workflowType=machine_learning"
    assert links.full("sqlite:///x/mlflow.db") == links
    assert links.full("sqlite:///m.db", local="http://127.0.0.1:5000/").run("a") == (
        "http://127.0.0.1:5000/#/experiments/7/runs/a?workflowType=machine_learning"
    )
    server = links.full("https://mlflow.example.org/team/")
    assert server.run("abc").startswith("https://mlflow.example.org/team/#/experiments/7/runs/abc?")
    assert server.view("automl-x") == (
        "https://mlflow.example.org/team/#/experiments/7/runs?viewStateShareKey=automl-x"
        "&workflowType=machine_learning"
    )
    assert open_command("http://host:5000") == "open http://host:5000"
    assert open_command("sqlite:///mlflow.db") == "mlflow ui"
    assert open_command("sqlite:////a/b.db") == "mlflow ui --backend-store-uri sqlite:////a/b.db"


def test_the_compare_link_carries_the_runs_as_the_ui_reads_them():
    link = UiLinks("3").compare(["r1", "r2"])
    route, _, query = link.partition("?")
    assert route == "#/compare-runs"
    assert "[" not in link and '"' not in link  # safe in Markdown and in a terminal
    params = parse_qs(query)
    assert json.loads(params["runs"][0]) == ["r1", "r2"]
    assert json.loads(params["experiments"][0]) == ["3"]
    version = urlsplit(UiLinks("3").model_version("my model/v", 4)).fragment
    assert unquote(version) == "/models/my model/v/versions/4?workflowType=machine_learning"
    assert view_key("digits: my study") == "automl-digits-my-study"


def test_the_state_tag_tells_pruned_from_failed_in_a_few_characters():
    assert state_label("COMPLETE", None) == "COMPLETE"
    assert state_label("PRUNED", "pruned", 3) == "PRUNED @ 3"
    assert state_label("PRUNED", "constraint", 0) == "PRUNED: constraint"
    assert state_label("FAIL", "crashed") == "FAIL: crashed"
    assert state_label("FAIL", "disk full\nTraceback ...") == "FAIL: disk full"
    assert len(state_label("FAIL", "x" * 500)) == len("FAIL: ") + 40
    tags = ended_tags("PRUNED", "pruned", 2, message="val_acc 0.5 at epoch 2 fell behind")
    assert tags["state"] == "PRUNED @ 2" and tags["reason"] == "pruned"
    assert tags["mlflow.note.content"].startswith("**Pruned** after epoch 2, not failed")
    assert ended_tags("COMPLETE", None, 4, epochs="4")["mlflow.note.content"] == (
        "**Complete**: trained its whole schedule (4 epochs)."
    )
