"""softswitch/gcpolicy.py: the heap frozen on a clock, full collections on a clock or on growth."""

import gc
import weakref

import pytest

from softswitch.gcpolicy import YOUNG_THRESHOLD, GcPolicy


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
    policy = GcPolicy(freeze_s=1.0, full_s=600.0, min_full_s=60.0, growth=10_000)
    yield policy
    policy.stop()
    gc.set_threshold(*saved)


def test_gcpolicy_full_collection_is_due_on_the_clock_or_on_growth_past_the_minimum_interval():
    policy = GcPolicy(full_s=600.0, min_full_s=60.0, growth=1000)
    policy.last_full, policy.after_full = 100.0, 5000
    assert not policy.full_due(100.0 + 599.0, 5000)
    assert policy.full_due(100.0 + 600.0, 5000)
    assert not policy.full_due(100.0 + 59.0, 5000 + 1001)  # grown, but too soon after the last
    assert not policy.full_due(100.0 + 61.0, 5000 + 1000)  # not grown past `growth`
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
    policy.start(now=0.0)
    ref = cycle()
    kept = [[i] for i in range(15_000)]  # live objects: frozen, counted as growth, not garbage
    assert policy.step(now=30.0) is False  # grown, but within min_full_s of start-up
    assert policy.step(now=61.0) is True
    assert ref() is None
    assert len(kept) == 15_000 and policy.after_full >= 15_000
    assert policy.step(now=122.0) is False  # measured from the new level: no more growth, no collection


def test_gcpolicy_stop_hands_the_frozen_objects_back(policy):
    policy.start(now=0.0)
    ref = cycle()
    policy.step(now=1.0)
    policy.stop()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert ref() is None
