"""Reading a search space file: every value a spec can produce is checked against the
parameter's type when the file is loaded, so a mistake is one ``ConfigError`` naming the
file, the key path and the problem (see ``space`` for the format)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from automl.errors import ConfigError, unknown_name
from automl.search.space.space import ParamDef, SearchSpace, stage_spec
from automl.search.space.specs import (
    SPEC_ADAPTER,
    SPEC_TYPES,
    CategoricalSpec,
    FixedSpec,
    FloatSpec,
    IntSpec,
    Scalar,
    Spec,
)
from automl.training.config import MAX_STAGES, SECTION_MODELS, SECTIONS, StageConfig

QUEUED = ("baseline", "portfolio")  # sections of configurations queued first, not searched


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a space file; every problem is a ``ConfigError`` naming the file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: search space file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read search space file: {exc}") from None
    return parse_space(text, source)


def longest_schedule(path: Path) -> int | None:
    """The most epochs a trial of the space at ``path`` trains; None when the space says
    nothing or cannot be read (the settings' check reports that, before anything runs)."""
    try:
        return load_space(path).longest_schedule
    except ConfigError:
        return None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the
    last silently, so ``kernel_size: 3`` then ``kernel_size: 5`` would search 5 unsaid)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_space(text: str, source: str = "<space>") -> SearchSpace:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML: {problem}{where}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    return _build(data, source)


def _build(data: Any, source: str) -> SearchSpace:
    def fail(path: str, problem: str) -> ConfigError:
        path, problem = _printable(path), _printable(problem)
        return ConfigError(f"{source}: {path}: {problem}" if path else f"{source}: {problem}")

    _check_sections(data, fail)
    params: list[ParamDef] = []
    stage_params: list[ParamDef] = []
    for section, prefix in SECTIONS.items():
        entries = data.get(section)
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise fail(section, f"expected a mapping of parameters, got {_kind(entries)}")
        for key, raw in entries.items():
            if key != "per_stage":
                params.append(_param(section, prefix, str(key), raw, before=params, fail=fail))
        if prefix == "arch" and "per_stage" in entries:
            stage_params = _stage_block(entries["per_stage"], f"{section}.per_stage", params, fail)
    if stage_params and not any(p.name == "arch.stages" for p in params):
        params.insert(0, ParamDef("arch.stages", FixedSpec(type="fixed", value=1)))
    return _with_queued(SearchSpace(source, tuple(params), tuple(stage_params)), data, fail)


def _with_queued(space: SearchSpace, data: dict[str, Any], fail: Any) -> SearchSpace:
    """The space with its baseline and portfolio, each checked against it."""
    if "baseline" in data:
        space = replace(space, baseline=_baseline(space, data["baseline"], fail))
    if "portfolio" in data:
        space = replace(space, portfolio=_portfolio(space, data["portfolio"], fail))
    return space


def _portfolio(space: SearchSpace, raw: Any, fail: Any) -> tuple[dict[str, Any], ...]:
    """Configurations queued after the baseline, each as complete and in range as it."""
    if not isinstance(raw, list):
        raise fail("portfolio", f"expected a list of configurations, got {_kind(raw)}")
    entries = tuple(_baseline(space, entry, fail, f"portfolio[{i}]") for i, entry in enumerate(raw))
    known = [space.baseline, *entries]
    for i, entry in enumerate(entries):
        if entry in known[: i + 1]:
            raise fail(f"portfolio[{i}]", "the same configuration as one before it")
    return entries


def _check_sections(data: Any, fail: Any) -> None:
    """A mapping of known sections."""
    if data is None:
        raise fail("", "the file is empty; expected the sections " + ", ".join(SECTIONS))
    if not isinstance(data, dict):
        raise fail("", f"expected a mapping of sections, got {_kind(data)}")
    for section in data:
        if section not in SECTIONS and section not in QUEUED:
            allowed = [*SECTIONS, *QUEUED]
            raise fail(str(section), unknown_name("section", str(section), allowed))


def _param(
    section: str, prefix: str, key: str, raw: Any, *, before: list[ParamDef], fail: Any
) -> ParamDef:
    """One key of a section: a parameter of its model, every value it can take checked."""
    path = f"{section}.{key}"
    model = SECTION_MODELS[prefix]
    known = set(model.model_fields) | ({"per_stage"} if prefix == "arch" else set())
    if key not in known:
        raise fail(path, unknown_name("parameter", key, known))
    spec = _parse_spec(raw, path, fail)
    if isinstance(spec, IntSpec) and spec.grow != 1:
        raise fail(f"{path}.grow", "only a per-stage parameter grows with depth")
    if key == "stages":
        _check_values(spec, path, fail, count=True)
    else:
        _check_values(spec, path, fail, model=model, key=key)
    when = _resolve_when(spec, path, prefix, before, fail)
    return ParamDef(f"{prefix}.{key}", spec, when)


def _baseline(space: SearchSpace, raw: Any, fail: Any, path: str = "baseline") -> dict[str, Any]:
    """A complete configuration of the space, every value one the space can draw (its
    sampled params only)."""
    from optuna.trial import FixedTrial

    if not isinstance(raw, dict):
        raise fail(path, f"expected a mapping of flat parameter names, got {_kind(raw)}")
    for name, value in raw.items():
        spec = space.spec_of(str(name))
        if spec is None:
            raise fail(f"{path}.{name}", unknown_name("parameter", str(name), space.names))
        problem = _off_spec(spec, value)
        if problem:
            raise fail(f"{path}.{name}", problem)
    try:
        sampled = space.sample(FixedTrial(dict(raw)))
    except (ValueError, KeyError) as exc:
        raise fail(path, f"incomplete: {exc}") from None
    fixed = {p.name for p in space.params if isinstance(p.spec, FixedSpec)}
    return {k: v for k, v in sampled.items() if k not in fixed}


