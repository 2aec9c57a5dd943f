# cython: language_level=3
"""AMD feature kernel (native/amd.c): voice, silence and tone segment boundaries from PCM16, per leg.

The same C code runs in the media thread for calls; this wrapper lets the CLI, the benchmark and the tests
feed it whole files (GIL released around the loop).
"""

from cext.buffers import pcm_bytes

from libc.stdint cimport int16_t, int64_t
from libc.stdlib cimport free, malloc


include "amd_params.pxi"


cdef extern from "native/amd.h" nogil:
    ctypedef struct amd_event_t:
        int kind
        int64_t start
        int freq_hz
    ctypedef struct amd_state_t:
        pass
    int AMD_RATE, AMD_FRAME, AMD_WINDOW, AMD_SILENCE, AMD_VOICE, AMD_TONE
    void amd_init(amd_state_t *st, const amd_params_t *p)
    size_t amd_max_events(size_t n)
    size_t amd_process(amd_state_t *st, const int16_t *x, size_t n, amd_event_t *out)
    void amd_measure(const int16_t *window, double *frame_ms2, double *cos_w, double *residual)


RATE = AMD_RATE
FRAME = AMD_FRAME
WINDOW = AMD_WINDOW
KINDS = {AMD_SILENCE: "silence", AMD_VOICE: "voice", AMD_TONE: "tone"}
PARAM_NAMES = ("silence_dbm0", "margin_db", "voice_on_ms", "voice_off_ms", "tone_min_hz", "tone_max_hz",
               "tone_min_ms", "tone_residual", "tone_drift")


def defaults() -> dict:
    """The kernel's own defaults, by name."""
    cdef amd_params_t p
    amd_defaults(&p)
    return {name: (<dict>p)[name] for name in PARAM_NAMES}


def measure(window) -> tuple:
    """(frame mean square, cos w, residual share) of one 160-sample window, as the tracker sees it."""
    cdef const unsigned char[::1] buf = pcm_bytes(window)
    if buf.shape[0] != 2 * AMD_WINDOW:
        raise ValueError(f"a window is {AMD_WINDOW} samples")
    cdef double ms2, c, r
    amd_measure(<const int16_t *>&buf[0], &ms2, &c, &r)
    return ms2, c, r


cdef class AmdSegmenter:
    """Streaming: feed(pcm) -> [(kind, start_sample, freq_hz)] for the boundaries found in it."""

    cdef amd_state_t _st
    cdef amd_params_t _p

    def __cinit__(self, **params):
        amd_defaults(&self._p)
        cdef dict p = <dict>self._p
        for name, value in params.items():
            if name not in PARAM_NAMES:
                raise TypeError(f"unknown AMD kernel parameter {name!r}")
            p[name] = value
        self._p = p
        amd_init(&self._st, &self._p)

    def feed(self, data) -> list:
        cdef const unsigned char[::1] buf = pcm_bytes(data)
        if buf.shape[0] & 1:
            raise ValueError("PCM16 input has an odd number of bytes")
        cdef size_t n = <size_t>(buf.shape[0] // 2), count, i
        if n == 0:
            return []
        cdef const int16_t *pcm = <const int16_t *>&buf[0]
        cdef amd_event_t *ev = <amd_event_t *>malloc(amd_max_events(n) * sizeof(amd_event_t))
        if ev == NULL:
            raise MemoryError()
        try:
            with nogil:
                count = amd_process(&self._st, pcm, n, ev)
            return [(KINDS[ev[i].kind], ev[i].start, ev[i].freq_hz) for i in range(count)]
        finally:
            free(ev)
