"""Registry and deployment on a real SQLite registry: promote, rollback, predict, serve, export."""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automl.cli import main
from automl.pipeline import run_search
from automl.records import VersionTags
from automl.search.settings import SearchSettings
from automl.tracking import Registry, load_image_model
from tests.conftest import TINY_SPACE, automl_command, free_port, mlflow_client, wait_for_http

pytestmark = pytest.mark.slow
NAME = "reg"


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory):
    """Two searches into one model: version 1 trained 1 epoch, version 2 trained 4."""
    folder: Path = tmp_path_factory.mktemp("registry")
    space = folder / "tiny.yaml"
    space.write_text(TINY_SPACE.replace("epochs: 2", "epochs: 4"))
    common = {
        "space": space,
        "storage": f"sqlite:///{folder / 'automl.db'}",
        "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
        "model_name": NAME,
        "device": "cpu",
        "seed": 4,
    }
    run_search(SearchSettings(trials=1, study_name="weak", max_epochs=1, **common))
    run_search(SearchSettings(trials=2, study_name="strong", max_epochs=4, **common))
    return folder


@pytest.fixture
def cli(registry_dir, capsys, monkeypatch):
    monkeypatch.chdir(registry_dir)

    def run(*args):
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def accuracies(registry_dir):
    registry = Registry(f"sqlite:///{registry_dir / 'mlflow.db'}")
    found = {v.version: VersionTags.of(v.tags).test_acc for v in registry.versions(NAME)}
    assert set(found) == {1, 2}
    assert found[2] > found[1], "precondition: 4 epochs beat 1 epoch"
    return found


def champion(registry_dir) -> int:
    client = mlflow_client(f"sqlite:///{registry_dir / 'mlflow.db'}")
    return int(client.get_model_version_by_alias(NAME, "champion").version)


def version_tags(registry_dir, version: int) -> dict[str, str]:
    client = mlflow_client(f"sqlite:///{registry_dir / 'mlflow.db'}")
    return dict(client.get_model_version(NAME, str(version)).tags)


