# cython: language_level=3
"""DTMF detector kernel (native/dtmf.c): one DtmfDetector per leg, fed PCM16 in any chunk sizes.

The C code holds all state in one struct and never allocates; this wrapper sizes the event buffer per call
and releases the GIL around the C loop, so tools and tests run the same code the media thread will.
"""

from cext.buffers import pcm_bytes

from libc.stdint cimport int16_t, int64_t
from libc.stdlib cimport free, malloc


cdef extern from "native/dtmf.h" nogil:
    ctypedef struct dtmf_event_t:
        char digit
        int64_t start
        int64_t end
    ctypedef struct dtmf_state_t:
        pass
    int DTMF_RATE, DTMF_SUB, DTMF_K, DTMF_N, DTMF_MIN_TONE, DTMF_MIN_PAUSE
    double DTMF_DBM0_OVERLOAD, DTMF_MIN_LEVEL_DBM0, DTMF_FWD_TWIST_DB, DTMF_REV_TWIST_DB, DTMF_REL_PEAK_DB
    double DTMF_FREQ_MARGIN_DB
    double DTMF_TONE_RATIO, DTMF_FLAT_RATIO, DTMF_CAND_LEVEL, DTMF_CAND_RATIO
    int DTMF_HARM_LAG
    void dtmf_init(dtmf_state_t *st)
    size_t dtmf_max_events(size_t n)
    size_t dtmf_process(dtmf_state_t *st, const int16_t *x, size_t n, dtmf_event_t *out)
    size_t dtmf_flush(dtmf_state_t *st, dtmf_event_t *out)


RATE = DTMF_RATE
SUB = DTMF_SUB
WINDOW_SUBS = DTMF_K
WINDOW = DTMF_N
MIN_TONE = DTMF_MIN_TONE
MIN_PAUSE = DTMF_MIN_PAUSE
DBM0_OVERLOAD = DTMF_DBM0_OVERLOAD
MIN_LEVEL_DBM0 = DTMF_MIN_LEVEL_DBM0
FWD_TWIST_DB = DTMF_FWD_TWIST_DB
REV_TWIST_DB = DTMF_REV_TWIST_DB
REL_PEAK_DB = DTMF_REL_PEAK_DB
FREQ_MARGIN_DB = DTMF_FREQ_MARGIN_DB
TONE_RATIO = DTMF_TONE_RATIO
FLAT_RATIO = DTMF_FLAT_RATIO
CAND_LEVEL = DTMF_CAND_LEVEL
CAND_RATIO = DTMF_CAND_RATIO
HARM_LAG = DTMF_HARM_LAG


cdef list _events(dtmf_event_t *ev, size_t n):
    return [(chr(ev[i].digit), ev[i].start, ev[i].end) for i in range(n)]


cdef class DtmfDetector:
    """Streaming detector: feed(pcm) -> [(digit, start_sample, end_sample)], flush() at end of input."""

    cdef dtmf_state_t _st

    def __cinit__(self):
        dtmf_init(&self._st)

    def reset(self) -> None:
        """Forgets everything: sample positions restart at 0."""
        dtmf_init(&self._st)

    def feed(self, data) -> list:
        """Consumes native PCM16 (bytes or int16 array); returns the digits that ended within it."""
        cdef const unsigned char[::1] buf = pcm_bytes(data)
        if buf.shape[0] & 1:
            raise ValueError("PCM16 input has an odd number of bytes")
        cdef size_t n = <size_t>(buf.shape[0] // 2), count
        if n == 0:
            return []
        cdef const int16_t *pcm = <const int16_t *>&buf[0]
        cdef dtmf_event_t *ev = <dtmf_event_t *>malloc(dtmf_max_events(n) * sizeof(dtmf_event_t))
        if ev == NULL:
            raise MemoryError()
        try:
            with nogil:
                count = dtmf_process(&self._st, pcm, n, ev)
            return _events(ev, count)
        finally:
            free(ev)

    def flush(self) -> list:
        """End of input: the digit still sounding, if long enough; the detector then waits for a new tone."""
        cdef dtmf_event_t ev
        cdef size_t count
        with nogil:
            count = dtmf_flush(&self._st, &ev)
        return _events(&ev, count)
