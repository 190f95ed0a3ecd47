"""How a trial's run reads in the MLflow UI once it has ended: a short ``state`` for the
runs table's column and one sentence for its page.

MLflow's own status follows Optuna's state (a pruned trial is KILLED), and the UI draws
KILLED with the icon of a crash; these two say that pruned is not failed.
"""

from __future__ import annotations

from collections.abc import Mapping

from automl.records.run import RunTag

STATE_REASON_LENGTH = 40  # of a failure's reason in the state column


def ended_tags(state: str, reason: str | None, last_epoch: int = 0, **tags: str) -> dict[str, str]:
    """The tags that close a trial's run: ``state``, short enough for a column of the
    runs table (``COMPLETE``, ``PRUNED @ 3``, ``FAIL: crashed``), since MLflow's own status
    shows a pruned trial as KILLED like a crash; ``reason``; and the description (on the
    run's page), one sentence on how it ended. ``tags.state LIKE 'PRUNED%'`` selects
    the pruned trials. ``last_epoch``: the last epoch the trial reported."""
    return {
        RunTag.STATE: state_label(state, reason, last_epoch),
        **tags,
        **({RunTag.REASON: reason[:5000]} if reason else {}),
        RunTag.NOTE: outcome_sentence(state, reason, tags, last_epoch),
    }


def state_label(state: str, reason: str | None, epochs: int = 0) -> str:
    """``COMPLETE``; ``PRUNED @ 3`` (the epoch it was stopped at) or ``PRUNED: constraint``
    (stopped before training); ``FAIL: reason``."""
    if state == "PRUNED":
        if reason and reason != "pruned":
            return f"PRUNED: {_short(reason)}"
        return f"PRUNED @ {epochs}" if epochs else "PRUNED"
    if state == "FAIL":
        return f"FAIL: {_short(reason or 'error')}"
    return state


def _short(reason: str) -> str:
    lines = reason.strip().splitlines() or ["error"]
    return lines[0][:STATE_REASON_LENGTH]


def outcome_sentence(
    state: str, reason: str | None, tags: Mapping[str, str], epochs: int = 0
) -> str:
    """How a trial ended, for a person: a pruned trial (MLflow shows KILLED) was stopped
    early on purpose, which is not a failure."""
    message = tags.get(RunTag.MESSAGE, "")
    if state == "COMPLETE" and tags.get(RunTag.CUT):  # its result is an unfinished one's
        return f"**Complete, cut by the budget**: {tags[RunTag.CUT]}; its result is that epoch's."
    if state == "COMPLETE":
        return f"**Complete**: trained its whole schedule ({tags.get(RunTag.EPOCHS, '?')} epochs)."
    if state == "PRUNED":
        after = f" after epoch {epochs}" if epochs else ""
        if reason not in (None, "pruned"):  # too large, diverged, out of memory
            return f"**Pruned**{after} ({reason}), not failed: {message or reason}."
        why = f": {message}" if message else ""
        return (
            f"**Pruned**{after}, not failed: stopped early because it fell behind the other "
            f"trials{why}. MLflow shows such runs as KILLED."
        )
    return f"**Failed** ({reason or 'error'}){': ' + message if message else ''}."[:5000]
