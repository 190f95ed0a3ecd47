"""The references in docs/reference/ are what the code generates: a changed option, help
text or environment variable without ``make docs`` fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from automl.cli.reference import FILES, generated, main

REFERENCE = Path(__file__).resolve().parent.parent.parent / "docs" / "reference"


@pytest.mark.parametrize("name", FILES)
def test_the_committed_reference_is_what_the_code_generates(name):
    committed = (REFERENCE / name).read_text()
    assert committed == generated()[name], f"docs/reference/{name} is stale: run `make docs`"


def test_the_cli_reference_holds_every_command_and_every_search_option():
    text = generated()["cli.md"]
    for command in ("automl search", "automl study create", "automl worker", "automl promote"):
        assert f"## `{command}`" in text
    for flag in ("--trials", "--space", "--max-epochs", "--checkpoint-seconds", "--warm-start"):
        assert flag in text


def test_the_environment_reference_names_every_declared_variable():
    from automl.environment import declared

    text = generated()["environment.md"]
    assert all(f"`{variable.name}`" in text for variable in declared())


def test_check_says_when_a_reference_is_stale(tmp_path, capsys):
    assert main([str(tmp_path), "--check"]) == 1  # nothing there yet
    assert main([str(tmp_path)]) == 0
    assert main([str(tmp_path), "--check"]) == 0
    (tmp_path / "cli.md").write_text("edited by hand")
    assert main([str(tmp_path), "--check"]) == 1
    assert "cli.md: differ from the code" in capsys.readouterr().out
