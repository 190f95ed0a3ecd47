"""Notes carry user text (paths, class names, hints with brackets): printed as written."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from automl.cli.common import print_note


@pytest.mark.hostile("inputs")
@pytest.mark.parametrize("text", ["data/[/]odd", "consider training.balance: [none, weighted]"])
def test_a_note_prints_its_text_as_written(text):
    out = io.StringIO()
    print_note(text, Console(file=out, width=200))
    assert out.getvalue() == f"note: {text}\n"
