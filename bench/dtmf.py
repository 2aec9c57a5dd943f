"""In-band DTMF detection: our media.dtmf against spandsp's dtmf_rx, accuracy and speed in the same run.

Both detectors get the same in-memory int16 buffers: the generated set of bench/dtmf_data.py (rows valid,
edge, reject, talkoff; documented there) and, for speed, one long buffer of that set's audio end to end
(10 minutes; 2 with --quick). The reference is spandsp's dtmf_rx with its default settings, driven by the
C harness bench/spandsp_dtmf.c (compiled into bench/out/ on first use, `cc -O2 ... -lspandsp`, Debian's
libspandsp-dev), which times only its dtmf_rx calls (thread CPU time) after reading all input; ours is
timed with time.process_time() around detect(). Both run pinned to the same core, best of several passes.

Scoring:
  valid, edge  a case is right when the digit string is exactly the truth and every digit's start is
               within 20 ms of the true onset; the figure is the percentage of cases right. spandsp
               reports a digit when two 102-sample blocks agree, so its start is the callback's sample
               less those two blocks (its own estimate of the onset, as ours is);
  reject       false-positive digits over all cases (each condition has all 16 keys, or all 8 tones);
  talkoff      digits detected in speech and music.
Speed is audio-seconds per CPU-second on one core (x real time).

The last line is the headline: `dtmf xrealtime=N valid_pct=X edge_pct=X reject_fp=N talkoff_digits=N
ref_xrealtime=N ref_valid_pct=X ref_edge_pct=X ref_reject_fp=N ref_talkoff_digits=N speed_ratio=X`,
where speed_ratio = xrealtime / ref_xrealtime. `--ours MODULE:FUNC` benchmarks another detect() with
the same signature (a pure-Python reference, an experiment).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import struct
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import dtmf_data
import numpy as np
from dtmf_data import RATE, Case

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
HARNESS_SRC = BENCH / "spandsp_dtmf.c"
HARNESS = OUT / "spandsp_dtmf"
SPANDSP_BLOCK = 102  # samples per Goertzel block in spandsp's dtmf_rx
START_TOLERANCE_MS = 20.0

Events = list[tuple[str, float, float]]  # digit, start_ms, end_ms


def build_harness() -> Path:
    """Compiles the spandsp harness when its binary is missing or older than its source."""
    if HARNESS.exists() and HARNESS.stat().st_mtime >= HARNESS_SRC.stat().st_mtime:
        return HARNESS
    cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
    OUT.mkdir(parents=True, exist_ok=True)
    cmd = [cc, "-O2", "-o", str(HARNESS), str(HARNESS_SRC), "-lspandsp", "-lm"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"dtmf: cannot build the spandsp harness (Debian package libspandsp-dev):\n{res.stderr}")
    return HARNESS


def run_reference(buffers: Sequence[np.ndarray], repeats: Sequence[int]) -> list[tuple[Events, float]]:
    """spandsp over each buffer: (its digits with start/end ms, best CPU seconds of one pass)."""
    payload = bytearray()
    for pcm, repeat in zip(buffers, repeats, strict=True):
        payload += struct.pack("=II", len(pcm), repeat) + np.ascontiguousarray(pcm, dtype=np.int16).tobytes()
    res = subprocess.run([str(build_harness())], input=bytes(payload), capture_output=True, check=True)
    results: list[tuple[Events, float]] = []
    lag_ms = 2 * SPANDSP_BLOCK * 1000 / RATE
    for line in res.stdout.decode().splitlines():
        kind, *fields = line.split()
        if kind == "R":
            results.append(([], int(fields[1]) / 1e9))
        else:
            digit, start, end = fields[0], int(fields[1]), int(fields[2])
            results[-1][0].append((digit, start * 1000 / RATE - lag_ms, end * 1000 / RATE - lag_ms))
    return results


def load_ours(spec: str) -> Callable[[np.ndarray], Events]:
    """MODULE:FUNC -> a detect() returning (digit, start_ms, end_ms) tuples."""
    module_name, _, func_name = spec.partition(":")
    try:
        detect = getattr(importlib.import_module(module_name), func_name or "detect")
    except ImportError as exc:
        sys.exit(f"dtmf: cannot import our detector {spec}: {exc}")

    def run(pcm: np.ndarray) -> Events:
        return [(e.digit, float(e.start_ms), float(e.end_ms)) for e in detect(pcm, rate=RATE)]

    return run


def time_ours(run: Callable[[np.ndarray], Events], pcm: np.ndarray, passes: int) -> float:
    """Best CPU seconds of one detect() over the whole buffer."""
    best = float("inf")
    for _ in range(passes):
        t0 = time.process_time()
        run(pcm)
        best = min(best, time.process_time() - t0)
    return best


def case_right(case: Case, events: Events) -> bool:
    """The exact digit string, every start within the tolerance of the truth."""
    if "".join(e[0] for e in events) != "".join(t[0] for t in case.truth):
        return False
    return all(abs(e[1] - t[1]) <= START_TOLERANCE_MS for e, t in zip(events, case.truth, strict=True))


def score(rows: dict[str, list[Case]], found: dict[str, list[Events]]) -> dict[str, float]:
    figures = {}
    for row in ("valid", "edge"):
        right = sum(case_right(c, ev) for c, ev in zip(rows[row], found[row], strict=True))
        figures[f"{row}_pct"] = 100.0 * right / len(rows[row])
    figures["reject_fp"] = sum(len(ev) for ev in found["reject"])
    figures["talkoff_digits"] = sum(len(ev) for ev in found["talkoff"])
    return figures


def condition_table(rows: dict[str, list[Case]], ours: dict[str, list[Events]], ref: dict[str, list[Events]]):
    """Per condition: cases right (valid, edge) or digits detected (reject, talkoff), ours vs spandsp."""
    print(f"\n{'row':<8}{'condition':<22}{'cases':>6}{'ours':>8}{'spandsp':>9}   (right, or digits found)")
    for row, cases in rows.items():
        groups: dict[str, list[int]] = defaultdict(list)
        for i, c in enumerate(cases):
            groups[c.name.split("#")[0] if row != "talkoff" else c.name.rsplit("/", 1)[0]].append(i)
        for cond, idx in groups.items():
            if row in ("valid", "edge"):
                o = sum(case_right(cases[i], ours[row][i]) for i in idx)
                r = sum(case_right(cases[i], ref[row][i]) for i in idx)
            else:
                o = sum(len(ours[row][i]) for i in idx)
                r = sum(len(ref[row][i]) for i in idx)
            flag = "  <" if (o < r if row in ("valid", "edge") else o > r) else ""
            print(f"{row:<8}{cond:<22}{len(idx):>6}{o:>8}{r:>9}{flag}")


def start_errors(rows: dict[str, list[Case]], found: dict[str, list[Events]]) -> str:
    errs = [
        e[1] - t[1]
        for row in ("valid", "edge")
        for c, ev in zip(rows[row], found[row], strict=True)
        if len(ev) == len(c.truth)
        for e, t in zip(ev, c.truth, strict=True)
        if e[0] == t[0]
    ]
    if not errs:
        return "n/a"
    return f"mean {np.mean(errs):+.1f} ms, max |err| {np.max(np.abs(errs)):.1f} ms"


def pin_one_core() -> int:
    """Runs this process (and the harness it starts) on one core, the last one allowed."""
    core = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller talk-off set, 2-minute speed buffer")
    ap.add_argument("--ours", default="media.dtmf:detect", help="MODULE:FUNC of the detector under test")
    ap.add_argument("--verbose", action="store_true", help="print every wrong case's digits")
    args = ap.parse_args()
    core = pin_one_core()
    rows = dtmf_data.build(quick=args.quick)
    ours_detect = load_ours(args.ours)
    build_harness()

    names = list(rows)
    flat = [c for r in names for c in rows[r]]
    ref_flat = [ev for ev, _ in run_reference([c.pcm for c in flat], [1] * len(flat))]
    ours_flat = [ours_detect(c.pcm) for c in flat]
    ref: dict[str, list[Events]] = {}
    ours: dict[str, list[Events]] = {}
    at = 0
    for r in names:
        ref[r], ours[r] = ref_flat[at : at + len(rows[r])], ours_flat[at : at + len(rows[r])]
        at += len(rows[r])

    minutes = 2 if args.quick else 10
    passes = 3 if args.quick else 5
    mixed = np.concatenate([c.pcm for c in flat])
    mixed = np.tile(mixed, -(-minutes * 60 * RATE // len(mixed)))[: minutes * 60 * RATE]
    ours_cpu = time_ours(ours_detect, mixed, passes)
    ref_cpu = run_reference([mixed], [passes])[0][1]

    figures = {"xrealtime": len(mixed) / RATE / ours_cpu}
    figures |= score(rows, ours)
    ref_figures = {"xrealtime": len(mixed) / RATE / ref_cpu} | score(rows, ref)

    print(f"DTMF detectors on core {core}: {args.ours} vs spandsp dtmf_rx (defaults)")
    for r in names:
        print(f"  {r:<8}{len(rows[r]):>4} cases {sum(c.seconds for c in rows[r]):7.1f} s of audio")
    print(f"  speed buffer {minutes} min, best of {passes} passes")
    print(f"\n{'figure':<18}{'ours':>12}{'spandsp':>12}")
    for k in figures:
        fmt = "{:>12.0f}" if k in ("xrealtime", "reject_fp", "talkoff_digits") else "{:>12.1f}"
        print(f"{k:<18}" + fmt.format(figures[k]) + fmt.format(ref_figures[k]))
    print(f"{'start error':<18} ours {start_errors(rows, ours)}; spandsp {start_errors(rows, ref)}")
    condition_table(rows, ours, ref)
    if args.verbose:
        for r in names:
            for c, o, s in zip(rows[r], ours[r], ref[r], strict=True):
                if (r in ("valid", "edge") and not case_right(c, o)) or (r not in ("valid", "edge") and o):
                    want = "".join(t[0] for t in c.truth)
                    print(f"  {r}/{c.name}: want {want!r} ours {o} spandsp {s}")

    ratio = figures["xrealtime"] / ref_figures["xrealtime"]
    line = [f"xrealtime={figures['xrealtime']:.0f}", f"valid_pct={figures['valid_pct']:.1f}"]
    line += [f"edge_pct={figures['edge_pct']:.1f}", f"reject_fp={figures['reject_fp']:.0f}"]
    line += [f"talkoff_digits={figures['talkoff_digits']:.0f}", f"ref_xrealtime={ref_figures['xrealtime']:.0f}"]
    line += [f"ref_valid_pct={ref_figures['valid_pct']:.1f}", f"ref_edge_pct={ref_figures['edge_pct']:.1f}"]
    line += [f"ref_reject_fp={ref_figures['reject_fp']:.0f}", f"ref_talkoff_digits={ref_figures['talkoff_digits']:.0f}"]
    print("dtmf " + " ".join(line) + f" speed_ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
