"""Time spent inside Optuna, so a search can say what share of its wall time Optuna takes."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class OptunaClock:
    """Seconds spent inside Optuna, from any thread; nested calls are counted once."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._local = threading.local()
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._lock:
                    self.seconds += time.perf_counter() - start


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
