"""Logging and loading self-contained image models (pt2 network + preprocessing + code)."""

from __future__ import annotations

import json
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
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

from automl.errors import ConfigError
from automl.serving.automl_serving import predict_frame
from automl.tracking.common import client_for, first_line

SERVING = Path(__file__).resolve().parent.parent / "serving"
PYFUNC_CODE = SERVING / "pyfunc_model.py"
SERVING_CODE = SERVING / "automl_serving.py"
METADATA_KEY = "automl"
OUTPUT_SCHEMA = Schema(
    [
        ColSpec("string", "label"),
        ColSpec("long", "class_index"),
        ColSpec("double", "probability"),
    ]
)


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


def log_image_model(
    run_id: str,
    network: torch.nn.Module,
    preprocess: Mapping[str, Any],
    example: np.ndarray,
) -> str:
    """Log the model under ``run_id``; returns its ``models:/m-...`` URI.

    The input is not schema-enforced on purpose: the model accepts arrays, lists of images
    of any size and encoded image bytes (see ``automl_serving``), and checks them itself.
    """
    program = export_network(network, preprocess)
    predict_frame(program.module(), preprocess, example)  # fail now, not when served
    with tempfile.TemporaryDirectory() as folder:
        network_path = Path(folder, "network.pt2")
        torch.export.save(program, str(network_path))
        preprocess_path = Path(folder, "preprocess.json")
        preprocess_path.write_text(json.dumps(dict(preprocess), indent=2))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_CODE),
                code_paths=[str(SERVING_CODE)],
                artifacts={"network": str(network_path), "preprocess": str(preprocess_path)},
                signature=ModelSignature(inputs=None, outputs=OUTPUT_SCHEMA),
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
        frame: pd.DataFrame = self.pyfunc.predict(images)
        return frame

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        predicted = self.predict(images)["class_index"].to_numpy()
        return float((predicted == labels).mean())

    def accuracy_by_name(self, images: np.ndarray, names: Sequence[str]) -> float:
        """Accuracy against true class names, for data whose class order is not the model's."""
        predicted = self.predict(images)["label"].astype(str).to_numpy()
        return float((predicted == np.asarray(names, dtype=str)).mean())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The network's parameters and buffers under their original names."""
        program = torch.export.load(str(self.network_file()))
        return {**program.state_dict, **program.constants}

    def network_file(self) -> Path:
        """The model's ``network.pt2``: the file the loaded model itself reads (MLflow
        fetched it already when the model lives on a server), else one download kept for
        this object's lifetime, so nothing is fetched twice or left behind."""
        context = getattr(getattr(self.pyfunc, "_model_impl", None), "context", None)
        path = (getattr(context, "artifacts", None) or {}).get("network")
        if path and Path(path).is_file():
            return Path(path)
        if self._download is None:
            self._download = tempfile.TemporaryDirectory(prefix="automl-model-")
            local = mlflow.artifacts.download_artifacts(self.uri, dst_path=self._download.name)
            self._network = Path(local, "artifacts", "network.pt2")
        return self._network


def load_image_model(uri: str, tracking_uri: str | None = None) -> ImageModel:
    """Load ``models:/name@alias``, ``models:/name/3`` or a model folder; it must be ours."""
    if tracking_uri is not None:
        client_for(tracking_uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{uri}: cannot load the model: {first_line(exc)}") from None
    metadata = pyfunc.metadata.metadata or {}
    if METADATA_KEY not in metadata:
        raise ConfigError(f"{uri}: not an automl image model (its MLmodel has no automl metadata)")
    return ImageModel(uri, pyfunc, dict(metadata[METADATA_KEY]))
