"""Typed configuration of one trial, built from a flat dictionary of sampled values.

Each section is what one consumer needs: ``arch`` the model builder, ``aug`` the batch
augmenter, ``optim`` and ``train`` the training loop. The search space checks every value
it could ever produce against these models, so a trial never starts with an impossible
configuration, and a flat parameter dictionary (from Optuna, MLflow or a file) always
rebuilds the same configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

Activation = Literal["relu", "gelu", "silu"]
Pooling = Literal["max", "avg"]
OptimizerName = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "cosine", "onecycle"]
AugOp = Literal["translate", "flip", "rotate", "scale", "erasing"]
Backbone = Literal["none", "resnet18", "mobilenet_v3_small", "efficientnet_b0"]
Balance = Literal["none", "weighted_loss", "balanced_sampling"]

ACTIVATIONS: tuple[str, ...] = get_args(Activation)
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
AUG_OPS: tuple[str, ...] = get_args(AugOp)
BACKBONES: tuple[str, ...] = get_args(Backbone)
MAX_STAGES = 8

# An augmentation op's value: off (False or 0), on at the shared strength (True), or its own.
OpStrength = bool | float


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageConfig(_Section):
    width: int = Field(32, ge=1, le=4096, description="output channels of each conv")
    convs: int = Field(2, ge=1, le=8, description="conv layers in the stage")


class ArchConfig(_Section):
    backbone: Backbone = "none"  # "none": our own CNN below; else a torchvision network
    stages: tuple[StageConfig, ...] = Field((StageConfig(),), min_length=1, max_length=MAX_STAGES)
    kernel_size: int = Field(3, ge=1, le=11)
    batch_norm: bool = True
    activation: Activation = "relu"
    pooling: Pooling = "max"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    residual: bool = False

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"kernel_size must be odd so 'same' padding exists, got {value}")
        return value


class AugConfig(_Section):
    strength: float = Field(0.5, ge=0.0, le=1.0, description="shared magnitude of the ops")
    translate: OpStrength = False
    flip: OpStrength = False
    rotate: OpStrength = False
    scale: OpStrength = False
    erasing: OpStrength = False

    @field_validator(*AUG_OPS)
    @classmethod
    def _unit(cls, value: OpStrength) -> OpStrength:
        if not isinstance(value, bool) and not 0.0 <= value <= 1.0:
            raise ValueError(f"an op's own strength must lie in [0, 1], got {value}")
        return value

    def strength_of(self, op: str) -> float:
        """Magnitude in [0, 1] of one op; 0 means the op is off."""
        value = getattr(self, op)
        if isinstance(value, bool):
            return self.strength if value else 0.0
        return float(value)


class OptimConfig(_Section):
    name: OptimizerName = "sgd"
    lr: float = Field(0.05, gt=0.0, le=10.0)
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    backbone_lr: float = Field(
        0.1, gt=0.0, le=1.0, description="a pretrained backbone's learning rate, as a share of lr"
    )


class TrainConfig(_Section):
    batch_size: int = Field(128, ge=1, le=65536)
    epochs: int = Field(10, ge=1, le=10000)
    schedule: Schedule = "onecycle"
    warmup: float = Field(0.0, ge=0.0, le=0.5, description="share of steps warming up")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    balance: Balance = "none"  # class-balanced loss or sampling for imbalanced data
    freeze_epochs: int = Field(0, ge=0, le=1000, description="epochs with the backbone frozen")


class TrialConfig(_Section):
    arch: ArchConfig = ArchConfig()
    aug: AugConfig = AugConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrialConfig:
        """Rebuild from flat names (``arch.stage2.width``); absent names take the defaults."""
        sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS.values()}
        stages: dict[int, dict[str, Any]] = {}
        for name, value in params.items():
            prefix, _, key = name.partition(".")
            if prefix not in sections or not key:
                raise ValueError(f"parameter '{name}' belongs to no section")
            stage, dot, stage_key = key.partition(".")
            if prefix == "arch" and dot and stage.startswith("stage"):
                stages.setdefault(int(stage.removeprefix("stage")), {})[stage_key] = value
            else:
                sections[prefix][key] = value
        count = sections["arch"].pop("stages", None)
        if count is not None or stages:
            count = int(count) if count is not None else max(stages)
            sections["arch"]["stages"] = tuple(
                StageConfig(**stages.get(i, {})) for i in range(1, count + 1)
            )
        return cls(**{prefix: values for prefix, values in sections.items()})


# File section -> parameter prefix and the model that types it.
SECTIONS: dict[str, str] = {
    "architecture": "arch",
    "augmentation": "aug",
    "optimizer": "optim",
    "training": "train",
}
SECTION_MODELS: dict[str, type[_Section]] = {
    "arch": ArchConfig,
    "aug": AugConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}
