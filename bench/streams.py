"""Media streams under load: how many relayed calls, each streamed to a WebSocket subscriber, one core carries
with every frame arriving in order and p99 latency from RTP in to WebSocket frame out under 40 ms.

Three parts on loopback:
  * the softswitch side (this script with `--server`, pinned to core 0): media.engine.MediaEngine relaying N
    calls, each call's leg A tapped (track inbound) by softswitch.b2bua.streams.CallStreams, whose
    StreamClients connect to the subscriber, so the path is the softswitch's own: the engine's frame ring,
    one batch per wake-up, the Twilio messages built and sent by the asyncio loop (uvloop). Call control is
    left out (stand-in call objects give CallStreams each call's legs): SIP is not what is measured here.
  * the far ends: bench/loadgen (compiled, see bench/media_load.py) sends each leg a PCMU packet every
    20 ms carrying its send time (CLOCK_REALTIME) and cycle number in mu-law-safe nibbles, and checks the
    relay (loss, order);
  * the subscriber: an aiohttp WebSocket server in this process (pinned to core 1 with the generator)
    decodes every `media` payload, reads the send time and cycle back out of it, and times it against
    its arrival (both on CLOCK_REALTIME); frames must come in cycle order per stream.
A point holds when, over the measured window (after a 2 s warm-up), p99 < 40 ms, no frame came out of
order or went missing, and the relay lost < 0.1 %.

Runs: `--calls N [--seconds S]` one point; `--quick` 100 and 200 calls for 8 s; (default) calls stepped up
50, 100, 150, 200, 250, 300, 350, 400, 500 ... for 20 s each until a point fails. Last line:
`streams calls=N p99_ms=X dropped=N` (the largest N held, its p99, frames dropped on the way).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from aiohttp import WSMsgType, web

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if sys.path and Path(sys.path[0] or ".").resolve() == BENCH:  # bench/api.py would hide the api package
    sys.path.pop(0)
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
LG_MAGIC = 0x3176474C  # bench/loadgen_core.h: "LGv1", at nibble offset 16
MAX_P99_MS = 40.0
WARM_CYCLES = 100  # 2 s
LADDER = (50, 100, 150, 200, 250, 300, 350, 400, 500, 600, 800, 1000)
GEN_PORTS = (10000, 19999)
OUR_PORTS = (30000, 39999)


def _nibbles(p: bytes, offset: int, n: int) -> int | None:
    v = 0
    for j in range(n):
        b = p[offset + j]
        if b & 0xF0 != 0xF0:
            return None
        v |= (b & 0xF) << (4 * j)
    return v


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(0, {core})


# -- the softswitch side -------------------------------------------------------------------------------
async def serve(calls: int, url: str) -> None:
    """Relay `calls` calls and stream each one's leg A to `url`/{i}; driven by lines on stdin."""
    from media.engine import MediaEngine
    from softswitch.b2bua.streams import CallStreams
    from softswitch.server import install_loop_policy  # noqa: F401 - the loop policy is set by main()

    loop = asyncio.get_running_loop()
    engine = MediaEngine(OUR_PORTS, HOST)
    sw = SimpleNamespace(engine=engine, calls={}, loop=loop, publish=lambda *a: None, record=lambda _id: None)
    streams = CallStreams(sw, allow_private=True)
    sw.streams = streams
    engine.attach(loop, lambda _events: None, streams.on_frames)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def line() -> list[str]:
        return (await reader.readline()).decode().split()

    remotes = [int(p) for p in (await line())[1:]]
    ports, sessions = [], []
    for i in range(calls):
        a, b = engine.create_leg(), engine.create_leg()
        engine.set_remote(a, HOST, remotes[2 * i])
        engine.set_remote(b, HOST, remotes[2 * i + 1])
        engine.set_codec(a, "PCMU")
        engine.set_codec(b, "PCMU")
        engine.bridge(a, b)
        call = SimpleNamespace(id=f"call_{i}", state="answered", a=SimpleNamespace(virtual=False))
        call.media = SimpleNamespace(legs={"a": a, "b": b})
        sw.calls[call.id] = call
        sessions.append(streams.start(call, url=f"{url}/{i}", track="inbound", account="bench"))
        ports += [a.port, b.port]
    deadline = time.monotonic() + 30
    while any(s.status != "streaming" for s in sessions) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print("ports " + " ".join(map(str, ports)), flush=True)
    cpu = time.process_time()
    await line()  # "stop"
    print(
        json.dumps(
            {
                "engine_dropped": engine.dropped_frames,
                "stream_dropped": sum(s.counters["dropped"] for s in sessions),
                "not_streaming": sum(s.status != "streaming" for s in sessions),
                "cpu_s": time.process_time() - cpu,
                "engine_cpu_s": engine.cpu_seconds(),
            }
        ),
        flush=True,
    )
    await streams.close()
    engine.close()


# -- the subscriber and the far ends -------------------------------------------------------------------
class Subscriber:
    def __init__(self, calls: int) -> None:
        self.last_k = [-1] * calls
        self.latencies: list[int] = []
        self.out_of_order = 0
        self.missing = 0
        self.frames = 0
        self.window = (WARM_CYCLES, 1 << 62)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        i = int(request.match_info["i"])
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            now = time.time_ns()
            m = json.loads(msg.data)
            if m["event"] != "media":
                continue
            payload = base64.b64decode(m["media"]["payload"])
            if _nibbles(payload, 16, 8) != LG_MAGIC:
                continue  # silence or concealment, not one of the generator's frames
            sent, k = _nibbles(payload, 0, 16), _nibbles(payload, 32, 8)
            self.frames += 1
            if k <= self.last_k[i]:
                self.out_of_order += 1
            elif self.last_k[i] >= 0 and k != self.last_k[i] + 1 and self.window[0] <= k < self.window[1]:
                self.missing += k - self.last_k[i] - 1
            self.last_k[i] = max(self.last_k[i], k)
            if self.window[0] <= k < self.window[1]:
                self.latencies.append(now - sent)
        return ws


