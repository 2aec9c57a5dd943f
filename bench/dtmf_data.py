"""The DTMF benchmark set, generated (never committed as audio): valid, edge, reject and talk-off rows.

Every case is built from a seed derived from its name, so the set is the same on every machine and run;
only the speech depends on the installed espeak-ng (its version is part of the cache key). Levels are in
dBm0 per tone, with 0 dBm0 the sine 3.14 dB below a full-scale one (G.711's digital milliwatt, the scale
spandsp uses); SNR is the power of both tones together over white noise across the whole 0-4 kHz band;
twist is high group minus low group in dB, so +4 is the North American forward limit (high group
louder) and -8 its reverse limit. Tone onsets fall at random sub-block offsets so no detector is favoured
by its block grid.

Rows:
  valid    all 16 keys, nominal -8/-6 dBm0, 80 ms on / 80 ms off (and a slow 250/250 variant), clean,
           with 20 dB SNR noise, through mu-law and A-law, and mu-law plus noise;
  edge     each Q.24 / North American acceptance limit alone, just inside it: +-1.5 % deviation (four
           sign combinations), 40 ms tone and 40 ms pause, -25 and -3 dBm0, +4 dB forward and -8 dB
           reverse twist, 15 dB SNR, mu-law and A-law at -25 dBm0;
  reject   just outside: 3.5 % deviation (both tones, or one), 20 ms tones, each single tone of a pair,
           twist of +7 and -11 dB, -35 dBm0 (10 dB under the operate limit; spandsp's default threshold,
           near -42 dBm0, still operates there) and -45 dBm0 (which spandsp rejects too);
  talkoff  espeak-ng speech (several voices, pitches and speeds; digits spoken in each language and
           vowel-rich phrases) rendered as WAV, resampled by the project's resampler and passed through
           mu-law; plus synthetic music (harmonic chords, vibrato melodies, drum-like noise bursts, and two
           near-sine flute lines, whose equal-tempered notes F5 and F#6 sit 0.2 % from 697 and 1477 Hz:
           the classic music talk-off, where some digits are all but unavoidable).
Cases in valid and edge carry their truth (digit, start_ms, end_ms); reject and talk-off carry none.

The tone generator is our own minimal one (a sum of two sines with random start phases); the test
suite's tests/dtmf_signals.py, once it exists, is the one to share.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from media import audio, g711

RATE = 8000
LOW = (697.0, 770.0, 852.0, 941.0)
HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = "123A456B789C*0#D"
FREQS = {key: (LOW[i // 4], HIGH[i % 4]) for i, key in enumerate(KEYS)}
DBM0_SINE_PEAK = 32767 * 10 ** (-3.14 / 20)  # peak of a 0 dBm0 sine
NOMINAL = (-8.0, -6.0)  # low, high group dBm0
ROWS = ("valid", "edge", "reject", "talkoff")
CACHE = Path(__file__).resolve().parent / "out" / "dtmf"


@dataclass(frozen=True, slots=True)
class Case:
    """One signal and what a perfect detector reports for it (nothing, in reject and talk-off rows)."""

    row: str
    name: str
    pcm: np.ndarray  # int16, 8 kHz
    truth: tuple[tuple[str, float, float], ...]

    @property
    def seconds(self) -> float:
        return len(self.pcm) / RATE


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def amplitude(dbm0: float) -> float:
    """Peak amplitude (int16 units) of a sine at `dbm0`."""
    return DBM0_SINE_PEAK * 10 ** (dbm0 / 20)


def tone(freqs: tuple[float, ...], levels: tuple[float, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of sines (float, int16 units), each at its own level and a random start phase."""
    t = np.arange(n) / RATE
    out = np.zeros(n)
    for f, level in zip(freqs, levels, strict=True):
        out += amplitude(level) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out


