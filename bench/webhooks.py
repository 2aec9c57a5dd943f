"""Webhook delivery: events per second end to end, and the time from a hangup to its `call.completed`.

The softswitch (`softswitch.server.Services`, uvloop as `softswitch serve` runs it) runs in this process over
a SQLite store in a temporary directory; the receiver is a second process (this script with `--receiver`):
an aiohttp server on loopback answering 204 at once and noting when each delivery arrived, on the clock
both processes share (`time.time()`).

  * throughput: N events (`call.dtmf`, 5 per call id so per-call ordering is in play) published on the
    softswitch's bus in batches, then delivered through the whole path: the outbox transaction, the worker,
    signing, HTTP POST, the attempt logged. events_per_s = N / (last arrival - first publish).
    The reference in the same run, `ref_posts_per_s`, is a bare aiohttp client POSTing the same body to the
    same receiver with the same concurrency and nothing else (no store, no signing): the HTTP ceiling here.
  * latency: C test calls to the simulated far end (answered, talking), then each hung up through the API
    (`POST /v2/calls/{id}/hangup`) one after another; hangup_to_delivery is from the request leaving to the
    call's `call.completed` arriving at the receiver (p50 / p99).

Runs: (default) 20,000 events and 200 calls; `--quick` 3,000 events and 40 calls. Last line:
`webhooks events_per_s=N hangup_to_delivery_p50_ms=X p99_ms=X ref_posts_per_s=N`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

# Run as `python bench/webhooks.py`, this file's folder leads sys.path, and `import api` would find
# bench/api.py instead of the project's api package: take the folder out before importing the project.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from api.auth import create_key
from softswitch.config import parse
from softswitch.events import EventBus
from softswitch.server import Services, install_loop_policy
from softswitch.store import Store, WebhookEndpoint
from softswitch.testmode import TestFarEnd
from softswitch.webhooks import EVENT_TYPES, WebhookDispatcher

EVENTS_PER_CALL = 5
BATCH = 50  # events published per loop turn


# -- the receiver process ------------------------------------------------------------------------------
async def _receiver(port: int) -> None:
    """POST /hook: 204 and note (arrival, webhook-id, type, call_id); GET /arrivals: the notes so far; GET
    /count: how many distinct webhook-ids arrived (what the bench polls: a few bytes, not every note so far,
    whose download and decoding would load the loop being measured)."""
    arrivals: list[tuple[float, str, str, str | None]] = []
    seen: set[str] = set()

    async def hook(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        arrivals.append((time.time(), request.headers["webhook-id"], body["type"], body["data"].get("call_id")))
        seen.add(request.headers["webhook-id"])
        return web.Response(status=204)

    async def dump(request: web.Request) -> web.Response:
        return web.json_response(arrivals)

    async def count(request: web.Request) -> web.Response:
        return web.Response(text=str(len(seen)))

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/arrivals", dump)
    app.router.add_get("/count", count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes stdin
    await runner.cleanup()


class Receiver:
    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Receiver:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--receiver", str(self.port), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert (await self.proc.stdout.readline()).strip() == b"ready"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.proc.stdin.close()
        await self.proc.wait()

    async def arrivals(self) -> list[tuple[float, str, str, str | None]]:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/arrivals") as r:
            return [tuple(a) for a in await r.json()]

    async def count(self) -> int:
        """Distinct webhook-ids arrived so far."""
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/count") as r:
            return int(await r.text())


# -- the measurements ----------------------------------------------------------------------------------
async def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return False


async def throughput(svc: Services, rx: Receiver, events: int) -> tuple[float, int]:
    """(events per second, how many arrived): `events` bus events through the whole delivery path."""
    start = time.time()
    for first in range(0, events, BATCH):
        for n in range(first, min(events, first + BATCH)):
            call_id = f"call_bench{n // EVENTS_PER_CALL:06d}"
            data = {"call_id": call_id, "direction": "inbound", "to": "+15550100", "status": "in-progress"}
            svc.bus.publish("call.dtmf", data | {"from": "caller", "digit": "5", "source": "rfc4733"}, call_id=call_id)
        await asyncio.sleep(0)

    async def arrived() -> bool:
        return await rx.count() >= events

    await _wait_for(arrived, 120)
    got = await rx.arrivals()
    ids = {a[1] for a in got}
    last = max(a[0] for a in got)
    return len(ids) / (last - start), len(ids)


async def enqueue_cost(workdir: Path, events: int, per_turn: int = 10) -> float:
    """CPU microseconds per event on the thread that publishes it (the event loop's, in `softswitch serve`):
    the outbox write of events published `per_turn` at a time, with one enabled endpoint and no delivery
    running (a dispatcher subscribed to a bus, its worker not started), so only the enqueue is counted."""
    workdir.mkdir()
    store = Store.open(workdir / "enqueue.db")
    store.add_webhook_endpoint(
        WebhookEndpoint("wh_1", "http://127.0.0.1:9/", ["*"], True, "", "whsec_" + "A" * 32, None, None, False, 0.0)
    )
    bus = EventBus()
    bus.subscribe(WebhookDispatcher(store, bus, allow_private=True).on_event, EVENT_TYPES)
    data = {"call_id": "", "direction": "inbound", "from": "caller", "to": "+15550100", "status": "in-progress"}
    cpu = time.thread_time()
    for first in range(0, events, per_turn):
        for n in range(first, min(events, first + per_turn)):
            bus.publish("call.dtmf", data | {"call_id": f"call_{n}", "digit": "5"}, call_id=f"call_{n}")
        await asyncio.sleep(0)  # the loop turn ends
    await asyncio.sleep(0)
    spent = time.thread_time() - cpu
    queued = len(store.webhook_chain_heads(limit=events + 1))
    store.close()
    assert queued == events, queued
    return spent / events * 1e6


async def reference(url: str, body: bytes, posts: int, concurrency: int) -> float:
    """POSTs per second of a bare aiohttp client (keep-alive, `concurrency` at once) to the receiver."""
    sent = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def worker() -> None:
            nonlocal sent
            while sent < posts:
                sent += 1
                headers = {"webhook-id": f"ref{sent}", "Content-Type": "application/json"}
                async with http.post(url, data=body, headers=headers) as r:
                    await r.read()

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return posts / (time.monotonic() - start)


async def hangup_latency(svc: Services, rx: Receiver, api: str, calls: int) -> list[float]:
    """Milliseconds from each hangup request leaving to the call's call.completed arriving."""
    key = create_key(svc.store, "bench", ["calls:write", "calls:read", "webhooks:write"], True, time.time())[1]
    async with aiohttp.ClientSession(api, headers={"Authorization": f"Bearer {key}"}) as http:
        async with http.post("/v2/webhooks", json={"url": rx.url, "events": ["call.completed"]}) as r:
            assert r.status == 201, await r.text()
        ids = []
        for _ in range(calls):
            async with http.post("/v2/calls", json={"to": "+15005550006", "from": "bench"}) as r:
                assert r.status == 201, await r.text()
                ids.append((await r.json())["id"])

        async def all_answered() -> bool:
            return all(svc.calls.calls.get(c) is not None and svc.calls.calls[c].state == "answered" for c in ids)

        if not await _wait_for(all_answered, 30):
            raise RuntimeError("the test calls were not all answered")
        sent_at = {}
        for call_id in ids:
            sent_at[call_id] = time.time()
            async with http.post(f"/v2/calls/{call_id}/hangup") as r:
                assert r.status == 200, await r.text()
            await asyncio.sleep(0.02)

    async def all_completed() -> bool:
        return len({a[3] for a in await rx.arrivals() if a[2] == "call.completed"} & set(ids)) == len(ids)

    await _wait_for(all_completed, 30)
    arrived = {a[3]: a[0] for a in await rx.arrivals() if a[2] == "call.completed"}
    return sorted(1000 * (arrived[c] - t) for c, t in sent_at.items() if c in arrived)


# -- the run -------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(workdir: Path, api_port: int, concurrency: int) -> str:
    return (
        f'[sip]\nlisten = ["udp:127.0.0.1:{_free_port()}"]\n'
        f'[media]\nrtp_ports = "16000-16999"\nrecordings_dir = "{workdir / "recordings"}"\n'
        f'[api]\nlisten = "127.0.0.1:{api_port}"\nrate_limit_per_s = 1000000000\nrate_limit_burst = 1000000000\n'
        f'[store]\npath = "{workdir / "sw.db"}"\n[log]\nlevel = "warning"\n'
        f"[webhooks]\nallow_private = true\nconcurrency = {concurrency}\n"
    )


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


async def bench(events: int, calls: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        api_port = _free_port()
        svc = Services(parse(_config(Path(tmp), api_port, concurrency)))
        svc.test_far_end = TestFarEnd(answer_delay_s=0.1, talk_s=600.0)
        await svc.start()
        try:
            async with Receiver() as rx:
                key = create_key(svc.store, "bench", ["webhooks:write"], False, time.time())[1]
                async with (
                    aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http,
                    http.post(f"http://127.0.0.1:{api_port}/v2/webhooks", json={"url": rx.url}) as r,
                ):
                    assert r.status == 201, await r.text()
                cpu, wall = time.process_time(), time.monotonic()
                rate, delivered = await throughput(svc, rx, events)
                cpu_pct = 100 * (time.process_time() - cpu) / (time.monotonic() - wall)
                body = json.dumps({"id": "evt_x", "type": "call.dtmf", "timestamp": "t", "data": {"x": 1}}).encode()
                ref = await reference(rx.url, body, min(events, 5000), concurrency)
                async with Receiver() as rx2:
                    latencies = await hangup_latency(svc, rx2, f"http://127.0.0.1:{api_port}", calls)
        finally:
            await svc.close()
        runs = [await enqueue_cost(Path(tmp) / f"enqueue-{i}", min(events, 2000)) for i in range(5)]
        enqueue_us = sorted(runs)[2]  # the median of 5: one run is at the mercy of a neighbour
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    print(f"{'measure':<28}{'value':>12}")
    print(f"{'events published':<28}{events:>12}")
    print(f"{'events delivered':<28}{delivered:>12}")
    print(f"{'events/s end to end':<28}{rate:>12.0f}   (softswitch process CPU {cpu_pct:.0f}% of a core)")
    print(f"{'reference POSTs/s':<28}{ref:>12.0f}   (bare aiohttp client, keep-alive, {concurrency} at once)")
    print(f"{'calls hung up':<28}{calls:>12}")
    print(f"{'completed delivered':<28}{len(latencies):>12}")
    print(f"{'hangup->delivery p50 ms':<28}{p50:>12.1f}")
    print(f"{'hangup->delivery p99 ms':<28}{p99:>12.1f}")
    print(f"{'enqueue us/event':<28}{enqueue_us:>12.0f}   (loop CPU, 10 events a turn, median of 5)")
    print(
        f"webhooks events_per_s={rate:.0f} hangup_to_delivery_p50_ms={p50:.1f} p99_ms={p99:.1f} "
        f"ref_posts_per_s={ref:.0f} delivered={delivered} of={events} enqueue_us={enqueue_us:.0f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3,000 events and 40 calls")
    ap.add_argument("--events", type=int, help="events for the throughput run (default 20,000)")
    ap.add_argument("--calls", type=int, help="calls hung up for the latency run (default 200)")
    ap.add_argument("--concurrency", type=int, default=4, help="[webhooks] concurrency (per endpoint)")
    ap.add_argument("--receiver", type=int, help=argparse.SUPPRESS)  # the receiver process, on this port
    args = ap.parse_args()
    if args.receiver:
        asyncio.run(_receiver(args.receiver))
        return
    loop_name = install_loop_policy()
    events = args.events or (3000 if args.quick else 20000)
    calls = args.calls or (40 if args.quick else 200)
    print(f"webhook delivery on loopback ({loop_name}, {os.cpu_count()} CPUs), concurrency {args.concurrency}")
    asyncio.run(bench(events, calls, args.concurrency))


if __name__ == "__main__":
    main()