async def point(calls: int, seconds: float) -> dict:
    sys.path.insert(0, str(BENCH))
    from media_load import build_loadgen

    loadgen = build_loadgen()
    gen = loadgen.LoadGen(calls, HOST, *GEN_PORTS)
    sub = Subscriber(calls)
    meas = int(seconds * 50)
    sub.window = (WARM_CYCLES, WARM_CYCLES + meas)
    app = web.Application()
    app.router.add_get("/ws/{i}", sub.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--server",
        str(calls),
        "--url",
        f"ws://{HOST}:{port}/ws",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        far = [p for pair in gen.local_ports() for p in pair]
        server.stdin.write(("remotes " + " ".join(map(str, far)) + "\n").encode())
        await server.stdin.drain()
        words = (await asyncio.wait_for(server.stdout.readline(), 60)).decode().split()
        assert words and words[0] == "ports", words
        relay = [int(p) for p in words[1:]]
        gen.set_targets([(relay[2 * c], relay[2 * c + 1]) for c in range(calls)])
        cpu0, wall0 = time.process_time(), time.monotonic()
        relay_result = await asyncio.to_thread(gen.run, loadgen.monotonic_ns() + 100_000_000, WARM_CYCLES, meas)
        rx_cpu_pct = 100 * (time.process_time() - cpu0) / (time.monotonic() - wall0)
        await asyncio.sleep(0.3)  # the last frames reach the subscriber
        server.stdin.write(b"stop\n")
        await server.stdin.drain()
        stats = json.loads(await asyncio.wait_for(server.stdout.readline(), 30))
    finally:
        if server.returncode is None:
            server.stdin.close()
            try:
                await asyncio.wait_for(server.wait(), 30)
            except TimeoutError:
                server.kill()
        await runner.cleanup()
        gen.close()
    lat = sorted(sub.latencies)
    expected = calls * meas
    got = len(lat)
    p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6) if lat else (lambda q: float("nan"))
    dropped = stats["engine_dropped"] + stats["stream_dropped"] + max(0, expected - got)
    holds = (
        got > 0
        and p(0.99) < MAX_P99_MS
        and sub.out_of_order == 0
        and dropped == 0
        and stats["not_streaming"] == 0
        and relay_result["loss_pct"] < 0.1
    )
    return {
        "calls": calls,
        "frames": got,
        "expected": expected,
        "p50_ms": p(0.50),
        "p99_ms": p(0.99),
        "max_ms": p(1.0),
        "out_of_order": sub.out_of_order,
        "missing": sub.missing,
        "dropped": dropped,
        "relay_loss_pct": relay_result["loss_pct"],
        "relay_p99_ms": relay_result["p99_ms"],
        "server_cpu_pct": 100 * stats["cpu_s"] / (seconds + WARM_CYCLES * 0.02),
        "far_cpu_pct": rx_cpu_pct,
        "holds": holds,
    }


def row(r: dict) -> str:
    return (
        f"{r['calls']:>6}{r['frames']:>10}{r['expected']:>10}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
        f"{r['max_ms']:>9.1f}{r['out_of_order']:>6}{r['dropped']:>9}{r['relay_loss_pct']:>9.3f}"
        f"{r['server_cpu_pct']:>9.0f}{r['far_cpu_pct']:>9.0f}  {'yes' if r['holds'] else 'no'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, help="one point with this many calls")
    ap.add_argument("--seconds", type=float, help="measured seconds per point (default 20; --quick 8)")
    ap.add_argument("--quick", action="store_true", help="100 and 200 calls, 8 s each")
    ap.add_argument("--server", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from softswitch.server import install_loop_policy

    if args.server:
        pin(0)
        install_loop_policy()
        if os.environ.get("STREAMS_PROFILE"):  # where the softswitch side's Python time goes
            import cProfile

            cProfile.runctx(
                "asyncio.run(serve(args.server, args.url))", globals(), locals(), os.environ["STREAMS_PROFILE"]
            )
        else:
            asyncio.run(serve(args.server, args.url))
        return
    pin(1)
    loop_name = install_loop_policy()
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    ladder = [args.calls] if args.calls else ([100, 200] if args.quick else list(LADDER))
    print(f"media streams on loopback ({loop_name}, {os.cpu_count()} CPUs): softswitch on core 0, far ends and")
    print(f"subscriber on core 1; {seconds:g} s measured per point after 2 s; holds: p99 < {MAX_P99_MS:g} ms,")
    print("in order, nothing dropped, relay loss < 0.1 %")
    print(
        f"{'calls':>6}{'frames':>10}{'expected':>10}{'p50_ms':>9}{'p99_ms':>9}{'max_ms':>9}{'ooo':>6}"
        f"{'dropped':>9}{'loss%':>9}{'srv_cpu%':>9}{'far_cpu%':>9}  holds"
    )
    best = None
    for calls in ladder:
        r = asyncio.run(point(calls, seconds))
        print(row(r), flush=True)
        if r["holds"]:
            best = r
        elif not args.calls:
            break
    if best is None:
        print("streams calls=0 p99_ms=nan dropped=0")
    else:
        print(f"streams calls={best['calls']} p99_ms={best['p99_ms']:.1f} dropped={best['dropped']}")


if __name__ == "__main__":
    main()
