"""Webhooks: call events POSTed to users' endpoints, signed per the Standard Webhooks spec, never lost.

Signing: `webhook-id` (the event id, the same on every retry so receivers can deduplicate),
`webhook-timestamp` (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
keyed with the base64-decoded part of a `whsec_` secret; during a rotation both secrets sign, space-separated.

Delivery is an outbox: `WebhookDispatcher` writes each bus event, with one pending delivery per endpoint that
wants it, to the store in one transaction before anything is sent, then a background task sends the due
deliveries. A crash or restart leaves them pending and the next dispatcher over the same store sends them.
2xx is delivered; 410 disables the endpoint; 429, 5xx, timeouts and connection errors are retried on the
Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with jitter, `Retry-After` honoured);
other statuses fail at once. Each attempt is logged. A call's events reach an endpoint in order: the next one
waits while an earlier one to that endpoint is pending or retrying. Addresses on loopback, private, link-local
and other non-public networks are refused unless `allow_private` (a webhook URL must not reach the box's LAN).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import hmac
import ipaddress
import logging
import random
import secrets
import socket
import time
from collections import Counter
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
from softswitch.store import Store, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

log = logging.getLogger("softswitch.webhooks")

EVENT_TYPES = (
    "call.initiated",
    "call.ringing",
    "call.answered",
    "call.completed",
    "call.dtmf",
    "call.amd",
    "recording.ready",
)
CALLBACK_AFTER_END_S = 600.0  # a call's status callback still hears its events this long after it ends
RETRY_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)  # after attempts 1..7
MAX_RETRY_AFTER_S = 86400.0
MAX_RESPONSE_BYTES = 64 * 1024  # what is read of a receiver's answer (only its status matters)
ROTATION_GRACE_S = 86400.0  # how long the previous secret keeps signing after a rotation
POLL_S = 5.0  # the worker looks at the store at least this often (deliveries queued by another process)
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


def url_problem(url: str, allow_private: bool) -> str | None:
    """Why `url` cannot be a webhook endpoint (None when it can): http(s) with a host, and no literal
    non-public address unless allowed. Names are checked when resolved, on every delivery."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
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


class _PublicResolver(AbstractResolver):
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
        self._callbacks: dict[str, float] = {}  # calls with a status callback -> until when (inf while live)
        self._forget_at = 0.0
        self._closing = False
        self._inflight: dict[str, asyncio.Task] = {}
        self._per_endpoint: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None

    def _stored_test(self, ev: Event) -> bool:
        call = self.store.get_call(ev.call_id) if ev.call_id else None
        return bool(call and call.test)

    async def start(self) -> None:
        """Subscribe to the bus and start delivering (pending deliveries left in the store included)."""
        resolver = None if self.allow_private else _PublicResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, limit=0, force_close=True)
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
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        """Look at the store now (an event was queued, a delivery finished or was queued again)."""
        self._wake.set()

    def endpoints_changed(self) -> None:
        """The API added, changed or removed an endpoint: look again before the next event, and send."""
        self._wanted = None
        self.wake()

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
        row = WebhookEvent(ev.id, ev.type, ev.call_id, _encoder.encode(body), ev.at)
        ids = self.store.enqueue_webhook_event(row, test=self.test_of(ev), delivery_id=lambda: new_id("whd"))
        if ids:
            self.counters["queued"] += len(ids)
            self._wake.set()

    async def _run(self) -> None:
        # `_closing`, not only the cancellation: Python 3.11's wait_for loses a cancel that lands as the
        # event it waits for is set (an endpoint changed just before close), and the loop would go on
        while not self._closing:
            try:
                self._wake.clear()
                now = self.clock()
                for delivery in self.store.due_webhook_deliveries(now, limit=200):
                    if delivery.id in self._inflight or self._per_endpoint[delivery.endpoint_id] >= self.concurrency:
                        continue
                    self._launch(delivery)
                soonest = self.store.next_webhook_attempt_at(after=now)
                wait = POLL_S if soonest is None else min(POLL_S, max(0.0, soonest - now))
            except Exception as exc:  # a store hiccup must not end delivery for good
                log_event(log, "webhooks.worker_error", logging.ERROR, error=f"{exc.__class__.__name__}: {exc}")
                wait = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _launch(self, delivery: WebhookDelivery) -> None:
        self._per_endpoint[delivery.endpoint_id] += 1
        task = asyncio.get_running_loop().create_task(self._attempt(delivery))
        self._inflight[delivery.id] = task

        def done(_task: asyncio.Task) -> None:
            self._inflight.pop(delivery.id, None)
            self._per_endpoint[delivery.endpoint_id] -= 1
            self._wake.set()

        task.add_done_callback(done)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds before the attempt after `attempt` (1-based), None when the schedule is used up."""
        if attempt > len(RETRY_SCHEDULE_S):
            return None
        delay = RETRY_SCHEDULE_S[attempt - 1] * (1 + random.uniform(0, self.jitter))
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
        return delay * self.backoff_scale

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        try:
            await self._send(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_event(
                log, "webhooks.attempt_error", logging.ERROR, delivery=delivery.id, error=f"{type(exc).__name__}: {exc}"
            )

    async def _send(self, delivery: WebhookDelivery) -> None:
        endpoint = self.store.get_webhook_endpoint(delivery.endpoint_id)
        ev = self.store.get_webhook_event(delivery.event_id)
        if endpoint is None or ev is None or not endpoint.enabled:
            return
        attempt = delivery.attempt + 1
        now = self.clock()
        headers = signed_headers(signing_secrets(endpoint, now), ev.id, int(now), ev.payload)
        headers["Content-Type"] = "application/json"
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        started = time.monotonic()
        problem = url_problem(endpoint.url, self.allow_private)
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
        elif status is None or status == 429 or status >= 500:
            delay = self.backoff(attempt, retry_after)
            if delay is None:
                outcome = "failed"
            else:
                outcome, next_at = "pending", next_at + delay
            error = error or f"HTTP {status}"
        else:
            outcome, error = "failed", f"HTTP {status}"
        record = WebhookAttempt(delivery.id, attempt, now, status, latency_ms, error)
        self.store.record_webhook_attempt(record, status=outcome, next_attempt_at=next_at)
        self.counters[outcome] += 1
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
