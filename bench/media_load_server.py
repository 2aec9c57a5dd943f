"""Hosts the softswitch media engine in its own process for bench/media_load.py.

Why a separate process: the benchmark pins the engine to one core and the load generator to the other,
and reads the engine's CPU time apart from the generator's. The parent drives it with a line protocol
on stdin/stdout:

    (on start)      -> `ready`, or `unavailable <reason>` and exit status 3
    open N          followed by N lines `gen_port_a gen_port_b` (the far ends, as their SDP would say)
                    -> N lines `port_a port_b` (the engine's local RTP port for each leg), then `ok`
    cpu             -> CPU seconds the media thread has used so far (MediaEngine.cpu_seconds())
    close           -> destroys every leg, `ok`
    quit            -> closes the engine and exits

Errors answer `error <message>` on one line. In record mode every call is bridged with a stereo
recording to `<record-dir>/call-<i>.wav`. `--engine-module` swaps in another module with the same
MediaEngine API (a stand-in while the engine is being built).
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO


def reply(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


def parse_ports(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high)


def record(engine: Any, a: Any, b: Any, path: str) -> None:
    """Bridge two legs with a stereo recording of the call (leg A left, leg B right)."""
    if hasattr(engine, "record"):  # MediaEngine as built: record() on the bridge that bridge() returns
        engine.record(engine.bridge(a, b, mode="relay"), path, stereo=True)
    else:  # the form first specified for the benchmark
        engine.bridge(a, b, mode="record", record=path)


def serve(engine: Any, host: str, mode: str, record_dir: Path | None, inp: TextIO, out: TextIO) -> None:
    legs: list[Any] = []
    opened = 0
    for raw in inp:
        words = raw.split()
        if not words:
            continue
        cmd = words[0]
        try:
            if cmd == "open":
                count = int(words[1])
                remotes = [tuple(int(p) for p in inp.readline().split()) for _ in range(count)]
                answers = []
                for gen_a, gen_b in remotes:
                    a = engine.create_leg()
                    b = engine.create_leg()
                    legs += (a, b)
                    engine.set_remote(a, host, gen_a)
                    engine.set_remote(b, host, gen_b)
                    if mode == "record":
                        assert record_dir is not None
                        record(engine, a, b, str(record_dir / f"call-{opened}.wav"))
                    else:
                        engine.bridge(a, b, mode="relay")
                    if mode == "dtmf":  # relayed, and both legs tapped for the in-band DTMF detector
                        engine.detect_dtmf(a)
                        engine.detect_dtmf(b)
                    opened += 1
                    answers.append(f"{a.port} {b.port}")
                for line in answers:
                    reply(out, line)
                reply(out, "ok")
            elif cmd == "cpu":
                reply(out, repr(float(engine.cpu_seconds())))
            elif cmd == "close":
                for leg in legs:
                    engine.destroy_leg(leg)
                legs.clear()
                reply(out, "ok")
            elif cmd == "quit":
                return
            else:
                reply(out, f"error unknown command {cmd!r}")
        except Exception as exc:  # the parent reads the message; the server keeps serving
            reply(out, f"error {type(exc).__name__}: {exc}".replace("\n", " "))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--ports", default="30000-39999", help="the engine's RTP port range")
    ap.add_argument("--mode", choices=("relay", "record", "dtmf"), default="relay")
    ap.add_argument("--record-dir", type=Path)
    ap.add_argument("--core", type=int, default=0, help="CPU to pin this process (and its threads) to; -1: none")
    ap.add_argument("--engine-module", default="media.engine", help="module providing MediaEngine")
    args = ap.parse_args()
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = sys.stdout
    try:
        module = importlib.import_module(args.engine_module)
        engine = module.MediaEngine(rtp_ports=parse_ports(args.ports), host=args.host)
    except Exception as exc:  # missing module, unbuilt extension, bad constructor: all mean "not available"
        reply(out, f"unavailable {type(exc).__name__}: {exc}".replace("\n", " "))
        traceback.print_exc(file=sys.stderr)
        return 3
    if os.sched_getscheduler(0) == os.SCHED_FIFO:
        # answer `cpu` on time even when the media thread (started above, at our priority) is saturated
        prio = os.sched_getparam(0).sched_priority
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio + 1))
    reply(out, "ready")
    try:
        serve(engine, args.host, args.mode, args.record_dir, sys.stdin, out)
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
