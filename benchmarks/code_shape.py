"""The shape of the code, for a maintainer: folders, files and lines; the longest
functions; how many places spell each key that automl records; the README's length.

Reads the source with ``ast`` only (no import), so it measures any commit:

    python benchmarks/code_shape.py [ROOT]        # ROOT: a checkout [default: this one]
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

# The keys automl records on trials (Optuna user attributes), runs and versions (MLflow
# tags): each should be spelled in one place.
KEYS = (
    "mlflow_run_id", "mlflow_parent_run_id", "owner", "ticket", "origin", "retry_of",
    "retry_reason", "checkpoint_epoch", "resumed_from", "resumed_at_epoch", "epochs_cap",
    "cut", "weights", "tracking_error", "curve", "worker", "registered_model",
    "registered_version", "best_trial", "best_trial_run_id", "trial_number", "trial_run_id",
    "test_digest", "data_digest", "dataset_options", "test_acc_single", "conclusion",
    "parent_ensemble", "automl.owner.{}",
)  # fmt: skip


def _functions(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            found.append((length, node.name))
    return found


def _strings(tree: ast.AST) -> Counter[str]:
    return Counter(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=Path(__file__).parent.parent)
    root = parser.parse_args().root.resolve()
    package = root / "automl"
    folders: Counter[str] = Counter()
    files: Counter[str] = Counter()
    functions: list[tuple[int, str]] = []
    spelled: Counter[str] = Counter()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        folder = str(relative.parent) if relative.parent != Path(".") else "(top)"
        text = path.read_text()
        tree = ast.parse(text)
        folders[folder] += len(text.splitlines())
        files[folder] += 1
        functions += [(n, f"{relative}:{name}") for n, name in _functions(tree)]
        strings = _strings(tree)
        spelled.update({key: strings[key] for key in KEYS if strings[key]})
    print(f"{'folder':36s} {'files':>5s} {'lines':>6s}")
    for folder in sorted(folders):
        print(f"{folder:36s} {files[folder]:5d} {folders[folder]:6d}")
    print(f"{'all':36s} {sum(files.values()):5d} {sum(folders.values()):6d}")
    print("\nten longest functions (lines)")
    for length, name in sorted(functions, reverse=True)[:10]:
        print(f"  {length:4d}  {name}")
    print("\nrecorded keys: places each is spelled as a string literal")
    for key in KEYS:
        print(f"  {spelled[key]:3d}  {key}")
    print(f"  total {sum(spelled.values())} over {len(KEYS)} keys")
    readme = root / "README.md"
    lines = len(readme.read_text().splitlines())
    print(f"\nREADME.md: {lines} lines, {readme.stat().st_size} bytes")


if __name__ == "__main__":
    main()
