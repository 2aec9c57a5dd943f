"""Webhooks: call events POSTed to users' endpoints, signed per the Standard Webhooks spec, never lost.

Signing: `webhook-id` (the event id, the same on every retry so receivers can deduplicate),
`webhook-timestamp` (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
keyed with the base64-decoded part of a `whsec_` secret; during a rotation both secrets sign, space-separated.

Delivery is an outbox: `WebhookDispatcher` writes each bus event, with one pending delivery per endpoint that
wants it (account-wide endpoints, and the call's own `status_callback`), to the store in one transaction
before anything is sent; a background task sends the due deliveries, picked from an in-memory index of the
outbox (`DeliveryQueue`: no scan of the outbox per delivery). A crash or restart leaves them pending and the
next dispatcher over the same store sends them.
2xx is delivered; 410 disables the endpoint; 429, 5xx, timeouts and connection errors are retried on the
Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with jitter, `Retry-After` honoured);
other statuses fail at once. Each attempt is logged, with its delivery's new status, in one transaction at the
end of the loop turn it ended in (one commit for all of that turn's; a crash before it re-sends the delivery,
with the same `webhook-id`). A call's events reach an endpoint in order: the next one waits while an earlier
one to that endpoint is pending or retrying (or its outcome unsaved). Addresses on loopback, private,
link-local and other non-public networks are refused unless `allow_private` (a webhook URL must not reach the
box's LAN).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import heapq
import hmac
import ipaddress
import logging
import random
import secrets
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from softswitch import __version__
from softswitch.events import Event, EventBus, new_id
from softswitch.logs import event as log_event
from softswitch.store import Store, WebhookAttempt, WebhookEndpoint, WebhookEvent
from softswitch.transport.tls import verifying_context

log = logging.getLogger("softswitch.webhooks")

EVENT_TYPES = (
    "call.initiated",
    "call.ringing",
    "call.answered",
    "call.completed",
    "call.dtmf",
    "call.amd",
    "recording.ready",
    "stream.started",
    "stream.stopped",
    "call.flow_error",
    "security.alert",
)
CALLBACK_AFTER_END_S = 600.0  # a call's status callback still hears its events this long after it ends
RETRY_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)  # after attempts 1..7
MAX_RETRY_AFTER_S = 86400.0
MAX_RESPONSE_BYTES = 64 * 1024  # what is read of a receiver's answer (only its status matters)
ROTATION_GRACE_S = 86400.0  # how long the previous secret keeps signing after a rotation
RESYNC_S = 60.0  # the worker rebuilds its index from the store this often (and after every change it cannot follow)
SECRET_PREFIX = "whsec_"


# -- signing -------------------------------------------------------------------------------------------
def new_secret() -> str:
    """A signing secret: `whsec_` and 32 random bytes in base64, the form Standard Webhooks libraries take."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secrets_: str | Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,<sig>` per secret, space-separated (several during a rotation)."""
    keys = [secrets_] if isinstance(secrets_, str) else list(secrets_)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(_key(s), signed, hashlib.sha256).digest()).decode() for s in keys)


def signed_headers(secrets_: str | Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets_, msg_id, timestamp, body),
    }


def signing_secrets(endpoint: WebhookEndpoint, now: float) -> list[str]:
    """The endpoint's current secret, and its previous one while the rotation's grace lasts."""
    keys = [endpoint.secret]
    if endpoint.previous_secret and (endpoint.previous_expires_at or 0) > now:
        keys.append(endpoint.previous_secret)
    return keys


def rfc3339(unix: float) -> str:
    """Unix seconds as the API's timestamps: RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- where deliveries may go ---------------------------------------------------------------------------
def private_address(ip: str) -> bool:
    """True for addresses a webhook must not reach by default: loopback, private, link-local, multicast,
    reserved, unspecified (and IPv4 ones mapped into IPv6)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not addr.is_global or addr.is_multicast


