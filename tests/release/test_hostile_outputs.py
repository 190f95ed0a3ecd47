"""The files `export`, `report` and `evaluate` write, and the files `predict` reads, under
hostile conditions: links planted at the outputs, outputs that are files or read-only,
FIFOs among the images, a file named twice, file names that are not UTF-8.

The model is a tiny untrained network registered in a temporary store: nothing trains.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from automl.cli import main
from automl.release.predict import collect_files, read_image
from automl.serving.automl_serving import ImageInputError
from automl.stores import open_storage
from tests.serving.test_hostile_serving import NAME, register_tiny_model

pytestmark = pytest.mark.slow
VICTIM = "a file the link points to\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("outputs")
    uri = register_tiny_model(folder)
    images = folder / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(images / f"digit{i}.png")
    return {"folder": folder, "uri": uri, "images": images}


@pytest.fixture
def cli(lab, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args, "--tracking-uri", lab["uri"]])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def plant(link: Path, victim: Path) -> None:
    victim.write_text(VICTIM)
    link.symlink_to(victim)


def one_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.hostile("security")
def test_export_replaces_links_planted_at_its_files_and_never_writes_through_them(cli, tmp_path):
    output = tmp_path / "out.pt2"
    plant(tmp_path / "out.pt2.json", tmp_path / "victim.json")
    plant(output, tmp_path / "victim.pt2")
    code, _, err = cli("export", f"models:/{NAME}/1", "--format", "pt2", "-o", str(output))
    assert code == 0, err
    assert (tmp_path / "victim.json").read_text() == VICTIM
    assert (tmp_path / "victim.pt2").read_text() == VICTIM
    sidecar = tmp_path / "out.pt2.json"
    assert not sidecar.is_symlink() and json.loads(sidecar.read_text())["format"] == "pt2"
    assert not output.is_symlink() and output.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.pt2",
        "out.pt2.json",
        "victim.json",
        "victim.pt2",
    ]  # fmt: skip  (no draft left behind)


@pytest.mark.hostile("security")
def test_report_replaces_a_link_planted_at_its_file(cli, tmp_path):
    storage = f"sqlite:///{tmp_path / 'automl.db'}"
    optuna.create_study(study_name="empty", storage=open_storage(storage))
    output = tmp_path / "report.html"
    plant(output, tmp_path / "victim.html")
    code, _, err = cli("report", "empty", "-o", str(output), "--storage", storage)
    assert code == 0, err
    assert (tmp_path / "victim.html").read_text() == VICTIM
    assert not output.is_symlink() and "<html" in output.read_text()


@pytest.mark.hostile("security")
def test_evaluate_replaces_links_planted_in_its_folder(cli, tmp_path):
    folder = tmp_path / "evaluation"
    folder.mkdir()
    plant(folder / "evaluation.json", tmp_path / "victim.json")
    plant(folder / "confusion_matrix.png", tmp_path / "victim.png")
    code, _, err = cli("evaluate", f"models:/{NAME}/1", "-o", str(folder), "--no-log")
    assert code == 0, err
    assert (tmp_path / "victim.json").read_text() == VICTIM
    assert (tmp_path / "victim.png").read_text() == VICTIM
    assert not (folder / "evaluation.json").is_symlink()
    assert "test_accuracy" in json.loads((folder / "evaluation.json").read_text())["metrics"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no drafts left


@pytest.mark.hostile("inputs")
def test_outputs_that_cannot_be_written_are_one_line_before_the_model_is_fetched(cli, tmp_path):
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    line = one_line(*cli("evaluate", f"models:/{NAME}/1", "-o", str(existing))[::2])
    assert f"-o: {existing} is a file; name a folder" in line
    line = one_line(*cli("evaluate", f"models:/{NAME}/1", "-o", f"{existing}/sub")[::2])
    assert f"is under the file {existing}" in line
    assert existing.read_text() == "keep me"
    line = one_line(*cli("report", "any", "-o", str(tmp_path))[::2])
    assert "is a folder; name the file" in line


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only file system (where this process may mount one): the one place root
    cannot write either."""
    mount = tmp_path / "read-only"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip("cannot mount a read-only file system here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.hostile("inputs")
@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_export_onto_a_read_only_file_system_is_one_line(cli, read_only_folder, fmt):
    output = read_only_folder / f"m.{fmt}"
    line = one_line(*cli("export", f"models:/{NAME}/1", "--format", fmt, "-o", str(output))[::2])
    assert f"-o {output}: cannot write it (cannot write in {read_only_folder}: Read-only" in line


def finishes(call, seconds: float = 20) -> object:
    """``call()``'s result, failing (not hanging) when it does not return in time."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # raised again in the test's thread
            outcome.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{call} hangs"
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


@pytest.mark.hostile("inputs")
def test_a_fifo_among_the_images_is_listed_not_read(cli, lab, tmp_path):
    folder = tmp_path / "predict"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    os.mkfifo(folder / "pipe.png")
    files, problems = collect_files([folder, folder / "pipe.png"])
    assert files == [folder / "a.png"]
    assert [(p.name, why) for p, why in problems] == [
        ("pipe.png", "not a regular file (a FIFO); only regular files are read")
    ] * 2
    # Swapped for a FIFO after it was listed: still refused, at once.
    with pytest.raises(ImageInputError, match="not a regular file"):
        finishes(lambda: read_image(folder / "pipe.png"))
    code, out, err = finishes(lambda: cli("predict", f"models:/{NAME}/1", str(folder), "--json"))
    assert code == 0, err
    assert [json.loads(line)["path"] for line in out.splitlines()] == [str(folder / "a.png")]
    assert "skipped" in err and "pipe.png" in err and "FIFO" in err


@pytest.mark.hostile("inputs")
def test_a_file_named_and_inside_a_named_folder_is_predicted_once(cli, lab):
    images = lab["images"]
    code, out, err = cli("predict", f"models:/{NAME}/1", str(images / "digit1.png"), str(images),
                         f"{images}/../images/digit1.png", "--json")  # fmt: skip
    assert code == 0, err
    names = [Path(json.loads(line)["path"]).name for line in out.splitlines()]
    assert sorted(names) == ["digit0.png", "digit1.png", "digit2.png"]


@pytest.mark.hostile("inputs")
def test_predict_json_gives_valid_utf8_for_file_names_that_are_not(cli, lab, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9-\xff.png")  # Latin-1 bytes: not UTF-8
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / name)
    (folder / os.fsdecode(b"bad-\xfe.png")).write_text("not an image")
    code, out, err = cli("predict", f"models:/{NAME}/1", str(folder), "--json")
    assert code == 0, err
    out.encode("utf-8")  # no lone surrogates: strict UTF-8
    err.encode("utf-8")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["path"] == f"{folder}/caf\\xe9-\\xff.png"
    assert "bad-\\xfe.png" in err
    code, out, err = cli("predict", f"models:/{NAME}/1", str(folder))  # the table too
    assert code == 0, err
    assert "caf\\xe9-\\xff.png" in out.replace("\n", "")
