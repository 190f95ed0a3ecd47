"""A search space: the parameters a trial draws, sampled through an Optuna trial.

This module is the only caller of ``trial.suggest_*``. A space file (read by ``loading``)
has the sections ``architecture``, ``augmentation``, ``optimizer`` and ``training``; each
key is one
parameter of the matching model in :mod:`automl.training.config`, given as

- a scalar (fixed value) or a list (categorical choices), or
- a mapping with ``type: int | float | categorical | fixed`` and its bounds, plus an
  optional ``when: {other_param: value-or-list}`` that makes it conditional.

``architecture.stages`` sets the number of conv stages and ``architecture.per_stage``
holds the parameters drawn once per stage (``arch.stage1.width``, ``arch.stage2.width``...).
Every value a spec can produce is checked against the parameter's type when the file is
loaded, so mistakes surface as one line naming the file, the key path and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from automl.search.space.specs import CategoricalSpec, FixedSpec, IntSpec, Scalar, Spec
from automl.training.config import TrialConfig


@dataclass(frozen=True)
class ParamDef:
    """One parameter: its flat name, how it is drawn and when it exists."""

    name: str
    spec: Spec
    when: tuple[tuple[str, tuple[Scalar, ...]], ...] = ()

    def active(self, values: Mapping[str, Any]) -> bool:
        return all(ref in values and values[ref] in allowed for ref, allowed in self.when)


@dataclass(frozen=True)
class SearchSpace:
    """A validated space; ``stage_params`` are drawn once per stage after ``arch.stages``."""

    source: str
    params: tuple[ParamDef, ...]
    stage_params: tuple[ParamDef, ...] = ()
    baseline: dict[str, Any] = field(default_factory=dict)  # flat params of a known-good trial
    portfolio: tuple[dict[str, Any], ...] = ()  # other proven configurations, after it

    @property
    def queued_first(self) -> list[tuple[dict[str, Any], str]]:
        """The configurations a new study trains before sampling, with where each comes
        from: the baseline, then the portfolio's entries in order."""
        first = [(dict(self.baseline), "baseline")] if self.baseline else []
        return first + [(dict(p), f"portfolio {i + 1}") for i, p in enumerate(self.portfolio)]

    def sample(self, trial: Any) -> dict[str, Any]:
        """Draw one configuration as flat params, each a value the space can produce (a
        limit such as ``--max-epochs`` applies when training, recorded apart).

        ``trial`` is an Optuna ``Trial`` or ``FixedTrial``: a ``FixedTrial`` holding a
        trial's params rebuilds exactly its configuration.
        """
        values: dict[str, Any] = {}
        last_arch = max(
            (i for i, p in enumerate(self.params) if p.name.startswith("arch.")), default=-1
        )
        for position, param in enumerate(self.params):
            if param.active(values):
                values[param.name] = _draw(trial, param.name, param.spec)
            if position == last_arch:
                self._sample_stages(trial, values)
        return values

    def _sample_stages(self, trial: Any, values: dict[str, Any]) -> None:
        count = values.get("arch.stages")
        if count is None:  # the stage count's own condition is false: no stages at all
            return
        for index in range(1, int(count) + 1):
            for param in self.stage_params:
                name = param.name.format(index)
                when = [(ref.format(index), allowed) for ref, allowed in param.when]
                if all(ref in values and values[ref] in allowed for ref, allowed in when):
                    values[name] = _draw(trial, name, stage_spec(param.spec, index))

    def config(self, trial: Any) -> TrialConfig:
        return TrialConfig.from_params(self.sample(trial))

    def choices(self, name: str) -> list[Scalar]:
        """The values a categorical or fixed parameter can take ([] when it is not in the space)."""
        for param in self.params:
            if param.name == name and isinstance(param.spec, CategoricalSpec | FixedSpec):
                return param.spec.values()
        return []

    def spec_of(self, name: str) -> Spec | None:
        """How the flat parameter ``name`` is drawn (a stage's own range included)."""
        for param in self.params:
            if param.name == name:
                return param.spec
        stage = re.fullmatch(r"arch\.stage(\d+)\.(\w+)", name)
        if stage:
            for param in self.stage_params:
                if param.name == f"arch.stage{{}}.{stage.group(2)}":
                    return stage_spec(param.spec, int(stage.group(1)))
        return None

    @property
    def longest_schedule(self) -> int | None:
        """The most epochs a trial of this space trains (None: the space leaves it to the
        training config's default); the baseline is checked to lie within the space."""
        spec = self.spec_of("train.epochs")
        drawn = [int(v) for v in spec.values() if isinstance(v, int | float)] if spec else []
        return max(drawn, default=None)

    @property
    def names(self) -> list[str]:
        stage_names = [p.name.format("N") for p in self.stage_params]
        return [p.name for p in self.params] + stage_names


def stage_spec(spec: Spec, index: int) -> Spec:
    return spec.at_stage(index) if isinstance(spec, IntSpec) else spec


def _draw(trial: Any, name: str, spec: Spec) -> Any:
    if isinstance(spec, FixedSpec):
        return spec.value
    if isinstance(spec, CategoricalSpec):
        return trial.suggest_categorical(name, spec.choices)
    if isinstance(spec, IntSpec):
        return trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)
