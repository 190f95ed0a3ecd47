"""Logging and loading self-contained image models (pt2 network + preprocessing + code)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Array, ColSpec, DataType, Schema, TensorSpec

from automl.errors import ConfigError
from automl.serving.automl_serving import predict_frame
from automl.tracking.common import REGISTERED, client_for, first_line
from automl.tracking.integrity import verify

SERVING = Path(__file__).resolve().parent.parent / "serving"
PYFUNC_CODE = SERVING / "pyfunc_model.py"
SERVING_CODE = SERVING / "automl_serving.py"
METADATA_KEY = "automl"
OUTPUT_SCHEMA = Schema(
    [
        ColSpec("string", "label"),
        ColSpec("long", "class_index"),
        ColSpec("double", "probability"),
        ColSpec(Array(DataType.double), "probabilities"),
    ]
)
PARAMS_FILE = "params.json"  # the configuration, beside the network in the model's artifacts


def _requirements() -> list[str]:
    import PIL

    def release(version: str) -> str:
        return version.split("+", 1)[0]

    return [
        f"mlflow=={release(mlflow.__version__)}",
        f"torch=={release(torch.__version__)}",
        f"numpy=={release(np.__version__)}",
        f"pandas=={release(pd.__version__)}",
        f"pillow=={release(PIL.__version__)}",
    ]


def export_network(network: torch.nn.Module, preprocess: Mapping[str, Any]) -> Any:
    """``torch.export`` the network in eval mode with a dynamic batch dimension."""
    network = network.eval().cpu()
    height, width = preprocess["image_size"]
    sample = torch.zeros((2, int(preprocess["channels"]), int(height), int(width)))
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(network, (sample,), dynamic_shapes=({0: batch},))


def input_schema(preprocess: Mapping[str, Any]) -> Schema:
    """The one input form MLflow checks: a batch of uint8 images at the training size and
    channels, ``(-1, H, W, C)``. A signature holds one schema, and this is the form every
    caller can produce (the input example is one); the model's own code also takes other
    sizes and encoded files, but only where it is called directly (``ImageModel``)."""
    return Schema([TensorSpec(np.dtype(np.uint8), input_shape(preprocess))])


def input_shape(preprocess: Mapping[str, Any]) -> tuple[int, int, int, int]:
    height, width = (int(side) for side in preprocess["image_size"])
    return (-1, height, width, int(preprocess["channels"]))


def describe_io(preprocess: Mapping[str, Any]) -> str:
    """What a registered version takes and gives, for its page (Markdown): the signature
    holds one input form, the model's own code accepts more."""
    shape = input_shape(preprocess)
    return (
        f"**Input**: a batch of uint8 images `{shape}` (N, height, width, channels), the "
        "signature: MLflow checks every request against it (`mlflow models serve`, "
        "`mlflow.pyfunc`). Through automl (`automl predict`, `load_image_model`) the model "
        "also takes images of any size and channel count, and encoded files (PNG, JPEG; bytes "
        "or base64, in a list or an `image` column), converted as in training.\n\n"
        "**Output**: one row per image: `label`, `class_index`, `probability`, "
        f"`probabilities`. The configuration that trained it: `artifacts/{PARAMS_FILE}`."
    )


