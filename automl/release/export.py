"""Exporting a registered model's network to ONNX, TorchScript or a pt2 file.

The network exported is the ``torch.export`` program the registered model serves, so an
export behaves like the served model. Every export is checked against that program on
sample inputs before the command succeeds, and a JSON file beside it carries the
preprocessing (input size, channels, normalisation, class names) needed to use it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from automl.errors import AutomlError, ConfigError
from automl.files import check_output_file, replacing, write_atomic
from automl.tracking import ImageModel

FORMATS = ("onnx", "torchscript", "pt2")
TOLERANCE = 1e-4
ONNX_NEEDS = {"onnxscript": "the exporter needs", "onnxruntime": "checking the file needs"}


class ExportMismatch(AutomlError):
    """The exported network does not reproduce the registered one."""


@dataclass(frozen=True)
class Exported:
    path: Path
    preprocess_path: Path
    max_abs_diff: float
    checked_inputs: int


def _samples(preprocess: dict[str, Any]) -> list[torch.Tensor]:
    channels, (height, width) = int(preprocess["channels"]), preprocess["image_size"]
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(n, channels, height, width, generator=gen) for n in (1, 5, 32)]


def _run_exported(fmt: str, path: Path) -> Any:
    if fmt == "onnx":
        import onnxruntime  # present: check_export made sure

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(np.asarray(session.run(None, {name: x.numpy()})[0]))
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    return torch.export.load(str(path)).module()


def check_export(fmt: str, output: Path) -> None:
    """The options, checked before the model is fetched (and the ONNX tools, before any
    file is written: an export that cannot be checked is not made)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got '{fmt}'")
    if output.is_dir():
        raise ConfigError(f"-o: {output} is a folder; name the file, e.g. {output / 'model'}.{fmt}")
    check_output_file(output)
    if fmt == "onnx":
        for module, why in ONNX_NEEDS.items():
            if importlib.util.find_spec(module) is None:
                raise ConfigError(f"--format onnx: {why} {module}: pip install 'automl[onnx]'")


def export_model(model: ImageModel, fmt: str, output: Path) -> Exported:
    """Write the export to a draft beside ``output``, check it, then move it into place:
    ``output`` only ever holds a checked export, and its JSON file is in place first.
    Both replace what is there in one rename each, never writing through a link."""
    check_export(fmt, output)
    preprocess_path = output.with_name(output.name + ".json")
    try:
        with replacing(output) as draft:
            diff, count = _export_and_check(model, fmt, draft)
            write_atomic(preprocess_path, json.dumps({"format": fmt, **model.preprocess}, indent=2))
    except OSError as exc:
        raise ConfigError(f"-o {output}: cannot write it: {exc.strerror or exc}") from None
    return Exported(output, preprocess_path, diff, count)


def _export_and_check(model: ImageModel, fmt: str, path: Path) -> tuple[float, int]:
    program = torch.export.load(str(model.network_file()))
    reference = program.module()
    samples = _samples(model.preprocess)
    if fmt == "pt2":
        shutil.copyfile(model.network_file(), path)
    elif fmt == "torchscript":
        with warnings.catch_warnings():  # deprecated upstream, still what many runtimes load
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(reference, samples[1])  # type: ignore[no-untyped-call]
            traced.save(str(path))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(program, (samples[1],), str(path), dynamo=True, verbose=False)
    exported = _run_exported(fmt, path)
    diff = 0.0
    with torch.no_grad():
        for x in samples:
            diff = max(diff, float((exported(x) - reference(x)).abs().max()))
    if not diff <= TOLERANCE:
        raise ExportMismatch(
            f"the {fmt} export differs from the registered network by {diff:.3g} "
            f"(limit {TOLERANCE}); nothing was written"
        )
    return diff, len(samples)
