"""Answering machine detection: our media.amd against a reference of Asterisk's app_amd, same set, same run.

Both get the same int16 buffers, the generated set of bench/amd_data.py (people answering short and with
long business greetings, voicemail greetings of several lengths with and without a beep, silence;
documented there). Ours runs as `softswitch media amd` does (beep mode on); the reference is
bench/amd_ref.py, app_amd's documented algorithm with its defaults (initial silence 2.5 s, greeting 1.5 s,
after-greeting silence 0.8 s, total 5 s, 2 words), whose MACHINE / HUMAN / NOTSURE map to machine /
human / unknown.

Scoring, over every case:
  acc_pct   the verdict equals the truth (silence's truth is unknown)
  h2m, m2h  people called machines (the costly error: the call is dropped on a person) and machines
            called people, counted apart
  p50/p90   decision time from the answer, over all cases
  beep      for greetings that end with a beep: our beep end within 300 ms of the true one (app_amd has
            no beep detection)
  xrealtime audio-seconds per CPU-second of ours on one core (the kernel and the decision, as the CLI)
The last line: `amd acc_pct=X h2m=N m2h=N p50_ms=N p90_ms=N beep_within300_pct=X xrealtime=N
ref_acc_pct=X ref_h2m=N ref_m2h=N ref_p50_ms=N ref_p90_ms=N`.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import amd_data
import amd_ref
import numpy as np
from dtmf import pin_one_core

from media import amd


@dataclass(frozen=True, slots=True)
class Outcome:
    result: str
    decision_ms: int
    beep_end_ms: int | None = None


def run_ours(cases: list[amd_data.Case], params: amd.AmdParams) -> tuple[list[Outcome], float]:
    """Every case through media.amd.analyze; the CPU seconds it took."""
    out = []
    cpu = time.process_time()
    for c in cases:
        r = amd.analyze(c.pcm, params, detect_beep=True)
        out.append(Outcome(r.result, r.decision_ms, r.beep_end_ms))
    return out, time.process_time() - cpu


def run_ref(cases: list[amd_data.Case]) -> list[Outcome]:
    out = []
    for c in cases:
        r = amd_ref.detect(c.pcm)
        out.append(Outcome(r.result, r.decision_ms))
    return out


def score(cases: list[amd_data.Case], outcomes: list[Outcome]) -> dict[str, float]:
    right = sum(o.result == c.truth for c, o in zip(cases, outcomes, strict=True))
    h2m = sum(c.truth == "human" and o.result == "machine" for c, o in zip(cases, outcomes, strict=True))
    m2h = sum(c.truth == "machine" and o.result == "human" for c, o in zip(cases, outcomes, strict=True))
    times = np.array([o.decision_ms for o in outcomes], dtype=float)
    beeps = [(c, o) for c, o in zip(cases, outcomes, strict=True) if c.beep_end_ms is not None]
    within = sum(o.beep_end_ms is not None and abs(o.beep_end_ms - c.beep_end_ms) <= 300 for c, o in beeps)
    return {
        "acc_pct": 100.0 * right / len(cases),
        "h2m": h2m,
        "m2h": m2h,
        "p50_ms": float(np.percentile(times, 50)),
        "p90_ms": float(np.percentile(times, 90)),
        "beep_within300_pct": 100.0 * within / len(beeps) if beeps else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small set (a few seconds)")
    ap.add_argument("--verbose", action="store_true", help="print every case ours gets wrong")
    args = ap.parse_args()
    core = pin_one_core()
    cases = amd_data.build(quick=args.quick)
    params = amd.AmdParams()
    ours, cpu = run_ours(cases, params)
    ref = run_ref(cases)
    seconds = sum(c.seconds for c in cases)
    figures = score(cases, ours) | {"xrealtime": seconds / max(cpu, 1e-9)}
    ref_figures = score(cases, ref)

    print(f"AMD on core {core}: media.amd (defaults) vs app_amd reference (defaults)")
    print(f"{len(cases)} cases, {seconds:.0f} s of audio\n")
    print(f"{'category':<14}{'cases':>6}{'ours right':>12}{'ref right':>11}{'ours p50 ms':>13}{'ref p50 ms':>12}")
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cases):
        by_cat[c.category].append(i)
    for cat, idx in by_cat.items():
        ok = sum(ours[i].result == cases[i].truth for i in idx)
        ref_ok = sum(ref[i].result == cases[i].truth for i in idx)
        p50 = np.percentile([ours[i].decision_ms for i in idx], 50)
        ref_p50 = np.percentile([ref[i].decision_ms for i in idx], 50)
        print(f"{cat:<14}{len(idx):>6}{ok:>12}{ref_ok:>11}{p50:>13.0f}{ref_p50:>12.0f}")
    confusion = Counter((c.truth, o.result) for c, o in zip(cases, ours, strict=True))
    print("\nours, truth -> verdict: " + ", ".join(f"{t}->{r} {n}" for (t, r), n in sorted(confusion.items())))
    beep_errors = [
        o.beep_end_ms - c.beep_end_ms
        for c, o in zip(cases, ours, strict=True)
        if c.beep_end_ms is not None and o.beep_end_ms is not None
    ]
    if beep_errors:
        err = np.abs(beep_errors)
        print(f"beep end error (found ones): median {np.median(err):.0f} ms, max {err.max():.0f} ms")
    if args.verbose:
        for c, o in zip(cases, ours, strict=True):
            beep_off = c.beep_end_ms is not None and (o.beep_end_ms is None or abs(o.beep_end_ms - c.beep_end_ms) > 300)
            if o.result != c.truth or beep_off:
                print(f"  {c.name}: truth {c.truth} beep_end {c.beep_end_ms}, ours {o}")

    print(f"\n{'figure':<20}{'ours':>10}{'app_amd':>10}")
    for k, v in figures.items():
        print(f"{k:<20}{v:>10.1f}{ref_figures.get(k, float('nan')):>10.1f}")
    head = {
        "acc_pct": f"{figures['acc_pct']:.1f}",
        "h2m": f"{figures['h2m']:.0f}",
        "m2h": f"{figures['m2h']:.0f}",
        "p50_ms": f"{figures['p50_ms']:.0f}",
        "p90_ms": f"{figures['p90_ms']:.0f}",
        "beep_within300_pct": f"{figures['beep_within300_pct']:.1f}",
        "xrealtime": f"{figures['xrealtime']:.0f}",
        "ref_acc_pct": f"{ref_figures['acc_pct']:.1f}",
        "ref_h2m": f"{ref_figures['h2m']:.0f}",
        "ref_m2h": f"{ref_figures['m2h']:.0f}",
        "ref_p50_ms": f"{ref_figures['p50_ms']:.0f}",
        "ref_p90_ms": f"{ref_figures['p90_ms']:.0f}",
    }
    print("amd " + " ".join(f"{k}={v}" for k, v in head.items()))


if __name__ == "__main__":
    main()