def log_image_model(
    run_id: str,
    network: torch.nn.Module,
    preprocess: Mapping[str, Any],
    example: np.ndarray,
    params: Mapping[str, Any] | None = None,
) -> str:
    """Log the model under ``run_id`` (which may be finished: its status and end time are
    left as they are); returns its ``models:/m-...`` URI. ``params``, the configuration
    that trained it, are written beside the network as ``params.json``."""
    program = export_network(network, preprocess)
    predict_frame(program.module(), preprocess, example)  # fail now, not when served
    with tempfile.TemporaryDirectory() as folder:
        network_path = Path(folder, "network.pt2")
        torch.export.save(program, str(network_path))
        files = {"network": network_path, "preprocess": Path(folder, "preprocess.json")}
        files["preprocess"].write_text(json.dumps(dict(preprocess), indent=2))
        if params is not None:
            files["params"] = Path(folder, PARAMS_FILE)
            files["params"].write_text(json.dumps(dict(params), indent=2, sort_keys=True))
        # Not start_run(run_id): reopening a finished run sets it RUNNING, then FINISHED
        # again with a new end time. The logged model is made in the run's own experiment.
        run = MlflowClient().get_run(run_id)
        logged = mlflow.initialize_logged_model(
            name="model", source_run_id=run_id, experiment_id=run.info.experiment_id,
            params=dict(run.data.params),
        )  # fmt: skip
        info = Model.log(
            artifact_path=None,
            name="model",
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            python_model=str(PYFUNC_CODE),
            code_paths=[str(SERVING_CODE)],
            artifacts={key: str(path) for key, path in files.items()},
            signature=ModelSignature(inputs=input_schema(preprocess), outputs=OUTPUT_SCHEMA),
            input_example=example,
            pip_requirements=_requirements(),
            metadata={METADATA_KEY: dict(preprocess)},
        )
    return str(info.model_uri)


@dataclass
class ImageModel:
    """A loaded automl model: predictions plus the preprocessing it carries."""

    uri: str
    pyfunc: Any
    preprocess: dict[str, Any]
    _download: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    _network: Path = field(default=Path(), repr=False)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.preprocess["classes"]]

    def predict(self, images: Any) -> pd.DataFrame:
        """Every input form the model's code accepts (any size, lists, encoded files): the
        model is called directly, past MLflow's check of the signature's one form."""
        frame: pd.DataFrame = self.pyfunc.unwrap_python_model().predict(None, images)
        return frame

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        predicted = self.predict(images)["class_index"].to_numpy()
        return float((predicted == labels).mean())

    def accuracy_by_name(self, images: np.ndarray, names: Sequence[str]) -> float:
        """Accuracy against true class names, for data whose class order is not the model's."""
        predicted = self.predict(images)["label"].astype(str).to_numpy()
        return float((predicted == np.asarray(names, dtype=str)).mean())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The network's parameters and buffers under their original names (inside the
        calibrating and mirroring wrappers); of an ensemble, its first member's: the best
        trial, whose params the version carries."""
        program = torch.export.load(str(self.network_file()))
        state = {**program.state_dict, **program.constants}
        if "temperature" in state:  # a calibrated network: the weights are the wrapped one's
            state = _inside(state, "network.")
        if "mirrored" in state:  # mirrored at test time: the same network, seen twice
            state = _inside(state, "network.")
        if any(k.startswith(ENSEMBLE_FIRST) for k in state):  # an ensemble: its best member
            state = _inside(state, ENSEMBLE_FIRST)
            if "temperature" in state:  # each member carries its own temperature
                state = _inside(state, "network.")
        return state

    @property
    def temperature(self) -> float | None:
        """The temperature the served logits are divided by last (of an ensemble: the one
        fitted to the averaged members), None for a network without one."""
        program = torch.export.load(str(self.network_file()))
        value = {**program.state_dict, **program.constants}.get("temperature")
        return None if value is None else float(value)

    def network_file(self) -> Path:
        """The model's ``network.pt2``: the file the loaded model itself reads (the
        checked copy of a registered version), else one download kept for this object's
        lifetime, so nothing is fetched twice or left behind."""
        context = getattr(getattr(self.pyfunc, "_model_impl", None), "context", None)
        path = (getattr(context, "artifacts", None) or {}).get("network")
        if path and Path(path).is_file():
            return Path(path)
        if self._download is None:
            self._download = tempfile.TemporaryDirectory(prefix="automl-model-")
            local = mlflow.artifacts.download_artifacts(self.uri, dst_path=self._download.name)
            self._network = Path(local, "artifacts", "network.pt2")
        return self._network


ENSEMBLE_FIRST = "members.0."  # training/ensemble.py: the best trial is the first member


def _inside(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix``, named as inside it."""
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