def sequence(
    name: str,
    digits: str,
    on_ms: float = 80,
    off_ms: float = 80,
    levels: tuple[float, float] = NOMINAL,
    dev_pct: tuple[float, float] = (0.0, 0.0),
    snr_db: float | None = None,
    law: str | None = None,
    only: int | None = None,
) -> tuple[np.ndarray, tuple[tuple[str, float, float], ...]]:
    """A digit string as audio with its truth; `only` keeps one tone of each pair (0 low, 1 high)."""
    rng = _rng(name)
    on, off = round(on_ms * RATE / 1000), round(off_ms * RATE / 1000)
    lead = round(0.1 * RATE) + int(rng.integers(0, 160))
    total = lead + len(digits) * (on + off) + round(0.1 * RATE)
    x = np.zeros(total)
    truth = []
    pos = lead
    for d in digits:
        fl, fh = FREQS[d]
        freqs = (fl * (1 + dev_pct[0] / 100), fh * (1 + dev_pct[1] / 100))
        pair_levels = levels
        if only is not None:
            freqs, pair_levels = (freqs[only],), (levels[only],)
        x[pos : pos + on] = tone(freqs, pair_levels, on, rng)
        truth.append((d, pos * 1000 / RATE, (pos + on) * 1000 / RATE))
        pos += on + off + int(rng.integers(-8, 9)) * (off > 0)
    if snr_db is not None:
        signal_power = sum(amplitude(lv) ** 2 / 2 for lv in levels)
        x += rng.normal(0, np.sqrt(signal_power / 10 ** (snr_db / 10)), total)
    return finish(x, law), tuple(truth)


def finish(x: np.ndarray, law: str | None = None) -> np.ndarray:
    """Rounds to int16 (saturating) and, with a law, passes the audio through G.711 and back."""
    pcm = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
    if law == "ulaw":
        pcm = np.frombuffer(g711.ulaw_decode(g711.ulaw_encode(pcm)), dtype=np.int16).copy()
    elif law == "alaw":
        pcm = np.frombuffer(g711.alaw_decode(g711.alaw_encode(pcm)), dtype=np.int16).copy()
    return pcm


def _key_groups(name: str) -> list[str]:
    """The 16 keys in a per-case random order, as four 4-digit strings (every key once per condition)."""
    keys = list(KEYS)
    _rng(name + "/order").shuffle(keys)
    s = "".join(keys)
    return [s[i : i + 4] for i in range(0, 16, 4)]


def _rows_of_tones(row: str, conditions: dict[str, dict]) -> list[Case]:
    cases = []
    for cond, kw in conditions.items():
        for i, digits in enumerate(_key_groups(f"{row}/{cond}")):
            name = f"{cond}#{i}"
            pcm, truth = sequence(f"{row}/{name}", digits, **kw)
            cases.append(Case(row, name, pcm, truth if row in ("valid", "edge") else ()))
    return cases


def valid() -> list[Case]:
    return _rows_of_tones(
        "valid",
        {
            "clean": {},
            "slow": {"on_ms": 250, "off_ms": 250},
            "noise20": {"snr_db": 20},
            "ulaw": {"law": "ulaw"},
            "alaw": {"law": "alaw"},
            "ulaw_noise20": {"snr_db": 20, "law": "ulaw"},
        },
    )


def edge() -> list[Case]:
    return _rows_of_tones(
        "edge",
        {
            "dev+1.5/+1.5": {"dev_pct": (1.5, 1.5)},
            "dev-1.5/-1.5": {"dev_pct": (-1.5, -1.5)},
            "dev+1.5/-1.5": {"dev_pct": (1.5, -1.5)},
            "dev-1.5/+1.5": {"dev_pct": (-1.5, 1.5)},
            "on40_off40": {"on_ms": 40, "off_ms": 40},
            "level-25": {"levels": (-25.0, -25.0)},
            "level-3": {"levels": (-3.0, -3.0)},
            "twist+4": {"levels": (-10.0, -6.0)},
            "twist-8": {"levels": (-6.0, -14.0)},
            "snr15": {"snr_db": 15},
            "ulaw_level-25": {"levels": (-25.0, -25.0), "law": "ulaw"},
            "alaw_level-25": {"levels": (-25.0, -25.0), "law": "alaw"},
        },
    )


