"""Signals a search acts on: Ctrl-C and SIGTERM raised once as interrupts, the signals
after them only hurrying the clean-up, and job processes that die with their search.

A second Ctrl-C, a moment after the first, would otherwise land in the middle of closing
the records (the trial's run, its Optuna state, the parent run) and leave them
disagreeing: so once an interrupt is raised, the ones that follow are remembered
(``hurried``), never raised. The clean-up then skips what it may wait on.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from automl.errors import STOP, Terminated

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
_LOST: list[bool] = []  # an interrupt's raise was dropped by Python (see stopping_on_signals)
HURRYING = (
    "stopping: the records are being closed; another signal hurries it, kill -9 leaves them open\n"
)


def hurried() -> bool:
    """A second signal came while the first was acted on: stop without waiting."""
    return len(STOP) > 1


def _stopper(kind: type[KeyboardInterrupt]) -> Callable[[int, object], None]:
    def stop(signum: int, frame: object) -> None:
        first = not STOP
        STOP.append(kind)  # kept, in case this raise is lost (see errors.stop_if_asked)
        if first or _LOST:
            _LOST.clear()
            raise kind()
        with contextlib.suppress(OSError):  # a raw write: safe inside a handler
            os.write(2, HURRYING.encode())

    return stop


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """SIGTERM raised as ``Terminated`` and Ctrl-C as ``KeyboardInterrupt`` while the block
    runs, once: the running trial and the runs are then closed (and as PID 1 in a
    container, where an unhandled SIGTERM is ignored until the SIGKILL that follows).
    Signals that follow only hurry that (``hurried``). Both are also remembered, so an
    interrupt whose raise Python dropped still stops the search at the next epoch, and the
    next signal is raised again."""
    previous = signal.signal(signal.SIGTERM, _stopper(Terminated))
    interrupt = signal.getsignal(signal.SIGINT)
    if interrupt is signal.default_int_handler:  # not where SIGINT is ignored (nohup, &)
        signal.signal(signal.SIGINT, _stopper(KeyboardInterrupt))
    hook = sys.unraisablehook

    def quiet(unraisable: Any) -> None:  # a lost interrupt is acted on, not printed
        if STOP and isinstance(unraisable.exc_value, KeyboardInterrupt):
            _LOST.append(True)
        else:
            hook(unraisable)

    sys.unraisablehook = quiet
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if interrupt is signal.default_int_handler:
            signal.signal(signal.SIGINT, interrupt)
        sys.unraisablehook = hook
        STOP.clear()
        _LOST.clear()


def die_with(parent: int, signum: int = signal.SIGTERM, poll: float = 1.0) -> None:
    """Have this process sent ``signum`` when the process ``parent`` dies (even by kill
    -9): on Linux by the kernel (``prctl(PR_SET_PDEATHSIG)``), elsewhere by a thread
    watching its parent's pid. A parent already gone sends it at once."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0:
                if os.getppid() != parent:  # it died before the call: no signal would come
                    os.kill(os.getpid(), signum)
                return

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(poll)
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
