"""The package's shape: layers as folders, imports flowing one way, boundaries kept.

Read from the source with ``ast``, function-level (lazy) imports and
``importlib.import_module`` calls included, so a shortcut taken anywhere in the code
fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "automl"

# Each layer and the layers it may import (its own modules always).
ALLOWED = {
    "cli": {
        "pipeline",
        "search",
        "release",
        "insight",
        "tracking",
        "training",
        "data",
        "base",
        "serving",
    },
    "pipeline": {"search", "release", "insight", "tracking", "training", "data", "base"},
    "search": {"tracking", "training", "data", "base"},
    "release": {"tracking", "training", "data", "base", "serving"},
    "insight": {"tracking", "training", "data", "base", "serving"},
    "tracking": {"base", "serving"},
    "training": {"data", "base"},
    "data": {"base", "serving"},
    "serving": set(),
    "base": {"base"},  # the modules and folders in BASE
}
BASE = {"errors", "retry", "provenance", "environment", "stores", "records", "files"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _dynamic(node: ast.Call) -> set[str]:
    """The modules an ``importlib.import_module(...)`` call may import: the one it names,
    or every module under the package its f-string starts with."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if called != "import_module" or not node.args:
        return set()
    target = node.args[0]
    if isinstance(target, ast.Constant) and isinstance(target.value, str):
        return {target.value}
    if isinstance(target, ast.JoinedStr) and target.values:
        head = target.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            return {name for name in MODULES if name.startswith(head.value)}
    return set()


def _imports(path: Path) -> set[str]:
    """Every module of ours ``path`` imports, at the top, inside a function, or through
    ``importlib``."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):
            names.update(_dynamic(node))
    return {name for name in names if name in MODULES}


def test_dynamic_imports_are_followed():
    """The cycle ``cli/__init__`` -> (importlib) -> ``cli.search`` -> ``automl.cli`` was
    invisible while only ``import`` statements were read."""
    code = "import importlib\nimportlib.import_module(f'automl.cli.{name}')\n"
    tree = ast.parse(code)
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args)
    assert "automl.cli.search" in _dynamic(call)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "base"  # automl itself (its version)
    return "base" if parts[1] in BASE else parts[1]


def test_the_package_is_folders_beside_the_base_modules():
    loose = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert loose - BASE == set(), f"modules beside {', '.join(sorted(BASE))}"
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders - BASE == set(ALLOWED) - {"base"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_one_way(module):
    if module == "automl.__main__":
        return
    layer = _layer(module)
    for target in _imports(MODULES[module]):
        other = _layer(target)
        assert other == layer or other in ALLOWED[layer], f"{module} imports {target}"


def test_no_import_cycles():
    graph = {name: _imports(path) - {name} for name, path in MODULES.items()}
    # A package's face (its __init__) may import its own modules; they may not import it back
    # in a cycle. Plain depth-first search over modules.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name)


def _source_files(folder: str = "") -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def test_training_and_data_know_neither_optuna_nor_mlflow():
    pattern = re.compile(r"^\s*(import|from) (optuna|mlflow)\b", re.MULTILINE)
    for path in _source_files("training") + _source_files("data"):
        assert not pattern.search(path.read_text()), path


def test_only_tracking_imports_mlflow():
    pattern = re.compile(r"^\s*(import|from) mlflow\b", re.MULTILINE)
    for path in _source_files():
        inside = path.is_relative_to(PACKAGE / "tracking") or path.is_relative_to(
            PACKAGE / "serving"
        )
        if not inside:
            assert not pattern.search(path.read_text()), path


def test_serving_imports_nothing_of_ours():
    """Registered models carry serving/ alone: it may import only its own modules."""
    for path in _source_files("serving"):
        found = re.findall(r"^\s*(?:import|from) (automl[\w.]*)", path.read_text(), re.MULTILINE)
        assert all(name.startswith(("automl.serving", "automl_serving")) for name in found), path


def test_only_the_space_suggests_and_only_the_adapter_touches_optuna_internals():
    for path in _source_files():
        text = path.read_text()
        if path.name != "space.py":
            assert "suggest_" not in text.replace("suggest_*", ""), path
        if not path.is_relative_to(PACKAGE / "stores"):
            assert not re.search(r"optuna\.\w+\._|from optuna\.\w+\._|\bstudy\._\w", text), path
            assert not re.search(r"\._(trial_id|storage|study_id|thread_local)\b", text), path
