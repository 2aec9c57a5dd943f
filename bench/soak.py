"""Soak: calls at 80 % of the measured call-rate capacity for a long time; nothing lost, memory and file
descriptors flat.

The calls are bench/sip_load.py's (SIPp -> `softswitch serve` -> trunk -> SIPp, each held `--hold-ms` with
RTP both ways through the switch), one step of `--minutes`, run to its end whatever happens. The capacity is
the largest rate `bench/sip_load.sh` held for 60 s on this machine (README's Performance table); give
today's figure with `--capacity` (this VM's speed varies from day to day).

Reported: calls placed and failed (SIPp's count, plus calls that never ended), the p99 INVITE -> 180, and the
switch's resident memory (RSS) and open file descriptors, sampled every 10 s: "start" is the first sample
after the warm-up minute (the caches, pools, live transactions and the call-record store have reached their
size), "end" the last sample while calls are still being placed. Last line:
`soak minutes=N calls=N failed=N rss_start_mb=X rss_end_mb=X fds_start=N fds_end=N`.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import sip_load

CAPACITY_CPS = 400  # bench/sip_load.sh, README's Performance table
WARMUP_S = 60.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 minutes instead of 60")
    ap.add_argument("--minutes", type=float, help="how long calls are placed (60; 5 with --quick)")
    ap.add_argument("--capacity", type=int, default=CAPACITY_CPS, help=f"the measured capacity, CPS ({CAPACITY_CPS})")
    ap.add_argument("--load", type=float, default=0.8, help="fraction of the capacity placed (0.8)")
    ap.add_argument("--hold-ms", type=int, default=1000, help="call length, RTP flowing (1000)")
    args = ap.parse_args()
    minutes = args.minutes or (5.0 if args.quick else 60.0)
    rate = max(1, round(args.capacity * args.load))
    seconds = minutes * 60
    calls = round(rate * seconds)

    sipp = sip_load.find_binary("sipp")
    taken = sip_load.check_ports()
    if not sipp or taken:
        print(f"soak: {'sipp is not installed' if not sipp else 'ports in use: ' + ', '.join(taken)}")
        print(f"soak minutes={minutes:g} calls=0 failed=0 rss_start_mb=nan rss_end_mb=nan fds_start=0 fds_end=0")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="soak_"))
    sip_load.write_tone(tmp / sip_load.TONE)
    bench = sip_load.Bench(sipp, None, tmp, args.hold_ms, False, time.monotonic() + seconds + 600, run_out=True)
    print(
        f"soak: {rate} CPS ({args.load:.0%} of {args.capacity}) for {minutes:g} min, calls held {args.hold_ms} ms "
        f"with RTP both ways through the switch; {calls} calls",
        flush=True,
    )
    step = bench.run("softswitch", "cps", rate, calls, args.hold_ms, seconds)
    failed = step.calls - step.successful
    skip = int(WARMUP_S // 10) if seconds > 2 * WARMUP_S else 0
    placing = int(seconds // 10)  # the samples taken while calls were being placed (the rest is the wind-down)
    rss, fds = step.rss_mb[skip:placing], step.fds[skip:placing]
    print(f"placed {step.placed} of {step.calls}, successful {step.successful}, SIPp failed {step.sipp_failed}")
    print(f"failures: {step.failures or 'none'}; retransmissions {step.retrans}; p99 INVITE->180 {step.p99_ms:.1f} ms")
    cpu = step.cpu.get("target", math.nan)
    print(f"switch CPU {cpu:.0f} % of a core; drops {step.drops}{sip_load.gc_text(step.gc)}")
    print("RSS MB every 10 s: " + " ".join(f"{m:.0f}" for m in step.rss_mb))
    print("fds every 10 s: " + " ".join(f"{n:.0f}" for n in step.fds))
    if step.error:
        print(f"error: {step.error}")
    if step.problems:
        print(f"switch log problems: {dict(step.problems.most_common(5))}")
    print(
        f"soak minutes={minutes:g} calls={step.calls} failed={failed} "
        f"rss_start_mb={rss[0] if rss else math.nan:.1f} rss_end_mb={rss[-1] if rss else math.nan:.1f} "
        f"fds_start={fds[0] if fds else 0:.0f} fds_end={fds[-1] if fds else 0:.0f}"
    )
    return 0 if failed == 0 and not step.error else 1


if __name__ == "__main__":
    sys.exit(main())
