"""The CNN builder: an ``ArchConfig`` plus the data's shape give one network.

Every decision that depends on the input size (stem stride, which stages pool) is made
here, when the network is built, so ``forward`` has no data-dependent branches and the
network exports with ``torch.export`` for any input from 8x8x1 to 224x224x3.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import Tensor, nn

from automl.training.config import ACTIVATIONS, ArchConfig, StageConfig

ACTIVATION_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
}
assert set(ACTIVATION_LAYERS) == set(ACTIVATIONS), "every activation needs a layer"

POOL_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "max": lambda: nn.MaxPool2d(2),
    "avg": lambda: nn.AvgPool2d(2),
}

STEM_TARGET = 32  # larger inputs are patchified down to 32-63 pixels first
FINAL_SIDE = 8  # the last stage's feature map is at most this side, where it can be
MAX_STEM = 16


def stem_stride(side: int, stages: int) -> int:
    """The stride of the patchifying stem for images ``side`` pixels wide.

    Large images are brought down to 32-63 pixels first: on 64x64 photos a 2x2 patchifying
    stem before four stages cost almost no accuracy and a third of the time of the same
    network at full resolution (``docs/design.md``). And the
    stages, pooling between them, must end on a map of at most ``FINAL_SIDE`` pixels: a
    single stage of 3x3 convolutions over a 64x64 photo sees 3 of its pixels before the
    global average, a bag of textures that cannot learn shapes whatever the optimizer. A
    shallow network on a large image therefore starts with a coarser stem, so every
    depth the space offers has a receptive field sized to the image.
    """
    stride = 1
    while side // (stride * 2) >= STEM_TARGET:
        stride *= 2
    while stride < MAX_STEM and side // stride > FINAL_SIDE * 2 ** (stages - 1):
        stride *= 2
    return stride


def _conv(arch: ArchConfig, c_in: int, c_out: int, *, act: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(
            c_in, c_out, arch.kernel_size, padding=arch.kernel_size // 2, bias=not arch.batch_norm
        )
    ]
    if arch.batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    if act:
        layers.append(ACTIVATION_LAYERS[arch.activation]())
    return nn.Sequential(*layers)


class Stage(nn.Module):
    """``convs`` conv layers at one width, with an optional residual shortcut."""

    def __init__(self, arch: ArchConfig, stage: StageConfig, c_in: int) -> None:
        super().__init__()
        widths = [c_in] + [stage.width] * stage.convs
        last = stage.convs - 1
        self.body = nn.Sequential(
            *(
                _conv(arch, widths[i], widths[i + 1], act=not (arch.residual and i == last))
                for i in range(stage.convs)
            )
        )
        self.shortcut: nn.Module | None = None
        self.act: nn.Module | None = None
        if arch.residual:
            self.shortcut = (
                nn.Identity()
                if c_in == stage.width
                else nn.Conv2d(c_in, stage.width, 1, bias=False)
            )
            self.act = ACTIVATION_LAYERS[arch.activation]()

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.body(x)
        if self.shortcut is not None and self.act is not None:
            y = self.act(y + self.shortcut(x))
        return y


class ConvNet(nn.Module):
    """Stem (large inputs only), stages with pooling between them, global-average-pool head."""

    def __init__(
        self, arch: ArchConfig, in_channels: int, image_size: tuple[int, int], num_classes: int
    ) -> None:
        super().__init__()
        height, width = image_size
        stride = stem_stride(min(height, width), len(arch.stages))
        c_in = in_channels
        layers: list[nn.Module] = []
        if stride > 1:
            c_in = arch.stages[0].width
            layers += [nn.Conv2d(in_channels, c_in, stride, stride=stride), nn.BatchNorm2d(c_in)]
            height, width = height // stride, width // stride
        for index, stage in enumerate(arch.stages):
            layers.append(Stage(arch, stage, c_in))
            c_in = stage.width
            if index < len(arch.stages) - 1 and min(height, width) >= 2:
                layers.append(POOL_LAYERS[arch.pooling]())
                height, width = height // 2, width // 2
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(arch.dropout)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x).mean(dim=(2, 3))
        out: Tensor = self.head(self.dropout(x))
        return out


def build_model(
    arch: ArchConfig,
    in_channels: int,
    image_size: tuple[int, int],
    num_classes: int,
    *,
    weights_dir: Path | None = None,
) -> nn.Module:
    """Our CNN, or a torchvision backbone with a new head when ``arch.backbone`` names one."""
    if arch.backbone != "none":
        from automl.training.backbones import BackboneNet

        return BackboneNet(arch.backbone, in_channels, num_classes, weights_dir)
    return ConvNet(arch, in_channels, image_size, num_classes)


def replace_head(model: nn.Module, num_classes: int) -> None:
    """A new, freshly initialised classifier for ``num_classes`` (fine-tuning to new classes)."""
    from automl.training.backbones import BackboneNet, _replace_head

    if isinstance(model, BackboneNet):
        model.net, model.head_name = _replace_head(model.net, num_classes)
    elif isinstance(model, ConvNet):
        model.head = nn.Linear(model.head.in_features, num_classes)
    else:
        raise TypeError(f"no known head on {type(model).__name__}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
