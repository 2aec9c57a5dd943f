"""Control API throughput: requests per second a whole softswitch answers on loopback.

The softswitch (`softswitch.server.Services`, uvloop as `softswitch serve` runs it) is served from this
process over a SQLite store in a temporary directory, with a few call records saved beforehand and the
rate limit set out of the way. The load comes from a second process (this script with `--load`): an
aiohttp client holding N keep-alive connections, each sending its next request as soon as the last one
is answered, for a fixed time after a short warm-up. Every answer must be the expected status; latency is
measured per request in the client.

Operations, one function each (`OPERATIONS`):
  * get: `GET /v2/calls/{id}` over the saved records, with a `calls:read` key;
  * create: `POST /v2/calls` with a test key to the simulated far end's busy number (+15005550001): the
    rate of 201s, and originate_p50_ms / originate_p99_ms, the time from the request leaving the client to
    the INVITE leaving the softswitch (its `call.initiated`, published as the INVITE is sent; both
    processes read the same clock).

Runs: (default) 10 s per operation with 32 connections; `--quick` 3 s. The last line is the headline,
`api get_rps=N create_rps=N originate_p50_ms=X originate_p99_ms=X`.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

# Run as `python bench/api.py`, this file's folder leads sys.path, and `import api` would find this file
# instead of the project's api package: take the folder out before importing the project.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from api.auth import create_key
from softswitch.config import parse
from softswitch.events import new_id
from softswitch.server import Services, install_loop_policy
from softswitch.store import CallRecord, LegRecord

RECORDS = 100  # call records saved for `get` to read, round robin
WARMUP_S = 0.5


@dataclass
class Result:
    """One operation's load: what the client sent and how it was answered."""

    operation: str
    connections: int
    seconds: float
    requests: int
    errors: int  # answers other than the expected status, and failed requests
    p50_ms: float
    p99_ms: float
    note: str = ""
    server_cpu_pct: float = math.nan  # this process's CPU over the load (warm-up included): 100 is one core

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Target:
    """The softswitch under load: its API address, a key for each use, and the saved call ids."""

    url: str
    read_key: str
    call_ids: list[str]
    write_key: str = ""  # a test key: its calls go to the simulated far end
    bus: object = None  # the softswitch's event bus (softswitch.events.EventBus)


# -- the load process --------------------------------------------------------------------------------
async def _load(spec: dict) -> dict:
    """Run the load `spec` describes (url, method, paths, body, status, headers, connections, seconds) and
    return its counts and latency percentiles."""
    paths, latencies, errors, sent_at = spec["paths"], [], 0, {}
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, stop_at = start + spec["warmup"], start + spec["warmup"] + spec["seconds"]
    connector = aiohttp.TCPConnector(limit=spec["connections"])
    async with aiohttp.ClientSession(spec["url"], connector=connector, headers=spec["headers"]) as session:

        async def worker(first: int) -> None:
            nonlocal errors
            i = first
            while (sent := loop.time()) < stop_at:
                try:
                    wall = time.time()
                    async with session.request(spec["method"], paths[i % len(paths)], json=spec["body"]) as resp:
                        raw = await resp.read()
                        ok = resp.status == spec["status"]
                    if ok and spec.get("collect_ids") and sent >= measure_from:
                        sent_at[json.loads(raw)["id"]] = wall  # when the request left, on the shared clock
                except aiohttp.ClientError:
                    ok = False
                done = loop.time()
                if sent >= measure_from and done <= stop_at:
                    latencies.append(done - sent)
                    errors += not ok
                i += spec["connections"]

        await asyncio.gather(*(worker(n) for n in range(spec["connections"])))
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": 1000 * _percentile(latencies, 0.50),
        "p99_ms": 1000 * _percentile(latencies, 0.99),
        "sent_at": sent_at,
    }


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


async def run_load(
    url: str,
    *,
    method: str,
    paths: list[str],
    key: str,
    connections: int,
    seconds: float,
    status: int = 200,
    body: object = None,
    collect_ids: bool = False,
) -> dict:
    """The load in a second process (this script with `--load`), so the client's CPU is not the server's."""
    spec = {
        "url": url,
        "method": method,
        "paths": paths,
        "body": body,
        "status": status,
        "headers": {"Authorization": f"Bearer {key}"},
        "connections": connections,
        "seconds": seconds,
        "warmup": WARMUP_S,
        "collect_ids": collect_ids,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--load", json.dumps(spec), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the load process failed: {err.decode(errors='replace')[-2000:]}")
    return json.loads(out)


# -- operations --------------------------------------------------------------------------------------
async def get_calls(target: Target, connections: int, seconds: float) -> Result:
    """`GET /v2/calls/{id}` over the saved records."""
    paths = [f"/v2/calls/{call_id}" for call_id in target.call_ids]
    got = await run_load(
        target.url, method="GET", paths=paths, key=target.read_key, connections=connections, seconds=seconds
    )
    got.pop("sent_at")
    return Result("get", connections, seconds, **got)


