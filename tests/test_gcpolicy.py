"""softswitch/gcpolicy.py: the heap frozen on a clock, full collections on a clock or on growth."""

import gc
import weakref

import pytest

from softswitch.gcpolicy import YOUNG_THRESHOLD, GcPolicy, resident_bytes


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref:
    """A two-object cycle nothing else holds: only a collection that walks it can free it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def policy():
    saved = gc.get_threshold()
    policy = GcPolicy(freeze_s=1.0, full_s=600.0, min_full_s=60.0, growth_bytes=1000, resident=lambda: 0)
    yield policy
    policy.stop()
    gc.set_threshold(*saved)


def test_gcpolicy_full_collection_is_due_on_the_clock_or_on_growth_past_the_minimum_interval():
    policy = GcPolicy(full_s=600.0, min_full_s=60.0, growth_bytes=1000)
    policy.last_full, policy.resident_after_full = 100.0, 5000
    assert not policy.full_due(100.0 + 599.0, 5000)
    assert policy.full_due(100.0 + 600.0, 5000)
    assert not policy.full_due(100.0 + 59.0, 5000 + 1001)  # grown, but too soon after the last
    assert not policy.full_due(100.0 + 61.0, 5000 + 1000)  # not grown past `growth_bytes`
    assert policy.full_due(100.0 + 61.0, 5000 + 1001)


def test_gcpolicy_a_tick_freezes_without_walking_and_the_full_collection_finds_what_it_froze(policy):
    policy.start(now=0.0)
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert policy.full_runs == 1
    ref = cycle()
    before = gc.get_freeze_count()
    assert policy.step(now=1.0) is False
    assert gc.get_count()[0] == 0  # the young generation starts again from nothing
    assert gc.get_freeze_count() > before
    gc.collect()
    assert ref() is not None  # frozen: no collection walks it
    assert policy.step(now=600.0) is True  # the clock: a full collection, frozen objects included
    assert ref() is None
    assert policy.full_runs == 2 and policy.last_full == 600.0


def test_gcpolicy_growth_past_the_limit_brings_the_full_collection_forward(policy):
    readings = iter([10_000, 10_500, 11_500, 11_500, 11_600, 12_000])  # resident bytes, one per read
    policy.resident = lambda: next(readings)
    policy.start(now=0.0)  # reads 10,000 after its collection
    assert policy.resident_after_full == 10_000 and policy.objects_after_full > 0
    ref = cycle()
    assert policy.step(now=30.0) is False  # 10,500: within growth_bytes (1,000)
    assert policy.step(now=40.0) is False  # 11,500: grown past it, but within min_full_s of the last
    assert ref() is not None
    assert policy.step(now=61.0) is True  # 11,500 again, past min_full_s: collected, then 11,600 read
    assert ref() is None and policy.resident_after_full == 11_600
    assert policy.step(now=122.0) is False  # 12,000: measured from the new level, no collection


def test_gcpolicy_reads_this_processs_resident_memory():
    assert resident_bytes() > 10 << 20  # a Python process with pytest loaded


def test_gcpolicy_stop_hands_the_frozen_objects_back(policy):
    gc.set_threshold(700, 10, 10)
    policy.start(now=0.0)
    ref = cycle()
    policy.step(now=1.0)
    policy.stop()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == (700, 10, 10)  # the process's own threshold back
    gc.collect()
    assert ref() is None


RETIRE_SCRIPT = """
import gc, weakref
from softswitch.gcpolicy import GcPolicy

class Thing:
    pass

def helper():
    return 42

startup_thing = Thing()
startup_thing.table = {"k": [1, 2]}
startup_list = [[1], (2, [3])]
thing_gone = weakref.ref(startup_thing)
helper_ref = weakref.ref(helper)

policy = GcPolicy(resident=lambda: 0, retire_startup=True)
policy.start(now=0.0)
print("retired", policy.retired, "walked", policy.objects_after_full)
assert policy.retired > 1000
assert not gc.is_tracked(startup_thing) and not gc.is_tracked(startup_list) and not gc.is_tracked(Thing)
assert not gc.is_tracked(helper) and helper() == 42

# a dict of start-up tracks itself again when it is given a container; the list keeps what it is given
startup_thing.table["new"] = [4]
assert gc.is_tracked(startup_thing.table)
startup_list.append(Thing())

# a cycle made after start-up is still found by the full collection
a, b = Thing(), Thing()
a.other, b.other = b, a
cycle = weakref.ref(a)
del a, b
policy.step(now=1.0)
assert cycle() is not None
policy.full(now=2.0)
assert cycle() is None

# a start-up instance, untracked, still dies by reference counting; a pinned function never dies
del startup_thing
assert thing_gone() is None
del helper
assert helper_ref() is not None and helper_ref()() == 42
startup_list.clear()
gc.collect()
print("ok")
"""


def test_gcpolicy_retired_startup_objects_leave_the_walks_and_later_cycles_are_still_collected(tmp_path):
    """In a process of its own: untracking start-up's survivors would take pytest's objects out too."""
    import subprocess
    import sys

    script = tmp_path / "retire.py"
    script.write_text(RETIRE_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "ok"
