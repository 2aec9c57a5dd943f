"""Webhooks: signatures checked with the `standardwebhooks` reference library, and the outbox worker
delivering bus events to real aiohttp receivers on 127.0.0.1 over a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from helpers import free_port, spawn, wait_health, write_config
from standardwebhooks import Webhook, WebhookVerificationError

from api.auth import create_key
from softswitch.events import EventBus, new_id
from softswitch.store import Store, WebhookEndpoint, WebhookEvent
from softswitch.webhooks import (
    RETRY_SCHEDULE_S,
    DeliveryQueue,
    WebhookDispatcher,
    new_secret,
    private_address,
    rfc3339,
    sign,
    signed_headers,
    url_problem,
)


# -- signing -------------------------------------------------------------------------------------------
def test_new_secret_is_whsec_and_32_random_bytes():
    secret = new_secret()
    assert secret.startswith("whsec_") and secret != new_secret()
    assert len(__import__("base64").b64decode(secret[6:])) == 32


def test_signature_verifies_with_standardwebhooks_and_tampering_fails():
    secret, body, ts = new_secret(), b'{"type":"call.answered"}', int(time.time())
    headers = signed_headers(secret, "evt_1", ts, body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == {"type": "call.answered"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"answered", b"completed"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_rotation_signs_with_both_secrets_space_separated():
    old, new, body, ts = new_secret(), new_secret(), b"{}", int(time.time())
    value = sign([new, old], "evt_2", ts, body)
    assert len(value.split(" ")) == 2
    headers = {"webhook-id": "evt_2", "webhook-timestamp": str(ts), "webhook-signature": value}
    for secret in (old, new):
        Webhook(secret).verify(body, headers)


def test_private_addresses_and_url_rules():
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "0.0.0.0"):
        assert private_address(ip), ip
    assert not private_address("93.184.216.34")
    assert url_problem("https://hooks.example.com/x", False) is None
    assert "http or https" in url_problem("ftp://hooks.example.com/x", False)
    assert "refused" in url_problem("http://127.0.0.1:9/x", False)
    assert "refused" in url_problem("http://[::1]:9/x", False)
    assert url_problem("http://127.0.0.1:9/x", True) is None
    assert "credentials" in url_problem("https://u:p@hooks.example.com/", False)


def test_backoff_follows_the_standard_schedule_and_honours_retry_after():
    d = WebhookDispatcher.__new__(WebhookDispatcher)
    d.backoff_scale, d.jitter = 1.0, 0.0
    assert [d.backoff(n) for n in range(1, 8)] == list(RETRY_SCHEDULE_S)
    assert d.backoff(8) is None
    assert d.backoff(1, retry_after=120) == 120
    assert d.backoff(2, retry_after=1) == 300
    assert d.backoff(1, retry_after=10**9) == 86400


# -- store -----------------------------------------------------------------------------------------------
def _endpoint(url: str, events: list[str] | None = None, *, test: bool = False, enabled: bool = True):
    return WebhookEndpoint(new_id("wh"), url, events or ["*"], enabled, "", new_secret(), None, None, test, time.time())


# -- the delivery queue (explicit time) -----------------------------------------------------------------
def test_queue_chains_go_one_at_a_time_in_order_and_endpoints_have_slots():
    q = DeliveryQueue(concurrency=2)
    x, y, z = ("wh_a", "call_X"), ("wh_a", "call_Y"), ("wh_a", "call_Z")
    q.add(x, "d1", 0.0)
    q.add(x, "d2", 0.0)  # the call's second event follows its first: not a head
    q.add(y, "d3", 0.0)
    q.add(z, "d4", 0.0)
    q.add(("wh_b", "call_X"), "d5", 5.0)  # another endpoint, due later
    assert q.due(0.0) == [(x, "d1"), (y, "d3")]  # two slots on wh_a
    assert q.due(1.0) == []  # wh_a full, wh_b not due
    q.done(x, "d1")
    q.advance(x, "d1", ("d2", 0.0))
    assert q.due(1.0) == [(z, "d4")]  # z waited for the slot; x's next is queued behind it
    q.done(y, "d3")
    q.retry(y, "d3", 3.0)  # failed: the same head again at 3.0
    assert q.due(2.0) == [(x, "d2")]
    assert q.next_at() == 3.0
    q.done(z, "d4")
    q.advance(z, "d4", None)
    assert q.due(5.0) == [(y, "d3"), (("wh_b", "call_X"), "d5")]
    assert set(q.heads) == {x, y, ("wh_b", "call_X")}


def test_queue_cap_leaves_new_chains_to_the_store_and_rebuild_keeps_attempts_under_way():
    q = DeliveryQueue(concurrency=4, cap=2)
    q.add(("e", "c1"), "d1", 0.0)
    q.add(("e", "c2"), "d2", 0.0)
    q.add(("e", "c3"), "d3", 0.0)
    assert not q.complete and set(q.heads) == {("e", "c1"), ("e", "c2")}
    assert q.due(0.0) == [(("e", "c1"), "d1"), (("e", "c2"), "d2")]
    q.rebuild([(("e", "c1"), "d1", 0.0), (("e", "c3"), "d3", 0.0)], complete=True)
    assert q.due(0.0) == [(("e", "c3"), "d3")]  # d1 and d2 are under way: not launched twice
    q.done(("e", "c1"), "d1")
    q.advance(("e", "c1"), "d1", None)
    assert ("e", "c1") not in q.heads and q.busy["e"] == 2


def test_enqueue_writes_event_and_deliveries_for_matching_endpoints_only(tmp_path: Path):
    store = Store.open(tmp_path / "s.db")
    everything, answered = _endpoint("http://a.example/"), _endpoint("http://b.example/", ["call.answered"])
    off, test = _endpoint("http://c.example/", enabled=False), _endpoint("http://d.example/", test=True)
    for ep in (everything, answered, off, test):
        store.add_webhook_endpoint(ep)
    ev = WebhookEvent("evt_a", "call.answered", "call_1", b"{}", 1.0)
    queued = store.enqueue_webhook_event(ev, test=False, delivery_id=lambda: new_id("whd"))
    assert sorted(store.get_webhook_delivery(i).endpoint_id for i, _ in queued) == sorted([everything.id, answered.id])
    assert all(store.get_webhook_delivery(i).endpoint_id == ep for i, ep in queued)
    assert store.get_webhook_event("evt_a").payload == b"{}"
    ringing = WebhookEvent("evt_b", "call.ringing", "call_1", b"{}", 2.0)
    [(only, to)] = store.enqueue_webhook_event(ringing, test=False, delivery_id=lambda: new_id("whd"))
    assert to == everything.id and store.get_webhook_delivery(only).endpoint_id == everything.id
    first = next(i for i, ep in queued if ep == everything.id)
    assert store.next_webhook_in_chain(everything.id, "call_1", first).id == only  # the call's next event
    assert store.next_webhook_in_chain(everything.id, "call_1", only) is None
    heads = store.webhook_chain_heads(limit=10)
    assert sorted(d.event_id for d in heads) == ["evt_a", "evt_a"]  # ringing waits behind answered
    nobody = WebhookEvent("evt_c", "call.dtmf", "call_2", b"{}", 3.0)
    store.delete_webhook_endpoint(everything.id)
    assert store.enqueue_webhook_event(nobody, test=False, delivery_id=lambda: "x") == []
    assert store.get_webhook_event("evt_c") is None  # nothing written when no endpoint wants it
    assert [d.event_id for d in store.webhook_chain_heads(limit=10)] == ["evt_a"]  # to `answered` only now
    store.close()


def test_rotate_keeps_previous_secret_until_it_expires(tmp_path: Path):
    store = Store.open(tmp_path / "s.db")
    ep = _endpoint("http://a.example/")
    store.add_webhook_endpoint(ep)
    rotated = store.rotate_webhook_secret(ep.id, "whsec_new", 100.0)
    assert (rotated.secret, rotated.previous_secret, rotated.previous_expires_at) == ("whsec_new", ep.secret, 100.0)
    store.close()


# -- delivery --------------------------------------------------------------------------------------------
class Receiver:
    """A webhook receiver on 127.0.0.1 that verifies every delivery with `standardwebhooks` and answers
    with the statuses of `script` in turn (then 200), after `delay` seconds."""

    def __init__(self, secret: Callable[[], str], script: list[int] | None = None, delay: float = 0.0):
        self.secret = secret
        self.script = list(script or [])
        self.delay = delay
        self.hits: list[tuple[str, dict, int]] = []  # (webhook-id, payload, status answered)
        self.bad: list[str] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None
        self.headers: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = Webhook(self.secret()).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.bad.append(str(exc))
            return web.Response(status=400)
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.script.pop(0) if self.script else 200
        self.hits.append((request.headers["webhook-id"], payload, status))
        return web.Response(status=status, headers=self.headers, text="x" * 100_000)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def delivered(self) -> list[dict]:
        return [payload for _, payload, status in self.hits if 200 <= status < 300]


async def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class Rig:
    def __init__(self, path: Path):
        self.path = path
        self.store = Store.open(path)
        self.bus = EventBus()
        self.dispatchers: list[WebhookDispatcher] = []
        self.receivers: list[Receiver] = []

    async def dispatcher(self, **kw) -> WebhookDispatcher:
        kw.setdefault("allow_private", True)
        kw.setdefault("backoff_scale", 0.002)
        d = WebhookDispatcher(self.store, self.bus, **kw)
        await d.start()
        self.dispatchers.append(d)
        return d

    def endpoint(self, url: str, events: list[str] | None = None) -> WebhookEndpoint:
        ep = _endpoint(url, events)
        self.store.add_webhook_endpoint(ep)
        return ep

    async def receiver(self, ep_secret: Callable[[], str], **kw) -> Receiver:
        r = await Receiver(ep_secret, **kw).start()
        self.receivers.append(r)
        return r

    def call_event(self, type_: str, call_id: str, **data) -> str:
        payload = {"call_id": call_id, "direction": "outbound", "from": "+15550001", "to": "+15550002"}
        payload |= {"status": "in-progress"} | data
        event_id = self.bus.publish(type_, payload, call_id=call_id).id
        for d in self.dispatchers:
            d.flush()  # as at the end of the loop turn that published it
        return event_id

    async def close(self) -> None:
        for d in self.dispatchers:
            await d.close()
        for r in self.receivers:
            await r.stop()
        self.store.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path / "hooks.db")
    yield r
    await r.close()


async def _hooked(rig: Rig, **kw) -> tuple[WebhookEndpoint, Receiver]:
    holder: dict[str, str] = {}
    receiver = await rig.receiver(lambda: holder["secret"], **kw)
    ep = rig.endpoint(receiver.url)
    holder["secret"] = ep.secret
    return ep, receiver


async def test_event_is_delivered_signed_with_the_standard_shape(rig: Rig):
    ep, receiver = await _hooked(rig)
    await rig.dispatcher()
    evt = rig.call_event("call.answered", "call_A", answered_by="human")
    rig.call_event("recording.started", "call_A")  # not a webhook event type
    await wait_until(lambda: len(receiver.delivered()) == 1)
    [(msg_id, payload, _)] = receiver.hits
    assert msg_id == evt == payload["id"]
    assert payload["type"] == "call.answered" and payload["timestamp"].endswith("Z")
    assert payload["data"]["answered_by"] == "human" and payload["data"]["from"] == "+15550001"
    [delivery] = rig.store.list_webhook_deliveries(ep.id)
    await wait_until(lambda: rig.store.get_webhook_delivery(delivery.id).status == "delivered")
    done = rig.store.get_webhook_delivery(delivery.id)
    assert (done.attempt, done.last_status_code, done.event_type) == (1, 200, "call.answered")
    assert done.last_latency_ms is not None and not receiver.bad


async def test_failing_receiver_gets_the_same_webhook_id_until_it_succeeds(rig: Rig):
    ep, receiver = await _hooked(rig, script=[500, 503, 429])
    await rig.dispatcher()
    evt = rig.call_event("call.ringing", "call_B")
    await wait_until(lambda: len(receiver.delivered()) == 1)
    assert [(i, s) for i, _, s in receiver.hits] == [(evt, 500), (evt, 503), (evt, 429), (evt, 200)]
    [delivery] = rig.store.list_webhook_deliveries(ep.id)
    await wait_until(lambda: rig.store.get_webhook_delivery(delivery.id).status == "delivered")
    attempts = rig.store.webhook_attempts(delivery.id)
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 503), (3, 429), (4, 200)]
    assert attempts[0].error == "HTTP 500" and attempts[-1].error is None and not receiver.bad


async def test_retry_after_is_honoured(rig: Rig):
    ep, receiver = await _hooked(rig, script=[429])
    receiver.headers = {"Retry-After": "100"}  # x backoff_scale 0.002: 0.2 s
    await rig.dispatcher()
    rig.call_event("call.ringing", "call_R")
    await wait_until(lambda: len(receiver.delivered()) == 1)
    [delivery] = rig.store.list_webhook_deliveries(ep.id)
    await wait_until(lambda: len(rig.store.webhook_attempts(delivery.id)) == 2)
    first, second = rig.store.webhook_attempts(delivery.id)
    assert second.at - first.at >= 0.19


async def test_410_disables_the_endpoint(rig: Rig):
    ep, receiver = await _hooked(rig, script=[410])
    await rig.dispatcher()
    rig.call_event("call.ringing", "call_C")
    await wait_until(lambda: not rig.store.get_webhook_endpoint(ep.id).enabled)
    [delivery] = rig.store.list_webhook_deliveries(ep.id)
    await wait_until(lambda: rig.store.get_webhook_delivery(delivery.id).status == "failed")
    assert rig.store.get_webhook_delivery(delivery.id).last_status_code == 410
    rig.call_event("call.answered", "call_C")
    await asyncio.sleep(0.1)
    assert len(receiver.hits) == 1  # a disabled endpoint gets nothing more


async def test_events_of_one_loop_turn_are_committed_together_at_its_end_and_at_close(rig: Rig):
    ep, receiver = await _hooked(rig, script=[200] * 10)
    d = await rig.dispatcher()
    payload = {"call_id": "call_G", "direction": "outbound", "from": "+15550001", "to": "+15550002"}
    ids = [rig.bus.publish(t, payload | {"status": t}, call_id="call_G").id for t in ("call.ringing", "call.answered")]
    assert rig.store.list_webhook_deliveries(ep.id) == []  # not yet: the publisher's turn is not over
    await asyncio.sleep(0)  # the turn ends: one transaction for both
    assert [x.event_id for x in rig.store.list_webhook_deliveries(ep.id)] == ids[::-1]  # newest first
    await wait_until(lambda: len(receiver.delivered()) == 2)
    assert [p["id"] for p in receiver.delivered()] == ids  # in order
    late = rig.bus.publish("call.completed", payload | {"status": "completed"}, call_id="call_G").id
    await d.close()  # a clean stop writes what the last turn published: nothing is lost
    assert rig.store.list_webhook_deliveries(ep.id)[0].event_id == late


class GatedSession:
    """Stands in for the dispatcher's HTTP client: every POST waits for `gate`, then answers 204, so the
    attempts waiting on it all end in the loop turn after `gate.set()`."""

    status, headers = 204, {}

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.posts: list[str] = []

    def post(self, url: str, *, headers: dict[str, str], **_kw) -> GatedSession:
        self.posts.append(headers["webhook-id"])
        return self

    async def __aenter__(self) -> GatedSession:
        await self.gate.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    @property
    def content(self) -> GatedSession:
        return self

    async def read(self, _n: int) -> bytes:
        return b""

    async def close(self) -> None:
        return None


async def gated(rig: Rig) -> tuple[WebhookDispatcher, GatedSession]:
    """A started dispatcher whose POSTs go to a GatedSession."""
    d = await rig.dispatcher()
    await d._session.close()
    d._session = http = GatedSession()
    return d, http


async def test_attempts_of_one_loop_turn_are_committed_together_at_its_end_and_at_close(rig: Rig):
    eps = [rig.endpoint(f"http://127.0.0.1:9/{n}") for n in range(3)]  # nobody listens: the session is a stub
    d, http = await gated(rig)
    commits: list[str] = []
    rig.store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)

    def attempted() -> int:  # attempts logged in the store
        return sum(
            len(rig.store.webhook_attempts(x.id)) for ep in eps for x in rig.store.list_webhook_deliveries(ep.id)
        )

    rig.call_event("call.ringing", "call_H")  # one delivery to each endpoint, all three sent at once
    await wait_until(lambda: len(http.posts) == 3)
    commits.clear()
    http.gate.set()
    await asyncio.sleep(0)  # the three answers come in this turn...
    assert attempted() == 0 and commits == []  # ...and are not written yet
    await asyncio.sleep(0)  # the turn ended
    assert attempted() == 3 and commits == ["COMMIT"]  # one transaction for the three
    http.gate.clear()
    rig.call_event("call.answered", "call_H")  # each chain's next event, sent once its first is saved
    await wait_until(lambda: len(http.posts) == 6)
    http.gate.set()
    await asyncio.sleep(0)
    assert attempted() == 3  # not written yet...
    await d.close()  # ...but before the dispatcher stops
    assert attempted() == 6
    assert {x.status for ep in eps for x in rig.store.list_webhook_deliveries(ep.id)} == {"delivered"}
    rig.store._db.set_trace_callback(None)


async def test_an_endpoint_deleted_while_its_delivery_is_sent_does_not_fail_the_other_attempts(rig: Rig):
    kept, gone = rig.endpoint("http://127.0.0.1:9/kept"), rig.endpoint("http://127.0.0.1:9/gone")
    _, http = await gated(rig)
    rig.call_event("call.ringing", "call_K")
    await wait_until(lambda: len(http.posts) == 2)
    rig.store.delete_webhook_endpoint(gone.id)  # as DELETE /v2/webhooks/{id} would, both POSTs under way
    http.gate.set()  # both answers in one loop turn: saved together, the deleted one's skipped
    [delivery] = rig.store.list_webhook_deliveries(kept.id)
    await wait_until(lambda: rig.store.get_webhook_delivery(delivery.id).status == "delivered")
    assert [a.status_code for a in rig.store.webhook_attempts(delivery.id)] == [204]
    await asyncio.sleep(0.05)
    assert len(http.posts) == 2  # nothing sent again


async def test_a_store_refusing_writes_does_not_have_a_delivery_sent_again_and_again(rig: Rig):
    rig.endpoint("http://127.0.0.1:9/full")
    d, http = await gated(rig)
    http.gate.set()  # every POST answered at once
    rig.call_event("call.ringing", "call_F")
    d.flush()  # the event is in the outbox...
    rig.store._db.execute("PRAGMA query_only = ON")  # ...then every write fails at once, as on a full disk
    try:
        await wait_until(lambda: len(http.posts) >= 1)
        await asyncio.sleep(0.3)
        assert len(http.posts) == 1  # left pending for the periodic resync, not re-sent at once in a loop
    finally:
        rig.store._db.execute("PRAGMA query_only = OFF")


async def test_other_4xx_fails_without_retry(rig: Rig):
    ep, receiver = await _hooked(rig, script=[404])
    await rig.dispatcher()
    rig.call_event("call.ringing", "call_D")
    [delivery] = rig.store.list_webhook_deliveries(ep.id)
    await wait_until(lambda: rig.store.get_webhook_delivery(delivery.id).status == "failed")
    await asyncio.sleep(0.05)
    assert len(receiver.hits) == 1 and rig.store.get_webhook_endpoint(ep.id).enabled


async def test_a_calls_events_arrive_in_order_with_calls_interleaved(rig: Rig):
    # The first delivery of each call fails once, and each answer takes a while: without per-call
    # ordering the later events (concurrency 4) would overtake the retried ones.
    ep, receiver = await _hooked(rig, script=[500, 500, 500], delay=0.01)
    await rig.dispatcher()
    types = ["call.initiated", "call.ringing", "call.answered", "call.dtmf", "call.completed"]
    calls = ["call_1", "call_2", "call_3"]
    sent = {c: [] for c in calls}
    for t in types:
        for c in calls:
            sent[c].append(rig.call_event(t, c))
    await wait_until(lambda: len(receiver.delivered()) == 15, timeout=10)
    for c in calls:
        got = [p["id"] for p in receiver.delivered() if p["data"]["call_id"] == c]
        assert got == sent[c]
    assert not receiver.bad


async def test_concurrency_per_endpoint_is_bounded(rig: Rig):
    ep, receiver = await _hooked(rig, delay=0.05)
    in_flight, peak = 0, 0
    handle = receiver.handle

    async def counting(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await handle(request)
        finally:
            in_flight -= 1

    receiver.handle = counting  # type: ignore[method-assign]
    await receiver.stop()
    await receiver.start()
    await rig.dispatcher(concurrency=2)
    for i in range(8):
        rig.call_event("call.initiated", f"call_{i}")
    await wait_until(lambda: len(receiver.delivered()) == 8)
    assert peak == 2


async def test_pending_deliveries_survive_a_restart(rig: Rig):
    holder: dict[str, str] = {}
    receiver = Receiver(lambda: holder["secret"])  # not started: connection refused
    ep = rig.endpoint(receiver.url)
    holder["secret"] = ep.secret
    first = await rig.dispatcher(backoff_scale=0.05)
    evts = [rig.call_event("call.initiated", "call_X"), rig.call_event("call.ringing", "call_X")]
    [_, early] = rig.store.list_webhook_deliveries(ep.id)
    await wait_until(lambda: rig.store.webhook_attempts(early.id))
    [attempt] = rig.store.webhook_attempts(early.id)
    assert attempt.status_code is None and attempt.error
    await first.close()
    rig.dispatchers.remove(first)
    rig.store.close()
    # a new process: the same store file, the receiver up
    rig.store = Store.open(rig.path)
    await receiver.start()
    rig.receivers.append(receiver)
    await rig.dispatcher()
    await wait_until(lambda: len(receiver.delivered()) == 2)
    assert [p["id"] for p in receiver.delivered()] == evts and not receiver.bad


async def test_private_address_refused_without_allow_private(rig: Rig):
    ep, receiver = await _hooked(rig)
    named = rig.endpoint(f"http://localhost:{receiver.port}/hook")
    await rig.dispatcher(allow_private=False)
    rig.call_event("call.ringing", "call_P")
    [literal] = rig.store.list_webhook_deliveries(ep.id)
    [by_name] = rig.store.list_webhook_deliveries(named.id)
    await wait_until(lambda: rig.store.get_webhook_delivery(literal.id).status == "failed")
    assert "refused" in rig.store.get_webhook_delivery(literal.id).last_error
    await wait_until(lambda: rig.store.webhook_attempts(by_name.id))
    assert "non-public" in rig.store.webhook_attempts(by_name.id)[0].error
    assert receiver.hits == []


async def test_event_payload_is_persisted_before_delivery(rig: Rig):
    ep, receiver = await _hooked(rig)
    evt = rig.call_event("call.completed", "call_Q", hangup_code=200)  # no dispatcher yet: nobody listens
    assert rig.store.get_webhook_event(evt) is None
    await rig.dispatcher()
    evt = rig.call_event("call.completed", "call_Q", hangup_code=200, duration_s=1.5)
    stored = json.loads(rig.store.get_webhook_event(evt).payload)
    assert stored["data"]["hangup_code"] == 200 and stored["timestamp"] == rfc3339(stored_at(rig, evt))
    await wait_until(lambda: len(receiver.delivered()) == 1)


def stored_at(rig: Rig, event_id: str) -> float:
    return rig.store.get_webhook_event(event_id).created_at


async def test_test_calls_events_reach_test_endpoints_only(rig: Rig):
    live_ep, live = await _hooked(rig)
    holder: dict[str, str] = {}
    test_rx = await rig.receiver(lambda: holder["secret"])
    test_ep = _endpoint(test_rx.url, test=True)
    rig.store.add_webhook_endpoint(test_ep)
    holder["secret"] = test_ep.secret
    await rig.dispatcher(test_of=lambda ev: ev.call_id == "call_T")
    rig.call_event("call.ringing", "call_T")
    rig.call_event("call.ringing", "call_L")
    await wait_until(lambda: len(live.delivered()) == 1 and len(test_rx.delivered()) == 1)
    assert live.delivered()[0]["data"]["call_id"] == "call_L"
    assert test_rx.delivered()[0]["data"]["call_id"] == "call_T"


# -- the whole softswitch, killed -----------------------------------------------------------------------
class HoldingReceiver:
    """A receiver on 127.0.0.1 that, while `hold` is set, accepts requests and never answers them (a slow
    application: the deliveries are in flight when the softswitch dies), and answers 204 otherwise."""

    def __init__(self) -> None:
        self.hold = True
        self.got: list[tuple[str, dict, bytes]] = []  # (path, headers, body)
        self._release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((request.path, {k.lower(): v for k, v in request.headers.items()}, await request.read()))
        if self.hold:
            await self._release.wait()
        return web.Response(status=204)

    def release(self) -> None:
        self.hold = False
        self._release.set()


def _stored_events(db: Path) -> dict[str, list[str]]:
    """endpoint id -> the ids of the events queued for it, in order, read as another process would."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT endpoint_id, event_id FROM webhook_deliveries ORDER BY id").fetchall()
    out: dict[str, list[str]] = {}
    for endpoint, event in rows:
        out.setdefault(endpoint, []).append(event)
    return out


