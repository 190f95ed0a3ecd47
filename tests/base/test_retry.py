"""Riding out a service that goes away: retried, and every outage said, start to end."""

from __future__ import annotations

import pytest

from automl import retry
from automl.environment import STORE_RETRY_SECONDS

TEST = retry.Service("test", "the test server", STORE_RETRY_SECONDS)
OTHER = retry.Service("other", "the other server", STORE_RETRY_SECONDS)
LOST = retry.Service("lost", "the lost server", STORE_RETRY_SECONDS)


@pytest.fixture
def said():
    messages: list[str] = []
    retry.LISTENERS.append(messages.append)
    yield messages
    retry.LISTENERS.remove(messages.append)


def flaky(failures: int):
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise ConnectionError("Connection refused")
        return "done"

    return call


def test_an_outage_is_said_when_it_starts_while_it_lasts_and_when_it_ends(said):
    assert retry.retrying(flaky(1), what=TEST, holding="trial results") == "done"
    assert said[0].startswith("the test server stopped answering at ")
    assert "(Connection refused)" in said[0] and "nothing is lost" in said[0]
    assert said[1].startswith("the test server unreachable (away 0 s; Connection refused)")
    assert said[1].endswith("retrying in 1 s")
    assert said[2].startswith("the test server answers again after 1 s away")
    assert said[2].endswith("sending what was held meanwhile: 1 trial results")
    assert not retry.is_away(TEST)


def test_held_things_are_counted_only_while_away(said):
    retry.hold(OTHER, "metric values", 5)  # not away: nothing to say later
    assert retry.went_away(OTHER, ConnectionError("refused"))
    assert not retry.went_away(OTHER, ConnectionError("refused"))  # said once
    retry.hold(OTHER, "metric values", 3)
    retry.hold(OTHER, "metric values", 4)
    retry.hold(OTHER, "run updates")
    retry.came_back(OTHER)
    retry.came_back(OTHER)  # back twice: said once
    assert len(said) == 2
    assert said[1].endswith("sending what was held meanwhile: 7 metric values, 1 run updates")


def test_a_wrong_request_is_not_retried_nor_called_an_outage(said):
    def wrong() -> None:
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        retry.retrying(wrong, what=TEST)
    assert said == []


def test_a_service_still_away_when_the_budget_is_spent_raises(said, monkeypatch):
    monkeypatch.setenv("AUTOML_STORE_RETRY_SECONDS", "0")
    with pytest.raises(ConnectionError):
        retry.retrying(flaky(5), what=LOST)
    assert said == []  # no time to wait: raised at once, the caller says it


def test_an_outage_is_kept_by_its_service_not_by_its_wording(said):
    """Two names for one service: the outage one of them began, the other ends."""
    reworded = retry.Service("test", "the test server, reworded", STORE_RETRY_SECONDS)
    assert retry.went_away(TEST, ConnectionError("refused"))
    assert retry.is_away(reworded) and not retry.went_away(reworded, ConnectionError("refused"))
    retry.came_back(reworded)
    assert not retry.is_away(TEST) and len(said) == 2
