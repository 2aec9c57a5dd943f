"""SIP parse/serialise rates on one core, beside PyVoIP's SIPMessage (a PyPI SIP stack) in the same run.

Messages: a typical INVITE with SDP and its 200 OK (bench/sip_samples.py). Our parse validates the core
headers (Via, From, To, CSeq, Call-ID, Max-Forwards, Content-Length) and keeps the body as bytes; PyVoIP
also parses the SDP body, so `invite_parse_sdp_per_s` adds our SDP parse for a like-for-like figure.
`invite_parse_python_per_s` is the pure-Python reference parser without the compiled fast path. Last line:
`sip_parse invite_parse_per_s=N invite_serialize_per_s=N ok_parse_per_s=N ref_invite_parse_per_s=N ...`
"""

from __future__ import annotations

import argparse
import os
import time

from sip_samples import INVITE, OK

from softswitch.sip.message import parse, parse_reference
from softswitch.sip.sdp import SessionDescription


def rate(fn, seconds: float) -> float:
    """Calls per second of `fn`, best of three runs (the least disturbed by the other core's work)."""
    best = 0.0
    for _ in range(3):
        n, start = 0, time.process_time()
        while (elapsed := time.process_time() - start) < seconds / 3:
            for _ in range(200):
                fn()
            n += 200
        best = max(best, n / elapsed)
    return best


def reference():
    try:
        import pyVoIP.VoIP  # noqa: F401 - imports SIP in the order the package needs
        from pyVoIP.SIP import SIPMessage
    except ImportError:
        return None
    return SIPMessage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="0.6 s per row instead of 3 s")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    seconds = 0.6 if args.quick else 3.0
    invite, ok = parse(INVITE), parse(OK)
    figures = {
        "invite_parse_per_s": rate(lambda: parse(INVITE), seconds),
        "invite_parse_python_per_s": rate(lambda: parse_reference(INVITE), seconds),
        "invite_serialize_per_s": rate(invite.serialize, seconds),
        "ok_parse_per_s": rate(lambda: parse(OK), seconds),
        "ok_serialize_per_s": rate(ok.serialize, seconds),
    }
    figures["invite_parse_sdp_per_s"] = rate(lambda: SessionDescription.parse(parse(INVITE).body), seconds)
    ref = reference()
    if ref is not None:
        figures["ref_invite_parse_per_s"] = rate(lambda: ref(INVITE), seconds)
        figures["ref_ok_parse_per_s"] = rate(lambda: ref(OK), seconds)
    print(f"{'row':<26}{'per second':>14}")
    for name, value in figures.items():
        print(f"{name:<26}{value:>14,.0f}")
    if ref is not None:
        ratio = figures["invite_parse_per_s"] / figures["ref_invite_parse_per_s"]
        ratio_sdp = figures["invite_parse_sdp_per_s"] / figures["ref_invite_parse_per_s"]
        print(f"ratio INVITE parse ours/PyVoIP: {ratio:.2f} (with our SDP parse too: {ratio_sdp:.2f})")
    else:
        print("reference PyVoIP not installed (pip install pyVoIP): no ref_ figures")
    print("sip_parse " + " ".join(f"{k}={v:.0f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
