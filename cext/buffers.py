"""The one check of what PCM buffers the kernels take: bytes, or a native-endian int16 array."""

from __future__ import annotations

import sys

BYTE_FORMATS = frozenset(("B", "b", "c"))
INT16_FORMATS = frozenset(("h", "=h", "@h", "<h" if sys.byteorder == "little" else ">h"))


def pcm_bytes(data: object) -> memoryview:
    """Any contiguous buffer of bytes or native int16 as a byte view; anything else is a TypeError."""
    view = memoryview(data)  # type: ignore[arg-type]
    if view.format not in BYTE_FORMATS and view.format not in INT16_FORMATS:
        raise TypeError(f"expected bytes or a native-endian int16 array, got format {view.format!r}")
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B")
