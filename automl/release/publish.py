"""Publishing a trained network: logged as a self-contained model under a run, registered
as a new version, reloaded once to check it scores as it did before logging.

The search's conclusion and ``automl retrain`` both publish through here; the flat params
travel with every version (model metadata and ``params.json``) so its configuration can be
rebuilt without the study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from automl.data import ImageData, split_digest
from automl.tracking import Registry, load_image_model, log_image_model
from automl.tracking.models import describe_io
from automl.training.calibration import calibrate

CPU = torch.device("cpu")


def preprocessing(data: ImageData) -> dict[str, Any]:
    """What travels with a registered model so prediction repeats training's preprocessing."""
    return {
        "image_size": list(data.image_size),
        "channels": data.channels,
        "mean": list(data.mean),
        "std": list(data.std),
        "classes": list(data.classes),
        "dataset": data.spec or data.name,
        "data_digest": data.digest(),
        "test_digest": split_digest(data.test),
        "input": "uint8 images (N, H, W, C); resized and converted to the training shape",
    }


@dataclass(frozen=True)
class NewVersion:
    """What a new version of ``model_name`` records: the run that trained it (its source
    run), its flat params, its tags, what prediction repeats of training's preprocessing
    (default: ``preprocessing(data)``) and a temperature already fitted, if any."""

    model_name: str
    run_id: str
    params: dict[str, Any]
    tags: dict[str, str]
    preprocess: dict[str, Any] | None = None
    temperature: float | None = None


def publish(
    model: torch.nn.Module,
    data: ImageData,
    new: NewVersion,
    *,
    registry: Registry,
    device: torch.device = CPU,
) -> tuple[int, float]:
    """Log ``model`` under ``new.run_id`` (the run that trained it, so the version's source
    run is that run) as a self-contained model and register it as a new version of
    ``new.model_name``; returns the version and the reloaded model's test accuracy.

    The model is calibrated first (a temperature fitted on the validation split, kept in
    the exported network); the version's tags ``temperature``, ``ece_uncalibrated`` and
    ``ece`` (test split) say what it changed. ``temperature``: one already fitted (a
    refit model has trained on the validation split).

    The flat params travel with the version (model metadata, and ``params.json`` beside the
    network), so the exact configuration can be rebuilt later (retraining) without the
    study that found it; the version's tags stay short.
    """
    # The temperature is kept inside the model; ``device`` computes its figures.
    model, calibration = calibrate(model, data, new.temperature, device=device)
    preprocess = {**(new.preprocess or preprocessing(data)), "params": new.params}
    tags = {**new.tags, **{name: f"{value:.4f}" for name, value in calibration.items()}}
    model_uri = log_image_model(
        new.run_id, model, preprocess, example=data.test.hwc()[:4], params=new.params
    )
    version = registry.register(new.model_name, model_uri, tags, describe_io(preprocess))
    reloaded = load_image_model(f"models:/{new.model_name}/{version}").accuracy(
        data.test.hwc(), data.test.labels.numpy()
    )
    return version, reloaded
