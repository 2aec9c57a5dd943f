"""Mutation fuzzing of the SIP parser: any input must parse or raise SipParseError, nothing else.

Seeds are the RFC 4475 torture messages plus typical INVITE/200 OK; each input applies 1-8 random byte
edits (flip to a SIP-significant byte, delete, insert, duplicate a slice, truncate) with a fixed seed, so
a failure is reproducible from its index. Successful parses also read the lazily parsed parts (URIs,
contacts, all Vias) and serialise; failures build their error response. Last line:
`sip_fuzz inputs=N parsed=N parse_errors=N other_exceptions=N seconds=X`; exit status 1 on any other
exception
or disagreement between the compiled fast path (cext/sipscan.pyx) and the reference parser.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
import traceback
from pathlib import Path

from sip_samples import INVITE, OK

from softswitch.sip.errors import SipParseError
from softswitch.sip.framer import StreamFramer
from softswitch.sip.message import Request, _from_scan, _scan, error_response, parse_reference

SIGNIFICANT = b' \t\r\n:;,<>"\\@=%?/[]0aZ\x00\xff\xc3'


def corpus() -> list[bytes]:
    data = Path(__file__).resolve().parent.parent / "tests" / "sip" / "data" / "rfc4475"
    return [INVITE, OK, *(p.read_bytes() for p in sorted(data.glob("*.dat")))]


def mutate(rng: random.Random, seed: bytes) -> bytes:
    raw = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        if not raw:
            break
        pos = rng.randrange(len(raw))
        op = rng.random()
        if op < 0.4:
            raw[pos] = rng.choice(SIGNIFICANT)
        elif op < 0.6:
            del raw[pos : pos + rng.randint(1, 4)]
        elif op < 0.8:
            raw[pos:pos] = bytes(rng.choice(SIGNIFICANT) for _ in range(rng.randint(1, 3)))
        elif op < 0.95:
            end = min(len(raw), pos + rng.randint(1, 40))
            raw[pos:pos] = raw[pos:end]
        else:
            del raw[pos:]
    return bytes(raw)


class Disagreement(Exception):
    """The compiled fast path answered differently from the reference parser."""


def _agree(data: bytes, fast: tuple | None, ref) -> None:
    if fast is None:
        return
    if ref is None:
        raise Disagreement("the fast path accepted what the reference refuses")
    msg = _from_scan(data, fast)
    if (msg.serialize(), msg.headers, str(msg.from_), str(msg.to), msg.cseq) != (
        ref.serialize(),
        ref.headers,
        str(ref.from_),
        str(ref.to),
        ref.cseq,
    ):
        raise Disagreement("the fast path's message differs from the reference's")


def exercise(data: bytes) -> bool:
    """True if it parsed; SipParseError propagates only as a handled outcome. Both parsers run and
    must agree wherever the compiled fast path answers."""
    fast = _scan(data)
    try:
        msg = parse_reference(data)
    except SipParseError as exc:
        _agree(data, fast, None)
        response = error_response(exc)
        if response is not None:
            response.serialize()
        return False
    _agree(data, fast, msg)
    msg.serialize()
    for getter in (lambda: msg.vias, lambda: msg.contacts, lambda: msg.uri if isinstance(msg, Request) else None):
        with contextlib.suppress(SipParseError):
            getter()
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=1_000_000, help="inputs to try (default 1e6)")
    ap.add_argument("--quick", action="store_true", help="100,000 inputs")
    ap.add_argument("--seed", type=int, default=4475)
    args = ap.parse_args()
    count = 100_000 if args.quick else args.count
    rng = random.Random(args.seed)
    seeds = corpus()
    parsed = errors = other = 0
    start = time.perf_counter()
    for i in range(count):
        data = mutate(rng, rng.choice(seeds))
        try:
            if exercise(data):
                parsed += 1
            else:
                errors += 1
            if i % 16 == 0:
                with contextlib.suppress(SipParseError):
                    StreamFramer().feed(data)
        except Exception:  # counting what must never happen is the fuzzer's whole point
            other += 1
            if other <= 5:
                print(f"input {i}: {data[:200]!r}", file=sys.stderr)
                traceback.print_exc()
    seconds = time.perf_counter() - start
    print(f"{count} inputs in {seconds:.1f} s: {parsed} parsed, {errors} refused with SipParseError, {other} other")
    print(
        f"sip_fuzz inputs={count} parsed={parsed} parse_errors={errors} other_exceptions={other} seconds={seconds:.1f}"
    )
    return 1 if other else 0


if __name__ == "__main__":
    raise SystemExit(main())