def reject() -> list[Case]:
    long_tone = {"on_ms": 100, "off_ms": 100}
    return _rows_of_tones(
        "reject",
        {
            "dev+3.5/+3.5": {"dev_pct": (3.5, 3.5), **long_tone},
            "dev-3.5/-3.5": {"dev_pct": (-3.5, -3.5), **long_tone},
            "dev+3.5/0": {"dev_pct": (3.5, 0.0), **long_tone},
            "dev0/-3.5": {"dev_pct": (0.0, -3.5), **long_tone},
            "on20": {"on_ms": 20, "off_ms": 100},
            "low_only": {"only": 0, **long_tone},
            "high_only": {"only": 1, **long_tone},
            "twist+7": {"levels": (-12.0, -5.0), **long_tone},
            "twist-11": {"levels": (-5.0, -16.0), **long_tone},
            "level-35": {"levels": (-35.0, -35.0), **long_tone},
            "level-45": {"levels": (-45.0, -45.0), **long_tone},
        },
    )


# ------------------------------------------------------------------------------------------- talk-off

VOICES = (
    ("en-us", "one two three four five six seven eight nine zero oh star pound hash"),
    ("en-gb", "Please hold the line, we are connecting you to an operator now."),
    ("en-us+f3", "Eeee, ooo, aah, nine nine nine, eight oh eight, you too, me three."),
    ("en-gb+m3", "Seven hundred and seventy seven, fourteen ninety two, sixteen thirty three."),
    ("de", "1 2 3 4 5 6 7 8 9 0, Guten Tag, bitte warten Sie einen Moment."),
    ("fr", "1 2 3 4 5 6 7 8 9 0, bonjour, je voudrais parler au service client."),
    ("es", "1 2 3 4 5 6 7 8 9 0, buenos dias, mi numero es nueve uno dos."),
    ("it", "1 2 3 4 5 6 7 8 9 0, pronto, vorrei prenotare un tavolo per due."),
    ("nl", "1 2 3 4 5 6 7 8 9 0, goedemiddag, ik bel over mijn rekening."),
    ("pt", "1 2 3 4 5 6 7 8 9 0, bom dia, o meu numero e nove oito sete."),
)
PITCHES = ((50, 160), (20, 130), (85, 190))  # espeak-ng pitch (0-99) and words per minute
SPEECH_DBM0 = -16.0  # RMS of each utterance: a loud talker on a phone line


def espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("Data at")[0].strip()