def url_problem(url: str, allow_private: bool, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """Why `url` cannot be a webhook endpoint (None when it can): http(s) (or `schemes`) with a host, and no
    literal non-public address unless allowed. Names are checked when resolved, on every delivery."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in schemes:
        return f"must be an {' or '.join(schemes)} URL"
    if not host:
        return "must name a host"
    if parts.username or parts.password:
        return "must not carry credentials"
    try:
        literal = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if not allow_private and private_address(str(literal)):
        return f"refused: {host} is a loopback/private address (set [webhooks] allow_private = true to allow)"
    return None


class PrivateAddressRefused(OSError):
    """A webhook host name resolved to a non-public address and `allow_private` is off."""


def outbound_connector(allow_private: bool, ca_file: str = "", **options) -> aiohttp.TCPConnector:
    """The connector of every request the softswitch makes to an application (webhooks, call flows' fetches,
    media streams): names resolving to non-public addresses refused unless `allow_private`, https:// and
    wss:// servers verified against the system's CAs plus those of `ca_file` (a receiver with a private CA)."""
    resolver = None if allow_private else PublicResolver()
    return aiohttp.TCPConnector(resolver=resolver, limit=0, ssl=verifying_context(ca_file), **options)


class PublicResolver(AbstractResolver):
    """DNS that refuses names resolving to non-public addresses, checked at connect time so a name cannot
    pass a check and then resolve elsewhere."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        bad = [r["host"] for r in results if private_address(r["host"])]
        if bad:
            raise PrivateAddressRefused(f"{host} resolves to non-public address {bad[0]} (allow_private is off)")
        return results

    async def close(self) -> None:
        await self._inner.close()


# -- the outbox worker ---------------------------------------------------------------------------------
def _retry_after(value: str | None) -> float | None:
    """A `Retry-After` header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _json_default(value: object) -> object:
    return str(value)


_encoder = msgspec.json.Encoder(enc_hook=_json_default)


ChainKey = tuple[str, str]  # (endpoint id, call id), or (endpoint id, delivery id) for an event of no call


class DeliveryQueue:
    """Which pending deliveries to attempt when: an index of the store's outbox kept in memory, so the
    worker never scans the outbox per delivery. Sans-IO: the dispatcher passes the time.

    Deliveries of one call to one endpoint form a chain, attempted one at a time in id order (the call's
    events arrive in order); only each chain's head is held here (the rest are found in the store when the
    head is done, `advance`), in a timer heap until due, then in its endpoint's ready queue until the
    endpoint has a free slot (`concurrency` attempts at once). At most `cap` heads are held: past it, new
    chains are left in the store (`complete` turns False) and the dispatcher rebuilds from the store once
    what is held has drained."""

    def __init__(self, concurrency: int, cap: int = 50_000) -> None:
        self.concurrency = concurrency
        self.cap = cap
        self.complete = True
        self.heads: dict[ChainKey, str] = {}
        self.busy: Counter[str] = Counter()  # attempts under way per endpoint
        self._timers: list[tuple[float, str, ChainKey]] = []
        self._ready: dict[str, deque[tuple[ChainKey, str]]] = {}
        self._running: set[str] = set()

    @staticmethod
    def key(endpoint_id: str, call_id: str | None, delivery_id: str) -> ChainKey:
        return (endpoint_id, call_id or delivery_id)

    def add(self, key: ChainKey, delivery_id: str, at: float) -> None:
        """A new pending delivery: it heads its chain unless the chain already has one (it then follows)."""
        if key in self.heads:
            return
        if len(self.heads) >= self.cap:
            self.complete = False
            return
        self.heads[key] = delivery_id
        heapq.heappush(self._timers, (at, delivery_id, key))

    def rebuild(self, heads: Iterable[tuple[ChainKey, str, float]], complete: bool) -> None:
        """Start over from the store's chain heads (attempts under way stay as they are)."""
        running = {k: d for k, d in self.heads.items() if d in self._running}
        self.heads, self._timers, self._ready = dict(running), [], {}
        for key, delivery_id, at in heads:
            if key not in self.heads:
                self.heads[key] = delivery_id
                self._timers.append((at, delivery_id, key))
        heapq.heapify(self._timers)
        self.complete = complete

    def due(self, now: float) -> list[tuple[ChainKey, str]]:
        """The heads to attempt now (marked under way), within each endpoint's free slots."""
        while self._timers and self._timers[0][0] <= now:
            _, delivery_id, key = heapq.heappop(self._timers)
            if self.heads.get(key) == delivery_id and delivery_id not in self._running:
                self._ready.setdefault(key[0], deque()).append((key, delivery_id))
        out = []
        for endpoint_id, ready in self._ready.items():
            while ready and self.busy[endpoint_id] < self.concurrency:
                key, delivery_id = ready.popleft()
                if self.heads.get(key) == delivery_id and delivery_id not in self._running:
                    self.busy[endpoint_id] += 1
                    self._running.add(delivery_id)
                    out.append((key, delivery_id))
        return out

    def done(self, key: ChainKey, delivery_id: str) -> None:
        """An attempt ended (however): its endpoint's slot is free."""
        if delivery_id in self._running:
            self._running.discard(delivery_id)
            self.busy[key[0]] -= 1

    def retry(self, key: ChainKey, delivery_id: str, at: float) -> None:
        """The head stays pending, to be attempted again at `at`."""
        if self.heads.get(key) == delivery_id:
            heapq.heappush(self._timers, (at, delivery_id, key))

    def advance(self, key: ChainKey, delivery_id: str, successor: tuple[str, float] | None) -> None:
        """The head was delivered or given up: the chain goes on with `successor` (id, due time) or ends."""
        if self.heads.get(key) != delivery_id:
            return
        if successor is None:
            del self.heads[key]
        else:
            self.heads[key] = successor[0]
            heapq.heappush(self._timers, (successor[1], successor[0], key))

    def next_at(self) -> float | None:
        """When the soonest held head falls due (None when none waits for a time)."""
        return self._timers[0][0] if self._timers else None

    def idle(self) -> bool:
        return not self.heads


class WebhookDispatcher:
    """Writes bus events to the webhook outbox and delivers it (see the module docstring).

    `backoff_scale` multiplies every wait (the retry schedule and `Retry-After`): 1 in service, small in tests.
    `test_of(event)` tells whether an event belongs to a test call (endpoints of test keys get those only);
    by default the call's stored record says."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        *,
        allow_private: bool = False,
        ca_file: str = "",
        clock: Callable[[], float] = time.time,
        backoff_scale: float = 1.0,
        timeout_s: float = 15.0,
        concurrency: int = 4,
        jitter: float = 0.2,
        test_of: Callable[[Event], bool] | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.allow_private = allow_private
        self.ca_file = ca_file
        self.clock = clock
        self.backoff_scale = backoff_scale
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.jitter = jitter
        self.test_of = test_of or self._stored_test
        self.counters: Counter[str] = Counter()
        self._unsubscribe: Callable[[], None] | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._wanted: bool | None = None  # whether any endpoint is enabled; None: ask the store
        self._unsaved: list[tuple[WebhookEvent, bool]] = []  # events of this loop turn, committed together
        self._finished: list[tuple[ChainKey, WebhookAttempt, str, float]] = []  # attempts of this turn, likewise
        self._endpoints: dict[str, tuple[WebhookEndpoint, str | None]] = {}  # id -> (endpoint, url_problem)
        self._endpoints_version = -1  # the store's webhook_endpoints_version `_endpoints` was read at
        self._callbacks: dict[str, float] = {}  # calls with a status callback -> until when (inf while live)
        self._forget_at = 0.0
        self._closing = False
        self._inflight: dict[str, asyncio.Task] = {}
        self.queue = DeliveryQueue(concurrency)
        self._resync = True  # rebuild the queue from the store before the next round
        self._resync_at = 0.0
        self._session: aiohttp.ClientSession | None = None

    def _stored_test(self, ev: Event) -> bool:
        call = self.store.get_call(ev.call_id) if ev.call_id else None
        return bool(call and call.test)

    async def start(self) -> None:
        """Subscribe to the bus and start delivering (pending deliveries left in the store included)."""
        connector = outbound_connector(self.allow_private, self.ca_file, force_close=False, keepalive_timeout=4.0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"User-Agent": f"softswitch-webhooks/{__version__}"},
        )
        for call_id in self.store.open_calls_with_callbacks():  # cut off by a crash: their end is yet to come
            self.watch_call(call_id)
        self._unsubscribe = self.bus.subscribe(self.on_event, EVENT_TYPES)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="webhooks")

    async def close(self) -> None:
        """Stop: unsubscribe, abandon attempts in flight (they stay pending in the store), close the client."""
        self._closing = True
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        try:  # what the last loop turn published, and the attempts it ended, are stored before we stop
            self.flush()
        except Exception as exc:  # a store failing now must not keep the tasks and the client open
            log_event(log, "webhooks.worker_error", logging.ERROR, error=f"{exc.__class__.__name__}: {exc}")
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def resync(self) -> None:
        """The outbox changed behind the dispatcher's back (a delivery queued again through the API): rebuild
        the queue from the store now."""
        self._resync = True
        self._wake.set()

    def endpoints_changed(self) -> None:
        """The API added, changed or removed an endpoint: look again before the next event, and send."""
        self._wanted = None
        self.resync()

    def watch_call(self, call_id: str) -> None:
        """The call has its own status callback (an endpoint the API stored with its `call_id`): its events
        go to the outbox even when no account-wide endpoint wants them, until a while after it completes
        (its recording.ready comes after call.completed)."""
        self._callbacks[call_id] = float("inf")

    def on_event(self, ev: Event) -> None:
        """A bus event: into the outbox first (persisted before anything is sent), then wake the sender.
        With no enabled endpoint at all (known without a query until the API changes one) and no status
        callback on the call, nothing to do: a busy switch publishes thousands of events a second and most
        have no webhook."""
        if self._wanted is None:
            self._wanted = self.store.has_enabled_webhook_endpoints()
        callback = ev.call_id is not None and ev.call_id in self._callbacks
        if callback and ev.type == "call.completed":
            self._callbacks[ev.call_id] = ev.at + CALLBACK_AFTER_END_S
            if ev.at >= self._forget_at:  # a sweep a minute at most, not a scan per call
                self._forget_at = ev.at + 60.0
                for call_id in [c for c, until in self._callbacks.items() if until < ev.at]:
                    del self._callbacks[call_id]
        if not (self._wanted or callback):
            return
        body = {"id": ev.id, "type": ev.type, "timestamp": rfc3339(ev.at), "data": ev.data}
        self._flush_soon()
        self._unsaved.append((WebhookEvent(ev.id, ev.type, ev.call_id, _encoder.encode(body), ev.at), self.test_of(ev)))

    def _flush_soon(self) -> None:
        """Before the first event or attempt of a loop turn is kept: one flush at its end for all of them."""
        if not (self._unsaved or self._finished):
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what happened since the last flush, each kind in one transaction (a group commit): the events
        published (into the outbox, their deliveries queued) and the attempts ended (logged, their deliveries
        and chains moved on). Run at the end of the loop turn they happened in, at close, and before the queue
        is rebuilt from the store, so a busy switch's burst of events, or of answers, costs one commit."""
        self._flush_events()
        self._flush_attempts()

    def _flush_events(self) -> None:
        unsaved, self._unsaved = self._unsaved, []
        if not unsaved:
            return
        try:
            batches = self.store.enqueue_webhook_events(unsaved, delivery_id=lambda: new_id("whd"))
        except Exception as exc:  # sqlite3.Error, say: logged, and the bus's publisher is not the one to fail
            log_event(log, "webhooks.enqueue_failed", logging.ERROR, events=len(unsaved), error=repr(exc))
            return
        now = self.clock()
        for (row, _), queued in zip(unsaved, batches, strict=True):
            self.counters["queued"] += len(queued)
            for delivery_id, endpoint_id in queued:
                self.queue.add(DeliveryQueue.key(endpoint_id, row.call_id, delivery_id), delivery_id, now)
        if any(batches):
            self._wake.set()

    def _flush_attempts(self) -> None:
        """The chains move on only once their attempts are committed: a chain's next delivery is never sent
        before its predecessor's outcome is in the store, and the successor is read from a store that has it."""
        finished, self._finished = self._finished, []
        if not finished:
            return
        try:
            self.store.record_webhook_attempts((attempt, outcome, at) for _, attempt, outcome, at in finished)
        except Exception as exc:
            # Still pending in the store, their chains left without a timer: the periodic resync sends them
            # again (at least once). Not an immediate rebuild: a store that refuses every write (a full disk)
            # would have the same deliveries re-sent as fast as the receiver answers.
            log_event(log, "webhooks.record_failed", logging.ERROR, attempts=len(finished), error=repr(exc))
            return
        for key, attempt, outcome, at in finished:
            try:
                if outcome == "pending":
                    self.queue.retry(key, attempt.delivery_id, at)
                else:
                    self.queue.advance(key, attempt.delivery_id, self._successor(key, attempt.delivery_id))
            except Exception as exc:  # the successor could not be read: that chain waits for a rebuild, not the rest
                log_event(log, "webhooks.worker_error", logging.ERROR, error=f"{exc.__class__.__name__}: {exc}")
                self._resync = True
            self.counters[outcome] += 1
        self._wake.set()

    async def _run(self) -> None:
        # `_closing`, not only the cancellation: Python 3.11's wait_for loses a cancel that lands as the
        # event it waits for is set (an endpoint changed just before close), and the loop would go on
        while not self._closing:
            try:
                self._wake.clear()
                now = self.clock()
                if self._resync or now >= self._resync_at or (self.queue.idle() and not self.queue.complete):
                    self._rebuild(now)
                for key, delivery_id in self.queue.due(now):
                    self._launch(key, delivery_id)
                soonest = self.queue.next_at()
                wait = self._resync_at - now if soonest is None else min(self._resync_at, soonest) - now
            except Exception as exc:  # a store hiccup must not end delivery for good
                log_event(log, "webhooks.worker_error", logging.ERROR, error=f"{exc.__class__.__name__}: {exc}")
                self._resync, wait = True, 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wait))

    def _rebuild(self, now: float) -> None:
        """The queue from the store: every chain's head (at start, after changes made elsewhere, now and then
        in case an attempt died without a word)."""
        self.flush()  # an attempt not yet saved would be read as pending, and sent again
        self._resync, self._resync_at = False, now + RESYNC_S
        self._endpoints.clear()  # now and then, in case another process changed them
        cap = self.queue.cap
        rows = self.store.webhook_chain_heads(limit=cap + 1)
        heads = [(DeliveryQueue.key(d.endpoint_id, d.call_id, d.id), d.id, d.next_attempt_at) for d in rows[:cap]]
        self.queue.rebuild(heads, complete=len(rows) <= cap)

    def _launch(self, key: ChainKey, delivery_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._attempt(key, delivery_id))
        self._inflight[delivery_id] = task

        def done(_task: asyncio.Task) -> None:
            self._inflight.pop(delivery_id, None)
            self.queue.done(key, delivery_id)
            self._wake.set()

        task.add_done_callback(done)

    def _successor(self, key: ChainKey, delivery_id: str) -> tuple[str, float] | None:
        """The next pending delivery of the chain after `delivery_id` (a call's next event), if any."""
        if key[1] == delivery_id:  # an event of no call: a chain of one
            return None
        nxt = self.store.next_webhook_in_chain(key[0], key[1], delivery_id)
        return None if nxt is None else (nxt.id, nxt.next_attempt_at)

    def _endpoint(self, endpoint_id: str) -> tuple[WebhookEndpoint, str | None] | None:
        """The endpoint and why its URL cannot be used (None when it can), read once, not for every attempt:
        kept until the store writes any endpoint (an update, a rotated secret) or the queue is rebuilt."""
        if self._endpoints_version != self.store.webhook_endpoints_version:
            self._endpoints.clear()
            self._endpoints_version = self.store.webhook_endpoints_version
        found = self._endpoints.get(endpoint_id)
        if found is None:
            endpoint = self.store.get_webhook_endpoint(endpoint_id)
            if endpoint is None:
                return None
            found = self._endpoints[endpoint_id] = (endpoint, url_problem(endpoint.url, self.allow_private))
        return found

    def backoff(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds before the attempt after `attempt` (1-based), None when the schedule is used up."""
        if attempt > len(RETRY_SCHEDULE_S):
            return None
        delay = RETRY_SCHEDULE_S[attempt - 1] * (1 + random.uniform(0, self.jitter))
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
        return delay * self.backoff_scale

    async def _attempt(self, key: ChainKey, delivery_id: str) -> None:
        try:
            await self._send(key, delivery_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # left pending in the store: the next rebuild picks it up again
            log_event(
                log, "webhooks.attempt_error", logging.ERROR, delivery=delivery_id, error=f"{type(exc).__name__}: {exc}"
            )

    async def _send(self, key: ChainKey, delivery_id: str) -> None:
        found = self.store.webhook_delivery_to_send(delivery_id)
        if found is None or found[0].status != "pending":  # deleted with its endpoint, or done meanwhile
            self.queue.advance(key, delivery_id, self._successor(key, delivery_id))
            return
        delivery, ev = found
        target = self._endpoint(delivery.endpoint_id)
        if target is None or not target[0].enabled:
            self._resync = True  # the endpoint went away or was disabled: its chains leave the queue
            return
        endpoint, problem = target
        attempt = delivery.attempt + 1
        now = self.clock()
        headers = signed_headers(signing_secrets(endpoint, now), ev.id, int(now), ev.payload)
        headers["Content-Type"] = "application/json"
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        started = time.monotonic()
        if problem is None:
            assert self._session is not None
            try:
                async with self._session.post(
                    endpoint.url, data=ev.payload, headers=headers, allow_redirects=False
                ) as resp:
                    await resp.content.read(MAX_RESPONSE_BYTES)
                    status = resp.status
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
            except TimeoutError:
                error = f"timed out after {self.timeout_s:g} s"
            except (aiohttp.ClientError, OSError) as exc:
                cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
                error = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        next_at = self.clock()
        if problem is not None:
            outcome, error = "failed", problem
        elif status is not None and 200 <= status < 300:
            outcome = "delivered"
        elif status == 410:
            outcome, error = "failed", "410 Gone: endpoint disabled"
            self.store.update_webhook_endpoint(endpoint.id, enabled=False)
            self._wanted = None  # it may have been the last enabled one
            self._resync = True  # its chains leave the queue
        elif status is None or status == 429 or status >= 500:
            delay = self.backoff(attempt, retry_after)
            if delay is None:
                outcome = "failed"
            else:
                outcome, next_at = "pending", next_at + delay
            error = error or f"HTTP {status}"
        else:
            outcome, error = "failed", f"HTTP {status}"
        self._flush_soon()  # saved with the other attempts of this loop turn, then the chain moves on
        self._finished.append(
            (key, WebhookAttempt(delivery.id, attempt, now, status, latency_ms, error), outcome, next_at)
        )
        log_event(
            log,
            "webhooks.attempt",
            logging.INFO if outcome != "failed" else logging.WARNING,
            delivery=delivery.id,
            endpoint=endpoint.id,
            event=ev.id,
            type=ev.type,
            attempt=attempt,
            status=status,
            outcome=outcome,
            latency_ms=latency_ms,
            error=error,
        )
