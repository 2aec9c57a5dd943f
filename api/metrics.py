"""`GET /metrics`: the softswitch's state in the Prometheus text format, for a Prometheus (or compatible)
scraper.

Served two ways: on the control API with a key that has the `admin` scope, and, when `[api] metrics_listen`
is set, without a key on that address alone (`metrics_app`), which is how a scraper on the same host or a
private network usually reaches it.

Nothing here sits on a hot path. The SIP endpoint (`received_by`, `sent_by`) and the API's error middleware
(`api.guard.REQUEST_COUNTS`) only increment plain dicts; `ScrapeCollector` turns them into samples when a
scrape asks, together with the live call count and the webhook outbox (a count over its pending index, and
the dispatcher's counters). Per-call figures (outcome, media statistics) come from the
event bus once per call. Each `Metrics` has its own `CollectorRegistry`, never the process-wide default, so
several softswitches in one process (as the tests run them) do not share or clash.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from api.auth import ADMIN
from api.guard import REQUEST_COUNTS
from api.http import RouteTable
from softswitch import gcstats
from softswitch.checkpointer import RESTART_FRAMES
from softswitch.events import Event, EventBus
from softswitch.histogram import Histogram

if TYPE_CHECKING:
    from softswitch.b2bua.switch import B2bua
    from softswitch.gcpolicy import GcPolicy
    from softswitch.store import CallRecord
    from softswitch.transport.endpoint import SipEndpoint
    from softswitch.webhooks import WebhookDispatcher

PATH = "/metrics"
OUTCOMES = ("completed", "busy", "no-answer", "failed", "canceled")  # a call.completed event's `status`
# Loss per leg: what listeners notice starts around 1 %; a leg past 20 % is broken.
LOSS_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# Interarrival jitter per leg (RFC 3550): 20 ms is one frame, past 50 ms a jitter buffer is struggling.
JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)


class Metrics:
    """The metrics of one softswitch: its call control, SIP endpoint and event bus, plus the API app it is
    registered on (`register`)."""

    def __init__(
        self,
        calls: B2bua,
        sip: SipEndpoint,
        bus: EventBus,
        webhooks: WebhookDispatcher | None = None,
        gc_policy: GcPolicy | None = None,
    ):
        self.calls, self.sip, self.webhooks, self.gc_policy = calls, sip, webhooks, gc_policy
        self.registry = CollectorRegistry()
        self.api_counts: collections.Counter = collections.Counter()  # the app's, once registered
        # what ended calls leave: plain counts, turned into metric families at scrape time (`ScrapeCollector`)
        self.completed = collections.Counter(dict.fromkeys(OUTCOMES, 0))  # every status from the first scrape
        self.media_packets = {"rx": 0, "tx": 0}
        self.media_lost = 0
        self.leg_loss = Histogram(LOSS_BUCKETS)
        self.leg_jitter = Histogram(JITTER_BUCKETS)
        self.gc = gcstats.pauses()
        self.registry.register(ScrapeCollector(self))
        self._records: dict[str, CallRecord] = {}  # live calls' records: their media statistics at the end
        self._unsubscribe = bus.subscribe(self._on_call, ["call.initiated", "call.completed"])

    def register(self, app: web.Application) -> None:
        """The `create_app` hook: serve `/metrics` (admin scope) and count that app's requests."""
        app[METRICS] = self
        self.api_counts = app[REQUEST_COUNTS]
        routes.register(app)

    def render(self) -> bytes:
        """The current exposition (text format)."""
        return generate_latest(self.registry)

    def close(self) -> None:
        """Stop following the bus."""
        self._unsubscribe()
        self._records.clear()

    def _on_call(self, ev: Event) -> None:
        if ev.type == "call.initiated":
            call = self.calls.calls.get(ev.call_id)
            if call is not None:
                self._records[ev.call_id] = call.record
            return
        self.completed[ev.data.get("status", "unknown")] += 1
        record = self._records.pop(ev.call_id, None)
        for leg in record.legs if record is not None else ():
            self._observe_leg(leg.media)

    def _observe_leg(self, media: dict) -> None:
        """A leg's final statistics (`LegRecord.media`, filled when the call ends)."""
        rx, tx = media.get("rx_packets") or 0, media.get("tx_packets") or 0
        self.media_packets["rx"] += rx
        self.media_packets["tx"] += tx
        self.media_lost += media.get("lost") or 0
        if rx:  # a leg that heard nothing says nothing about loss or jitter
            self.leg_loss.observe(min(1.0, (media.get("loss_pct") or 0.0) / 100))
            self.leg_jitter.observe((media.get("jitter_ms") or 0.0) / 1000)


