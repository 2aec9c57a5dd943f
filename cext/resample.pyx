# cython: language_level=3
"""Resampler for the player: PCM16 mono at any common rate -> 8000 Hz, through a proper anti-aliasing filter.

Prompts arrive at 16, 22.05, 44.1 or 48 kHz; the phone line is 8 kHz. Dropping samples (or linear
interpolation) folds everything above 4 kHz back into the band as audible hiss and whistles, so the
conversion is a rational polyphase FIR (up by L, low-pass, down by M, with L/M = 8000/rate reduced by
their gcd), computed only where an output sample falls: each output is one dot product of K input
samples with one of L precomputed phases.

The filter (a Kaiser-windowed sinc, designed in Hz so every input rate gets the same response):
  - passband edge 3400 Hz (the telephone band), ripple within +-0.001 dB;
  - cutoff (-6 dB) 3700 Hz, stopband edge 4000 Hz (the output's Nyquist), so nothing aliases at all;
  - stopband attenuation 80 dB by design (Kaiser beta = 0.1102 * (80 - 8.7) = 7.857); measured over the
    listed rates 79.7-81 dB from 4 kHz up, and over 90 dB at 5 kHz;
  - taps per output sample K = the Kaiser estimate N = (A - 7.95) / (2.285 * 2 pi * 600 / rate) + 1
    rounded up to a multiple of 4: 96 at 11025 Hz, 136 at 16 kHz, 372 at 44.1 kHz, 404 at 48 kHz,
    804 at 96 kHz (an 8.4 ms window at every rate);
  - each phase is normalised to unit DC gain; samples outside the input count as zero.
Input at 8000 Hz is copied unchanged. Rates under 8000 Hz are upsampled with the band edges scaled by
rate / 8000. Output sample m is the filtered signal at exactly t = m / 8000 s (zero phase, no delay),
and there are ceil(n * 8000 / rate) of them.

The arithmetic is double precision (coefficients, products, sums), rounded to nearest and saturated to
int16; tests/cext/test_resample.py holds the numpy reference of the same filter it must match to 1 LSB.
"""

import math
from cext.buffers import pcm_bytes

import numpy as np

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from libc.math cimport M_PI, fmax, lrint, sin, sqrt
from libc.stdint cimport int16_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

OUT_RATE = 8000
PASSBAND_HZ = 3400.0
STOPBAND_HZ = 4000.0
CUTOFF_HZ = (PASSBAND_HZ + STOPBAND_HZ) / 2
STOPBAND_DB = 80.0
KAISER_BETA = 0.1102 * (STOPBAND_DB - 8.7)
MIN_RATE = 1000
MAX_RATE = 384000
_MAX_TABLE = 1 << 22  # coefficients (32 MiB): bounds what an awkward rate ratio may cost

_tables: dict = {}


cdef double _bessel_i0(double x) noexcept nogil:
    """Modified Bessel function of the first kind, order 0, by its power series (converges for all x)."""
    cdef double term = 1.0, total = 1.0, q = x * x / 4.0
    cdef int k = 1
    while term > 1e-17 * total:
        term *= q / (<double>k * <double>k)
        total += term
        k += 1
    return total


