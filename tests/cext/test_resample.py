"""Resampler kernel against a numpy reference of the same filter, plus what the filter is for.

The reference designs the filter from its documented figures with numpy's own sinc and Kaiser window, as
one prototype at the upsampled rate L * rate, and runs the textbook structure (zero-stuff by L, convolve
by FFT, keep every M-th sample), which shares no code or loop structure with the kernel's polyphase dot
products. They must agree to 1 LSB. The quality tests then check the filter does its job: the telephone
band passes unchanged and what would alias is gone.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from cext import resample

RATES = [8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000]
RESAMPLED = [r for r in RATES if r != 8000]
PASSBAND_HZ, STOPBAND_HZ, ATTEN_DB = 3400.0, 4000.0, 80.0


def ref_design(rate: int) -> tuple[int, int, int, np.ndarray]:
    """(L, M, K, table[L, K]) from the documented figures, built as one windowed-sinc prototype."""
    g = math.gcd(rate, 8000)
    up, down = 8000 // g, rate // g
    scale = min(1.0, rate / 8000)
    width = 2 * math.pi * (STOPBAND_HZ - PASSBAND_HZ) * scale / rate
    taps = 4 * math.ceil(((ATTEN_DB - 7.95) / (2.285 * width) + 1) / 4)
    beta = 0.1102 * (ATTEN_DB - 8.7)
    fc = 2 * (PASSBAND_HZ + STOPBAND_HZ) / 2 * scale / rate  # cutoff as a fraction of the input's Nyquist
    n = up * taps
    tau = (np.arange(n) - n // 2) / up  # prototype taps, in input samples, -K/2 .. K/2 - 1/L
    proto = fc * np.sinc(fc * tau) * np.kaiser(n + 1, beta)[:-1]
    # Phase p, tap i sits at tau = p/L + K/2 - 1 - i, i.e. prototype index p + (K - 1 - i) * L.
    idx = np.arange(up)[:, None] + (taps - 1 - np.arange(taps))[None, :] * up
    table = proto[idx]
    return up, down, taps, table / table.sum(axis=1, keepdims=True)


def ref_resample(x: np.ndarray, rate: int) -> np.ndarray:
    """Zero-stuff by L, convolve with the (phase-normalised) prototype, take every M-th sample."""
    if rate == 8000:
        return x.copy()
    up, down, taps, table = ref_design(rate)
    n = up * taps
    proto = np.zeros(n)
    idx = np.arange(up)[:, None] + (taps - 1 - np.arange(taps))[None, :] * up
    proto[idx] = table  # prototype index a holds tau = (a - n/2) / L
    u = np.zeros(len(x) * up)
    u[::up] = x
    size = len(u) + n - 1
    nfft = 1 << (size - 1).bit_length()
    full = np.fft.irfft(np.fft.rfft(u, nfft) * np.fft.rfft(proto, nfft), nfft)[:size]
    n_out = -(-len(x) * up // down)
    # y[m] = sum_j u[j] * h(m*M - j) and h at offset q lives at index q + n/2 of `proto`.
    y = full[np.arange(n_out) * down + n // 2]
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def tone(freq: float, rate: int, seconds: float, amp: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def level(y: np.ndarray, freq: float, rate: int = 8000) -> float:
    """Amplitude of the `freq` component, by least squares on sine and cosine."""
    t = np.arange(len(y)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
    return float(np.hypot(*coef))


@pytest.mark.parametrize("rate", RESAMPLED)
def test_resample_coefficients_match_reference_design(rate):
    up, down, taps, table = ref_design(rate)
    d = resample.design(rate)
    assert (d["up"], d["down"], d["taps"]) == (up, down, taps)
    assert np.allclose(resample.coefficients(rate), table, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rate", RATES)
def test_resample_matches_reference_within_one_lsb(rate):
    rng = np.random.default_rng(rate)
    noise = rng.integers(-20000, 20000, rate // 4).astype(np.int16)
    sweep = tone(300.0, rate, 0.1) + tone(7000.0 * rate / 48000, rate, 0.1)
    loud = np.full(rate // 50, 32767, dtype=np.int16)  # saturation at the edges and inside
    x = np.concatenate([noise, sweep, loud, -loud, noise[:333]])
    got = resample.to_8k(x, rate)
    want = ref_resample(x, rate)
    assert got.dtype == np.int16
    assert len(got) == len(want) == -(-len(x) * 8000 // rate)
    assert np.abs(got.astype(np.int32) - want).max() <= 1


@pytest.mark.parametrize("rate", [11025, 44100, 48000])
@pytest.mark.parametrize("length", [0, 1, 2, 3, 7, 100])
def test_resample_short_inputs_match_reference(rate, length):
    x = np.arange(1, length + 1, dtype=np.int16) * 1000
    got = resample.to_8k(x, rate)
    assert np.abs(got.astype(np.int32) - ref_resample(x, rate)).max(initial=0) <= 1
    assert len(got) == -(-length * 8000 // rate)


def test_resample_accepts_bytes_and_int16_arrays_alike():
    x = tone(1000.0, 44100, 0.05)
    a = resample.to_8k(x, 44100)
    assert np.array_equal(resample.to_8k(x.tobytes(), 44100), a)
    assert np.array_equal(resample.to_8k(memoryview(x.tobytes()), 44100), a)
    assert np.array_equal(resample.to_8k(np.repeat(x, 2)[::2], 44100), a)  # strided view


def test_resample_8k_input_is_copied_unchanged():
    x = np.random.default_rng(1).integers(-32768, 32767, 1000).astype(np.int16)
    assert np.array_equal(resample.to_8k(x, 8000), x)
    assert np.array_equal(resample.to_8k(x.tobytes(), 8000), x)


def test_resample_rejects_bad_input():
    with pytest.raises(ValueError, match="odd number of bytes"):
        resample.to_8k(b"\x00\x01\x02", 16000)
    with pytest.raises(TypeError, match="int16"):
        resample.to_8k(np.zeros(10, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="outside"):
        resample.to_8k(b"\x00\x00", 10)


@pytest.mark.parametrize("rate", RATES)
def test_resample_1khz_tone_keeps_its_level(rate):
    y = resample.to_8k(tone(1000.0, rate, 0.5), rate)
    mid = y[400:-400]  # away from the zero-padded edges
    assert abs(20 * math.log10(level(mid, 1000.0) / 10000.0)) < 0.5
    spectrum = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
    assert abs(np.argmax(spectrum) * 8000 / len(mid) - 1000.0) < 8000 / len(mid)


@pytest.mark.parametrize("rate", RESAMPLED)
def test_resample_passband_is_flat(rate):
    for freq in (300.0, 2000.0, 3300.0):
        if freq < rate / 2:
            y = resample.to_8k(tone(freq, rate, 0.5), rate)[400:-400]
            assert abs(20 * math.log10(level(y, freq) / 10000.0)) < 0.05, freq


def test_resample_5khz_at_48k_is_attenuated_50db():
    y = resample.to_8k(tone(5000.0, 48000, 1.0, amp=16000.0), 48000)[400:-400]
    alias = level(y, 3000.0)  # 5 kHz folds to 8 - 5 = 3 kHz
    rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    assert 20 * math.log10(max(alias, 1e-9) / 16000.0) <= -50
    assert 20 * math.log10(max(rms * math.sqrt(2), 1e-9) / 16000.0) <= -50


@pytest.mark.parametrize("rate", RESAMPLED)
def test_resample_above_4khz_does_not_alias(rate):
    for freq in (4100.0, 5000.0, 7000.0, 15000.0):
        if freq < rate / 2 * 0.95:
            y = resample.to_8k(tone(freq, rate, 0.5, amp=16000.0), rate)[400:-400]
            rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
            assert 20 * math.log10(max(rms * math.sqrt(2), 1e-9) / 16000.0) <= -60, freq


def test_resample_releases_the_gil():
    x = np.random.default_rng(7).integers(-10000, 10000, 96000 * 40).astype(np.int16)
    resample.to_8k(x[:96000], 96000)  # table built outside the measurement
    done = threading.Event()
    span: list[float] = []

    def work() -> None:
        t0 = time.perf_counter()
        resample.to_8k(x, 96000)
        span.append(time.perf_counter() - t0)
        done.set()

    worker = threading.Thread(target=work)
    stamps = [time.perf_counter()]
    worker.start()
    while not done.is_set():
        stamps.append(time.perf_counter())
    worker.join()
    longest_pause = float(np.diff(stamps).max())
    assert span[0] > 0.05  # long enough for the measurement to mean something
    assert longest_pause < span[0] / 2
