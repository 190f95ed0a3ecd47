"""How one parameter of a search space is drawn: the four kinds a YAML key can declare.

Validated by pydantic when a space file is read, so a bad bound or an unknown key is one
line naming the key; :mod:`automl.search.space` turns them into Optuna suggestions.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

Scalar = bool | int | float | str


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    when: dict[str, Scalar | list[Scalar]] | None = None


class IntSpec(_Spec):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False
    grow: int = Field(1, ge=1, le=4)  # per-stage only: stage N's range is times grow**(N-1)

    @model_validator(mode="after")
    def _bounds(self) -> IntSpec:
        if self.low > self.high:
            raise ValueError(f"low <= high must hold, got low={self.low}, high={self.high}")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("a log-scale int needs low >= 1 and step 1")
        return self

    def values(self) -> list[Scalar]:
        return [self.low, self.high]

    def at_stage(self, index: int) -> IntSpec:
        """The range stage ``index`` (from 1) draws from: widths that grow with depth, as
        the feature map shrinks, keep every stage's cost alike."""
        if self.grow == 1:
            return self
        factor = self.grow ** (index - 1)
        step = self.step if self.log else self.step * factor
        scaled = {"low": self.low * factor, "high": self.high * factor, "step": step}
        return self.model_copy(update={**scaled, "grow": 1})


class FloatSpec(_Spec):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> FloatSpec:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low > self.high:
            raise ValueError(f"low <= high must hold, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale float needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be used together")
        return self

    def values(self) -> list[Scalar]:
        return [self.low, self.high]


class CategoricalSpec(_Spec):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CategoricalSpec:
        if len({(type(c), c) for c in self.choices}) != len(self.choices):
            raise ValueError(f"choices must be distinct, got {self.choices}")
        return self

    def values(self) -> list[Scalar]:
        return list(self.choices)


class FixedSpec(_Spec):
    type: Literal["fixed"]
    value: Scalar

    def values(self) -> list[Scalar]:
        return [self.value]


Spec = IntSpec | FloatSpec | CategoricalSpec | FixedSpec
SPEC_ADAPTER = TypeAdapter(Annotated[Spec, Field(discriminator="type")])
SPEC_TYPES = ("int", "float", "categorical", "fixed")
