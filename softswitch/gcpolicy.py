"""When the cyclic garbage collector runs in `softswitch serve`.

A busy switch keeps many objects alive for a while: each call's state for the call's length, and each
transaction for 32 s after its final response (64*T1: RFC 3261 17, RFC 6026), some 400 MB at 400 CPS.
CPython's own full collections over that stalled the loop for 100-500 ms. The call path makes no reference
cycles (1,000 calls with the collector off left 0 unreachable objects; at 250 CPS every young collection
freed nothing), so a young collection only walks live objects, about 1 us each in a heap this size: with
the start-up objects frozen and a young threshold of 50,000, one came every 2-3 s and stopped the process
for 35-60 ms, the first thing the tail of INVITE->180 showed.

So in the steady state nothing is walked. Every `freeze_s` what was allocated since is frozen (`gc.freeze`
moves it to the permanent generation in O(1), without a walk; reference counting still frees it) and the
young generation's count starts again from 0, so it never reaches its threshold. What cycles there are
(an exception kept with its frames, say) wait for a full collection: unfreeze, collect, freeze again. It
runs every `full_s`, or sooner, but not within `min_full_s` of the last one, once the frozen objects have
grown by `growth` since the last: garbage piling up faster than the clock expects (a flood of some rare
path) is reclaimed within a minute, while a ramp from idle to full load (live state, not garbage) costs at
most one early collection. `gc.get_freeze_count()` is on /metrics: the live state the collector stays out of.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

# A backstop only: frozen every second, the young count stays below it up to about 600 CPS.
YOUNG_THRESHOLD = 50_000


class GcPolicy:
    """Freezes the heap on a clock and runs the full collections; `step(now)` is one tick, fed its time."""

    def __init__(
        self, *, freeze_s: float = 1.0, full_s: float = 600.0, min_full_s: float = 60.0, growth: int = 500_000
    ) -> None:
        self.freeze_s = freeze_s
        self.full_s = full_s
        self.min_full_s = min_full_s
        self.growth = growth
        self.last_full = 0.0
        self.after_full = 0  # frozen objects right after the last full collection
        self.full_runs = 0

    def start(self, now: float) -> None:
        """After start-up: collect once, freeze everything there is, raise the young threshold."""
        self.full(now)
        gc.set_threshold(YOUNG_THRESHOLD, 50, 1000)

    def full_due(self, now: float, frozen: int) -> bool:
        since = now - self.last_full
        return since >= self.full_s or (since >= self.min_full_s and frozen - self.after_full > self.growth)

    def step(self, now: float) -> bool:
        """Freeze what was allocated since the last tick, or run the full collection when due (True)."""
        if self.full_due(now, gc.get_freeze_count()):
            self.full(now)
            return True
        gc.freeze()
        return False

    def full(self, now: float) -> None:
        """Walk everything once: the frozen objects too, so cycles frozen while young are found."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.after_full = gc.get_freeze_count()
        self.last_full = now
        self.full_runs += 1

    async def run(self, clock: Callable[[], float]) -> None:
        """The ticks, until cancelled."""
        while True:
            await asyncio.sleep(self.freeze_s)
            self.step(clock())

    def stop(self) -> None:
        """Give the frozen objects back to the collector (a process that serves again, or a test run)."""
        gc.unfreeze()
