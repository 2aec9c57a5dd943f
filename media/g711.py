"""G.711 facade: accepts any PCM16 buffer (bytes, array, numpy int16) and returns bytes.

The law is defined once, in cext/native/g711.h (ITU-T G.191 semantics); this module only adapts
Python buffers to the kernel's byte interface.
"""

from __future__ import annotations

from cext import g711 as _k

Buffer = bytes | bytearray | memoryview


def _bytes(buf: object) -> memoryview:
    view = memoryview(buf)  # type: ignore[arg-type]
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B")


def ulaw_encode(pcm: object) -> bytes:
    """Linear PCM16 samples -> PCMU code words."""
    return _k.ulaw_encode(_bytes(pcm))


def alaw_encode(pcm: object) -> bytes:
    """Linear PCM16 samples -> PCMA code words."""
    return _k.alaw_encode(_bytes(pcm))


def ulaw_decode(codes: object) -> bytes:
    """PCMU code words -> native-endian PCM16 bytes."""
    return _k.ulaw_decode(_bytes(codes))


def alaw_decode(codes: object) -> bytes:
    """PCMA code words -> native-endian PCM16 bytes."""
    return _k.alaw_decode(_bytes(codes))


def ulaw_to_alaw(codes: object) -> bytes:
    """PCMU -> PCMA, sample by sample through the linear value."""
    return _k.ulaw_to_alaw(_bytes(codes))


def alaw_to_ulaw(codes: object) -> bytes:
    """PCMA -> PCMU, sample by sample through the linear value."""
    return _k.alaw_to_ulaw(_bytes(codes))
