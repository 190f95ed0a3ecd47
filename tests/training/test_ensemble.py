"""Test-time mirroring: the probabilities of an image and its mirror image are averaged
exactly, and the validation split decides whether a model gets it: yes where the mirror
image carries what the network needs, no where mirroring changes the answer."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from automl.data.core import ImageData, Split
from automl.training.ensemble import Mirrored, mirror_if_better
from automl.training.networks import build_model
from tests.training.test_loop import ARCH


class Columns(nn.Module):
    """Logits read from the first and the last column of a 2-row, 4-column image: ``rows``
    answers with the row of a bright pixel in column 0 (blind to column 3), otherwise
    with which of the two columns is bright."""

    def __init__(self, *, rows: bool) -> None:
        super().__init__()
        self.rows = rows

    def forward(self, x: Tensor) -> Tensor:
        if self.rows:
            return 5 * x[:, 0, :, 0]
        return 5 * torch.stack([x[:, 0, :, 0].sum(1), x[:, 0, :, 3].sum(1)], dim=1)


def pixels(by_row: bool) -> ImageData:
    """One bright pixel an image, in row 0 or 1 and column 0 or 3; the class is its row
    (``by_row``) or its side."""
    images, labels = [], []
    for row in (0, 1):
        for column in (0, 3):
            image = torch.zeros(1, 2, 4, dtype=torch.uint8)
            image[0, row, column] = 255
            images.append(image)
            labels.append(row if by_row else int(column == 3))
    split = Split(torch.stack(images), torch.tensor(labels))
    return ImageData("pixels", ("a", "b"), split, split, split, (0.0,), (1.0,), "test")


def test_mirroring_averages_the_probabilities_of_both_views():
    torch.manual_seed(0)
    network = build_model(ARCH, 1, (8, 8), 10).eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        expected = (network(x).softmax(1) + network(x.flip(-1)).softmax(1)) / 2
        assert torch.allclose(Mirrored(network)(x).softmax(1), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("by_row", "mirrors", "plain", "both"), [(True, True, 0.75, 1.0), (False, False, 1.0, 0.5)]
)
def test_the_validation_split_decides_whether_to_mirror(by_row, mirrors, plain, both):
    model = Columns(rows=by_row)
    chosen, without, mirrored = mirror_if_better(model, pixels(by_row))
    assert isinstance(chosen, Mirrored) is mirrors
    assert (without, mirrored) == (plain, both)