def speech(quick: bool = False) -> list[Case]:
    """espeak-ng utterances at 8 kHz through mu-law; each voice with several pitches and speeds."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng)")
    pitches = PITCHES[:1] if quick else PITCHES
    cases = []
    for voice, text in VOICES:
        for pitch, wpm in pitches:
            wav = subprocess.run(
                ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(wpm), "--stdout", text],
                capture_output=True,
                check=True,
            ).stdout
            x = np.frombuffer(audio.decode_wav(wav, voice), dtype=np.int16).astype(float)
            x *= amplitude(SPEECH_DBM0) / np.sqrt(2) / max(np.sqrt(np.mean(x**2)), 1.0)
            cases.append(Case("talkoff", f"speech/{voice}/p{pitch}s{wpm}", finish(x, "ulaw"), ()))
    return cases


def _note_hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _instrument(f0: np.ndarray | float, n: int, rng: np.random.Generator, harmonics: int = 8) -> np.ndarray:
    """A harmonic tone (amplitudes 1/k, random phases) with attack and exponential decay; f0 may vary."""
    f = np.broadcast_to(np.asarray(f0, dtype=float), (n,))
    phase = 2 * np.pi * np.cumsum(f) / RATE
    out = np.zeros(n)
    for k in range(1, harmonics + 1):
        if k * f.max() < RATE / 2 - 200:
            out += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k
    t = np.arange(n) / RATE
    env = np.minimum(t / 0.01, 1.0) * np.exp(-t / rng.uniform(0.3, 1.2))
    return out * env


def _drums(n: int, bpm: float, rng: np.random.Generator) -> np.ndarray:
    """Noise bursts on the beat: kick (decaying low sine plus thump), snare (white), hi-hat (differenced)."""
    out = np.zeros(n)
    beat = round(RATE * 60 / bpm)
    for i, pos in enumerate(range(0, n - RATE // 4, beat // 2)):
        m = RATE // 4
        t = np.arange(m) / RATE
        if i % 4 == 0:
            hit = np.sin(2 * np.pi * (60 + 60 * np.exp(-t / 0.03)) * t) * np.exp(-t / 0.08)
        elif i % 4 == 2:
            hit = rng.normal(0, 0.6, m) * np.exp(-t / 0.06)
        else:
            hit = np.diff(rng.normal(0, 0.4, m + 1)) * np.exp(-t / 0.02)
        out[pos : pos + m] += hit
    return out


CHORDS = ((0, 4, 7), (0, 3, 7), (0, 4, 7, 11), (0, 3, 7, 10), (0, 5, 7, 12))


def music(quick: bool = False) -> list[Case]:
    """Synthetic pieces: chord progressions, vibrato melodies over them, drums, and all three mixed."""
    seconds = 15 if quick else 40
    n = seconds * RATE
    cases = []
    pieces = ("chords", "vibrato", "drums", "band", "flutes") if not quick else ("chords", "band", "flutes")
    for variant in range(1 if quick else 2):
        for piece in pieces:
            name = f"music/{piece}/{variant}"
            rng = _rng(name)
            x = np.zeros(n)
            if piece in ("chords", "band"):
                pos = 0
                while pos < n:
                    m = min(int(rng.uniform(0.25, 1.0) * RATE), n - pos)
                    root = int(rng.integers(48, 72))
                    for step in CHORDS[int(rng.integers(len(CHORDS)))]:
                        x[pos : pos + m] += _instrument(_note_hz(root + step), m, rng)
                    pos += m
            if piece in ("vibrato", "band"):
                pos = 0
                while pos < n:
                    m = min(int(rng.uniform(0.15, 0.8) * RATE), n - pos)
                    f0 = _note_hz(int(rng.integers(64, 92)))
                    t = np.arange(m) / RATE
                    depth = rng.uniform(0.003, 0.012)
                    x[pos : pos + m] += 1.5 * _instrument(f0 * (1 + depth * np.sin(2 * np.pi * 5.5 * t)), m, rng, 5)
                    pos += m
            if piece == "flutes":
                for voice_range in ((65, 80), (77, 92)):  # two near-sine voices, a low and a high line
                    pos = 0
                    while pos < n:
                        m = min(int(rng.uniform(0.1, 0.5) * RATE), n - pos)
                        f0 = _note_hz(int(rng.integers(*voice_range)))
                        t = np.arange(m) / RATE
                        x[pos : pos + m] += _instrument(f0 * (1 + 0.004 * np.sin(2 * np.pi * 5 * t)), m, rng, 1)
                        pos += m
            if piece in ("drums", "band"):
                x += 2.0 * _drums(n, float(rng.uniform(90, 150)), rng)
            x *= amplitude(SPEECH_DBM0) / np.sqrt(2) / np.sqrt(np.mean(x**2))
            cases.append(Case("talkoff", name, finish(x, "ulaw"), ()))
    return cases


def build(quick: bool = False) -> dict[str, list[Case]]:
    """The whole set by row, cached under bench/out/dtmf/ keyed by this file and the espeak-ng version."""
    key = hashlib.sha256(Path(__file__).read_bytes() + espeak_version().encode() + bytes([quick])).hexdigest()[:16]
    path = CACHE / f"set-{'quick' if quick else 'full'}-{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            meta = z["meta"].tolist()
            rows: dict[str, list[Case]] = {r: [] for r in ROWS}
            for i, (row, name, truth) in enumerate(meta):
                events = tuple((d, float(s), float(e)) for d, s, e in (t.split(":") for t in truth.split()))
                rows[row].append(Case(row, name, z[f"a{i}"], events))
            return rows
    rows = {"valid": valid(), "edge": edge(), "reject": reject(), "talkoff": speech(quick) + music(quick)}
    CACHE.mkdir(parents=True, exist_ok=True)
    cases = [c for r in ROWS for c in rows[r]]
    meta = np.array([(c.row, c.name, " ".join(f"{d}:{s}:{e}" for d, s, e in c.truth)) for c in cases])
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, meta=meta, **{f"a{i}": c.pcm for i, c in enumerate(cases)})
    tmp.replace(path)
    for stale in CACHE.glob(f"set-{'quick' if quick else 'full'}-*.npz"):
        if stale != path:
            stale.unlink()
    return rows


if __name__ == "__main__":
    for row, cases in build().items():
        print(f"{row:<8} {len(cases):>4} cases {sum(c.seconds for c in cases):8.1f} s")
