"""Deterministic DTMF test signals: key tones with level, deviation and twist, pauses, noise, G.711.

Everything is float64 in int16 units until `pcm()` rounds and clips once, so a sequence is built by
concatenating parts and noise is added over the whole. Levels are dBm0 per tone with media.dtmf's reference
(a full-scale sine is +3.14 dBm0). Random parts take an explicit seed: the same call gives the same samples.
"""

from __future__ import annotations

import subprocess

import numpy as np

from media import audio, g711
from media.dtmf import COLS, KEYS, RATE, ROWS, dbm0_amplitude


def samples(ms: float) -> int:
    return round(ms * RATE / 1000)


def key_freqs(digit: str) -> tuple[float, float]:
    """(low group, high group) frequency of a key."""
    i = KEYS.index(digit)
    return ROWS[i // 4], COLS[i % 4]


def tone(
    digit: str,
    ms: float,
    level_dbm0: float = -10.0,
    deviation_pct: float = 0.0,
    twist_db: float = 0.0,
    phase: float = 0.0,
    low: bool = True,
    high: bool = True,
) -> np.ndarray:
    """A key's two tones for `ms`. twist_db > 0 is forward twist (high group louder): the high tone sits at
    level_dbm0 + twist/2 and the low at level_dbm0 - twist/2. deviation_pct shifts both tones.
    low/high=False leaves that tone out (a single tone of the pair)."""
    n = np.arange(samples(ms))
    flo, fhi = key_freqs(digit)
    scale = 1.0 + deviation_pct / 100.0
    out = np.zeros(len(n))
    if low:
        out += dbm0_amplitude(level_dbm0 - twist_db / 2) * np.sin(2 * np.pi * flo * scale * n / RATE + phase)
    if high:
        out += dbm0_amplitude(level_dbm0 + twist_db / 2) * np.sin(2 * np.pi * fhi * scale * n / RATE + 2 * phase)
    return out


def pause(ms: float) -> np.ndarray:
    return np.zeros(samples(ms))


def sequence(digits: str, tone_ms: float = 60.0, pause_ms: float = 60.0, lead_ms: float = 50.0, **kw) -> np.ndarray:
    """lead silence, then each digit's tone followed by a pause; kw go to tone()."""
    parts = [pause(lead_ms)]
    for d in digits:
        parts += [tone(d, tone_ms, **kw), pause(pause_ms)]
    return np.concatenate(parts)


def truth(digits: str, tone_ms: float = 60.0, pause_ms: float = 60.0, lead_ms: float = 50.0) -> list[tuple]:
    """(digit, start_ms, end_ms) of what sequence() with the same arguments holds."""
    out, t = [], lead_ms
    for d in digits:
        out.append((d, t, t + tone_ms))
        t += tone_ms + pause_ms
    return out


def add_noise(signal: np.ndarray, snr_db: float, seed: int = 1, ref_power: float | None = None) -> np.ndarray:
    """White Gaussian noise at `snr_db` below `ref_power` (default: the mean power of the non-silent part)."""
    if ref_power is None:
        active = signal[np.abs(signal) > 0]
        ref_power = float(np.mean(active**2)) if len(active) else 1.0
    rng = np.random.default_rng(seed)
    return signal + rng.normal(0.0, np.sqrt(ref_power / 10 ** (snr_db / 10)), len(signal))


def pcm(signal: np.ndarray) -> np.ndarray:
    """Rounds and clips to int16."""
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def ulaw_round_trip(x: np.ndarray) -> np.ndarray:
    return np.frombuffer(g711.ulaw_decode(g711.ulaw_encode(pcm(x))), dtype=np.int16).copy()


def alaw_round_trip(x: np.ndarray) -> np.ndarray:
    return np.frombuffer(g711.alaw_decode(g711.alaw_encode(pcm(x))), dtype=np.int16).copy()


def music(seconds: float, seed: int = 3) -> np.ndarray:
    """Synthetic music: a chord progression of 3-4 note chords with harmonics, vibrato and note envelopes."""
    rng = np.random.default_rng(seed)
    n = samples(seconds * 1000)
    out = np.zeros(n)
    note = samples(250)
    t = np.arange(note) / RATE
    env = np.minimum(1.0, np.minimum(t / 0.02, (t[-1] - t + 1e-9) / 0.05))
    for start in range(0, n - note + 1, note):
        root = rng.integers(45, 70)  # MIDI notes around A2..A4
        chord = [root, root + rng.choice([3, 4]), root + 7, *([root + 12] if rng.random() < 0.5 else [])]
        for midi in chord:
            f = 440.0 * 2 ** ((midi - 69) / 12)
            # vibrato: +-0.6 % frequency swing at 5.5 Hz, as a phase deviation in radians
            phase = 2 * np.pi * f * t + 0.006 * f / 5.5 * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 2 * np.pi))
            for h, a in ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.15)):
                if f * h < 3800:
                    out[start : start + note] += a * env * np.sin(h * phase)
    return out / np.max(np.abs(out)) * dbm0_amplitude(-6.0)


def speech(text: str, voice: str = "en-us", pitch: int = 50, wpm: int = 160, rms_dbm0: float = -16.0) -> np.ndarray:
    """espeak-ng saying `text`, at 8 kHz, scaled to an RMS of `rms_dbm0` (a loud talker on a phone line)."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(wpm), "--stdout", text], capture_output=True, check=True
    ).stdout
    x = np.frombuffer(audio.decode_wav(wav, f"espeak-ng {voice}"), dtype=np.int16).astype(np.float64)
    return x * (dbm0_amplitude(rms_dbm0) / np.sqrt(2) / max(float(np.sqrt(np.mean(x**2))), 1.0))
