"""Audio files for the player (and the media CLIs): any common WAV in, 8 kHz mono PCM16 out.

Prompts come from everywhere: studio exports at 44.1/48 kHz in 24-bit or float, old IVR files in mu-law or
A-law, stereo music on hold. The media thread only plays 8 kHz mono PCM16, so everything is converted once,
at load time, here. Python's `wave` module reads integer PCM only, hence our own RIFF walk: it finds `fmt `
and `data` among any other chunks (LIST, fact, cue, ...), honours the pad byte after odd-sized chunks and
understands WAVE_FORMAT_EXTENSIBLE. Samples are decoded to one float scale (int16 units), channels are
averaged, the result is rounded once to int16 and then band-limited to 8 kHz by the polyphase resampler in
cext/resample.pyx (documented there). A file we cannot play is a ValueError naming the file and the reason,
never garbage audio.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from cext import resample
from media import g711

OUT_RATE = resample.OUT_RATE

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_ALAW = 0x0006
WAVE_FORMAT_MULAW = 0x0007
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

# The KSDATAFORMAT_SUBTYPE_* GUIDs are the old format tag followed by this fixed tail.
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
# data sizes written by streaming encoders that cannot go back to patch the header (ffmpeg and others to a
# pipe write 0xFFFFFFFF; espeak-ng --stdout and sox write 0x7FFFF000): the data runs to the end of the file
_UNKNOWN_LENGTHS = frozenset((0xFFFFFFFF, 0x7FFFF000))

_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG audio",
    0x0055: "MPEG Layer 3",
    0x0064: "G.726 ADPCM",
    0x0161: "Windows Media Audio",
    0xF1AC: "FLAC",
}


@dataclass(frozen=True, slots=True)
class WavFormat:
    """What a WAV's fmt chunk says, with the extensible wrapper resolved to its real format tag."""

    tag: int
    channels: int
    rate: int
    bits: int
    block_align: int

    @property
    def sample_bytes(self) -> int:
        return self.block_align // self.channels


