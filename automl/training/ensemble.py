"""An ensemble: several trained networks that answer as one.

Each member is calibrated first (its own temperature), so no member's over- or
under-confidence outweighs the others; the ensemble averages their probabilities and
returns the log of the average as its logits. A softmax of those gives back the averaged
probabilities exactly, so everything that serves, exports or evaluates one network (a
``torch.export`` program, ONNX, the served model's softmax) serves the ensemble too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


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
