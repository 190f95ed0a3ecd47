"""Test-time mirroring: the probabilities of an image and its mirror image are averaged
exactly, and the validation split decides whether a model gets it: yes where the mirror
image carries what the network needs, no where mirroring changes the answer."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from automl.data.core import ImageData, Split
from automl.training.ensemble import Ensemble, Mirrored, mirror_if_better, select_members
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


def one_hot_votes(answers: list[int], classes: int = 2, sure: float = 0.9) -> Tensor:
    """Probabilities that give ``sure`` to each image's answer."""
    probabilities = torch.full((len(answers), classes), (1 - sure) / (classes - 1))
    probabilities[torch.arange(len(answers)), torch.tensor(answers)] = sure
    return probabilities


def test_selection_adds_a_network_only_where_it_helps_and_weighs_by_picks():
    """Two networks right on different halves, a third right nowhere: the average of the
    first two gets every image right, so both are picked; the useless one never is."""
    labels = torch.tensor([0, 0, 1, 1])
    first = one_hot_votes([0, 0, 0, 0], sure=0.6)  # right on the first half, unsure
    second = one_hot_votes([1, 1, 1, 1], sure=0.55)  # right on the second half
    useless = one_hot_votes([1, 1, 0, 0])
    counts = select_members([first, second, useless], labels, most=3)
    assert counts[0] >= 1 and counts[1] >= 1 and counts[2] == 0
    assert sum(counts) >= 2


@pytest.mark.hostile("consistency")
def test_selection_keeps_the_best_alone_when_nothing_beats_it_and_respects_most():
    """An ensemble that would answer fewer validation images right than its best member
    (a trial at chance averaged in) is never chosen."""
    labels = torch.tensor([0, 1, 0, 1])
    best = one_hot_votes([0, 1, 0, 1])
    worse = [one_hot_votes([1, 1, 0, 1], sure=0.99), one_hot_votes([0, 0, 0, 1], sure=0.99)]
    assert select_members([best, *worse], labels, most=3) == [1, 0, 0]
    many = [one_hot_votes([i % 2, 1, 0, 1], sure=0.6 + 0.01 * i) for i in range(6)]
    counts = select_members(many, labels, most=2)
    assert sum(1 for c in counts if c) <= 2 and counts[0] >= 1


def test_a_weighted_ensemble_averages_by_its_weights_and_exports():
    torch.manual_seed(0)
    members = [build_model(ARCH, 1, (8, 8), 10).eval() for _ in range(2)]
    model = Ensemble(members, [3.0, 1.0]).eval()
    x = torch.randn(5, 1, 8, 8)
    expected = 0.75 * members[0](x).softmax(1) + 0.25 * members[1](x).softmax(1)
    assert torch.allclose(model(x).softmax(1), expected, atol=1e-6)
    program = torch.export.export(model, (x,))
    assert torch.allclose(program.module()(x), model(x), atol=1e-6)
    with pytest.raises(ValueError, match="positive weight"):
        Ensemble(members, [1.0, 0.0])
