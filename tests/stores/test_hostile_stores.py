"""Stores and settings tried as a hostile user would: bad values in the environment, a
store held locked, a full disk, a project folder copied elsewhere."""

from __future__ import annotations

import subprocess

import pytest

from automl import environment
from automl.errors import ConfigError
from tests.conftest import automl_command, bin_env

BAD_VALUES = [
    ("AUTOML_HEARTBEAT_SECONDS", "abc"),
    ("AUTOML_HEARTBEAT_SECONDS", "0"),
    ("AUTOML_HEARTBEAT_SECONDS", "2.5"),
    ("AUTOML_GRACE_SECONDS", "nan"),
    ("AUTOML_GRACE_SECONDS", "-5"),
    ("AUTOML_PROXY_WAIT_SECONDS", "abc"),
    ("AUTOML_PROXY_WAIT_SECONDS", "inf"),
    ("AUTOML_PROXY_WAIT_SECONDS", "0"),
    ("AUTOML_STORE_RETRY_SECONDS", "nan"),
    ("AUTOML_TRACKING_RETRY_SECONDS", "-1"),
]


@pytest.mark.hostile("inputs")
@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_a_bad_variable_is_one_line_naming_it_when_read(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    variable = next(v for v in environment.declared() if v.name == name)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        variable.get()
    message = str(raised.value)
    assert message.startswith(f"{name}={value}: ") and "\n" not in message
    assert "automl.db" not in message  # no hint about a store that is fine


@pytest.mark.hostile("inputs")
def test_good_values_and_blanks_are_read() -> None:
    assert environment.HEARTBEAT_SECONDS.get() == 30
    for name, value, expected in [
        ("AUTOML_HEARTBEAT_SECONDS", " 5 ", 5),
        ("AUTOML_GRACE_SECONDS", "1", 1),
        ("AUTOML_PROXY_WAIT_SECONDS", "0.5", 0.5),
        ("AUTOML_STORE_RETRY_SECONDS", "0", 0.0),
        ("AUTOML_HEARTBEAT_SECONDS", "  ", 30),
    ]:
        variable = next(v for v in environment.declared() if v.name == name)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(name, value)
            assert variable.get() == expected


@pytest.mark.slow
@pytest.mark.hostile("inputs")
@pytest.mark.parametrize(
    ("name", "value", "args"),
    [
        ("AUTOML_HEARTBEAT_SECONDS", "0", ["study", "status", "x", "--storage", "STORE"]),
        ("AUTOML_GRACE_SECONDS", "nan", ["study", "status", "x", "--storage", "STORE"]),
        (
            "AUTOML_PROXY_WAIT_SECONDS",
            "abc",
            ["study", "status", "x", "--storage", "grpc://127.0.0.1:9"],
        ),
    ],
)
def test_a_command_with_a_bad_variable_exits_2_in_one_line(
    tmp_path, name: str, value: str, args: list[str]
) -> None:
    import optuna

    store = f"sqlite:///{tmp_path / 'automl.db'}"
    optuna.create_study(study_name="x", storage=store)  # a store that is fine
    args = [store if a == "STORE" else a for a in args]
    done = subprocess.run(
        automl_command(*args), capture_output=True, text=True, cwd=tmp_path,
        env=bin_env(**{name: value}), timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{name}={value}" in done.stderr and len(done.stderr.strip().splitlines()) == 1