async def create_calls(target: Target, connections: int, seconds: float) -> Result:
    """`POST /v2/calls` with a test key to the simulated far end's busy number (each call is over in
    milliseconds, so the load does not pile calls up): the rate of 201s, and the time from the request
    leaving the client to the INVITE leaving the softswitch (its `call.initiated`, published as the
    INVITE is sent), on the clock both processes share."""
    initiated: dict[str, float] = {}
    target.bus.subscribe(lambda ev: initiated.setdefault(ev.call_id, time.time()), types=["call.initiated"])
    got = await run_load(
        target.url,
        method="POST",
        paths=["/v2/calls"],
        key=target.write_key,
        connections=connections,
        seconds=seconds,
        status=201,
        body={"to": "+15005550001", "from": "bench"},
        collect_ids=True,
    )
    await asyncio.sleep(0.5)  # the last INVITEs leave
    sent_at = got.pop("sent_at")
    delays = sorted(1000 * (initiated[c] - t) for c, t in sent_at.items() if c in initiated)
    note = f"originate: {len(delays)} of {len(sent_at)} calls timed (request sent -> INVITE sent)"
    got["p50_ms"], got["p99_ms"] = _percentile(delays, 0.50), _percentile(delays, 0.99)
    return Result("create", connections, seconds, **got, note=note)


OPERATIONS: dict[str, Callable[[Target, int, float], Awaitable[Result]]] = {"get": get_calls, "create": create_calls}


# -- the server --------------------------------------------------------------------------------------
def _config(workdir: Path, api_port: int, sip_port: int) -> str:
    return (
        f'[sip]\nlisten = ["udp:127.0.0.1:{sip_port}"]\n'
        f'[media]\nrtp_ports = "16500-16999"\nrecordings_dir = "{workdir / "recordings"}"\n'
        f'[api]\nlisten = "127.0.0.1:{api_port}"\nrate_limit_per_s = 1000000000\nrate_limit_burst = 1000000000\n'
        f'[store]\npath = "{workdir / "sw.db"}"\n[log]\nlevel = "warning"\n'
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _records(now: float) -> list[CallRecord]:
    ending = {"status": "completed", "hangup_code": 200, "hangup_reason": "BYE", "hangup_by": "caller"}
    out = []
    for n in range(RECORDS):
        created = now - 3600 + n
        times = {"created_at": created, "answered_at": created + 2, "ended_at": created + 62}
        rec = CallRecord(
            new_id("call"),
            "inbound",
            f"sip:+1555000{n:04d}@carrier.example",
            "sip:1000@switch.example",
            trunk="carrier",
            **times,
            **ending,
        )
        rec.legs.append(LegRecord(0, "inbound", f"bench-{n}", rec.from_uri, created, status_code=200))
        out.append(rec)
    return out


async def bench(operations: list[str], connections: int, seconds: float) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        api_port = _free_port()
        svc = Services(parse(_config(Path(tmp), api_port, _free_port())))
        await svc.start()
        try:
            records = _records(time.time())
            svc.store.save_calls(records)
            key = create_key(svc.store, "bench", ["calls:read"], False, time.time())[1]
            write_key = create_key(svc.store, "bench", ["calls:write"], True, time.time())[1]
            target = Target(f"http://127.0.0.1:{api_port}", key, [r.id for r in records], write_key, svc.bus)
            results = []
            for name in operations:
                cpu, wall = time.process_time(), time.monotonic()
                result = await OPERATIONS[name](target, connections, seconds)
                if result.requests:
                    result.server_cpu_pct = 100 * (time.process_time() - cpu) / (time.monotonic() - wall)
                results.append(result)
            return results
        finally:
            await svc.close()


def report(results: list[Result]) -> None:
    head = f"{'operation':<10}{'conns':>6}{'seconds':>9}{'requests':>10}{'errors':>8}{'rps':>10}"
    print(head + f"{'p50_ms':>9}{'p99_ms':>9}{'srv_cpu%':>10}")
    for r in results:
        print(
            f"{r.operation:<10}{r.connections:>6}{r.seconds:>9.1f}{r.requests:>10}{r.errors:>8}"
            f"{r.rps:>10.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.server_cpu_pct:>10.0f}"
        )
    for r in results:
        if r.note:
            print(f"note: {r.operation}: {r.note}")
    by = {r.operation: r for r in results}
    get, create = by.get("get"), by.get("create")
    print(
        f"api get_rps={get.rps if get else 0:.0f} create_rps={create.rps if create else 0:.0f} "
        f"originate_p50_ms={create.p50_ms if create else math.nan:.1f} "
        f"originate_p99_ms={create.p99_ms if create else math.nan:.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s per operation instead of 10 s")
    ap.add_argument("--seconds", type=float, help="measured seconds per operation")
    ap.add_argument("--connections", type=int, default=32, help="concurrent client connections")
    ap.add_argument("--operations", default=",".join(OPERATIONS), help="comma-separated: " + ", ".join(OPERATIONS))
    ap.add_argument("--load", help=argparse.SUPPRESS)  # the load process: a JSON spec from run_load
    args = ap.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(_load(json.loads(args.load)))))
        return
    loop_name = install_loop_policy()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    operations = [name.strip() for name in args.operations.split(",") if name.strip()]
    print(f"control API on loopback ({loop_name}, {os.cpu_count()} CPUs), {args.connections} connections")
    report(asyncio.run(bench(operations, args.connections, seconds)))


if __name__ == "__main__":
    main()
