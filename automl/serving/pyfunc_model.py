"""The prediction code logged with every registered model (MLflow "models from code").

MLflow runs this file when the model is loaded, so it depends on torch, numpy, pandas and
mlflow only: a registered model predicts anywhere those are installed, with no automl and
no unpickling (the network is a ``torch.export`` program; the preprocessing a JSON file).
Input: uint8 images, ``(N, H, W, C)`` or ``(N, H, W)``, any size or channel count; they are
converted to the training channels and size exactly as in training, then normalised.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from mlflow.pyfunc.model import PythonModel

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


def to_tensor(images: Any, preprocess: Mapping[str, Any]) -> torch.Tensor:
    """Raw uint8 HWC images -> the normalised NCHW float batch the network was trained on."""
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8 arrays, got dtype {array.dtype}")
    if array.ndim == 3:  # (N, H, W): grayscale batch
        array = array[..., None]
    if array.ndim != 4:
        raise ValueError(f"expected images shaped (N, H, W, C), got shape {array.shape}")
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()
    x = match_channels(x, int(preprocess["channels"]))
    x = resize(x, tuple(preprocess["image_size"]))
    mean = torch.tensor(preprocess["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(preprocess["std"]).view(1, -1, 1, 1)
    return (x / 255.0 - mean) / std


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    have = x.shape[1]
    if have == 4:  # RGBA: drop alpha
        x, have = x[:, :3], 3
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True)
    raise ValueError(f"cannot turn {have}-channel images into {channels}-channel images")


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear with antialiasing: the one resize used for training data and for prediction."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.clamp(0.0, 255.0)


def predict_frame(
    network: Callable[[torch.Tensor], torch.Tensor],
    preprocess: Mapping[str, Any],
    images: Any,
    batch_size: int = 512,
) -> pd.DataFrame:
    x = to_tensor(images, preprocess)
    with torch.no_grad():
        logits = torch.cat([network(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    probs = torch.softmax(logits.float(), dim=1)
    best = probs.argmax(dim=1)
    classes = list(preprocess["classes"])
    return pd.DataFrame(
        {
            "label": [classes[i] for i in best.tolist()],
            "class_index": best.numpy().astype(np.int64),
            "probability": probs.max(dim=1).values.double().numpy(),
            "probabilities": [row for row in probs.double().numpy()],
        }
    )


class ImageClassifier(PythonModel):
    def load_context(self, context: Any) -> None:
        self.preprocess = json.loads(Path(context.artifacts["preprocess"]).read_text())
        self.network = torch.export.load(context.artifacts["network"]).module()

    # ndarray is a hint MLflow accepts without deriving a schema from it; the signature rules.
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return predict_frame(self.network, self.preprocess, model_input)


mlflow.models.set_model(ImageClassifier())
