"""Networks that answer as one: an ensemble of trained networks, and a network that sees
each image twice, as it is and mirrored.

Each ensemble member is calibrated first (its own temperature), so no member's over- or
under-confidence outweighs the others; both average probabilities and return the log of
the average as their logits. A softmax of those gives back the averaged probabilities
exactly, so everything that serves, exports or evaluates one network (a ``torch.export``
program, ONNX, the served model's softmax) serves these too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from automl.data import ImageData
from automl.training.loop import Normalizer, measure

CPU = torch.device("cpu")


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.log_count = math.log(len(members))

    def forward(self, x: Tensor) -> Tensor:
        log_probs = torch.stack([member(x).log_softmax(dim=1) for member in self.members])
        return torch.logsumexp(log_probs, dim=0) - self.log_count


class Mirrored(nn.Module):
    """Test-time mirroring: the probabilities for an image and for its mirror image (left
    and right swapped), averaged. A mirrored photo is a photo of the same thing, so the
    network gets a second look for the price of a second forward pass; a mirrored digit
    is not, which is why ``mirror_if_better`` asks the validation split first.

    The buffer ``mirrored`` marks the wrapper in an exported program's state, so the
    wrapped network's weights can be found under their own names again."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mirrored", torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        views = torch.stack(
            [self.network(x).log_softmax(dim=1), self.network(x.flip(-1)).log_softmax(dim=1)]
        )
        return torch.logsumexp(views, dim=0) - math.log(2.0)


def mirror_if_better(
    model: nn.Module, data: ImageData, device: torch.device = CPU
) -> tuple[nn.Module, float, float]:
    """``model`` mirrored at test time if that answers more validation images right, else
    ``model``; with the validation accuracy without and with mirroring, measured on
    ``device`` as the model is served.

    Decided on the validation split, as the temperature is, and only on a strict gain:
    photos of objects look alike mirrored, so it often helps there; digits are not
    symmetric, so it seldom does (``docs/search.md``)."""
    if len(data.val) == 0:  # nothing to decide on
        return model, math.nan, math.nan
    norm = Normalizer(data.mean, data.std)
    _, plain = measure(model, data.val, norm, device)
    mirrored = Mirrored(model).eval()
    _, both = measure(mirrored, data.val, norm, device)
    return (mirrored if both > plain else model), plain, both