def design(int rate) -> dict:
    """The filter used for `rate` -> 8000 Hz: ratio, taps per phase and band edges, in a dict."""
    if rate < MIN_RATE or rate > MAX_RATE:
        raise ValueError(f"sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
    g = math.gcd(rate, OUT_RATE)
    up, down = OUT_RATE // g, rate // g
    scale = min(1.0, rate / OUT_RATE)
    passband, stopband = PASSBAND_HZ * scale, STOPBAND_HZ * scale
    width = 2 * math.pi * (stopband - passband) / rate
    n = (STOPBAND_DB - 7.95) / (2.285 * width) + 1
    taps = 4 * math.ceil(n / 4)
    if rate == OUT_RATE:
        up = down = taps = 1
    return {
        "rate": rate, "up": up, "down": down, "taps": taps, "passband_hz": passband,
        "cutoff_hz": (passband + stopband) / 2, "stopband_hz": stopband, "stopband_db": STOPBAND_DB,
        "beta": KAISER_BETA,
    }


cdef class _Table:
    """One rate's polyphase coefficients, in C memory the kernel reads without any Python object."""

    cdef double *c
    cdef readonly int up, down, taps

    def __cinit__(self, int up, int down, int taps, double cutoff_per_sample, double beta):
        self.up, self.down, self.taps = up, down, taps
        self.c = <double *>malloc(<size_t>up * taps * sizeof(double))
        if self.c == NULL:
            raise MemoryError()
        with nogil:
            _build(self.c, up, taps, cutoff_per_sample, beta)

    def __dealloc__(self):
        free(self.c)

    def array(self):
        out = np.empty((self.up, self.taps), dtype=np.float64)
        cdef double[:, ::1] view = out
        memcpy(&view[0, 0], self.c, <size_t>self.up * self.taps * sizeof(double))
        return out


cdef void _build(double *c, int up, int taps, double cutoff_per_sample, double beta) noexcept nogil:
    """Phase p, tap i weighs input k0 - taps/2 + 1 + i for the output at t = k0 + p/up (input samples)."""
    cdef int p, i
    cdef double tau, x, r, half = taps / 2.0, i0beta = _bessel_i0(beta), total
    cdef double *row
    for p in range(up):
        row = c + <size_t>p * taps
        total = 0.0
        for i in range(taps):
            tau = <double>p / up + (half - 1.0) - i
            r = tau / half  # within [-1, 1): the window's first point, never its last
            x = M_PI * cutoff_per_sample * tau
            row[i] = (cutoff_per_sample * (sin(x) / x if x != 0.0 else 1.0)
                      * _bessel_i0(beta * sqrt(fmax(0.0, 1.0 - r * r))) / i0beta)
            total += row[i]
        for i in range(taps):
            row[i] /= total


cdef _Table _table(int rate):
    cached = _tables.get(rate)
    if cached is None:
        d = design(rate)
        if d["up"] * d["taps"] > _MAX_TABLE:
            raise ValueError(f"sample rate {rate} Hz needs {d['up']} filter phases; use a common rate")
        cached = _Table(d["up"], d["down"], d["taps"], 2 * d["cutoff_hz"] / rate, d["beta"])
        _tables[rate] = cached
    return cached


def coefficients(int rate):
    """A copy of the (up, taps) polyphase table used for `rate` (for tests and plots)."""
    if rate == OUT_RATE:
        return np.ones((1, 1))
    return _table(rate).array()


cdef inline int16_t _saturate(double acc) noexcept nogil:
    if acc >= 32767.0:
        return 32767
    if acc <= -32768.0:
        return -32768
    return <int16_t>lrint(acc)


cdef void _polyphase(const int16_t *x, Py_ssize_t n, int16_t *y, Py_ssize_t n_out, const double *c,
                     long long L, long long M, Py_ssize_t K) noexcept nogil:
    """y[m] = sum_i c[p, i] * x[k0 - K/2 + 1 + i] where m * M = k0 * L + p; zeros outside x."""
    cdef const double *cp
    cdef const int16_t *xp
    cdef Py_ssize_t m, i, k, k0 = 0, lead = K // 2 - 1
    cdef long long p = 0, step_k = M // L, step_p = M % L
    cdef double a0, a1, a2, a3
    for m in range(n_out):
        cp = c + p * K
        k = k0 - lead
        if k >= 0 and k + K <= n:
            xp = x + k
            a0 = a1 = a2 = a3 = 0.0
            for i in range(0, K, 4):
                a0 += cp[i] * xp[i]
                a1 += cp[i + 1] * xp[i + 1]
                a2 += cp[i + 2] * xp[i + 2]
                a3 += cp[i + 3] * xp[i + 3]
            y[m] = _saturate((a0 + a1) + (a2 + a3))
        else:
            a0 = 0.0
            for i in range(K):
                if 0 <= k + i < n:
                    a0 += cp[i] * x[k + i]
            y[m] = _saturate(a0)
        k0 += step_k
        p += step_p
        if p >= L:
            p -= L
            k0 += 1


def to_8k(pcm, int rate):
    """PCM16 mono (bytes or int16 array, native-endian) at `rate` Hz -> int16 numpy array at 8000 Hz."""
    cdef const unsigned char[::1] raw = pcm_bytes(pcm)
    cdef Py_ssize_t n = raw.shape[0] // 2, n_out
    cdef const int16_t *x = <const int16_t *>&raw[0] if n else NULL
    cdef int16_t *y
    cdef _Table t
    if raw.shape[0] % 2:
        raise ValueError("PCM16 input has an odd number of bytes")
    if rate == OUT_RATE:
        out = bytearray(raw)
    else:
        t = _table(rate)
        n_out = <Py_ssize_t>((n * <long long>t.up + t.down - 1) // t.down)
        out = PyByteArray_FromStringAndSize(NULL, n_out * 2)
        if n_out:
            y = <int16_t *>PyByteArray_AS_STRING(out)
            with nogil:
                _polyphase(x, n, y, n_out, t.c, t.up, t.down, t.taps)
    return np.frombuffer(out, dtype=np.int16)
