"""The SHA-256 record of a registered model's files, and the check made before loading."""

from __future__ import annotations

import hashlib

import pytest

from automl.environment import ALLOW_UNVERIFIED_MODELS
from automl.errors import ConfigError
from automl.records import VersionTags
from automl.tracking.integrity import digest_tags, file_digests, verify


@pytest.fixture
def model(tmp_path):
    folder = tmp_path / "model"
    (folder / "code").mkdir(parents=True)
    (folder / "artifacts").mkdir()
    (folder / "MLmodel").write_text("python_function: {}\n")
    (folder / "code" / "automl_serving.py").write_text("def predict(): ...\n")
    (folder / "artifacts" / "network.pt2").write_bytes(b"\x00" * 1000)
    (folder / "registered_model_meta").write_text("model_name: x\n")  # MLflow's, local
    return folder


def test_every_file_is_recorded_by_relative_path(model):
    digests = file_digests(model)
    assert set(digests) == {"MLmodel", "code/automl_serving.py", "artifacts/network.pt2"}
    assert digests["artifacts/network.pt2"] == hashlib.sha256(b"\x00" * 1000).hexdigest()
    assert VersionTags.of(digest_tags(model)).file_digests == digests


def test_the_files_as_registered_pass(model):
    verify(model, digest_tags(model), "models:/m/1")


def test_reports_attached_after_registration_are_not_part_of_the_record(model):
    tags = digest_tags(model)
    (model / "evaluation").mkdir()
    (model / "evaluation" / "evaluation.json").write_text("{}")
    verify(model, tags, "models:/m/1")
    assert "evaluation/evaluation.json" not in file_digests(model)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda m: (m / "code" / "automl_serving.py").write_text("import os\n"),
         "changed or missing: code/automl_serving.py"),
        (lambda m: (m / "artifacts" / "network.pt2").unlink(),
         "changed or missing: artifacts/network.pt2"),
        (lambda m: (m / "code" / "extra.py").write_text("x = 1\n"), "added: code/extra.py"),
        (lambda m: (m / "artifacts" / "link").symlink_to("/etc/passwd"), "added: artifacts/link"),
    ],
)  # fmt: skip
def test_a_modified_model_is_refused_in_one_line(model, change, said):
    tags = {**digest_tags(model), "other": "tag"}
    change(model)
    with pytest.raises(ConfigError) as refused:
        verify(model, tags, "models:/m/1")
    message = str(refused.value)
    assert message.startswith("models:/m/1: its files differ from those recorded")
    assert said in message and "\n" not in message


def test_a_version_without_a_record_is_refused_unless_allowed(model, monkeypatch):
    with pytest.raises(ConfigError, match="no SHA-256 of its files was recorded"):
        verify(model, {"test_acc": "0.9"}, "models:/m/1")
    monkeypatch.setenv(ALLOW_UNVERIFIED_MODELS.name, "1")
    verify(model, {"test_acc": "0.9"}, "models:/m/1")
