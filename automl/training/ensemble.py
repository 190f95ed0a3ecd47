"""Networks that answer as one: an ensemble of trained networks, and a network that sees
each image twice, as it is and mirrored.

Each ensemble member is calibrated first (its own temperature), so no member's over- or
under-confidence outweighs the others; the members and their weights are chosen on the
validation split by greedy forward selection (``select_members``). Both wrappers average
probabilities and return the log of the average as their logits. A softmax of those gives
back the averaged probabilities exactly, so everything that serves, exports or evaluates
one network (a ``torch.export`` program, ONNX, the served model's softmax) serves these
too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from automl.data import ImageData
from automl.training.loop import Normalizer, measure

CPU = torch.device("cpu")
TIE = 1e-6  # a log-likelihood gain below this is rounding, not a better ensemble


class Ensemble(nn.Module):
    """Members' probabilities averaged, each with its weight (equal when none are given);
    the weights are kept as a buffer, so an exported program carries them."""

    log_weights: Tensor

    def __init__(self, members: list[nn.Module], weights: list[float] | None = None) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        weights = weights or [1.0] * len(members)
        if len(weights) != len(members) or min(weights) <= 0:
            raise ValueError("an ensemble needs one positive weight per member")
        total = sum(weights)
        self.members = nn.ModuleList(members)
        self.register_buffer(
            "log_weights", torch.tensor([math.log(w / total) for w in weights]).view(-1, 1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        log_probs = torch.stack([member(x).log_softmax(dim=1) for member in self.members])
        return torch.logsumexp(log_probs + self.log_weights, dim=0)


def _score(probabilities: Tensor, labels: Tensor) -> tuple[float, float]:
    """Accuracy first, then the negative log-likelihood (lower is better): an ensemble is
    chosen for the images it gets right, and among equals for how sure it is of them."""
    accuracy = float((probabilities.argmax(1) == labels).float().mean())
    nll = float(-probabilities.gather(1, labels.view(-1, 1)).clamp_min(1e-12).log().mean())
    return accuracy, -nll


def select_members(
    probabilities: list[Tensor], labels: Tensor, *, most: int, rounds: int = 25
) -> list[int]:
    """Greedy forward selection with replacement (Caruana et al., 2004): how many times
    each network is picked (its weight) so the averaged validation probabilities score
    best.

    The first pick is ``probabilities[0]`` (the best trial, which names the version); each
    round then adds the network, a picked one again or a new one while fewer than ``most``
    are picked, that scores best averaged in, and the best round is kept. Picking with
    replacement weighs the networks without fitting weights; keeping the best round means
    the ensemble never scores below its first member alone on the split it was chosen on.
    """
    total = probabilities[0].clone()
    picks, best, best_round = [0], _score(total, labels), 1
    for _ in range(rounds - 1):
        allowed = [i for i in range(len(probabilities)) if i in picks or len(set(picks)) < most]
        scores = [_score((total + probabilities[i]) / (len(picks) + 1), labels) for i in allowed]
        choice = allowed[max(range(len(allowed)), key=lambda k: scores[k])]
        picks.append(choice)
        total += probabilities[choice]
        score = scores[allowed.index(choice)]
        if score[0] > best[0] or (score[0] == best[0] and score[1] > best[1] + TIE):
            best, best_round = score, len(picks)
    kept = picks[:best_round]
    return [kept.count(i) for i in range(len(probabilities))]


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
