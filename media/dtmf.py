"""DTMF detection: the facade over cext/dtmf.pyx, and the numpy reference the tests hold it to.

Theory of operation (the full account, with the numbers, opens cext/native/dtmf.c). ITU-T Q.24 asks a
receiver to take the 16 Q.23 keys at 1.5 % frequency deviation and refuse them at 3.5 %, to operate from
-25 to -3 dBm0 per tone with 4 dB forward / 8 dB reverse twist, to accept 40 ms tones and 40 ms pauses and
refuse tones of 20 ms, and not to be fooled by speech, music or a lone tone. The detector computes sliding
20 ms (160-sample) Goertzel windows every 2.5 ms on 40 bins (each key frequency at -5, -1.5, 0, +1.5, +5 %);
the 32 off-nominal bins are only needed for candidate windows, whose nominal peaks are loud and hold enough
of the power. A window is a hit for a key when the two group peaks are loud enough, clearly nearer nominal
than 5 % off (1.5 dB margin), within the twist limits (+6 / -9 dB), clear of the other tones of their group,
hold 0.7 of the window's power, fill every 2.5 ms of it, and (keys 2, 6, C) are not a note and its second
harmonic. Runs of hit windows become tones with a start and an end (a 25 ms gap ends a tone, a 30 ms run
is a digit); each digit is reported once, when it ends.

Levels: 0 dBm0 is a sine of peak 32768 * 10^(-3.14/20) (about 22 900): G.711's full-scale sine is +3.14 dBm0.

`detect_reference` is the same algorithm in numpy (direct DFT sums instead of the Goertzel recursion, all
40 bins for every window, the same candidate test, thresholds and state machine), slow but readable; tests
require both to report the same events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cext import dtmf as _k
from cext import resample
from cext.buffers import pcm_bytes

__all__ = [
    "KEYS",
    "DtmfDetector",
    "DtmfEvent",
    "DtmfStream",
    "dbm0_amplitude",
    "detect",
    "detect_reference",
    "tones",
]

DtmfDetector = _k.DtmfDetector  # the per-leg streaming kernel: feed(pcm) -> [(digit, start, end)], flush()
RATE = _k.RATE
KEYS = "123A456B789C*0#D"
ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
OFFSETS = (-0.05, -0.015, 0.0, 0.015, 0.05)


def dbm0_amplitude(level_dbm0: float) -> float:
    """Peak amplitude (int16 units) of a sine at `level_dbm0`; the reference level the detector assumes."""
    return 32768.0 * 10.0 ** ((level_dbm0 - _k.DBM0_OVERLOAD) / 20.0)


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """One key press: the digit and when its tone started and ended (ms from the start of the input)."""

    digit: str
    start_ms: int
    end_ms: int


def tones(digits: str, on_ms: int = 100, off_ms: int = 60, level_dbm0: float = -7.0) -> bytes:
    """In-band DTMF for a far end that did not negotiate RFC 4733: each key as its two Q.23 tones at
    `level_dbm0` each (-7 dBm0 is within every receiver's window with room for loss), `on_ms` long,
    separated by `off_ms` of silence; 8 kHz PCM16 for `MediaEngine.play`."""
    out = []
    t = np.arange(on_ms * RATE // 1000) / RATE
    amplitude = dbm0_amplitude(level_dbm0)
    for digit in digits.upper():
        index = KEYS.find(digit)
        if index < 0 or len(digit) != 1:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        low, high = ROWS[index // 4], COLS[index % 4]
        out.append(amplitude * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)))
        out.append(np.zeros(off_ms * RATE // 1000))
    signal = np.concatenate(out) if out else np.zeros(0)
    return np.clip(np.round(signal), -32768, 32767).astype("<i2").tobytes()


def _ms(sample: int, rate: int = RATE) -> int:
    return (sample * 1000 + rate // 2) // rate


def _event(raw: tuple[str, int, int]) -> DtmfEvent:
    return DtmfEvent(raw[0], _ms(raw[1]), _ms(raw[2]))


class DtmfStream:
    """Per-leg streaming detection on 8 kHz PCM16: feed() chunks as they come, finish() at the end.

    Times count from the first sample fed (or the last reset). Each digit comes out once, when it ends.
    """

    def __init__(self) -> None:
        self._det = DtmfDetector()

    def feed(self, pcm: object) -> list[DtmfEvent]:
        return [_event(e) for e in self._det.feed(pcm)]

    def finish(self) -> list[DtmfEvent]:
        """End of input: the digit still sounding, when long enough to count."""
        return [_event(e) for e in self._det.flush()]

    def reset(self) -> None:
        self._det.reset()


def detect_samples(pcm: object) -> list[tuple[str, int, int]]:
    """The compiled detector over a whole 8 kHz buffer: [(digit, start_sample, end_sample)]."""
    det = DtmfDetector()
    return det.feed(pcm) + det.flush()


def detect(pcm: np.ndarray | bytes, rate: int = RATE) -> list[DtmfEvent]:
    """All digits in a PCM16 mono recording (resampled to 8 kHz first when `rate` differs)."""
    if rate != RATE:
        pcm = resample.to_8k(pcm, rate)
    return [_event(e) for e in detect_samples(pcm)]


# ---- numpy reference ---------------------------------------------------------------------------------------


def _omegas() -> np.ndarray:
    freqs = np.array(ROWS + COLS)
    return (2.0 * np.pi * freqs[:, None] * (1.0 + np.array(OFFSETS))[None, :] / RATE).reshape(-1)


def _thresholds() -> dict[str, float]:
    a0 = dbm0_amplitude(0.0)
    return {
        "min_power": a0 * a0 / 2.0 * 10.0 ** (_k.MIN_LEVEL_DBM0 / 10.0),
        "fwd": 10.0 ** (_k.FWD_TWIST_DB / 10.0),
        "rev": 10.0 ** (_k.REV_TWIST_DB / 10.0),
        "rel": 10.0 ** (-_k.REL_PEAK_DB / 10.0),
        "freq": 10.0 ** (_k.FREQ_MARGIN_DB / 10.0),
    }


def window_powers(pcm: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(power[window, 40 bins], total mean square[window], sub-block energies[window, 8], z[window, 8]) by
    direct DFT sums; z is each nominal bin's late part-window times the conjugate of its early one."""
    x = np.frombuffer(pcm_bytes(pcm), dtype=np.int16).astype(np.float64)
    sub, k, lag = _k.SUB, _k.WINDOW_SUBS, _k.HARM_LAG
    nsub = len(x) // sub
    if nsub < k:
        return np.zeros((0, 40)), np.zeros(0), np.zeros((0, k)), np.zeros((0, 8), dtype=complex)
    xs = x[: nsub * sub].reshape(nsub, sub)
    w = _omegas()
    corr = xs @ np.exp(-1j * np.outer(np.arange(sub), w))  # each sub-block's DFT, phase at its first sample
    energy = (xs * xs).sum(axis=1)
    nwin = nsub - k + 1
    phase = np.exp(-1j * np.outer(sub * np.arange(k), w))
    parts = [corr[i : i + nwin] * phase[i] for i in range(k)]
    early, mid, late = sum(parts[:lag]), sum(parts[lag : k - lag]), sum(parts[k - lag :])
    spec = early + mid + late
    power = 2.0 * np.abs(spec) ** 2 / float(_k.WINDOW) ** 2
    nominal = np.arange(8) * 5 + 2
    a, b = (early + mid)[:, nominal], (mid + late)[:, nominal]
    z = (b.real * a.real + b.imag * a.imag) + 1j * (b.imag * a.real - b.real * a.imag)
    subs = sliding_window_view(energy, k)
    return power, subs.sum(axis=1) / _k.WINDOW, subs, z


def _pick(power: np.ndarray, f0: int, th: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per window: the group's tone index (or -1) and its power, as pick_tone() in dtmf.c."""
    p = power[:, f0 * 5 : (f0 + 4) * 5].reshape(-1, 4, 5)
    best = p[:, :, 2].argmax(axis=1)
    rows = np.arange(len(p))
    mine = p[rows, best]
    level = np.maximum(np.maximum(mine[:, 2], mine[:, 1]), mine[:, 3])
    ok = level >= th["min_power"]
    ok &= (mine[:, 2] > mine[:, 0] * th["freq"]) & (mine[:, 2] > mine[:, 4] * th["freq"])
    others = p[:, :, 2].copy()
    others[rows, best] = -np.inf
    ok &= (others <= (level * th["rel"])[:, None]).all(axis=1)
    return np.where(ok, best, -1), level


def _harmonic_limits() -> np.ndarray:
    """[row, col] phase-advance limit of the harmonic test (radians), 0 where it does not apply (dtmf.c)."""
    out = np.zeros((4, 4))
    for r, fr in enumerate(ROWS):
        for c, fc in enumerate(COLS):
            h, v = 2.0 * fr - fc, 0.015 * (fc + 2.0 * fr)
            if 0.0 < h < 100.0:
                out[r, c] = 2.0 * np.pi * 0.5 * (v + h) * _k.SUB * _k.HARM_LAG / RATE
    return out


def classify_reference(power: np.ndarray, total: np.ndarray, subs: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Key index (0..15) or -1 for every window, with window_key()'s and dtmf_classify()'s tests."""
    th = _thresholds()
    nominal = power[:, np.arange(8) * 5 + 2]
    plo, phi = nominal[:, :4].max(axis=1), nominal[:, 4:].max(axis=1)
    cand = th["min_power"] * _k.CAND_LEVEL
    candidate = (plo >= cand) & (phi >= cand) & ~(plo + phi < _k.CAND_RATIO * total)
    row, lo = _pick(power, 0, th)
    col, hi = _pick(power, 4, th)
    ok = candidate & (row >= 0) & (col >= 0)
    ok &= ~((hi > lo * th["fwd"]) | (lo > hi * th["rev"]))
    ok &= ~(lo + hi < _k.TONE_RATIO * total)
    mean = total * _k.WINDOW / _k.WINDOW_SUBS
    ok &= ~(subs < (_k.FLAT_RATIO * mean)[:, None]).any(axis=1)
    idx = np.arange(len(power))
    r, c = np.maximum(row, 0), np.maximum(col, 0)
    zl, zh = z[idx, r], z[idx, 4 + c]
    ar, ai = zl.real * zl.real - zl.imag * zl.imag, -2.0 * zl.real * zl.imag
    wr, wi = zh.real * ar - zh.imag * ai, zh.real * ai + zh.imag * ar
    limit = _harmonic_limits()[r, c]
    ok &= ~((limit > 0.0) & (np.arctan2(wi, wr) > limit))
    return np.where(ok, row * 4 + col, -1)


def detect_reference(pcm: object) -> list[tuple[str, int, int]]:
    """The whole algorithm in numpy: [(digit, start_sample, end_sample)], as DtmfDetector feed() + flush()."""
    power, total, subs, z = window_powers(pcm)
    keys = classify_reference(power, total, subs, z)
    events: list[tuple[str, int, int]] = []
    cur, first, last = -1, 0, 0

    def finish() -> None:
        if cur >= 0 and last - first >= _k.MIN_TONE:
            events.append((KEYS[cur], first, last))

    for index, key in enumerate(keys.tolist()):
        start = index * _k.SUB
        if cur >= 0 and start >= last + _k.MIN_PAUSE:
            finish()
            cur = -1
        if key >= 0:
            if cur < 0:
                cur, first, last = key, start, start + _k.WINDOW
            elif key == cur:
                last = start + _k.WINDOW
    finish()
    return events