SHORTHAND = re.compile(r"[^/@:]+(?:@[^/]+|/(?:\d+|latest))")  # a registered name, no scheme


def load_image_model(uri: str, tracking_uri: str | None = None) -> ImageModel:
    """Load ``models:/name@alias``, ``models:/name/3`` or a model folder; it must be ours.

    A registered version is copied, checked against the SHA-256 of its files recorded at
    registration (see ``integrity``), and loaded from the checked copy."""
    download: tempfile.TemporaryDirectory[str] | None = None
    source = uri
    try:
        if match := REGISTERED.fullmatch(uri):  # a folder needs no tracking store
            client = client_for(tracking_uri, create=False) if tracking_uri else MlflowClient()
            download = tempfile.TemporaryDirectory(prefix="automl-model-")
            name, alias, number = match.groups()
            source = verified_copy(client, name, alias, number, Path(download.name), what=uri)
        pyfunc = mlflow.pyfunc.load_model(source)
    except (MlflowException, OSError, ValueError, TypeError) as exc:
        if SHORTHAND.fullmatch(uri) and not Path(uri).exists():  # `name@alias`, `name/3`
            raise ConfigError(f"{uri}: no such model folder; a registered model is "
                              f"models:/{uri}") from None  # fmt: skip
        raise ConfigError(f"{uri}: cannot load the model: {first_line(exc)}") from None
    metadata = pyfunc.metadata.metadata or {}
    if METADATA_KEY not in metadata:
        raise ConfigError(f"{uri}: not an automl image model (its MLmodel has no automl metadata)")
    return ImageModel(uri, pyfunc, dict(metadata[METADATA_KEY]), _download=download)


def checked_model_folder(uri: str, tracking_uri: str) -> Path:
    """A folder holding a checked copy of the registered version ``uri`` names, left in
    place for a server to load (see ``automl serve``)."""
    match = REGISTERED.fullmatch(uri)
    if match is None:
        raise ConfigError(f"{uri}: not a registered model (models:/NAME@ALIAS or models:/NAME/V)")
    name, alias, number = match.groups()
    _remove_dead_copies()
    folder = Path(tempfile.mkdtemp(prefix=f"{SERVE_PREFIX}{os.getpid()}-"))  # execv keeps it
    try:
        client = client_for(tracking_uri, create=False)
        return Path(verified_copy(client, name, alias, number, folder, what=uri))
    except BaseException as exc:  # refused or failed: nothing is left behind
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, MlflowException):
            raise ConfigError(f"{uri}: cannot fetch the model: {first_line(exc)}") from None
        raise


SERVE_PREFIX = "automl-serve-"  # then the pid of the server that reads the copy


def _remove_dead_copies() -> None:
    """The copies of servers that have stopped: a server replaces this process (execv),
    so nothing is left to remove its copy but the next start."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SERVE_PREFIX}*-*"):
        pid = folder.name.removeprefix(SERVE_PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def verified_copy(
    client: MlflowClient,
    name: str,
    alias: str | None,
    number: str | None,
    folder: Path,
    *,
    what: str,
) -> str:
    """Copy one registered version's files into ``folder`` and check them; returns the
    copy's path. An alias is resolved to its version first, so the files checked and the
    tags they are checked against belong to the same version even if the alias moves."""
    if alias is not None:
        version = client.get_model_version_by_alias(name, alias)
    elif number == "latest":
        quoted = name.replace("'", "\\'")
        found = client.search_model_versions(f"name = '{quoted}'")
        if not found:
            raise ConfigError(f"{what}: model '{name}' has no versions")
        version = max(found, key=lambda v: int(v.version))
    else:
        version = client.get_model_version(name, str(number))
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{name}/{version.version}", dst_path=str(folder)
        )
    )
    verify(local, dict(version.tags or {}), what)
    return str(local)
