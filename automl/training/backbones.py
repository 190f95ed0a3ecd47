"""Pretrained torchvision backbones with a new classification head, for fine-tuning.

Weights come only from files already on disk (``--weights-dir``, then torch's hub
cache); a trial never downloads. Without a file the backbone starts from random weights,
and the model says so in ``weights_source``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn


def weights_file(name: str, weights_dir: Path | None) -> Path | None:
    """The ImageNet weights file torchvision would download for ``name``, if present."""
    url: str = torchvision.models.get_model_weights(name).DEFAULT.url
    filename = url.rsplit("/", 1)[-1]
    folders = [weights_dir] if weights_dir else []
    folders.append(Path(torch.hub.get_dir()) / "checkpoints")
    for folder in folders:
        path: Path = Path(folder).expanduser() / filename
        if path.is_file():
            return path
    return None


def describe_weights(name: str, weights_dir: Path | None) -> str:
    path = weights_file(name, weights_dir)
    if path is not None:
        return f"imagenet ({path})"
    places = [str(weights_dir)] if weights_dir else []
    places.append(str(Path(torch.hub.get_dir()) / "checkpoints"))
    return f"random (no pretrained file in {' or '.join(places)})"


def _replace_head(net: nn.Module, num_classes: int) -> tuple[nn.Module, str]:
    """Swap the last Linear layer for one with ``num_classes`` outputs; return its name."""
    fc = getattr(net, "fc", None)
    if isinstance(fc, nn.Linear):
        net.fc = nn.Linear(fc.in_features, num_classes)
        return net, "fc"
    classifier = net.classifier
    assert isinstance(classifier, nn.Sequential), f"unexpected head of {type(net).__name__}"
    last = len(classifier) - 1
    old = classifier[last]
    assert isinstance(old, nn.Linear)
    classifier[last] = nn.Linear(old.in_features, num_classes)
    return net, "classifier"


class BackboneNet(nn.Module):
    """A torchvision network; 1-channel inputs are repeated to the 3 it expects."""

    def __init__(
        self, name: str, in_channels: int, num_classes: int, weights_dir: Path | None = None
    ) -> None:
        super().__init__()
        net = torchvision.models.get_model(name, weights=None)
        path = weights_file(name, weights_dir)
        if path is not None:
            net.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
        self.weights_source = describe_weights(name, weights_dir)
        self.net, self.head_name = _replace_head(net, num_classes)
        self.in_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        out: Tensor = self.net(x)
        return out

    def head_parameters(self) -> Iterator[nn.Parameter]:
        head: nn.Module = getattr(self.net, self.head_name)
        return head.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        head = {id(p) for p in self.head_parameters()}
        return (p for p in self.net.parameters() if id(p) not in head)

    def freeze_backbone(self, frozen: bool) -> None:
        """Frozen: no gradients and fixed BatchNorm statistics, so only the head learns."""
        for name, module in self.net.named_children():
            if name != self.head_name:
                module.train(not frozen and self.training)
                for p in module.parameters():
                    p.requires_grad_(not frozen)
