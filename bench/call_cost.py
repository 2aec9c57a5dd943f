"""Call cost: CPU instructions the switch's main thread spends per call, counted, not timed.

The call-rate bench (sip_load.py) times the switch on a shared VM, where the same code differs by 20 % from
one run to the next; a change of 5 % cannot be seen there. Here `softswitch serve` runs under valgrind's
callgrind, which counts the instructions each thread executes (the same count for the same code and
calls, whatever else the machine does), while SIPp places a fixed number of calls at a low rate through
it (bench/sipp/uac_rtp.xml without RTP -> switch -> trunk `carrier` -> bench/sipp/uas_answer.xml; the
switch still anchors the media: it allocates, negotiates and tears down both legs). Counting starts
once the switch is up (start-up is left out) and a window of the same length with no calls gives the
idle cost, which is taken off.

    .venv/bin/python bench/call_cost.py [--calls 40] [--rate 2] [--save FILE]

Prints instructions per call on the main thread (the event loop: SIP, call control, the store) and on
the others (the media thread's tick). Instructions are not time (a system call counts only its user-space
side), but for a change to the Python code they move with it. The last line:
`call_cost main_ir_per_call=N other_ir_per_call=N idle_ir_per_s=N calls=N`. Needs valgrind and SIPp.
It also prints what the 36 s after the calls cost per call (their transactions expiring, 64*T1 after the
final response), apart from the total: at 2 CPS each expiry is a wake-up of its own, so that figure is an
upper bound. Bounded: about 2 minutes for 40 calls (the switch runs 30-50 times slower under valgrind).
Run it from a worktree to compare two commits: the package in the current directory is the one counted.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sip_load as sl

TIMEOUT_S = 300.0
LINGER_S = 36.0  # a call's transactions linger 64*T1 = 32 s after it ends (Timers J, D, M, L); then a margin


def _ir(path: Path) -> int:
    """A callgrind dump's instruction count (its `totals:` line)."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise sl.BenchError(f"{path.name}: no totals line")


def _window(
    control: str, pid: int, workdir: Path, tag: str, run, save: Path | None = None
) -> tuple[int, dict[int, int], float]:
    """Zero the counters, run `run()`, dump: (main thread Ir, other threads' Ir by callgrind's thread number,
    seconds) of that window.
    With `save`, the main thread's dump is copied there first, the others' beside it (for callgrind_annotate)."""
    before = set(workdir.glob("cg.*"))
    subprocess.run([control, "-z", str(pid)], check=True, capture_output=True, timeout=60)
    t0 = time.monotonic()
    run()
    seconds = time.monotonic() - t0
    subprocess.run([control, "-d", tag, str(pid)], check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 30
    while True:  # callgrind writes one file per thread: cg.out.PID.DUMP-THREAD
        dumps = sorted(set(workdir.glob("cg.*")) - before)
        if dumps or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if not dumps:
        raise sl.BenchError("callgrind wrote no dump")
    time.sleep(1.0)  # the last thread's file
    dumps = {int(re.search(r"-(\d+)$", p.name)[1]): p for p in set(workdir.glob("cg.*")) - before}  # by thread
    counts = {n: _ir(p) for n, p in dumps.items()}
    if save is not None:  # the main thread's dump as `save`, the others' as `save`.tN
        save.parent.mkdir(parents=True, exist_ok=True)
        for n, p in dumps.items():
            shutil.copy(p, save if n == 1 else save.with_name(f"{save.name}.t{n}"))
    for p in dumps.values():
        p.unlink()
    main = counts.pop(1, 0)
    return main, counts, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=40, help="calls placed (40)")
    ap.add_argument("--rate", type=int, default=2, help="calls a second (2: the switch is 30-50x slower counted)")
    ap.add_argument(
        "--save", type=Path, help="copy the main thread's callgrind dump of the calls here (the others': FILE.tN)"
    )
    args = ap.parse_args()
    sipp, valgrind, control = (shutil.which(n) for n in ("sipp", "valgrind", "callgrind_control"))
    if not (sipp and valgrind and control):
        print("call_cost: needs sipp (Debian sip-tester) and valgrind", file=sys.stderr)
        return 2
    if busy := sl.check_ports():
        print(f"call_cost: ports in use: {', '.join(busy)}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + TIMEOUT_S
    with tempfile.TemporaryDirectory(prefix="call_cost_") as tmp:
        workdir = Path(tmp)
        config = workdir / "switch.toml"
        config.write_text(sl.switch_config(workdir))
        scenario = sl.signalling_scenario(workdir / "uac.xml")
        try:
            sl.start_uas(sipp, workdir, TIMEOUT_S)
            cmd = [valgrind, "--tool=callgrind", "--separate-threads=yes", "--compress-strings=no"]  # dumps stand alone
            cmd += [f"--callgrind-out-file={workdir}/cg.%p"]
            cmd += [sys.executable, "-m", "softswitch", "serve", "-c", str(config)]
            switch = sl.Managed("softswitch", cmd, Path.cwd(), workdir / "switch.log")
            ready = lambda: sl.udp_bound(sl.SWITCH_PORT) and sl.tcp_listening(sl.API_PORT)  # noqa: E731
            sl.wait_ready(switch, ready, "SIP and API listening under valgrind", 240.0)
            time.sleep(5.0)  # start-up's tail: trunk pings, the first store flush

            def place() -> None:
                left = max(10.0, deadline - time.monotonic())
                cmd = sl.uac_command(sipp, scenario, f"{sl.HOST}:{sl.SWITCH_PORT}", args.calls, args.rate, 1000, left)
                rc = subprocess.run(cmd, cwd=workdir, capture_output=True, timeout=left).returncode
                if rc != 0:
                    raise sl.BenchError(f"SIPp failed calls (rc={rc}): see its uac_errors.log")
                time.sleep(2.0)  # the last BYE's transaction and the store's flush

            main_ir, other_ir, seconds = _window(control, switch.pid, workdir, "calls", place, args.save)
            linger_main, _, linger_s = _window(control, switch.pid, workdir, "linger", lambda: time.sleep(LINGER_S))
            idle_main, idle_other, idle_s = _window(control, switch.pid, workdir, "idle", lambda: time.sleep(seconds))
            stats = sl.read_stats(workdir / "uac_stat.csv")
            ok = sl.count(stats[-1], "SuccessfulCall(C)") if stats else 0
        finally:
            sl.Managed.stop_all()
    if ok != args.calls:
        print(f"call_cost: {ok} of {args.calls} calls succeeded", file=sys.stderr)
        return 1
    per_call = (main_ir - idle_main) // args.calls
    other = (sum(other_ir.values()) - sum(idle_other.values())) // args.calls
    linger = round((linger_main - idle_main * linger_s / idle_s) / args.calls)
    print(f"window {seconds:.1f} s: main thread {main_ir:,} Ir with calls, {idle_main:,} idle")
    print(f"the {linger_s:.0f} s after the calls (their transactions expire): {linger:,} Ir per call, not in the total")
    threads = {n: (ir - idle_other.get(n, 0)) // args.calls for n, ir in sorted(other_ir.items())}
    print("other threads (callgrind's numbers, in start order), Ir per call:", threads)
    print(
        f"call_cost main_ir_per_call={per_call} other_ir_per_call={other} "
        f"idle_ir_per_s={round(idle_main / seconds)} calls={args.calls}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
