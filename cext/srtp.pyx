# cython: language_level=3
"""SRTP (RFC 3711) from Python: the media thread's own C code (native/srtp.c), for tests and tools.

The engine protects and unprotects in its thread (no Python per packet); this wrapper lets tests check that
code against RFC 3711's vectors and play an SRTP peer."""

from libc.stdint cimport uint8_t
from libc.string cimport memcpy


cdef extern from "native/srtp.h":
    ctypedef struct srtp_t:
        pass
    int SRTP_MASTER_LEN
    int SRTP_MAX_TRAILER
    int srtp_init(srtp_t *s, const uint8_t *master, int tag_len)
    void srtp_free(srtp_t *s)
    const char *srtp_error()
    int srtp_protect(srtp_t *s, uint8_t *pkt, int len, int cap)
    int srtcp_protect(srtp_t *s, uint8_t *pkt, int len, int cap)
    int srtp_unprotect(srtp_t *s, uint8_t *pkt, int len)
    int srtcp_unprotect(srtp_t *s, uint8_t *pkt, int len)
    int srtp_derive(const uint8_t *master, int label, uint8_t *out, int n)
    void srtp_hmac_sha1(const uint8_t *key, int key_len, const uint8_t *data, int n, uint8_t *out)


class SrtpError(ValueError):
    """A packet that does not authenticate (`replay` False), or is a replay (`replay` True)."""

    def __init__(self, message, replay=False):
        super().__init__(message)
        self.replay = replay


def available():
    """None when SRTP works here, else why not (libcrypto missing)."""
    cdef const char *why = srtp_error()
    return None if why == NULL else why.decode()


def derive(bytes master, int label, int n):
    """The session key RFC 3711 4.3.1 derives with `label` from a 30-byte master key and salt."""
    if len(master) != SRTP_MASTER_LEN or not 0 < n <= 64:
        raise ValueError("master is 30 bytes (key and salt), n at most 64")
    cdef uint8_t out[64]
    if srtp_derive(<const uint8_t *>master, label, out, n):
        raise OSError(available() or "key derivation failed")
    return bytes(out[:n])


def hmac_sha1(bytes key, bytes data):
    cdef uint8_t out[20]
    srtp_hmac_sha1(<const uint8_t *>key, len(key), <const uint8_t *>data, len(data), out)
    return bytes(out[:20])


cdef class Srtp:
    """One direction's context: `protect` what is sent, `unprotect` what is received."""

    cdef srtp_t s
    cdef int ready

    def __cinit__(self, bytes master, int tag_len=10):
        if len(master) != SRTP_MASTER_LEN:
            raise ValueError("master is 30 bytes (key and salt)")
        if srtp_init(&self.s, <const uint8_t *>master, tag_len):
            raise OSError(available() or "bad tag length (10 or 4)")
        self.ready = 1

    def __dealloc__(self):
        if self.ready:
            srtp_free(&self.s)

    cdef bytes _run(self, bytes packet, int kind):
        cdef int n = len(packet)
        cdef uint8_t buf[2048]
        if n > 2048 - SRTP_MAX_TRAILER:
            raise ValueError("packet too long")
        memcpy(buf, <const uint8_t *>packet, n)
        if kind == 0:
            n = srtp_protect(&self.s, buf, n, sizeof(buf))
        elif kind == 1:
            n = srtcp_protect(&self.s, buf, n, sizeof(buf))
        elif kind == 2:
            n = srtp_unprotect(&self.s, buf, n)
        else:
            n = srtcp_unprotect(&self.s, buf, n)
        if n == -2:
            raise SrtpError("replayed packet", replay=True)
        if n < 0:
            raise SrtpError("packet does not authenticate" if kind >= 2 else "cannot protect this packet")
        return bytes(buf[:n])

    def protect(self, bytes packet):
        return self._run(packet, 0)

    def protect_rtcp(self, bytes packet):
        return self._run(packet, 1)

    def unprotect(self, bytes packet):
        return self._run(packet, 2)

    def unprotect_rtcp(self, bytes packet):
        return self._run(packet, 3)
