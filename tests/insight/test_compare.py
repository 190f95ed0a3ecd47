"""Champion against candidate: `automl compare` on a real registry of two versions trained
for one and for three epochs, and McNemar's exact test on the images they disagree on."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from automl.cli import main
from automl.cli.compare import registered_uri
from automl.errors import ConfigError
from automl.insight.compare import Comparison, Side, mcnemar_p
from automl.insight.metrics import classification_report
from automl.pipeline import run_search
from automl.tracking import Registry
from tests.conftest import TINY_SPACE, search_settings

NAME = "cmp"


# -- McNemar's exact test ----------------------------------------------------------------------


def test_mcnemar_is_the_two_sided_binomial_tail_of_the_discordant_images():
    assert mcnemar_p(0, 0) == 1.0  # nothing tells them apart
    assert mcnemar_p(10, 0) == mcnemar_p(0, 10) == 2 / 1024
    assert mcnemar_p(3, 5) == 2 * (1 + 8 + 28 + 56) / 256  # C(8, 0..3)
    assert mcnemar_p(4, 4) == 1.0  # capped: an even split is as likely as it gets
    assert 0 < mcnemar_p(600, 400) < 1e-9  # whole numbers: no overflow past 1,074 images


def _side(name: str, predicted: list[int], classes: int = 3) -> Side:
    probs = np.full((len(predicted), classes), 0.1)
    probs[np.arange(len(predicted)), predicted] = 0.8
    labels = np.array([0, 1, 2, 0, 1, 2])
    return Side(name, probs, classification_report(labels, probs, ["a", "b", "c"]))


def test_the_discordant_images_and_the_verdict():
    labels = np.array([0, 1, 2, 0, 1, 2])
    images = np.zeros((6, 4, 4, 3), dtype=np.uint8)
    champion = _side("champion", [0, 1, 2, 1, 2, 0])  # right on 0, 1, 2
    candidate = _side("candidate", [0, 0, 2, 0, 1, 2])  # right on 0, 2, 3, 4, 5
    c = Comparison(["a", "b", "c"], images, labels, champion, candidate)
    assert c.only_first.tolist() == [1]
    assert c.only_second.tolist() == [3, 4, 5]
    assert c.per_class() == [("a", 2, 0.5, 1.0), ("b", 2, 0.5, 0.5), ("c", 2, 0.5, 1.0)]
    assert c.p_value == mcnemar_p(1, 3) == 0.625
    assert c.verdict().startswith("no significant difference: champion alone is right on 1")
    many = np.tile(labels, 4)
    wrong, right = np.eye(3)[(many + 1) % 3], np.eye(3)[many]
    classes = ["a", "b", "c"]
    old = Side("old", wrong, classification_report(many, wrong, classes))
    new = Side("new", right, classification_report(many, right, classes))
    lopsided = Comparison(classes, np.zeros((24, 4, 4, 3), dtype=np.uint8), many, old, new)
    assert lopsided.verdict().startswith("new is better than old: right on 24 images")


@pytest.mark.parametrize(
    ("text", "uri"),
    [("models:/m@champion", "models:/m@champion"), ("m@candidate", "models:/m@candidate"),
     ("m/3", "models:/m/3")],
)  # fmt: skip
def test_the_forms_of_a_registered_version(text, uri):
    assert registered_uri(text) == uri


@pytest.mark.hostile("inputs")
@pytest.mark.parametrize("text", ["m", "./folder", "models:/m", "runs:/abc/model", "m/x"])
def test_anything_else_is_refused_in_one_line(text):
    with pytest.raises(ConfigError, match="name a registered version"):
        registered_uri(text)


# -- the command on a real registry -----------------------------------------------------------


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 trained one epoch and holds champion; version 2 three, and is candidate."""
    folder = tmp_path_factory.mktemp("compare")
    space = TINY_SPACE.replace("epochs: 2", "epochs: 3")
    for study, epochs in (("weak", 1), ("strong", 3)):
        settings = search_settings(
            folder, space, trials=1, study_name=study, max_epochs=epochs, model_name=NAME, seed=5
        )
        run_search(settings)
    Registry(f"sqlite:///{folder / 'mlflow.db'}").set_alias(NAME, "champion", 1)
    return folder


@pytest.mark.slow
def test_compare_prints_both_per_class_the_discordant_count_and_a_verdict(
    registry_dir, capsys, monkeypatch
):
    monkeypatch.chdir(registry_dir)
    html = registry_dir / "side-by-side.html"
    code = main(["compare", f"models:/{NAME}@champion", f"{NAME}@candidate", "-o", str(html)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{NAME}@champion (v1)" in out and f"{NAME}@candidate (v2)" in out
    assert "ECE" in out and "accuracy" in out
    for digit in "0123456789":  # a row per class
        assert re.search(rf"^\W*{digit}\W+\d+\W+\d\.\d{{4}}\W+\d\.\d{{4}}", out, re.MULTILINE)
    found = re.search(
        r"right in one and wrong in the other: (\d+) images \((\d+) only .*, (\d+)", out
    )
    assert found, out
    total, first, second = (int(g) for g in found.groups())
    assert total == first + second > 0
    accuracies = re.search(r"accuracy\W+(\d+)\W+(\d\.\d+)\W+(\d\.\d+)", out)
    assert accuracies, out
    n, acc1, acc2 = int(accuracies[1]), float(accuracies[2]), float(accuracies[3])
    assert round((acc2 - acc1) * n) == second - first  # the paired errors explain the gap
    assert "McNemar exact p = " in out
    page = html.read_text()
    assert page.count("<img ") == total  # both directions, each image with both answers
    assert page.count(f"<br>{NAME}@champion (v1): ") == total  # its answer under each image


@pytest.mark.slow
def test_versions_by_number_compare_and_an_unknown_alias_is_one_line(
    registry_dir, capsys, monkeypatch
):
    monkeypatch.chdir(registry_dir)
    assert main(["compare", f"{NAME}/1", f"{NAME}/2"]) == 0
    assert "McNemar exact p" in capsys.readouterr().out
    assert main(["compare", f"{NAME}/1", f"{NAME}@nobody"]) == 2
    assert "no version with the alias 'nobody'" in capsys.readouterr().err
