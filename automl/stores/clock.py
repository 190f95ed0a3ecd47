"""Time spent inside Optuna, so a search can say what share of its wall time Optuna takes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
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
