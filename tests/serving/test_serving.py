"""The code every registered model carries: input forms, decoding limits, preprocessing."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from automl.serving.automl_serving import (
    ImageInputError,
    as_images,
    decode_image,
    match_channels,
    predict_frame,
    to_tensor,
)

PRE = {"channels": 1, "image_size": [8, 8], "mean": [0.5], "std": [0.25], "classes": list("ab")}


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims a huge size (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_decode_grayscale_and_color_files():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert np.array_equal(decode_image(encode(gray)), gray[..., None])
    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[..., 1] = 200
    assert decode_image(encode(rgb)).shape == (5, 7, 3)
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    assert decode_image(encode(rgba)).shape == (4, 4, 3)  # alpha dropped by conversion


@pytest.mark.hostile("serving")
def test_decompression_bomb_is_refused_from_its_header():
    with pytest.raises(ImageInputError, match="larger than the limit"):
        decode_image(png_claiming_size(100_000, 100_000))  # refused by Pillow's own guard
    with pytest.raises(ImageInputError, match="10000x5000 pixels is larger than the limit"):
        decode_image(png_claiming_size(10_000, 5_000))  # under Pillow's, over ours


@pytest.mark.hostile("serving")
def test_truncated_and_non_images_are_refused():
    data = encode(np.zeros((64, 64), dtype=np.uint8) + 100, "JPEG")
    with pytest.raises(ImageInputError, match="damaged image"):
        decode_image(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="not a readable image"):
        decode_image(b"this is not an image")


def test_every_input_form_gives_the_same_tensor():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 8, 8, 1), dtype=np.uint8)
    expected = to_tensor(images, PRE)
    pngs = [encode(img[..., 0]) for img in images]
    forms = [
        images,
        images[..., 0],  # (N, H, W)
        images.astype(np.int64).tolist(),  # JSON "inputs"
        [img for img in images],
        pngs,
        [base64.b64encode(p).decode() for p in pngs],
        pd.DataFrame({"image": pngs}),
        pd.DataFrame({"image": [base64.b64encode(p).decode() for p in pngs]}),
        {"image": pngs},
    ]
    for form in forms:
        torch.testing.assert_close(to_tensor(form, PRE), expected)


def test_images_of_different_sizes_and_channels_are_resized_and_converted():
    small = np.full((8, 8, 3), 255, dtype=np.uint8)
    large = np.full((30, 20, 1), 255, dtype=np.uint8)
    x = to_tensor([small, large], PRE)
    assert x.shape == (2, 1, 8, 8)
    torch.testing.assert_close(x, torch.full_like(x, (1.0 - 0.5) / 0.25), atol=1e-4, rtol=0)


def test_rgb_to_gray_uses_luma_weights():
    x = torch.zeros(1, 3, 1, 1)
    x[0, 0] = 100.0
    assert match_channels(x, 1).item() == 30.0  # 0.299 * 100, rounded like a stored pixel
    assert match_channels(torch.zeros(1, 1, 2, 2), 3).shape == (1, 3, 2, 2)


@pytest.mark.hostile("serving")
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.full((1, 8, 8, 1), 300.0), "0..255"),
        (np.zeros((1, 8, 8, 1), dtype=bool), "dtype bool"),
        (np.zeros((8,), dtype=np.uint8), "shaped"),
        (["not base64!"], "base64"),
        (pd.DataFrame({"a": [1], "b": [2]}), "'image' column"),
    ],
)
def test_bad_inputs_raise_one_clear_error(bad, message):
    with pytest.raises(ImageInputError, match=message):
        to_tensor(bad, PRE)


def test_predict_frame_columns_and_probabilities():
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    frame = predict_frame(network, PRE, np.zeros((4, 8, 8, 1), dtype=np.uint8))
    assert list(frame.columns) == ["label", "class_index", "probability", "probabilities"]
    assert set(frame["label"]) <= {"a", "b"}
    assert np.allclose(np.stack(frame["probabilities"]).sum(1), 1.0)
    assert (frame["probability"] == np.stack(frame["probabilities"]).max(1)).all()


def test_as_images_keeps_a_uniform_batch_as_one_array():
    batch = as_images(np.zeros((2, 4, 4, 3), dtype=np.uint8))
    assert isinstance(batch, np.ndarray) and batch.shape == (2, 4, 4, 3)
