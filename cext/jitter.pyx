# cython: language_level=3
"""Test binding of the adaptive jitter buffer (native/jitter.c), which the media thread drives directly.

One buffer per object, time passed explicitly, so tests can hold the kernel to its Python reference
(tests/cext/jitter_model.py) with no clock and no sockets.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "native/jitter.h" nogil:
    enum:
        JB_SLOTS
        JB_PAYLOAD_MAX
    ctypedef struct jb_t:
        pass
    ctypedef struct jb_stats_t:
        uint64_t pushed, played, concealed, late, duplicates, overflows, resets, skipped, flushed, invalid
        uint32_t target_frames, level_frames, buffered_frames, jitter_us, playing
    void jb_init(jb_t *jb, int min_frames, int max_frames)
    void jb_push(jb_t *jb, uint16_t seq, uint32_t ts, uint8_t pt, int marker, const uint8_t *payload, int len,
                 uint64_t now_ns)
    int jb_pop(jb_t *jb, uint8_t *out, uint8_t *pt, uint64_t now_ns)
    void jb_get_stats(const jb_t *jb, jb_stats_t *out)


SLOTS = JB_SLOTS
PAYLOAD_MAX = JB_PAYLOAD_MAX


cdef class JitterBuffer:
    """push(seq, ts, pt, marker, payload, now_ns); pop(now_ns) -> (status_or_len, payload, pt); stats()."""

    cdef jb_t jb

    def __init__(self, int min_frames=2, int max_frames=10):
        jb_init(&self.jb, min_frames, max_frames)

    def push(self, seq, ts, pt, marker, const unsigned char[::1] payload, uint64_t now_ns):
        cdef Py_ssize_t n = payload.shape[0]
        cdef const uint8_t *p = &payload[0] if n else NULL
        cdef int length = <int>n if n <= JB_PAYLOAD_MAX else JB_PAYLOAD_MAX + 1  # too long: refused
        jb_push(&self.jb, <uint16_t>(seq & 0xFFFF), <uint32_t>(ts & 0xFFFFFFFF), <uint8_t>(pt & 0xFF),
                1 if marker else 0, p, length, now_ns)

    def pop(self, uint64_t now_ns):
        cdef uint8_t out[JB_PAYLOAD_MAX]
        cdef uint8_t pt = 0
        cdef int r = jb_pop(&self.jb, out, &pt, now_ns)
        if r > 0:
            return r, PyBytes_FromStringAndSize(<char *>out, r), pt
        return r, b"", 0

    def stats(self):
        cdef jb_stats_t s
        jb_get_stats(&self.jb, &s)
        return {
            "pushed": s.pushed, "played": s.played, "concealed": s.concealed, "late": s.late,
            "duplicates": s.duplicates, "overflows": s.overflows, "resets": s.resets, "skipped": s.skipped,
            "flushed": s.flushed, "invalid": s.invalid, "target_frames": s.target_frames,
            "level_frames": s.level_frames, "buffered_frames": s.buffered_frames, "jitter_us": s.jitter_us,
            "playing": s.playing,
        }
