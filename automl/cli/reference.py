"""The references in ``docs/reference/``, generated from the code so they cannot drift:
every command's ``--help`` (from the typer app, whose search options come from
``SearchSettings``) and every environment variable (from ``automl.environment``).

    python -m automl.cli.reference docs/reference           # write them
    python -m automl.cli.reference docs/reference --check   # exit 1 if they differ

``tests/cli/test_reference.py`` fails when the committed files are not what the code
generates: regenerate them with ``make docs``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from automl import environment

WIDTH = 100  # columns of the help text, whatever the terminal
FILES = ("cli.md", "environment.md")


def _commands(
    command: Any, path: tuple[str, ...], parent: typer.Context | None
) -> Iterator[tuple[tuple[str, ...], Any, typer.Context]]:
    """Every command of the tree, each with its context, in ``--help``'s order (typer
    builds the tree with its own copy of click: commands are read by what they offer)."""
    context = typer.Context(
        command, info_name=path[-1], parent=parent, max_content_width=WIDTH, terminal_width=WIDTH
    )
    yield path, command, context
    if hasattr(command, "list_commands"):
        for name in command.list_commands(context):
            child = command.get_command(context, name)
            if child is not None and not child.hidden:
                yield from _commands(child, (*path, name), context)


def cli_reference() -> str:
    """Every command's help, as ``automl COMMAND --help`` prints it."""
    from automl.cli import app

    lines = [
        "# Command-line reference",
        "",
        "Generated from the code by `make docs` (`python -m automl.cli.reference`); do not edit.",
        "Each section is what `--help` prints.",
        "",
    ]
    root = typer.main.get_command(app)
    for path, command, context in _commands(root, ("automl",), None):
        lines += [f"## `{' '.join(path)}`", "", "```text", command.get_help(context), "```", ""]
    return "\n".join(lines)


def environment_reference() -> str:
    """Every environment variable automl reads, as ``automl.environment`` declares it."""
    lines = [
        "# Environment variables",
        "",
        "Generated from `automl/environment.py` by `make docs`; do not edit. A variable is",
        "read when it is needed, so a change applies to the next command. Variables that stand",
        "for an option give that option's default; the option, when given, wins.",
        "",
        "| variable | default | option | what it is for |",
        "|:--|:--|:--|:--|",
    ]
    for variable in environment.declared():
        default = variable.default if variable.default not in ("", None) else "(none)"
        option = f"`{variable.option}`" if variable.option else ""
        lines.append(f"| `{variable.name}` | `{default}` | {option} | {variable.doc} |")
    lines += [
        "",
        "The deployment's entry points (`deploy/`, `docker-compose.yml`) read their own",
        "variables (`AUTOML_DB_*`, `AUTOML_SECRETS_DIR`); see `docs/compose.md` and",
        "`docs/kubernetes.md`.",
        "",
    ]
    return "\n".join(lines)


def generated() -> dict[str, str]:
    """Each reference file's name and the text the code generates for it."""
    return {"cli.md": cli_reference(), "environment.md": environment_reference()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in generated().items():
        path = args.folder / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(str(path))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    verb = "differ from the code" if args.check else "written"
    print(f"{', '.join(stale)}: {verb}" if stale else "the references are up to date")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