def _off_spec(spec: Spec, value: Any) -> str:
    """Why ``spec`` can never draw ``value`` ("" when it can): not a choice, not a number,
    outside the range, or between two steps of its grid."""
    if isinstance(spec, CategoricalSpec):
        return "" if value in spec.choices else f"{value!r} is not one of {spec.choices}"
    if not isinstance(spec, IntSpec | FloatSpec):
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number"
    if isinstance(spec, IntSpec) and value != int(value):
        return f"{value!r} is not a whole number"
    if not spec.low <= value <= spec.high:
        return f"{value!r} is outside [{spec.low}, {spec.high}]"
    steps = (value - spec.low) / spec.step if spec.step else 0.0
    if abs(steps - round(steps)) > 1e-9:
        return f"{value!r} is off the grid (from {spec.low} in steps of {spec.step})"
    return ""


def _stage_block(raw: Any, path: str, params: list[ParamDef], fail: Any) -> list[ParamDef]:
    if not isinstance(raw, dict):
        raise fail(path, f"expected a mapping of per-stage parameters, got {_kind(raw)}")
    block: list[ParamDef] = []
    counts = [p.spec.values() for p in params if p.name == "arch.stages"]
    deepest = max((int(v) for values in counts for v in values), default=1)
    for key, value in raw.items():
        key_path = f"{path}.{key}"
        if key not in StageConfig.model_fields:
            raise fail(
                key_path, unknown_name("per-stage parameter", str(key), StageConfig.model_fields)
            )
        spec = _parse_spec(value, key_path, fail)
        for index in (1, deepest):  # the first stage's range and the deepest one's
            _check_values(stage_spec(spec, index), key_path, fail, model=StageConfig, key=key)
        when = _resolve_when(spec, key_path, "arch", [*params, *block], fail, stage=True)
        block.append(ParamDef(f"arch.stage{{}}.{key}", spec, when))
    return block


def _parse_spec(raw: Any, path: str, fail: Any) -> Spec:
    if isinstance(raw, list):
        raw = {"type": "categorical", "choices": raw}
    elif isinstance(raw, bool | int | float | str):
        raw = {"type": "fixed", "value": raw}
    elif not isinstance(raw, dict):
        raise fail(path, f"expected a value, a list of choices or a mapping, got {_kind(raw)}")
    elif "type" not in raw:
        raise fail(path, "a parameter mapping needs 'type' (" + ", ".join(SPEC_TYPES) + ")")
    elif raw["type"] not in SPEC_TYPES:
        raise fail(f"{path}.type", unknown_name("type", str(raw["type"]), SPEC_TYPES))
    try:
        spec: Spec = SPEC_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(p) for p in error["loc"][1:]]
        where = ".".join([path, *loc])
        messages = {"missing": "missing required key", "extra_forbidden": "unknown key"}
        message = messages.get(error["type"], error["msg"].removeprefix("Value error, "))
        raise fail(where, message) from None
    return spec


def _check_values(
    spec: Spec,
    path: str,
    fail: Any,
    *,
    model: type[BaseModel] | None = None,
    key: str = "",
    count: bool = False,
) -> None:
    """Check every value the spec can yield is one the consumer accepts."""
    if count:
        if isinstance(spec, FloatSpec):
            raise fail(path, "the stage count is an integer: use type int")
        for value in spec.values():
            if isinstance(value, bool) or not isinstance(value, int):
                raise fail(path, f"the stage count must be an integer, got {value!r}")
            if not 1 <= value <= MAX_STAGES:
                raise fail(path, f"the stage count must lie in [1, {MAX_STAGES}], got {value}")
        return
    assert model is not None
    if isinstance(spec, FloatSpec) and model.model_fields[key].annotation is int:
        raise fail(path, f"'{key}' is an integer parameter: use type int")
    if isinstance(spec, IntSpec | FloatSpec) and model.model_fields[key].annotation is bool:
        raise fail(path, f"'{key}' is a true/false parameter: use a list [true, false]")
    for value in spec.values():
        try:
            model.model_validate({key: value})
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise fail(path, f"value {value!r} is not allowed: {message}") from None


def _resolve_when(
    spec: Spec,
    path: str,
    prefix: str,
    known: list[ParamDef],
    fail: Any,
    *,
    stage: bool = False,
) -> tuple[tuple[str, tuple[Scalar, ...]], ...]:
    """Turn ``when`` keys into flat names of parameters drawn earlier."""
    if not spec.when:
        return ()
    specs = {p.name: p.spec for p in known}
    defined = set(specs)
    prefixes = {**SECTIONS, **{p: p for p in SECTIONS.values()}}
    resolved = []
    for ref, allowed in spec.when.items():
        head, dot, rest = ref.partition(".")
        if dot and head in prefixes:
            name = f"{prefixes[head]}.{rest}"
        elif stage and f"arch.stage{{}}.{ref}" in defined:
            name = f"arch.stage{{}}.{ref}"
        else:
            name = f"{prefix}.{ref}"
        if name not in defined:
            raise fail(f"{path}.when.{ref}", "refers to no parameter defined before this one")
        options = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        possible = specs[name].values() if name in specs else None
        if isinstance(specs.get(name), CategoricalSpec | FixedSpec) and possible is not None:
            for option in options:
                if option not in possible:
                    raise fail(f"{path}.when.{ref}", f"{option!r} is not one of {possible}")
        resolved.append((name, options))
    return tuple(resolved)


def _printable(text: str) -> str:
    """Keys come from the file: escape control characters so an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _kind(value: Any) -> str:
    for kind, name in ((list, "a list"), (dict, "a mapping"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return type(value).__name__
