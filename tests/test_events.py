"""Event bus: ordered synchronous delivery, type filters, isolation of failing subscribers, nested
publishes, bounded async queues, and time-sortable ids."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import re
import time
from types import SimpleNamespace

import pytest

from softswitch import events
from softswitch.events import Event, EventBus, QueueClosed, new_id

ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def recorder(bus: EventBus, types=None) -> list[Event]:
    got: list[Event] = []
    bus.subscribe(got.append, types)
    return got


def test_publish_builds_event_from_clock_and_copies_data():
    bus = EventBus(clock=lambda: 1234.5)
    got = recorder(bus)
    data = {"from": "sip:alice@example.test"}
    ev = bus.publish("call.initiated", data, call_id="call_1")
    data["from"] = "changed"
    assert got == [ev]
    assert (ev.type, ev.at, ev.call_id, ev.data) == (
        "call.initiated",
        1234.5,
        "call_1",
        {"from": "sip:alice@example.test"},
    )
    assert ev.id.startswith("evt_") and ID.match(ev.id[4:])
    assert bus.publish("call.ringing", {}, at=99.0).at == 99.0
    assert bus.published == 2
    with pytest.raises(AttributeError):
        ev.type = "other"  # type: ignore[misc]


def test_every_subscriber_sees_events_in_publish_order():
    bus = EventBus()
    a, b = recorder(bus), recorder(bus)
    types = ["call.initiated", "call.ringing", "call.answered", "call.completed"]
    for t in types:
        bus.publish(t, {}, call_id="c1")
    assert [e.type for e in a] == types
    assert a == b


def test_type_filters_exact_and_prefix():
    bus = EventBus()
    exact = recorder(bus, ["call.answered"])
    prefix = recorder(bus, ["call.*"])
    lone = recorder(bus, "call.dtmf")  # a single string is one pattern
    mixed = recorder(bus, ["registration.*", "call.completed"])
    for t in ["call.answered", "call.dtmf", "call", "callx.answered", "registration.added", "call.completed"]:
        bus.publish(t, {})
    assert [e.type for e in exact] == ["call.answered"]
    assert [e.type for e in prefix] == ["call.answered", "call.dtmf", "call.completed"]
    assert [e.type for e in lone] == ["call.dtmf"]
    assert [e.type for e in mixed] == ["registration.added", "call.completed"]


@pytest.mark.parametrize("pattern", ["*", "call*", "call.*.x", ".*", ""])
def test_bad_type_patterns_are_refused(pattern):
    with pytest.raises(ValueError):
        EventBus().subscribe(lambda e: None, [pattern])


def test_unsubscribe_stops_delivery_and_is_idempotent():
    bus = EventBus()
    got: list[Event] = []
    unsubscribe = bus.subscribe(got.append)
    bus.publish("call.initiated", {})
    unsubscribe()
    unsubscribe()
    bus.publish("call.ringing", {})
    assert [e.type for e in got] == ["call.initiated"]


def test_unsubscribe_during_delivery_takes_effect_at_once():
    bus = EventBus()
    got: list[str] = []
    unsubscribe_b = None

    def a(event: Event) -> None:
        got.append("a")
        unsubscribe_b()

    bus.subscribe(a)
    unsubscribe_b = bus.subscribe(lambda e: got.append("b"))
    bus.publish("call.initiated", {})
    assert got == ["a"]


def test_failing_subscriber_is_logged_and_isolated(caplog):
    bus = EventBus()
    before = recorder(bus)

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken)
    after = recorder(bus)
    with caplog.at_level(logging.ERROR, logger="softswitch.events"):
        ev = bus.publish("call.answered", {}, call_id="c1")  # does not raise
        bus.publish("call.completed", {}, call_id="c1")
    assert [e.type for e in before] == [e.type for e in after] == ["call.answered", "call.completed"]
    failures = [r for r in caplog.records if r.getMessage() == "events.subscriber_failed"]
    assert len(failures) == 2
    assert failures[0].name == "softswitch.events"
    assert (failures[0].type, failures[0].event_id, failures[0].call_id) == ("call.answered", ev.id, "c1")
    assert failures[0].error == "RuntimeError: boom"
    assert "broken" in failures[0].subscriber and "raise RuntimeError" in failures[0].traceback


def test_nested_publish_is_delivered_after_the_current_event():
    bus = EventBus()
    first: list[str] = []
    last: list[str] = []

    def reactor(event: Event) -> None:
        first.append(event.type)
        if event.type == "call.answered":
            nested = bus.publish("call.recording_started", {})
            assert last == []  # not delivered from inside this callback
            assert nested.type == "call.recording_started"
            bus.publish("call.tone", {})

    bus.subscribe(reactor)
    bus.subscribe(lambda e: last.append(e.type))
    bus.publish("call.answered", {})
    order = ["call.answered", "call.recording_started", "call.tone"]
    assert first == order
    assert last == order  # the later subscriber saw call.answered before the nested events
    bus.publish("call.completed", {})
    assert last[-1] == "call.completed"
    assert bus.published == 4


def test_nested_publish_after_a_failure_still_delivered():
    bus = EventBus()
    got = recorder(bus, ["b.*"])

    def publish_then_fail(event: Event) -> None:
        if event.type == "a.x":
            bus.publish("b.x", {})
            raise RuntimeError("after publishing")

    bus.subscribe(publish_then_fail)
    bus.publish("a.x", {})
    bus.publish("b.y", {})
    assert [e.type for e in got] == ["b.x", "b.y"]


def test_queue_drops_oldest_when_full_and_counts():
    bus = EventBus()
    q = bus.queue(["call.*"], maxsize=3)
    for i in range(5):
        bus.publish("call.dtmf", {"digit": str(i)})
    bus.publish("registration.added", {})
    assert q.dropped == 2
    assert len(q) == 3
    assert [q.get_nowait().data["digit"] for _ in range(3)] == ["2", "3", "4"]
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()


def test_queue_refuses_zero_size():
    with pytest.raises(ValueError):
        EventBus().queue(maxsize=0)


async def test_queue_async_get_waits_for_publish():
    bus = EventBus()
    q = bus.queue()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    ev = bus.publish("call.ringing", {}, call_id="c1")
    assert await asyncio.wait_for(getter, 1) is ev


async def test_queue_close_unsubscribes_drains_then_raises():
    bus = EventBus()
    q = bus.queue()
    bus.publish("call.initiated", {})
    q.close()
    bus.publish("call.ringing", {})
    assert (await q.get()).type == "call.initiated"
    with pytest.raises(QueueClosed):
        await q.get()
    with pytest.raises(QueueClosed):
        q.get_nowait()


async def test_queue_close_wakes_a_waiting_get():
    q = EventBus().queue()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.close()
    with pytest.raises(QueueClosed):
        await asyncio.wait_for(getter, 1)


async def test_cancelled_get_passes_its_event_to_the_next_getter():
    bus = EventBus()
    q = bus.queue()
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    ev = bus.publish("call.ringing", {})  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) is ev


def test_ids_unique_sortable_and_well_formed():
    ids = [new_id("call") for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(i.startswith("call_") and ID.match(i[5:]) for i in ids)


def test_base32_digits_match_rfc4648_base32_with_the_crockford_alphabet():
    """The digit encoder against the standard library's base32 (same 5-bit groups, other alphabet)."""
    rfc4648 = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    rng = random.Random(4648)
    for width in range(1, 33):
        for value in (0, (1 << 5 * width) - 1, *(rng.getrandbits(5 * width) for _ in range(200))):
            expected = base64.b32encode(value.to_bytes(20, "big")).translate(rfc4648)[-width:].decode()
            assert events._base32(value, width) == expected


def fake_clock(monkeypatch, ns: list[int]) -> None:
    """Drive new_id's clock; the id state is restored afterwards so later ids stay ordered."""
    monkeypatch.setattr(events, "time", SimpleNamespace(time_ns=lambda: ns[0], time=time.time))
    monkeypatch.setattr(events, "_last_ms", 0)
    monkeypatch.setattr(events, "_last_random", 0)


def test_id_time_prefix_is_the_millisecond_clock(monkeypatch):
    fake_clock(monkeypatch, [1_700_000_000_123_456_789])
    a, b = new_id("x"), new_id("x")
    decoded = 0
    for ch in a[2:12]:
        decoded = decoded * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(ch)
    assert decoded == 1_700_000_000_123
    assert a[:12] == b[:12] and a < b  # same millisecond: the random part steps up


def test_ids_stay_ordered_when_the_clock_steps_back(monkeypatch):
    now = [1_700_000_000_500_000_000]
    fake_clock(monkeypatch, now)
    first = new_id("x")
    now[0] -= 10_000_000_000
    second = new_id("x")
    now[0] += 20_000_000_000
    third = new_id("x")
    assert first < second < third
    assert second[:12] == first[:12] and third[:12] > first[:12]
