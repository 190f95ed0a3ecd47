"""Turning raw images into predictions: the code every registered model carries with it.

It depends on torch, numpy, pandas and Pillow only, so it runs wherever the model is
served, with no automl installed. Inputs may be

- a uint8 array ``(N, H, W, C)`` or ``(N, H, W)`` (or nested lists of 0..255 numbers),
- a list of such ``(H, W[, C])`` images of different sizes,
- encoded image files (PNG, JPEG, ...) as ``bytes`` or base64 text, alone, in a list, or
  in the ``image`` column of a DataFrame.

Images are converted to the training channels and size exactly as in training, then
normalised with the training statistics.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")
MAX_PIXELS = 40_000_000  # larger images are refused before decoding: decompression bombs
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


class ImageInputError(ValueError):
    """An input that is not a usable image; the message says which and why."""


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> uint8 ``(H, W, 1)`` (grayscale) or ``(H, W, 3)`` array.

    The size is read from the header and checked before any pixel is decoded, so a
    decompression bomb costs no memory; truncated files are refused, not half-read.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageInputError(
                    f"image of {width}x{height} pixels is larger than the limit of "
                    f"{max_pixels:,} pixels"
                )
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # a photo's orientation tag
            array = _to_8_bit(image)
    except ImageInputError:
        raise
    except Image.DecompressionBombError:
        raise ImageInputError(
            f"image larger than the limit of {max_pixels:,} pixels (decompression bomb?)"
        ) from None
    except UnidentifiedImageError:
        raise ImageInputError("not a readable image (unknown format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageInputError(f"damaged image: {exc}") from None
    return array[..., None] if array.ndim == 2 else array


def _to_8_bit(image: Image.Image) -> np.ndarray:
    """Gray or RGB uint8 pixels, whatever the mode. Pillow's own conversion clips 16-bit,
    32-bit and float gray to 0..255 (a 16-bit image turns white), so those are rescaled by
    their depth: integers as 16-bit (0..65535), floats as 0..1, or as 0..255 when a value
    passes 1. Values outside that range are refused, not guessed at."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return np.asarray(image.convert("L" if image.mode in GRAY_MODES else "RGB"), np.uint8)
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ImageInputError("float pixels that are not numbers (NaN or infinite)")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    kind = "float" if image.mode == "F" else "integer"
    top = (1.0 if high <= 1.0 else 255.0) if kind == "float" else 65535.0
    if low < 0.0 or high > top:
        raise ImageInputError(
            f"{kind} pixels span {low:g}..{high:g}, outside 0..{top:g}: "
            "save the images with 8 or 16 bits"
        )
    scaled: np.ndarray = np.rint(values * (255.0 / top)).astype(np.uint8)
    return scaled


def _decode_cell(value: Any) -> np.ndarray:
    if isinstance(value, bytes | bytearray | memoryview):
        return decode_image(bytes(value))
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ImageInputError("a text image must be base64-encoded image bytes") from None
        return decode_image(raw)
    return _as_uint8(np.asarray(value))


def _as_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "iuf" or array.size == 0:
        raise ImageInputError(f"images must be arrays of 0..255 numbers, got dtype {array.dtype}")
    if np.isnan(array).any() or array.min() < 0 or array.max() > 255:
        raise ImageInputError("pixel values must lie in 0..255")
    converted: np.ndarray = np.rint(array).astype(np.uint8)
    return converted


def as_images(model_input: Any) -> np.ndarray | list[np.ndarray]:
    """Normalise any accepted input to one uint8 batch or a list of uint8 images."""
    if isinstance(model_input, pd.DataFrame):
        column = "image" if "image" in model_input.columns else None
        if column is None and model_input.shape[1] == 1:
            column = model_input.columns[0]
        if column is None:
            raise ImageInputError("a DataFrame input needs an 'image' column")
        return [_decode_cell(v) for v in model_input[column]]
    if isinstance(model_input, Mapping) and "image" in model_input:
        return as_images(list(model_input["image"]))
    if isinstance(model_input, bytes | str):
        return [_decode_cell(model_input)]
    encoded = bytes | str
    if isinstance(model_input, Sequence) and model_input and isinstance(model_input[0], encoded):
        return [_decode_cell(v) for v in model_input]
    try:
        array = np.asarray(model_input)
    except ValueError:  # ragged nested lists: images of different sizes
        return [_as_uint8(np.asarray(v)) for v in model_input]
    if array.dtype == object:
        return [_decode_cell(v) for v in model_input]
    return _as_uint8(array)


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert channels; gray from color uses BT.601 luma, rounded like a stored image."""
    have = x.shape[1]
    if have in (2, 4):  # gray+alpha, RGBA: drop alpha
        x, have = x[:, : have - 1], have - 1
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True).round()
    raise ImageInputError(f"cannot turn {have}-channel images into {channels}-channel images")


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear with antialiasing, rounded to whole 0..255 values.

    The one resize used for training data (stored as uint8) and for prediction, so a
    served model sees exactly the pixels training saw.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return out.clamp(0.0, 255.0).round()


def prepare(image: np.ndarray, channels: int, size: Sequence[int]) -> np.ndarray:
    """One decoded ``(H, W, C)`` image -> uint8 ``(channels, *size)``: what training stores."""
    x = _batch(image[None], channels, size)
    return x[0].to(torch.uint8).numpy()


def _batch(array: np.ndarray, channels: int, size: Sequence[int]) -> torch.Tensor:
    if array.ndim == 3:  # (N, H, W): a grayscale batch
        array = array[..., None]
    if array.ndim != 4:
        raise ImageInputError(f"expected images shaped (N, H, W, C), got shape {array.shape}")
    x = torch.from_numpy(np.require(array, requirements=["C", "W"])).permute(0, 3, 1, 2).float()
    return resize(match_channels(x, channels), size)


def to_tensor(images: Any, preprocess: Mapping[str, Any]) -> torch.Tensor:
    """Raw images -> the normalised NCHW float batch the network was trained on."""
    channels, size = int(preprocess["channels"]), list(preprocess["image_size"])
    decoded = as_images(images)
    if isinstance(decoded, np.ndarray):
        x = _batch(decoded, channels, size)
    else:
        if not decoded:
            raise ImageInputError("no images given")
        parts = []
        for image in decoded:
            one = image[..., None] if image.ndim == 2 else image
            parts.append(_batch(one[None], channels, size))
        x = torch.cat(parts)
    mean = torch.tensor(preprocess["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(preprocess["std"]).view(1, -1, 1, 1)
    return (x / 255.0 - mean) / std


def predict_frame(
    network: Callable[[torch.Tensor], torch.Tensor],
    preprocess: Mapping[str, Any],
    images: Any,
    batch_size: int = 256,
) -> pd.DataFrame:
    """One row per image: ``label``, ``class_index``, ``probability``, ``probabilities``.

    Images are converted batch by batch, so memory stays bounded for large inputs.
    """
    decoded = as_images(images)
    with torch.no_grad():
        logits = torch.cat(
            [
                network(to_tensor(decoded[i : i + batch_size], preprocess))
                for i in range(0, len(decoded), batch_size)
            ]
            or [torch.zeros(0, len(preprocess["classes"]))]
        )
    probs = torch.softmax(logits.float(), dim=1)
    best = probs.argmax(dim=1)
    classes = list(preprocess["classes"])
    return pd.DataFrame(
        {
            "label": [classes[i] for i in best.tolist()],
            "class_index": best.numpy().astype(np.int64),
            "probability": probs.max(dim=1).values.double().numpy(),
            "probabilities": list(probs.double().numpy()),
        }
    )
