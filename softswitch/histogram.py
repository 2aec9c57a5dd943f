"""A histogram in plain integers, for /metrics: observed on the event loop, read only at scrape time.

prometheus_client's own Histogram takes a lock and a couple of microseconds per observation; the call
path observes a few per call, and everything it counts is touched by one thread only.
"""

from __future__ import annotations

from bisect import bisect_left


class Histogram:
    """Counts per bucket (upper bounds inclusive, as Prometheus's `le`), their sum and the total."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative; past the last bound only in `count`
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        i = bisect_left(self.bounds, value)
        if i < len(self.counts):
            self.counts[i] += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs, +Inf last, as Prometheus histograms are written."""
        out, total = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            total += n
            out.append((repr(bound), total))
        out.append(("+Inf", self.count))
        return out