def load_wav(path: str | os.PathLike[str]) -> bytes:
    """Reads a WAV file and returns its audio as 8 kHz mono PCM16, native-endian bytes."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise ValueError(f"{os.fspath(path)}: cannot read: {exc.strerror or exc}") from exc
    return decode_wav(blob, os.fspath(path))


def decode_wav(blob: bytes, name: str = "<bytes>") -> bytes:
    """The same as load_wav() for a WAV already in memory; `name` is what error messages call it."""
    fmt, data = parse_wav(blob, name)
    pcm = _to_int16_mono(fmt, data)
    return resample.to_8k(pcm, fmt.rate).tobytes()


COMPRESSED = ("FLAC", "OGG", "MP3")  # decoded through libsndfile (the soundfile package)


def decode_audio(blob: bytes, name: str = "<bytes>") -> tuple[bytes, str]:
    """Any audio file we take, as 8 kHz mono PCM16 and the format it was: WAV (our own reader, above), or
    FLAC, Ogg Vorbis or MP3 through libsndfile (`soundfile`, whose wheel carries a libsndfile that decodes
    all three). ValueError naming `name` and the reason otherwise."""
    if blob[:4] in (b"RIFF", b"RIFX", b"RF64"):
        return decode_wav(blob, name), "WAV"
    import io

    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(blob)) as f:
            kind = f.format
            if kind not in COMPRESSED:
                raise ValueError(f"{name}: {kind} files are not supported (WAV, FLAC, OGG or MP3)")
            samples = f.read(dtype="float64", always_2d=True)
            rate = f.samplerate
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ValueError(f"{name}: not a WAV, FLAC, OGG or MP3 file ({exc})") from None
    if samples.size == 0:
        raise ValueError(f"{name}: no audio in the file")
    mono = np.clip(np.rint(samples.mean(axis=1) * 32768.0), -32768, 32767).astype(np.int16)
    return resample.to_8k(mono, rate).tobytes(), kind


def parse_wav(blob: bytes, name: str = "<bytes>") -> tuple[WavFormat, memoryview]:
    """Walks the RIFF chunks: (format, the data chunk's whole frames). Raises ValueError when unplayable."""
    view = memoryview(blob)
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        if blob[:4] in (b"RIFX", b"RF64"):
            raise ValueError(f"{name}: {blob[:4].decode()} WAV files are not supported (only little-endian RIFF)")
        raise ValueError(f"{name}: not a WAV file (no RIFF/WAVE header)")
    fmt: WavFormat | None = None
    data: memoryview | None = None
    pos = 12
    while pos + 8 <= len(blob):
        chunk_id = bytes(blob[pos : pos + 4])
        size = int.from_bytes(blob[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk_id == b"fmt ":
            if body + size > len(blob):
                raise ValueError(f"{name}: truncated (fmt chunk declares {size} bytes, {len(blob) - body} present)")
            fmt = _parse_fmt(view[body : body + size], name)
        elif chunk_id == b"data":
            if size in _UNKNOWN_LENGTHS and body + size > len(blob):
                size = len(blob) - body
            if body + size > len(blob):
                raise ValueError(
                    f"{name}: truncated (data chunk declares {size} bytes, only {len(blob) - body} present)"
                )
            data = view[body : body + size]
            if fmt is not None:
                break  # whatever follows the audio (LIST, id3...) is not needed
        pos = body + size + (size & 1)  # chunks are word-aligned: odd sizes carry a pad byte
    if fmt is None:
        raise ValueError(f"{name}: no fmt chunk")
    if data is None:
        raise ValueError(f"{name}: no data chunk")
    whole = len(data) - len(data) % fmt.block_align  # a trailing partial frame is not audio
    return fmt, data[:whole]


def salvage_wav(path: str | os.PathLike[str]) -> tuple[WavFormat, int]:
    """A recording whose writer was killed (cext/native/wav.c's 44-byte layout, header patched every 250 ms):
    made whole again, its header covering every whole frame in the file and the partial frame cut off.
    Returns (format, data bytes). The writer puts data on disk before the header that covers it, so the
    frames past the header's count are audio too. ValueError when it is not such a file."""
    name = os.fspath(path)
    with open(path, "r+b") as f:
        head = f.read(44)
        if len(head) < 44 or head[:4] != b"RIFF" or head[8:12] != b"WAVE" or head[12:16] != b"fmt ":
            raise ValueError(f"{name}: not a recording's WAV header")
        if int.from_bytes(head[16:20], "little") != 16 or head[36:40] != b"data":
            raise ValueError(f"{name}: not a recording's WAV layout")
        fmt = _parse_fmt(memoryview(head)[20:36], name)
        size = f.seek(0, os.SEEK_END) - 44
        size -= size % fmt.block_align
        f.truncate(44 + size)
        f.seek(4)
        f.write((36 + size).to_bytes(4, "little"))
        f.seek(40)
        f.write(size.to_bytes(4, "little"))
        os.fsync(f.fileno())
    return fmt, size


def _parse_fmt(body: memoryview, name: str) -> WavFormat:
    if len(body) < 16:
        raise ValueError(f"{name}: fmt chunk too short ({len(body)} bytes, need 16)")
    raw = bytes(body)
    tag = int.from_bytes(raw[0:2], "little")
    channels = int.from_bytes(raw[2:4], "little")
    rate = int.from_bytes(raw[4:8], "little")
    block_align = int.from_bytes(raw[12:14], "little")
    bits = int.from_bytes(raw[14:16], "little")
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(raw) < 40:
            raise ValueError(f"{name}: WAVE_FORMAT_EXTENSIBLE fmt chunk too short ({len(raw)} bytes, need 40)")
        guid = raw[24:40]
        if guid[2:] != _GUID_TAIL:
            raise ValueError(f"{name}: unsupported WAVE_FORMAT_EXTENSIBLE sub-format {guid.hex()}")
        tag = int.from_bytes(guid[0:2], "little")
    if tag not in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT, WAVE_FORMAT_ALAW, WAVE_FORMAT_MULAW):
        label = _FORMAT_NAMES.get(tag, "unknown")
        raise ValueError(
            f"{name}: unsupported format tag 0x{tag:04X} ({label}); PCM, IEEE float, mu-law and A-law are supported"
        )
    if channels < 1:
        raise ValueError(f"{name}: fmt chunk says {channels} channels")
    if not resample.MIN_RATE <= rate <= resample.MAX_RATE:
        raise ValueError(f"{name}: unsupported sample rate {rate} Hz (need {resample.MIN_RATE}-{resample.MAX_RATE} Hz)")
    if tag == WAVE_FORMAT_PCM:
        ok = 1 <= bits <= 32
    elif tag == WAVE_FORMAT_IEEE_FLOAT:
        ok = bits in (32, 64)
    else:
        ok = bits == 8
    if not ok:
        raise ValueError(f"{name}: unsupported sample size {bits} bits for format tag 0x{tag:04X}")
    container = (bits + 7) // 8
    if block_align != channels * container:
        raise ValueError(
            f"{name}: block align {block_align} does not match {channels} channel(s) of {container} byte(s)"
        )
    return WavFormat(tag, channels, rate, bits, block_align)


def _to_int16_mono(fmt: WavFormat, data: memoryview) -> np.ndarray:
    """Decodes every sample to int16 units (float), averages the channels, rounds once to int16."""
    if fmt.tag == WAVE_FORMAT_PCM and fmt.sample_bytes == 2 and fmt.channels == 1:
        return np.frombuffer(data, dtype="<i2").astype(np.int16)  # the common case: no arithmetic at all
    samples = _decode(fmt, data).reshape(-1, fmt.channels)
    mono = samples[:, 0] if fmt.channels == 1 else samples.mean(axis=1)
    return np.clip(np.rint(mono), -32768, 32767).astype(np.int16)


def _decode(fmt: WavFormat, data: memoryview) -> np.ndarray:
    """Interleaved samples as float64 on the int16 scale (full scale = +-32768)."""
    if fmt.tag == WAVE_FORMAT_MULAW:
        return np.frombuffer(g711.ulaw_decode(data), dtype=np.int16).astype(np.float64)
    if fmt.tag == WAVE_FORMAT_ALAW:
        return np.frombuffer(g711.alaw_decode(data), dtype=np.int16).astype(np.float64)
    if fmt.tag == WAVE_FORMAT_IEEE_FLOAT:
        dtype = "<f4" if fmt.sample_bytes == 4 else "<f8"
        values = np.nan_to_num(np.frombuffer(data, dtype=dtype).astype(np.float64), posinf=1.0, neginf=-1.0)
        return values * 32768.0
    size = fmt.sample_bytes
    if size == 1:  # 8-bit WAV is unsigned, centred on 128
        return (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if size == 2:
        return np.frombuffer(data, dtype="<i2").astype(np.float64)
    if size == 3:
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return ((v ^ 0x800000) - 0x800000).astype(np.float64) / 256.0
    return np.frombuffer(data, dtype="<i4").astype(np.float64) / 65536.0