def test_models_lists_versions_with_aliases_and_figures(cli, accuracies):
    code, out, _ = cli("models", NAME, "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["version"] for r in rows] == [1, 2]
    assert rows[1]["aliases"] == ["candidate"]
    assert rows[0]["test_acc"] == pytest.approx(accuracies[1])
    assert rows[1]["study"] == "strong" and rows[1]["dataset"] == "digits"
    code, out, _ = cli("models")
    assert code == 0 and "candidate" in out and NAME in out


def test_promotion_gate_force_and_rollback(cli, registry_dir, accuracies):
    # No champion yet: the named version becomes champion, said plainly.
    code, out, _ = cli("promote", NAME, "--version", "1")
    assert code == 0 and "no 'champion' yet: version 1" in out
    assert champion(registry_dir) == 1
    assert version_tags(registry_dir, 1)["promoted.champion.from_version"] == "none"

    # The better candidate (version 2) is promoted, with the figures recorded.
    code, out, _ = cli("promote", NAME)
    assert code == 0, out
    assert "'champion' moved from version 1 to version 2" in out
    assert champion(registry_dir) == 2
    tags = version_tags(registry_dir, 2)
    assert tags["promoted.champion.from_version"] == "1"
    assert float(tags["promoted.champion.test_acc"]) == pytest.approx(accuracies[2])
    assert float(tags["promoted.champion.previous_test_acc"]) == pytest.approx(accuracies[1])
    assert tags["promoted.champion.forced"] == "false"
    assert version_tags(registry_dir, 1)["demoted.champion.replaced_by"] == "2"

    # The worse one is refused: exit 1, a side-by-side comparison, nothing changed.
    before = version_tags(registry_dir, 1)
    code, out, err = cli("promote", NAME, "--version", "1")
    assert code == 1
    assert "candidate (version 1)" in out and "champion (version 2)" in out
    assert "less accurate" in err and "nothing changed" in err
    assert champion(registry_dir) == 2
    assert version_tags(registry_dir, 1) == before

    # --force overrides and says so in the tags.
    code, out, _ = cli("promote", NAME, "--version", "1", "--force")
    assert code == 0 and "forced" in out
    assert champion(registry_dir) == 1
    assert version_tags(registry_dir, 1)["promoted.champion.forced"] == "true"

    # Rollback walks the history back: 1 -> 2 -> 1 -> (nothing left).
    code, out, _ = cli("rollback", NAME)
    assert code == 0 and "from version 1 to version 2" in out
    assert champion(registry_dir) == 2
    code, _, _ = cli("rollback", NAME)
    assert code == 0 and champion(registry_dir) == 1
    code, _, err = cli("rollback", NAME)
    assert code == 2 and "nothing to roll back to" in err
    assert champion(registry_dir) == 1

    # Asking again for the version that holds the alias is no error, and changes nothing.
    before = version_tags(registry_dir, 1)
    code, out, _ = cli("promote", NAME, "--version", "1")
    assert code == 0 and "version 1 of 'reg' already holds 'champion'; nothing to do" in out
    assert champion(registry_dir) == 1 and version_tags(registry_dir, 1) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["promote", "nope"], "no registered model named 'nope' (registered: reg)"),
        (["promote", NAME, "--version", "99"], "model 'reg' has no version 99"),
        (["promote", NAME, "--from-alias", "staging"], "has no version with the alias 'staging'"),
        (["rollback", NAME, "--alias", "prod"], "no version of 'reg' holds the alias 'prod'"),
        (["models", "nope"], "no registered model named 'nope'"),
        (["predict", "models:/reg/99", "x.png"], "models:/reg/99: cannot load the model"),
        (["predict", "models:/nope@champion", "x.png"], "cannot load the model"),
        (["predict", "models:/reg@nope", "x.png"], "models:/reg@nope: cannot load the model"),
        (["serve", "models:/reg@nope"], "models:/reg@nope: cannot fetch the model"),
        (["serve", "models:/reg/1", "-p", "70000"], "--port: must be 1..65535"),
        (["evaluate", "models:/reg@nope"], "models:/reg@nope: cannot load the model"),
        (
            ["evaluate", "reg@champion"],
            "reg@champion: no such model folder; a registered model is models:/reg@champion",
        ),
        (["predict", "reg/1", "x.png"], "is models:/reg/1"),
        (["export", "models:/reg@nope", "-o", "m.onnx"], "models:/reg@nope: cannot load"),
        (["retrain", "models:/reg@nope", "--dataset", "digits"], "alias 'nope'"),
        (["drift", "models:/reg@nope", "--dataset", "digits"], "alias 'nope'"),
        (["export", "models:/reg/1", "--format", "tflite", "-o", "m.tfl"], "--format: expected"),
        (["export", "models:/reg/1", "-o", "."], "-o: . is a folder; name the file"),
        (
            ["export", "models:/reg/1", "--format", "pt2", "-o", "/proc/m.pt2"],
            "-o /proc/m.pt2: cannot write it",
        ),
    ],
)
def test_bad_input_is_one_line_and_leaves_the_registry_alone(cli, registry_dir, args, message):
    client = mlflow_client(f"sqlite:///{registry_dir / 'mlflow.db'}")
    before = [(v.version, v.tags, v.aliases) for v in client.search_model_versions("name='reg'")]
    code, _, err = cli(*args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    after = [(v.version, v.tags, v.aliases) for v in client.search_model_versions("name='reg'")]
    assert after == before


def test_a_refused_serve_leaves_no_copy_behind(cli, registry_dir, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the copy would go
    stopped = tmp_path / "automl-serve-999999999-x1"  # a server that has stopped
    running = tmp_path / f"automl-serve-{os.getpid()}-x2"  # one that still runs
    for copy in (stopped, running):
        copy.mkdir()
        (copy / "MLmodel").write_text("copied")
    code, _, err = cli("serve", "models:/reg@nope")
    assert code == 2 and "cannot fetch the model" in err
    assert sorted(tmp_path.glob("automl-serve-*")) == [running]  # the stopped one's is gone


def test_versions_tested_on_different_splits_are_not_compared(cli, registry_dir):
    client = mlflow_client(f"sqlite:///{registry_dir / 'mlflow.db'}")
    holder = champion(registry_dir)
    other = 3 - holder
    original = version_tags(registry_dir, other)["test_digest"]
    client.set_model_version_tag(NAME, str(other), "test_digest", "0000000000000000")
    try:
        code, _, err = cli("promote", NAME, "--version", str(other))
        assert code == 2 and "cannot compare" in err
        assert champion(registry_dir) == holder
    finally:
        client.set_model_version_tag(NAME, str(other), "test_digest", original)


@pytest.fixture(scope="module")
def image_files(registry_dir, digits):
    folder = registry_dir / "images"
    (folder / "nested").mkdir(parents=True)
    arrays = digits.test.hwc()[:6, :, :, 0]
    paths = []
    for i, array in enumerate(arrays):
        fmt, suffix = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
        image = Image.fromarray(array)
        if i == 3:
            image = image.convert("RGB").resize((32, 32))  # other mode and size
        path = folder / ("nested" if i > 3 else ".") / f"digit{i}.{suffix}"
        image.save(path, format=fmt, quality=100)
        paths.append(path)
    (folder / "notes.png").write_text("not an image")
    good = (folder / "digit0.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    return folder, paths


def test_a_model_folder_needs_no_tracking_store_and_latest_is_the_newest(
    cli, registry_dir, image_files, tmp_path, monkeypatch
):
    import tempfile

    from automl.tracking import checked_model_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the copy goes here
    folder = checked_model_folder("models:/reg/2", f"sqlite:///{registry_dir / 'mlflow.db'}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no tracking store here
    code, out, err = cli("predict", str(folder), str(image_files[1][0]), "--json")
    assert code == 0, err
    code, out, err = cli("evaluate", str(folder), "-o", str(tmp_path / "folder-eval"))
    assert code == 0, err
    assert "attached" not in out and not (elsewhere / "mlflow.db").exists()
    # Both ECEs, measured on the split evaluated: here the recorded test split, as at
    # registration, so the figure before scaling is the version's own tag.
    assert "ECE before temperature scaling" in out
    metrics = json.loads((tmp_path / "folder-eval" / "evaluation.json").read_text())["metrics"]
    client = mlflow_client(f"sqlite:///{registry_dir / 'mlflow.db'}")
    tags = client.get_model_version("reg", "2").tags
    assert metrics["ece_uncalibrated"] == pytest.approx(float(tags["ece_uncalibrated"]), abs=0.01)
    assert metrics["ece"] == pytest.approx(float(tags["ece"]), abs=0.01)

    monkeypatch.chdir(registry_dir)
    newest = max(int(v.version) for v in client.search_model_versions("name='reg'"))
    code, out, err = cli("evaluate", "models:/reg/latest", "-o", str(tmp_path / "latest-eval"))
    assert code == 0, err
    assert f"attached to version {newest} of 'reg'" in out


def test_predict_png_and_jpeg_files_and_folders(cli, image_files):
    folder, paths = image_files
    code, out, err = cli("predict", "models:/reg/2", str(folder), "--top-k", "3", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert sorted(Path(r["path"]).name for r in lines) == sorted(p.name for p in paths)
    for row in lines:
        probs = [p["probability"] for p in row["predictions"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001
    assert "skipped" in err and "notes.png" in err and "truncated.png" in err

    # The CLI's answer for a PNG equals the model's answer on the same pixels.
    model = load_image_model("models:/reg/2")
    pixels = np.asarray(Image.open(paths[0]))[None, ..., None]
    expected = model.predict(pixels)["label"][0]
    got = next(r for r in lines if r["path"].endswith("digit0.png"))["predictions"][0]["label"]
    assert got == expected

    code, out, _ = cli("predict", "models:/reg/2", str(paths[0]))
    assert code == 0 and "digit0.png" in out


def test_the_network_file_is_the_one_the_loaded_model_reads(cli, registry_dir):
    """Export, evaluate and retrain reuse it: no second download, no folder left behind."""
    model = load_image_model("models:/reg/2")
    path = model.network_file()
    assert path.is_file() and path.name == "network.pt2"
    assert not path.is_relative_to(registry_dir), path  # the checked copy, not the store's
    assert model.network_file() == path
    del model
    gc.collect()
    assert not path.exists()  # the copy goes with the model


def model_folder(registry_dir, version: int) -> Path:
    """Where the artifact store keeps a version's files."""
    client = mlflow_client(f"sqlite:///{registry_dir / 'mlflow.db'}")
    model_id = client.get_model_version(NAME, str(version)).source.removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    return Path(urllib.parse.urlparse(location).path)


def test_every_version_records_the_sha256_of_each_of_its_files(registry_dir):
    tags = version_tags(registry_dir, 2)
    folder = model_folder(registry_dir, 2)
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    files = {f for f in files if not f.startswith("evaluation/")}  # reports, attached later
    assert {"MLmodel", "artifacts/network.pt2", "artifacts/params.json",
            "code/automl_serving.py"} <= files  # fmt: skip
    recorded = VersionTags.of(tags).file_digests
    for name in files:
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert recorded[name] == digest


def test_a_model_changed_in_the_artifact_store_is_refused_before_its_code_runs(
    cli, registry_dir, image_files
):
    _, paths = image_files
    code_file = model_folder(registry_dir, 2) / "code" / "automl_serving.py"
    original = code_file.read_bytes()
    marker = registry_dir / "the-injected-code-ran"
    code_file.write_bytes(original + f"\nopen({str(marker)!r}, 'w').close()\n".encode())
    try:
        commands = [
            ("predict", "models:/reg/2", str(paths[0])),
            ("serve", "models:/reg/2"),
            ("export", "models:/reg/2", "-o", str(registry_dir / "x.onnx")),
        ]
        for command in commands:
            code, out, err = cli(*command)
            assert code == 2, (command, out, err)
            assert "models:/reg/2: its files differ from those recorded" in err
            assert "changed or missing: code/automl_serving.py" in err
            assert len(err.strip().splitlines()) == 1, err
        assert not marker.exists()
    finally:
        code_file.write_bytes(original)
    code, _, err = cli("predict", "models:/reg/2", str(paths[0]))
    assert code == 0, err


def test_predict_refuses_when_nothing_is_readable_and_models_not_ours(cli, registry_dir):
    bad = registry_dir / "only-bad.png"
    bad.write_text("nope")
    code, _, err = cli("predict", "models:/reg/2", str(bad))
    assert code == 2 and "no readable image among 1 paths" in err

    import mlflow.sklearn
    from sklearn.dummy import DummyClassifier

    foreign = registry_dir / "foreign-model"
    if not foreign.exists():
        mlflow.sklearn.save_model(DummyClassifier().fit([[0], [1]], [0, 1]), foreign)
    code, _, err = cli("predict", str(foreign), str(bad))
    assert code == 2 and "not an automl image model" in err


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_export_matches_the_registered_network(cli, registry_dir, fmt):
    output = registry_dir / f"model.{fmt}"
    code, out, err = cli("export", "models:/reg/2", "--format", fmt, "-o", str(output))
    assert code == 0, err
    assert output.exists() and not list(registry_dir.glob(".*.draft"))  # checked, moved
    sidecar = json.loads(Path(f"{output}.json").read_text())
    assert sidecar["format"] == fmt and sidecar["classes"] == [str(i) for i in range(10)]
    assert "max abs difference from the registered network" in out
    diff = float(out.split("network: ")[1].split()[0])
    assert diff <= 1e-4


def test_onnx_export_predicts_like_the_model(registry_dir, digits):
    import onnxruntime

    path = registry_dir / "model.onnx"
    if not path.exists():
        pytest.skip("made by the export test")
    model = load_image_model("models:/reg/2")
    pre = model.preprocess
    x = (digits.test.images.float() / 255 - pre["mean"][0]) / pre["std"][0]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    expected = model.predict(digits.test.hwc())["class_index"].to_numpy()
    assert np.array_equal(logits.argmax(1), expected)


def post(port: int, payload: dict) -> list[dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["predictions"]


def refused(port: int, payload: dict) -> str:
    """The scoring server's answer to a request the signature does not allow: 400 and why."""
    with pytest.raises(urllib.error.HTTPError) as caught:
        post(port, payload)
    assert caught.value.code == 400
    return str(json.loads(caught.value.read())["message"])


def test_automl_serve_answers_like_predict(cli, registry_dir, image_files, digits):
    """`automl serve` checks the files, then MLflow's scoring server serves the copy."""
    _, paths = image_files
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen(
        automl_command("serve", "models:/reg@champion", "-p", str(port),
                       "--tracking-uri", f"sqlite:///{registry_dir / 'mlflow.db'}"),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_http(
            f"http://127.0.0.1:{port}/ping", limit=120, process=server,
            output=lambda: server.communicate()[1][-2000:],
        )  # fmt: skip
        holder = champion(registry_dir)
        code, out, _ = cli("predict", f"models:/reg/{holder}", *map(str, paths), "--json")
        assert code == 0
        expected = {
            Path(r["path"]).name: r["predictions"][0]["label"]
            for r in map(json.loads, out.splitlines())
        }

        # The signature's form: uint8 pixels at the training size, as the files decode.
        arrays = [np.asarray(Image.open(p).convert("L").resize((8, 8))) for p in paths]
        pixels = np.stack(arrays)[..., None]
        served = post(port, {"inputs": pixels.astype(int).tolist()})
        local = load_image_model(f"models:/reg/{holder}").predict(pixels)
        assert [s["label"] for s in served] == list(local["label"])
        assert [s["label"] for s in served][:3] == [expected[p.name] for p in paths][:3]

        arrays = digits.test.hwc()[:5]
        served = post(port, {"inputs": arrays.astype(int).tolist()})
        local = load_image_model(f"models:/reg/{holder}").predict(arrays)
        assert [s["label"] for s in served] == list(local["label"])
        assert [s["probability"] for s in served] == pytest.approx(list(local["probability"]))

        # Requests the signature does not allow are refused with the reason, not scored.
        message = refused(port, {"inputs": arrays[:, :4, :4].astype(int).tolist()})
        assert "Shape of input (5, 4, 4, 1) does not match expected shape (-1, 8, 8, 1)" in message
        message = refused(port, {"inputs": (arrays.astype(int) + 300).tolist()})
        assert "out of bounds for uint8" in message
        encoded = base64.b64encode(paths[0].read_bytes()).decode()
        message = refused(port, {"dataframe_split": {"columns": ["image"], "data": [[encoded]]}})
        assert "Failed to convert column image to type 'uint8'" in message
    finally:
        server.terminate()
        server.wait(timeout=30)
