"""G.711 kernel throughput against CPython's audioop (C) in the same run.

Prints a table and, as its last line, `g711 ulaw_encode_msps=X ... ref_ulaw_encode_msps=X` (mega-samples
per second on one core).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from media import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def rate(fn, arg, samples: int, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(arg)
        n += 1
    return n * samples / (time.perf_counter() - start) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="0.2 s per row instead of 2 s")
    args = ap.parse_args()
    seconds = 0.2 if args.quick else 2.0
    rng = np.random.default_rng(1)
    frame = 160 * 50  # one second of 8 kHz audio
    pcm = rng.integers(-32768, 32768, frame, dtype=np.int16).tobytes()
    codes = rng.integers(0, 256, frame, dtype=np.uint8).tobytes()
    rows = {
        "ulaw_encode": (g711.ulaw_encode, pcm, lambda b: audioop.lin2ulaw(b, 2)),
        "ulaw_decode": (g711.ulaw_decode, codes, lambda b: audioop.ulaw2lin(b, 2)),
        "alaw_encode": (g711.alaw_encode, pcm, lambda b: audioop.lin2alaw(b, 2)),
        "alaw_decode": (g711.alaw_decode, codes, lambda b: audioop.alaw2lin(b, 2)),
    }
    figures = {}
    print(f"{'kernel':<14}{'ours Msamples/s':>18}{'audioop Msamples/s':>21}")
    for name, (ours, data, ref) in rows.items():
        figures[f"{name}_msps"] = rate(ours, data, frame, seconds)
        figures[f"ref_{name}_msps"] = rate(ref, data, frame, seconds)
        print(f"{name:<14}{figures[f'{name}_msps']:>18.1f}{figures[f'ref_{name}_msps']:>21.1f}")
    print("g711 " + " ".join(f"{k}={v:.1f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
