"""The in-process event bus: call control publishes what happened, everything else subscribes.

`EventBus.publish` builds an immutable `Event` and hands it to every matching subscriber synchronously,
before returning, so each subscriber sees the events of a call in the order they happened. A callback
that publishes does not recurse: its events wait in a pending queue and are delivered once the current
event has reached every subscriber, so publish order is delivery order for everyone. A failing subscriber
is logged and skipped; neither the publisher nor the other subscribers notice.

Subscribers that must not slow call control (a WebSocket client, a webhook sender) take an `EventQueue`
instead: delivery only appends to a bounded buffer, and when the buffer is full the oldest event is
dropped and counted, never the publisher blocked. The bus is not thread-safe: publish from the event
loop's thread (use `loop.call_soon_threadsafe` from others).

Ids (`new_id`) are ULID-shaped: a prefix, then 10 Crockford base32 characters of Unix milliseconds and 16
of randomness. They sort by creation time as plain strings, and ids made in the same millisecond by this
process still sort in creation order, because the random part then steps up from the previous id's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable

import msgspec

from softswitch.logs import event as log_event

log = logging.getLogger("softswitch.events")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_id_lock = threading.Lock()
_last_ms = 0
_last_random = 0


_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)  # every 10-bit value as two digits
_POOL_IDS = 256  # ids' worth of random bytes read from the OS at once
_pool = b""
_pool_at = 0


def _base32(value: int, width: int) -> str:
    """`value` as `width` Crockford base32 digits (width <= 32), most significant first: two digits per
    table lookup, on 50-bit pieces (small integers shift faster than the whole 130-bit id)."""
    pairs, text = _PAIRS, ""
    for top in range(50 * ((width - 1) // 10), -1, -50):
        piece = value >> top & (1 << 50) - 1
        text += pairs[piece >> 40] + pairs[piece >> 30 & 1023] + pairs[piece >> 20 & 1023]
        text += pairs[piece >> 10 & 1023] + pairs[piece & 1023]
    return text[-width:]


def _random80() -> int:
    """80 random bits from the OS (what `secrets.randbits(80)` gives), read a few thousand bytes at a time:
    a system call per id cost more than the rest of the id. Call with `_id_lock` held."""
    global _pool, _pool_at
    if _pool_at >= len(_pool):
        _pool, _pool_at = os.urandom(10 * _POOL_IDS), 0
    _pool_at += 10
    return int.from_bytes(_pool[_pool_at - 10 : _pool_at], "big")


def _forget_pool() -> None:
    global _pool, _pool_at
    _pool, _pool_at = b"", 0  # a forked child must not repeat its parent's random bytes


os.register_at_fork(after_in_child=_forget_pool)


def new_id(prefix: str) -> str:
    """A unique id such as `call_01JA2B3C4D5E6F7G8H9JKMNPQRST` that sorts by creation time, so lists
    keyed by id are chronological and ids can be made anywhere without a database round trip."""
    global _last_ms, _last_random
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            random = _random80()
        else:  # same millisecond, or the clock stepped back: keep order by stepping up from the last id
            ms = _last_ms
            # A random step keeps same-millisecond ids hard to guess, with room for 2**48 of them.
            random = _last_random + 1 + (_random80() >> 48)
            if random >= 1 << _RANDOM_BITS:
                ms, random = ms + 1, _random80()
        _last_ms, _last_random = ms, random
    return f"{prefix}_{_base32((ms << _RANDOM_BITS) | random, 26)}"


class Event(msgspec.Struct, frozen=True):
    """Something that happened, e.g. `call.answered`. `at` comes from the bus's clock (Unix seconds);
    `id` from the wall clock, so ids stay ordered even when a test clock stands still."""

    id: str
    type: str
    at: float
    call_id: str | None
    data: dict


def _matcher(types: Iterable[str] | None) -> Callable[[str], bool]:
    if types is None:
        return lambda _type: True
    if isinstance(types, str):  # a lone name is one pattern, not an iterable of characters
        types = [types]
    exact: set[str] = set()
    prefixes: list[str] = []
    for pattern in types:
        if pattern.endswith(".*") and "*" not in pattern[:-2] and len(pattern) > 2:
            prefixes.append(pattern[:-1])  # "call.*" matches "call.answered", not "call" or "callx"
        elif "*" in pattern or not pattern:
            raise ValueError(f"event type pattern {pattern!r}: use an exact name or a prefix like 'call.*'")
        else:
            exact.add(pattern)
    starts = tuple(prefixes)
    return lambda type_: type_ in exact or type_.startswith(starts)


class _Subscription:
    __slots__ = ("active", "callback", "matches")

    def __init__(self, callback: Callable[[Event], None], matches: Callable[[str], bool]):
        self.callback = callback
        self.matches = matches
        self.active = True


class QueueClosed(Exception):
    """The queue was closed and holds no more events."""


class EventQueue:
    """A bounded buffer of events for an async consumer. Full means the consumer is too slow: the
    oldest event is dropped (and counted in `dropped`) so the publisher never waits."""

    def __init__(self, maxsize: int = 10000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.dropped = 0
        self.closed = False
        self._items: deque[Event] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._unsubscribe: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, event: Event) -> None:
        """Append, dropping the oldest event if full; a closed queue ignores it."""
        if self.closed:
            return
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(event)
        self._wake_one()

    def get_nowait(self) -> Event:
        """The oldest event; `asyncio.QueueEmpty` if none, `QueueClosed` if none will come."""
        if self._items:
            return self._items.popleft()
        if self.closed:
            raise QueueClosed
        raise asyncio.QueueEmpty

    async def get(self) -> Event:
        """Wait for the oldest event. Events queued before `close()` are still returned; then
        `QueueClosed` is raised, so a consumer loop ends cleanly."""
        while not self._items:
            if self.closed:
                raise QueueClosed
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                if waiter in self._getters:
                    self._getters.remove(waiter)
                elif self._items:  # we were woken but are leaving: pass the wake-up on
                    self._wake_one()
                raise
        return self._items.popleft()

    def close(self) -> None:
        """Stop receiving events and wake every waiting `get`. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class EventBus:
    """Synchronous, ordered fan-out of events to subscribers (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.published = 0
        self._subscriptions: list[_Subscription] = []
        self._pending: deque[Event] = deque()
        self._delivering = False

    def subscribe(self, callback: Callable[[Event], None], types: Iterable[str] | None = None) -> Callable[[], None]:
        """Call `callback` for every event whose type is in `types` (exact names, or prefixes like
        "call.*"; None for all). Returns the function that unsubscribes (idempotent), which takes
        effect at once, even for an event being delivered."""
        subscription = _Subscription(callback, _matcher(types))
        self._subscriptions = [*self._subscriptions, subscription]  # copy: delivery iterates a snapshot

        def unsubscribe() -> None:
            if subscription.active:
                subscription.active = False
                self._subscriptions = [s for s in self._subscriptions if s is not subscription]

        return unsubscribe

    def queue(self, types: Iterable[str] | None = None, maxsize: int = 10000) -> EventQueue:
        """A subscription read with `await q.get()`, for consumers that must never block publishers.
        `q.close()` unsubscribes."""
        q = EventQueue(maxsize)
        q._unsubscribe = self.subscribe(q.put_nowait, types)
        return q

    def publish(self, type: str, data: dict, *, call_id: str | None = None, at: float | None = None) -> Event:
        """Deliver an event to the matching subscribers and return it. Called from inside a
        subscriber, delivery waits until the current event has reached everyone."""
        event = Event(
            id=new_id("evt"),
            type=type,
            at=self.clock() if at is None else at,
            call_id=call_id,
            data=dict(data),  # the publisher may go on mutating its dict
        )
        self.published += 1
        self._pending.append(event)
        if self._delivering:
            return event
        self._delivering = True
        try:
            while self._pending:
                self._deliver(self._pending.popleft())
        finally:
            self._delivering = False
        return event

    def _deliver(self, event: Event) -> None:
        for subscription in self._subscriptions:
            if not (subscription.active and subscription.matches(event.type)):
                continue
            try:
                subscription.callback(event)
            except Exception as exc:
                log_event(
                    log,
                    "events.subscriber_failed",
                    logging.ERROR,
                    type=event.type,
                    event_id=event.id,
                    call_id=event.call_id,
                    subscriber=getattr(subscription.callback, "__qualname__", repr(subscription.callback)),
                    error=f"{exc.__class__.__name__}: {exc}",
                    traceback="".join(traceback.format_exception(exc)),
                )