async def _metrics(port: int, key: str) -> dict[str, float]:
    """The unlabelled samples of GET /metrics."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        text = await r.text()
    return {name: float(v) for name, v in (line.split(" ", 1) for line in text.splitlines() if line and line[0] != "#")}


async def test_kill_9_with_deliveries_in_flight_and_queued_then_restart_delivers_every_event(tmp_path: Path):
    sip, api = free_port(also_udp=True), free_port()
    rx, rx_port = HoldingReceiver(), free_port()
    app = web.Application()
    app.router.add_post("/{name}", rx.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rx_port).start()
    cfg = write_config(tmp_path, sip, api, "[webhooks]\nallow_private = true\n")
    db = tmp_path / "var" / "sw.db"
    store = Store.open(db)
    key = create_key(store, "app", ["calls:write", "webhooks:write"], True, time.time())[1]
    admin = create_key(store, "ops", ["admin"], False, time.time())[1]
    store.close()
    headers = {"Authorization": f"Bearer {key}"}
    proc = spawn(cfg)
    try:
        await asyncio.to_thread(wait_health, api, proc)
        base = f"http://127.0.0.1:{api}/v2"
        async with aiohttp.ClientSession(headers=headers) as http:
            hook = {"url": f"http://127.0.0.1:{rx_port}/all", "events": ["*"]}
            async with http.post(f"{base}/webhooks", json=hook) as r:
                endpoint = await r.json()
            async with http.get(f"{base}/account/webhook-secret") as r:
                key_secret = (await r.json())["secret"]
            busy = []
            for _ in range(10):  # each: call.initiated, then call.completed (486)
                async with http.post(f"{base}/calls", json={"to": "+15005550001", "from": "app"}) as r:
                    busy.append((await r.json())["id"])
            live = {"to": "+15005550006", "from": "app", "status_callback": f"http://127.0.0.1:{rx_port}/cb"}
            async with http.post(f"{base}/calls", json=live) as r:
                talking = (await r.json())["id"]  # answered and still talking when the softswitch dies

        def queued() -> bool:
            per_endpoint = _stored_events(db)
            return len(per_endpoint.get(endpoint["id"], [])) == 10 * 2 + 3  # the live call: initiated..answered

        deadline = time.monotonic() + 10
        while not queued():
            assert time.monotonic() < deadline, {k: len(v) for k, v in _stored_events(db).items()}
            await asyncio.sleep(0.05)
        in_flight = len(rx.got)
        assert 1 <= in_flight <= 4 + 1  # the endpoint's concurrency (4), and the callback's first event
        metrics = await _metrics(api, admin)
        assert metrics["softswitch_webhook_deliveries_pending"] == 23 + 3  # nothing answered yet
        proc.kill()  # SIGKILL: no shutdown, no flush beyond what was committed
        proc.communicate(timeout=10)
        rx.release()

        proc = spawn(cfg)  # the same store
        await asyncio.to_thread(wait_health, api, proc)
        stored = {}

        def complete() -> bool:
            stored.update(_stored_events(db))
            ids = {evt for evts in stored.values() for evt in evts}
            seen = {h["webhook-id"] for _, h, _ in rx.got}
            return len(stored.get(endpoint["id"], [])) == 10 * 2 + 4 and ids <= seen

        deadline = time.monotonic() + 20
        while not complete():
            assert time.monotonic() < deadline, (len(rx.got), stored)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the last attempts are logged
        metrics = await _metrics(api, admin)
        assert metrics["softswitch_webhook_deliveries_pending"] == 0
        assert metrics["softswitch_webhook_deliveries_delivered_total"] == 24 + 4  # by this process
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        rx.release()
        await runner.cleanup()

    verifiers = {"/all": Webhook(endpoint["secret"]), "/cb": Webhook(key_secret)}
    first_arrival: dict[str, list[dict]] = {"/all": [], "/cb": []}
    for path, hdrs, body in rx.got:
        event = verifiers[path].verify(body, hdrs)  # raises on a bad signature; returns the payload
        if event["id"] not in {e["id"] for e in first_arrival[path]}:
            first_arrival[path].append(event)
    everything = first_arrival["/all"]
    assert len(everything) == 24 and len(rx.got) > 24  # what was in flight at the kill came again, same id
    by_call: dict[str, list[str]] = {}
    for event in everything:
        by_call.setdefault(event["data"]["call_id"], []).append(event["type"])
    assert all(by_call[c] == ["call.initiated", "call.completed"] for c in busy)  # in order, none lost
    assert by_call[talking] == ["call.initiated", "call.ringing", "call.answered", "call.completed"]
    callback = first_arrival["/cb"]
    assert [e["type"] for e in callback] == by_call[talking]
    end = callback[-1]["data"]
    assert (end["hangup_by"], end["hangup_reason"]) == ("system", "softswitch restarted")  # closed at the restart
