# cython: language_level=3
"""G.711 codec kernel: table-driven batch encode/decode and PCMU<->PCMA transcoding.

Tables are built once at import from the inline law in native/g711.h, so the batch loops are one
load per sample with the GIL released. Inputs and outputs are raw bytes; PCM16 is native-endian.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int16_t, uint8_t, uint16_t

cdef uint8_t ULAW_ENC[65536]
cdef uint8_t ALAW_ENC[65536]
cdef int16_t ULAW_DEC[256]
cdef int16_t ALAW_DEC[256]
cdef uint8_t ULAW_TO_ALAW[256]
cdef uint8_t ALAW_TO_ULAW[256]


cdef void _build_tables() noexcept nogil:
    cdef int i
    for i in range(65536):
        ULAW_ENC[i] = g711_lin2ulaw(<int16_t><uint16_t>i)
        ALAW_ENC[i] = g711_lin2alaw(<int16_t><uint16_t>i)
    for i in range(256):
        ULAW_DEC[i] = g711_ulaw2lin(<uint8_t>i)
        ALAW_DEC[i] = g711_alaw2lin(<uint8_t>i)
    for i in range(256):
        ULAW_TO_ALAW[i] = ALAW_ENC[<uint16_t>ULAW_DEC[i]]
        ALAW_TO_ULAW[i] = ULAW_ENC[<uint16_t>ALAW_DEC[i]]


_build_tables()


cdef bytes _encode(const unsigned char[::1] pcm, const uint8_t* table):
    if pcm.shape[0] & 1:
        raise ValueError("PCM16 input has an odd number of bytes")
    cdef Py_ssize_t n = pcm.shape[0] // 2, i
    out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t* dst = <uint8_t*>PyBytes_AS_STRING(out)
    cdef const uint16_t* src = <const uint16_t*>&pcm[0] if n else NULL
    with nogil:
        for i in range(n):
            dst[i] = table[src[i]]
    return out


cdef bytes _decode(const unsigned char[::1] codes, const int16_t* table):
    cdef Py_ssize_t n = codes.shape[0], i
    out = PyBytes_FromStringAndSize(NULL, n * 2)
    cdef int16_t* dst = <int16_t*>PyBytes_AS_STRING(out)
    with nogil:
        for i in range(n):
            dst[i] = table[codes[i]]
    return out


cdef bytes _map(const unsigned char[::1] codes, const uint8_t* table):
    cdef Py_ssize_t n = codes.shape[0], i
    out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t* dst = <uint8_t*>PyBytes_AS_STRING(out)
    with nogil:
        for i in range(n):
            dst[i] = table[codes[i]]
    return out


def ulaw_encode(const unsigned char[::1] pcm) -> bytes:
    """PCM16 (native-endian bytes) -> mu-law bytes."""
    return _encode(pcm, ULAW_ENC)


def alaw_encode(const unsigned char[::1] pcm) -> bytes:
    """PCM16 (native-endian bytes) -> A-law bytes."""
    return _encode(pcm, ALAW_ENC)


def ulaw_decode(const unsigned char[::1] codes) -> bytes:
    """mu-law bytes -> PCM16 (native-endian bytes)."""
    return _decode(codes, ULAW_DEC)


def alaw_decode(const unsigned char[::1] codes) -> bytes:
    """A-law bytes -> PCM16 (native-endian bytes)."""
    return _decode(codes, ALAW_DEC)


def ulaw_to_alaw(const unsigned char[::1] codes) -> bytes:
    """Transcode PCMU -> PCMA through the linear value (one table load per sample)."""
    return _map(codes, ULAW_TO_ALAW)


def alaw_to_ulaw(const unsigned char[::1] codes) -> bytes:
    """Transcode PCMA -> PCMU through the linear value (one table load per sample)."""
    return _map(codes, ALAW_TO_ULAW)