class ScrapeCollector:
    """What is read at scrape time: live calls, SIP messages, API requests, webhook deliveries."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield GaugeMetricFamily(
            "softswitch_calls_active", "Calls in progress (ringing or answered)", len(m.calls.calls)
        )
        yield from _ended_calls(m)
        requests = CounterMetricFamily(
            "softswitch_sip_requests",
            "SIP requests received (in) and sent (out) by method, retransmissions included",
            labels=["direction", "method"],
        )
        responses = CounterMetricFamily(
            "softswitch_sip_responses",
            "SIP responses received (in) and sent (out) by status code, retransmissions included",
            labels=["direction", "code"],
        )
        for direction, counts in (("in", m.sip.received_by), ("out", m.sip.sent_by)):
            for key, n in sorted(counts.items(), key=str):
                if isinstance(key, int):
                    responses.add_metric([direction, str(key)], n)
                else:
                    requests.add_metric([direction, key], n)
        yield requests
        yield responses
        yield CounterMetricFamily(
            "softswitch_sip_malformed", "SIP messages refused as malformed", value=m.sip.counters["malformed"]
        )
        yield GaugeMetricFamily("softswitch_sip_transactions", "SIP transactions alive (bounded)", len(m.sip.txns))
        yield from _security(m.sip)
        api = CounterMetricFamily(
            "softswitch_api_requests",
            "Control API requests answered, by method, route pattern and status",
            labels=["method", "route", "status"],
        )
        for (method, route, status), n in sorted(m.api_counts.items()):
            api.add_metric([method, route, str(status)], n)
        yield api
        pauses = HistogramMetricFamily(
            "softswitch_gc_pause_seconds",
            "Pauses of the cyclic garbage collector (the whole process waits), by generation",
            labels=["generation"],
        )
        for generation in gcstats.GENERATIONS:
            pauses.add_metric([str(generation)], m.gc.histogram(generation), m.gc.seconds[generation])
        yield pauses
        longest = GaugeMetricFamily(
            "softswitch_gc_pause_longest_seconds",
            "The longest pause of the garbage collector since start, by generation",
            labels=["generation"],
        )
        for generation in gcstats.GENERATIONS:
            longest.add_metric([str(generation)], m.gc.longest[generation])
        yield longest
        checkpointer = m.calls.store.checkpointer
        if checkpointer is not None and checkpointer.last is not None:
            yield GaugeMetricFamily(
                "softswitch_store_wal_frames",
                f"Frames in the store's write-ahead log at its last checkpoint (started over past {RESTART_FRAMES:,})",
                checkpointer.last[1],
            )
        if m.gc_policy is not None:
            yield GaugeMetricFamily(
                "softswitch_gc_live_objects",
                "Objects the last full collection left (and walked): the live heap a full collection stops for",
                m.gc_policy.objects_after_full,
            )
            yield CounterMetricFamily(
                "softswitch_gc_full_collections",
                "Full collections run by softswitch.gcpolicy (on its clock, or early when memory grew)",
                value=m.gc_policy.full_runs,
            )
            yield GaugeMetricFamily(
                "softswitch_gc_retired_objects",
                "Objects start-up left, untracked for good after its collection: no collection walks them",
                m.gc_policy.retired,
            )
        hooks = m.webhooks
        pending = hooks.store.count_pending_webhook_deliveries() if hooks is not None else 0
        counts = hooks.counters if hooks is not None else collections.Counter()
        yield GaugeMetricFamily(
            "softswitch_webhook_deliveries_pending", "Webhook deliveries waiting to be sent (in the outbox)", pending
        )
        yield CounterMetricFamily(
            "softswitch_webhook_deliveries_delivered", "Webhook deliveries answered 2xx", value=counts["delivered"]
        )
        yield CounterMetricFamily(
            "softswitch_webhook_deliveries_failed",
            "Webhook deliveries given up (retries used up, 410, other 4xx, refused address)",
            value=counts["failed"],
        )
        yield CounterMetricFamily(
            "softswitch_webhook_attempts_retried",
            "Webhook attempts that failed and will be retried (429, 5xx, timeouts, connection errors)",
            value=counts["pending"],
        )


# auth_failures: wrong password, unknown user, forged nonce...; bans: addresses banned for them; banned_dropped:
# messages of banned addresses dropped (or answered 403); rate_limited: dropped over their source's rate;
# refused_*: calls the toll-fraud rules refused, by rule; alerts_suppressed: over [security] alerts_per_s;
# transactions_full: requests answered 503 for [sip] max_transactions
SECURITY_EVENTS = (
    "auth_failures",
    "bans",
    "banned_dropped",
    "rate_limited",
    "scanners_dropped",
    "refused_transit",
    "refused_destination",
    "refused_max_calls",
    "refused_calls_per_minute",
    "refused_client_certificate",
    "alerts_suppressed",
    "transactions_full",
)


def _ended_calls(m: Metrics) -> Iterator[Metric]:
    completed = CounterMetricFamily("softswitch_calls_completed", "Calls ended, by final status", labels=["status"])
    for status, n in sorted(m.completed.items()):
        completed.add_metric([status], n)
    yield completed
    packets = CounterMetricFamily(
        "softswitch_media_packets",
        "RTP packets of ended call legs: rx from the far end, tx to it",
        labels=["direction"],
    )
    for direction, n in m.media_packets.items():
        packets.add_metric([direction], n)
    yield packets
    yield CounterMetricFamily(
        "softswitch_media_packets_lost", "RTP packets of ended legs lost on the way to us", value=m.media_lost
    )
    for name, text, histogram in (
        ("softswitch_media_leg_loss_ratio", "Packet loss of each ended leg that received media (0-1)", m.leg_loss),
        (
            "softswitch_media_leg_jitter_seconds",
            "Interarrival jitter (RFC 3550) of each ended leg that received media",
            m.leg_jitter,
        ),
    ):
        yield HistogramMetricFamily(name, text, buckets=histogram.cumulative(), sum_value=histogram.sum)


def _security(sip) -> Iterator[Metric]:
    """What the SIP edge refused and why (softswitch.security), and the memory its tables hold."""
    security = sip.security
    counts = security.counters if security is not None else collections.Counter()
    events = CounterMetricFamily(
        "softswitch_security_events", "Security events of the SIP edge, by kind", labels=["kind"]
    )
    for kind in SECURITY_EVENTS:
        if kind == "scanners_dropped":
            value = sip.counters[kind]
        elif kind == "transactions_full":
            value = sip.txns.refused_full
        else:
            value = counts[kind]
        events.add_metric([kind], value)
    yield events
    buckets, failures, bans = security.guard.tracked() if security is not None else (0, 0, 0)
    yield GaugeMetricFamily("softswitch_security_bans", "Source addresses banned now", bans)
    tracked = GaugeMetricFamily(
        "softswitch_security_sources_tracked", "Source addresses remembered (bounded)", labels=["table"]
    )
    tracked.add_metric(["rate"], buckets)
    tracked.add_metric(["failures"], failures)
    yield tracked


METRICS = web.AppKey("metrics", Metrics)
routes = RouteTable()


def _exposition(metrics: Metrics) -> web.Response:
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.route(
    "GET",
    PATH,
    scope=ADMIN,
    content_type="text/plain",
    summary="Metrics in the Prometheus text format",
    description="Calls, SIP messages, media quality, API requests. Also served without a key on "
    "`[api] metrics_listen` when set.",
    tags=["meta"],
)
async def get_metrics(request: web.Request) -> web.Response:
    return _exposition(request.app[METRICS])


def metrics_app(metrics: Metrics) -> web.Application:
    """The app of `[api] metrics_listen`: `GET /metrics` and nothing else, without a key (whoever can reach
    that address may read it: bind it to loopback or a private network)."""

    async def scrape(request: web.Request) -> web.Response:
        return _exposition(metrics)

    app = web.Application()
    app.router.add_get(PATH, scrape)
    return app
