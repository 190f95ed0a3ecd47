"""A call made at once and then every few seconds from a thread while a block runs: the
heartbeats of a running trial and of a running search."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def every(seconds: float, call: Callable[[], None], name: str) -> Iterator[None]:
    """Call ``call`` at once, then every ``seconds``, from a thread while the block runs
    (a heartbeat); a call that fails is made up at the next one. The thread ends with
    the block."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):
                call()
            if stop.wait(seconds):
                return

    thread = threading.Thread(target=beat, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
