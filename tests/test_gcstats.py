"""softswitch/gcstats.py: collector pauses timed from gc.callbacks' start to stop, by generation."""

from __future__ import annotations

import gc

from softswitch import gcstats
from softswitch.gcstats import BUCKETS, GcPauses


def test_gcstats_pauses_are_counted_summed_and_bucketed_by_generation() -> None:
    now = [100.0]
    rec = GcPauses(clock=lambda: now[0])
    for generation, took in ((0, 0.0004), (0, 0.030), (2, 0.7), (0, 3.0)):
        rec.callback("start", {"generation": generation})
        now[0] += took
        rec.callback("stop", {"generation": generation, "collected": 0, "uncollectable": 0})
    assert rec.count == [3, 0, 1]
    assert abs(rec.seconds[0] - 3.0304) < 1e-9 and abs(rec.longest[0] - 3.0) < 1e-9
    young = dict(rec.histogram(0))
    assert young["0.001"] == 1 and young["0.02"] == 1 and young["0.05"] == 2 and young["1.0"] == 2
    assert young["+Inf"] == 3  # the 3 s pause is past the last bound
    assert [le for le, _ in rec.histogram(1)] == [*map(repr, BUCKETS), "+Inf"]
    assert all(n == 0 for _, n in rec.histogram(1))
    assert dict(rec.histogram(2))["0.5"] == 0 and dict(rec.histogram(2))["1.0"] == 1


def test_gcstats_one_recorder_per_process_sees_real_collections() -> None:
    rec = gcstats.pauses()
    assert gcstats.pauses() is rec and gc.callbacks.count(rec.callback) == 1
    before = rec.count[1]
    gc.collect(1)
    assert rec.count[1] == before + 1 and rec.longest[1] > 0
