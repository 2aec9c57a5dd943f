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
runs every `full_s`, or sooner, but not within `min_full_s` of the last one, once the resident memory has
grown by `growth_bytes` since the last: garbage piling up faster than the clock expects (a flood down some
rare path) is reclaimed within a minute; a ramp from idle to a high load (live state, not garbage: some
400 MB at 400 CPS) costs an early collection or two on the way. Growth is read from /proc, not counted
in objects: `gc.get_freeze_count()` walks the whole frozen list (5 ms for 100,000 objects in this heap),
so it is read once per full collection, for /metrics.

A full collection walks every tracked object, and about half of those a busy switch has were start-up's
(modules, classes, functions, the services: about 50,000 objects, walked at every full collection, though
none can ever be freed). In `softswitch serve` (`retire_startup`) what survives the first collection
leaves the walks for good (`cext.gctrack.untrack_survivors`). At 425 CPS a full collection walked 57,000
objects instead of 108,000 and stopped the process for 35-63 ms instead of 99-106.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable

from cext.gctrack import untrack_survivors

# A backstop only: a call leaves some 130 tracked objects alive for a while, so frozen every second the young
# count passed it from about 400 CPS (a 25-35 ms young collection each second at 475 CPS); frozen every
# quarter second (`freeze_s`, a freeze is O(1)) it stays below it up to about 1,500 CPS.
YOUNG_THRESHOLD = 50_000
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """The process's resident memory from /proc/self/statm; 0 where there is none (no growth trigger)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class GcPolicy:
    """Freezes the heap on a clock and runs the full collections; `step(now)` is one tick, fed its time."""

    def __init__(
        self,
        *,
        freeze_s: float = 0.25,
        full_s: float = 600.0,
        min_full_s: float = 60.0,
        growth_bytes: int = 256 << 20,
        resident: Callable[[], int] = resident_bytes,
        retire_startup: bool = False,
    ) -> None:
        """`retire_startup`: untrack what survives the first collection, for good (only for a process of its
        own: in a test run, pytest's objects would leave the collector too)."""
        self.freeze_s = freeze_s
        self.full_s = full_s
        self.min_full_s = min_full_s
        self.growth_bytes = growth_bytes
        self.resident = resident
        self.last_full = 0.0
        self.resident_after_full = 0
        self.objects_after_full = 0  # frozen right after the last full collection: the live heap it walked
        self.full_runs = 0
        self.retire_startup = retire_startup
        self.retired = 0  # start-up's survivors left out of every later walk
        self._threshold: tuple[int, int, int] | None = None

    def start(self, now: float) -> None:
        """After start-up: collect once, freeze (or with `retire_startup` untrack) everything there is, raise
        the young threshold."""
        self.full(now)
        self._threshold = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, 50, 1000)

    def full_due(self, now: float, resident: int) -> bool:
        since = now - self.last_full
        return since >= self.full_s or (
            since >= self.min_full_s and resident - self.resident_after_full > self.growth_bytes
        )

    def step(self, now: float) -> bool:
        """Freeze what was allocated since the last tick, or run the full collection when due (True)."""
        if self.full_due(now, self.resident()):
            self.full(now)
            return True
        gc.freeze()
        return False

    def full(self, now: float) -> None:
        """Walk everything once: the frozen objects too, so cycles frozen while young are found."""
        gc.unfreeze()
        gc.collect()
        if self.retire_startup and self.full_runs == 0:  # the first: what survives it is start-up's
            self.retired = untrack_survivors()
        gc.freeze()
        self.objects_after_full = gc.get_freeze_count()
        self.resident_after_full = self.resident()
        self.last_full = now
        self.full_runs += 1

    async def run(self, clock: Callable[[], float]) -> None:
        """The ticks, until cancelled."""
        while True:
            await asyncio.sleep(self.freeze_s)
            self.step(clock())

    def stop(self) -> None:
        """Give the frozen objects back to the collector and its threshold back (a process that goes on: a
        test run that served in-process)."""
        gc.unfreeze()
        if self._threshold is not None:
            gc.set_threshold(*self._threshold)
            self._threshold = None
