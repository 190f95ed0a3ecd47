"""A Ctrl-C or SIGTERM is never lost: Python drops an exception raised inside a
garbage-collection callback, so the signal is also remembered and acted on next."""

from __future__ import annotations

import gc
import os
import signal
import time

import pytest

from automl.cli import sigterm_as_interrupt
from automl.errors import STOP, Terminated, stop_if_asked


class SignalledWhileCollected:
    """Its finaliser receives the signal: the handler's raise happens inside ``__del__``."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)
        time.sleep(0.2)  # the handler runs here, and Python ignores what it raises


@pytest.mark.hostile("signals")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the lost raise
@pytest.mark.parametrize(("signum", "kind"), [(signal.SIGINT, KeyboardInterrupt),
                                              (signal.SIGTERM, Terminated)])  # fmt: skip
def test_a_signal_whose_raise_python_dropped_still_stops_at_the_next_check(signum, kind):
    with sigterm_as_interrupt():
        SignalledWhileCollected(signum)  # collected at once: the raise is lost
        gc.collect()
        with pytest.raises(kind) as raised:
            stop_if_asked()
        assert type(raised.value) is kind
    assert STOP == []  # forgotten once the command is over
    stop_if_asked()  # nothing to raise any more


def test_a_signal_raised_normally_is_raised_once():
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert STOP == []
