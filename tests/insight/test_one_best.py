"""One "best": an ensemble's figures are named as the ensemble's wherever they appear (the
search's summary, the parent run's note, `automl models`, the report), with its best
member's own figures beside them, never passed off as that member's."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from automl.cli import main
from automl.insight.report import build_report
from automl.insight.story import Search, parent_story
from automl.records import RunTag, StudyRunTags, TrialAttr, VersionTag
from automl.release.conclude import Registration
from automl.tracking.ui import UiLinks
from tests.conftest import mlflow_client

# The digits search of the issue: trial 28 alone 0.9926 on validation, 0.9851 on test;
# the ensemble of 28, 9 and 10 0.9888 on both.
ALONE_VAL, ALONE_TEST, ENSEMBLE_VAL, ENSEMBLE_TEST = 0.9926, 0.9851, 0.9888, 0.9888
MEMBERS = (28, 9, 10)


def _study() -> optuna.Study:
    study = optuna.create_study(direction="maximize", study_name="digits-small")
    start = datetime(2026, 1, 1)
    for number in range(30):
        value = ALONE_VAL if number == 28 else 0.95 + number / 1000
        study.add_trial(
            FrozenTrial(
                number=number,
                state=TrialState.COMPLETE,
                value=None,
                values=[value],
                datetime_start=start,
                datetime_complete=start + timedelta(seconds=3),
                params={"optim.lr": 0.1},
                distributions={"optim.lr": FloatDistribution(0.01, 1)},
                user_attrs={TrialAttr.RUN_ID: f"run{number}"},
                system_attrs={},
                intermediate_values={1: value},
                trial_id=number,
            )
        )
    return study


def _registration(members: tuple[int, ...] = MEMBERS) -> Registration:
    return Registration(
        name="digits-small", version=1, uri="models:/digits-small@candidate",
        trial_number=28, val_acc=ENSEMBLE_VAL, test_acc=ENSEMBLE_TEST, reloaded_test_acc=None,
        reused=False, run_id="run28", members=members,
        test_acc_single=ALONE_TEST if members else None,
    )  # fmt: skip


def test_the_parent_note_names_the_ensemble_and_its_best_member_alone():
    study = _study()
    search = Search(study, "parent", _registration(), list(range(30)), ("accuracy",),
                    "small.yaml", "digits", "sqlite:///mlflow.db")  # fmt: skip
    note = parent_story(search, UiLinks("1"), "automl-digits-small")
    first = note.split("\n\n")[0]
    assert "**ensemble**" in first
    for number in MEMBERS:
        assert f"[trial-{number:04d}]" in first
    assert f"val_acc **{ENSEMBLE_VAL:.4f}**, test_acc **{ENSEMBLE_TEST:.4f}**" in first
    alone = first.split("alone:")[1]
    assert f"val_acc {ALONE_VAL:.4f}" in alone and f"test_acc {ALONE_TEST:.4f}" in alone
    # Never "Best: trial-0028, val_acc 0.9888": the ensemble's figure beside one trial's name.
    assert "Best: [trial-0028]" not in note


def test_a_single_model_is_still_called_the_best_trial():
    search = Search(_study(), "parent", _registration(members=()), [28], ("accuracy",),
                    "small.yaml", "digits", "sqlite:///mlflow.db")  # fmt: skip
    first = parent_story(search, UiLinks("1"), "k").split("\n\n")[0]
    assert "Best: [trial-0028]" in first and "ensemble" not in first


def test_the_summary_names_the_ensemble_and_gives_its_best_member_alone():
    from automl.cli.display import _print_registration

    console = Console(record=True, width=200, file=io.StringIO())
    _print_registration(console, _registration(), [], _study())
    lines = console.export_text().splitlines()
    assert lines[0].startswith("ensemble of trials 28, 9, 10: val_acc 0.9888, test_acc 0.9888")
    assert f"trial 28, alone: val_acc {ALONE_VAL:.4f}, test_acc {ALONE_TEST:.4f}" in lines[1]


def test_the_report_names_the_registered_ensemble():
    tags = {
        RunTag.REGISTERED_MODEL: "models:/digits-small@candidate",
        RunTag.ENSEMBLE: "28,9,10",
        RunTag.TEST_ACC_SINGLE: f"{ALONE_TEST:.4f}",
    }
    parent = {"tags": tags, "metrics": {"best_val_acc": ENSEMBLE_VAL, "test_acc": ENSEMBLE_TEST}}
    assert StudyRunTags.of(tags).members == MEMBERS
    html = build_report(
        _study(), parent=parent, data_report=None, plots=None, plots_skipped={}, evaluation=None
    )
    registered = html[html.index("Registered model") :].split("</p>")[0]
    assert "<b>ensemble</b> of trials 28, 9, 10" in registered
    assert f"test_acc <b>{ENSEMBLE_TEST:.4f}</b>" in registered
    assert f"trial 28, alone, test_acc {ALONE_TEST:.4f}" in registered


@pytest.fixture
def registry(tmp_path):
    """A real MLflow store with two versions: an ensemble, and one network of a data set
    whose path holds what Rich would read as markup."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    client.create_registered_model("digits-small")
    ensemble = {
        VersionTag.TRIAL_NUMBER: "28", VersionTag.ENSEMBLE: "28,9,10",
        VersionTag.VAL_ACC: f"{ENSEMBLE_VAL:.4f}", VersionTag.TEST_ACC: f"{ENSEMBLE_TEST:.4f}",
        VersionTag.TEST_ACC_SINGLE: f"{ALONE_TEST:.4f}",
    }  # fmt: skip
    single = {VersionTag.TRIAL_NUMBER: "3", VersionTag.DATASET: "imagefolder:/data/[/]photos"}
    for tags in (ensemble, single):
        client.create_model_version("digits-small", source=str(tmp_path / "m"), tags=tags)
    return uri


@pytest.fixture
def wide(monkeypatch):
    """A terminal wide enough that no cell of the table is wrapped."""
    from automl.cli.common import console

    monkeypatch.setattr(console, "width", 300)


def test_automl_models_names_an_ensemble_and_its_best_member(registry, capsys, wide):
    assert main(["models", "--tracking-uri", registry]) == 0
    out = capsys.readouterr().out
    assert "ensemble 28,9,10 (28 alone: test_acc 0.9851)" in " ".join(out.split())
    assert main(["models", "--tracking-uri", registry, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["ensemble"] == list(MEMBERS) and rows[1]["ensemble"] == []


@pytest.mark.hostile("inputs")
def test_automl_models_prints_a_path_holding_markup_as_written(registry, capsys, wide):
    assert main(["models", "--tracking-uri", registry]) == 0
    out, err = capsys.readouterr()
    assert "imagefolder:/data/[/]photos" in out and "Traceback" not in err
