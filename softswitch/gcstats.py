"""How long the cyclic garbage collector stops the process, for `/metrics`.

Every collection holds the GIL: the event loop (SIP, the API) and the media thread's Python side wait it out.
On a busy switch a young-generation collection walks tens of thousands of objects a call's life keeps, and
its pause is what the tail of INVITE->180 shows first; `softswitch.gcpolicy` freezes the heap so that a
busy switch runs none, and only its full collections show here. One recorder per process (collections
are process-wide), installed by the first `Metrics`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from softswitch.histogram import Histogram

# 1 ms is noise; past 50 ms a pause shows in call set-up times; past 1 s retransmissions start.
BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
GENERATIONS = (0, 1, 2)


class GcPauses:
    """Per generation: collections, seconds stopped in all, the longest, and a histogram of their lengths."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.longest = [0.0, 0.0, 0.0]
        self.pauses = [Histogram(BUCKETS) for _ in GENERATIONS]
        self._started = 0.0

    def callback(self, phase: str, info: dict) -> None:
        """The `gc.callbacks` entry: timed from its "start" to its "stop"."""
        if phase == "start":
            self._started = self.clock()
            return
        took = self.clock() - self._started
        generation = info["generation"]
        self.pauses[generation].observe(took)
        self.longest[generation] = max(self.longest[generation], took)

    @property
    def count(self) -> list[int]:
        return [h.count for h in self.pauses]

    @property
    def seconds(self) -> list[float]:
        return [h.sum for h in self.pauses]

    def histogram(self, generation: int) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs, +Inf last, as Prometheus histograms are written."""
        return self.pauses[generation].cumulative()


_recorder: GcPauses | None = None


def pauses() -> GcPauses:
    """The process's recorder, its callback installed on first use."""
    global _recorder
    if _recorder is None:
        _recorder = GcPauses()
        gc.callbacks.append(_recorder.callback)
    return _recorder
