"""The SHA-256 record of a registered version is one tag, so the version's page opens on
its figures; versions recorded the old way, a tag a file, are still checked."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from automl.errors import ConfigError
from automl.records import VersionTag
from automl.tracking import Registry
from automl.tracking.common import client_for
from automl.tracking.integrity import digest_tags, file_digests, verify
from automl.tracking.models import verified_copy
from tests.tracking.test_integrity import model  # noqa: F401  (the fixture)

OLD_PREFIX = "automl.sha256/"
SERVING_CODE = "serving_code.py"


def old_style(digests: dict[str, str]) -> dict[str, str]:
    """The tags versions were registered with before: one a file."""
    return {OLD_PREFIX + path: digest for path, digest in digests.items()}


def test_the_record_is_one_tag_of_json(model):  # noqa: F811
    tags = digest_tags(model)
    assert list(tags) == [VersionTag.FILE_DIGESTS]
    assert json.loads(tags[VersionTag.FILE_DIGESTS]) == file_digests(model)


@pytest.mark.hostile("security")
def test_a_changed_file_is_refused_against_either_form_of_the_record(model):  # noqa: F811
    records = (digest_tags(model), old_style(file_digests(model)))
    for tags in records:
        verify(model, tags, "models:/m/1")
    (model / "MLmodel").write_text("python_function: {loader_module: evil}\n")
    for tags in records:
        with pytest.raises(ConfigError, match="changed or missing: MLmodel"):
            verify(model, tags, "models:/m/1")


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A real version registered through ``Registry.register``: (client, name, version)."""
    import mlflow

    folder: Path = tmp_path_factory.mktemp("digest-tag")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = client_for(uri)
    code = folder / SERVING_CODE
    code.write_text("ANSWER = 42\n")

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context: object, model_input: list[str]) -> list[str]:
            return model_input

    with mlflow.start_run():
        logged = mlflow.pyfunc.log_model(
            name="model", python_model=Echo(), code_paths=[str(code)], pip_requirements=[]
        )
    version = Registry(uri).register("digests", logged.model_uri, {VersionTag.TEST_ACC: "0.9"})
    return client, "digests", str(version)


def stored_file(client, name: str, version: str, path: str) -> Path:
    """A file of the version as the artifact store keeps it."""
    model_id = client.get_model_version(name, version).source.removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    return Path(urllib.parse.urlparse(location).path, path)


def load(client, name: str, version: str, folder: Path) -> Path:
    """The checked copy loading makes (what ``predict``, ``serve`` and ``export`` load)."""
    return Path(
        verified_copy(client, name, None, version, folder, what=f"models:/{name}/{version}")
    )


def tampered_code_is_refused(client, name: str, version: str, folder: Path) -> None:
    code = stored_file(client, name, version, f"code/{SERVING_CODE}")
    original = code.read_bytes()
    code.write_bytes(original + b"\nimport os\n")
    try:
        with pytest.raises(ConfigError) as refused:
            load(client, name, version, folder)
    finally:
        code.write_bytes(original)
    message = str(refused.value)
    assert "its files differ from those recorded" in message, message
    assert f"changed or missing: code/{SERVING_CODE}" in message and "\n" not in message


@pytest.mark.slow
def test_a_new_version_records_its_files_in_one_tag(registered, tmp_path):
    client, name, version = registered
    tags = client.get_model_version(name, version).tags
    assert not [key for key in tags if key.startswith(OLD_PREFIX)]
    digests = json.loads(tags[VersionTag.FILE_DIGESTS])
    assert {"MLmodel", f"code/{SERVING_CODE}", "python_model.pkl"} <= set(digests)
    assert all(len(digest) == 64 for digest in digests.values())
    assert file_digests(load(client, name, version, tmp_path)) == digests


@pytest.mark.slow
@pytest.mark.hostile("security")
def test_a_file_changed_after_registration_is_refused(registered, tmp_path):
    tampered_code_is_refused(*registered, tmp_path)


@pytest.mark.slow
@pytest.mark.hostile("consistency")
def test_a_version_recorded_a_tag_a_file_is_still_checked(registered, tmp_path):
    client, name, version = registered
    digests = json.loads(client.get_model_version(name, version).tags[VersionTag.FILE_DIGESTS])
    client.delete_model_version_tag(name, version, VersionTag.FILE_DIGESTS)
    for key, digest in old_style(digests).items():
        client.set_model_version_tag(name, version, key, digest)
    try:
        load(client, name, version, tmp_path / "as-registered")
        tampered_code_is_refused(client, name, version, tmp_path / "tampered")
    finally:
        for key in old_style(digests):
            client.delete_model_version_tag(name, version, key)
        client.set_model_version_tag(name, version, VersionTag.FILE_DIGESTS, json.dumps(digests))


@pytest.mark.slow
@pytest.mark.hostile("stores")
def test_an_unreadable_record_is_refused_in_one_line(registered, tmp_path):
    client, name, version = registered
    kept = client.get_model_version(name, version).tags[VersionTag.FILE_DIGESTS]
    client.set_model_version_tag(name, version, VersionTag.FILE_DIGESTS, '["MLmodel"]')
    try:
        with pytest.raises(ConfigError, match="is not a JSON object of file path to SHA-256"):
            load(client, name, version, tmp_path)
    finally:
        client.set_model_version_tag(name, version, VersionTag.FILE_DIGESTS, kept)
