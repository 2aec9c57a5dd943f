"""WAV loading for the player: every supported encoding, rate and channel count comes out as 8 kHz mono PCM16
of the right length and content, and everything else is a ValueError that names the file and the reason.

The files are made here by a small RIFF writer of our own (Python's `wave` cannot write float or G.711),
so each case controls the fmt chunk, extra chunks, padding and sizes exactly.
"""

from __future__ import annotations

import math
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from media import audio, g711

RATES = [8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000]
PCM, FLOAT, ALAW, MULAW, EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")

# name -> (format tag, bits per sample); each encodes float samples in [-1, 1) below
FORMATS = {
    "pcm8": (PCM, 8),
    "pcm16": (PCM, 16),
    "pcm24": (PCM, 24),
    "pcm32": (PCM, 32),
    "float32": (FLOAT, 32),
    "float64": (FLOAT, 64),
    "mulaw": (MULAW, 8),
    "alaw": (ALAW, 8),
}
# level accuracy each encoding allows for a -6 dBFS tone (G.711 is a 8-bit log code)
TOLERANCE_DB = {"pcm8": 0.1, "mulaw": 0.1, "alaw": 0.1}


def encode(samples: np.ndarray, name: str) -> bytes:
    """Float samples (frames x channels, full scale 1.0) -> interleaved little-endian sample bytes."""
    x = samples.reshape(-1)
    tag, bits = FORMATS[name]
    if tag == FLOAT:
        return x.astype("<f4" if bits == 32 else "<f8").tobytes()
    pcm16 = np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16)
    if tag == MULAW:
        return g711.ulaw_encode(pcm16)
    if tag == ALAW:
        return g711.alaw_encode(pcm16)
    if bits == 8:
        return (np.clip(np.rint(x * 128), -128, 127) + 128).astype(np.uint8).tobytes()
    if bits == 16:
        return pcm16.astype("<i2").tobytes()
    if bits == 24:
        v = np.clip(np.rint(x * 2**23), -(2**23), 2**23 - 1).astype(np.int64) & 0xFFFFFF
        return np.stack([v & 0xFF, (v >> 8) & 0xFF, v >> 16], axis=1).astype(np.uint8).tobytes()
    return np.clip(np.rint(x * 2**31), -(2**31), 2**31 - 1).astype("<i4").tobytes()


def chunk(cid: bytes, body: bytes, declared: int | None = None) -> bytes:
    size = len(body) if declared is None else declared
    return cid + struct.pack("<I", size) + body + (b"\x00" if len(body) % 2 else b"")


def fmt_body(tag: int, channels: int, rate: int, bits: int, extensible: bool = False) -> bytes:
    align = channels * ((bits + 7) // 8)
    head = struct.pack("<HHIIHH", EXTENSIBLE if extensible else tag, channels, rate, rate * align, align, bits)
    if not extensible:
        return head
    mask = (1 << channels) - 1
    return head + struct.pack("<HHI", 22, bits, mask) + struct.pack("<H", tag) + GUID_TAIL


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def make_wav(
    path: Path, name: str, rate: int, samples: np.ndarray, *, extensible: bool = False, extra: bytes = b""
) -> Path:
    tag, bits = FORMATS[name]
    channels = samples.shape[1]
    fmt = chunk(b"fmt ", fmt_body(tag, channels, rate, bits, extensible))
    path.write_bytes(riff(fmt, extra, chunk(b"data", encode(samples, name))))
    return path


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def loaded(path: Path) -> np.ndarray:
    out = audio.load_wav(path)
    assert isinstance(out, bytes)
    return np.frombuffer(out, dtype=np.int16)


def level_db(y: np.ndarray, freq: float, full_scale: float = 32768.0) -> float:
    """Level of the `freq` component in dB relative to a full-scale sine (least squares fit)."""
    t = np.arange(len(y)) / 8000
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
    return 20 * math.log10(max(float(np.hypot(*coef)), 1e-9) / full_scale)


def peak_hz(y: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spectrum) * 8000 / len(y))


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name", list(FORMATS))
def test_audio_loads_every_format_and_rate(tmp_path, name, rate):
    seconds = 0.25
    path = make_wav(tmp_path / f"{name}-{rate}.wav", name, rate, tone(1000.0, rate, seconds)[:, None])
    y = loaded(path)
    n = int(rate * seconds)
    assert len(y) == -(-n * 8000 // rate)
    mid = y[200:-200]
    assert abs(peak_hz(mid) - 1000.0) <= 8000 / len(mid)
    assert abs(level_db(mid, 1000.0) - 20 * math.log10(0.5)) < TOLERANCE_DB.get(name, 0.02)


@pytest.mark.parametrize("channels", [2, 3, 6])
@pytest.mark.parametrize("name", list(FORMATS))
def test_audio_downmixes_by_averaging(tmp_path, name, channels):
    """Channel c carries its own tone at 0.6 / channels: the mix holds each at 1 / channels of that."""
    rate, seconds = 44100, 0.25
    freqs = [500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0][:channels]
    amp = 0.9 / channels
    samples = np.stack([tone(f, rate, seconds, amp) for f in freqs], axis=1)
    y = loaded(make_wav(tmp_path / "multi.wav", name, rate, samples))[200:-200]
    for f in freqs:
        assert abs(level_db(y, f) - 20 * math.log10(amp / channels)) < 0.25, f


@pytest.mark.parametrize("name", ["pcm16", "pcm24", "pcm32", "float32"])
def test_audio_opposite_channels_cancel(tmp_path, name):
    s = tone(1000.0, 16000, 0.2, 0.8)
    y = loaded(make_wav(tmp_path / "cancel.wav", name, 16000, np.stack([s, -s], axis=1)))
    assert np.abs(y).max() <= 1


def test_audio_8k_pcm16_mono_is_returned_unchanged(tmp_path):
    pcm = np.random.default_rng(3).integers(-32768, 32768, 8000).astype(np.int16)
    path = tmp_path / "plain.wav"
    path.write_bytes(riff(chunk(b"fmt ", fmt_body(PCM, 1, 8000, 16)), chunk(b"data", pcm.astype("<i2").tobytes())))
    assert audio.load_wav(path) == pcm.tobytes()


@pytest.mark.parametrize("name", ["pcm8", "pcm24", "pcm32", "float32", "mulaw", "alaw"])
def test_audio_8k_samples_convert_exactly(tmp_path, name):
    """At 8 kHz mono nothing is filtered, so every sample must be the exact int16 of its code."""
    pcm = np.random.default_rng(4).integers(-32768, 32768, 4000).astype(np.int16)
    if name == "pcm8":
        want = (pcm >> 8 << 8).astype(np.int16)
        data = ((pcm >> 8) + 128).astype(np.uint8).tobytes()
    elif name in ("pcm24", "pcm32"):
        want, data = pcm, encode(pcm[:, None] / 32768.0, name)
    elif name == "float32":
        want, data = pcm, (pcm / 32768.0).astype("<f4").tobytes()
    elif name == "mulaw":
        data = g711.ulaw_encode(pcm)
        want = np.frombuffer(g711.ulaw_decode(data), dtype=np.int16)
    else:
        data = g711.alaw_encode(pcm)
        want = np.frombuffer(g711.alaw_decode(data), dtype=np.int16)
    tag, bits = FORMATS[name]
    path = tmp_path / "exact.wav"
    path.write_bytes(riff(chunk(b"fmt ", fmt_body(tag, 1, 8000, bits)), chunk(b"data", data)))
    assert np.array_equal(loaded(path), want)


def test_audio_float_clips_and_ignores_nan(tmp_path):
    x = np.array([0.0, 1.0, -1.0, 2.0, -2.0, np.nan, np.inf, -np.inf, 0.5], dtype="<f4")
    path = tmp_path / "f.wav"
    path.write_bytes(riff(chunk(b"fmt ", fmt_body(FLOAT, 1, 8000, 32)), chunk(b"data", x.tobytes())))
    assert loaded(path).tolist() == [0, 32767, -32768, 32767, -32768, 0, 32767, -32768, 16384]


@pytest.mark.parametrize("name", ["pcm16", "pcm24", "float32", "mulaw"])
def test_audio_wave_format_extensible(tmp_path, name):
    samples = np.stack([tone(1000.0, 48000, 0.2), tone(1000.0, 48000, 0.2)], axis=1)
    y = loaded(make_wav(tmp_path / "ext.wav", name, 48000, samples, extensible=True))
    assert len(y) == 1600
    assert abs(level_db(y[200:-200], 1000.0) - 20 * math.log10(0.5)) < TOLERANCE_DB.get(name, 0.02)


def test_audio_skips_other_chunks_and_odd_padding(tmp_path):
    pcm = np.arange(-500, 500, dtype="<i2")
    path = tmp_path / "chunks.wav"
    path.write_bytes(
        riff(
            chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00abcd\x00"),  # 17 bytes: odd, so a pad byte follows
            chunk(b"fmt ", fmt_body(PCM, 1, 8000, 16)),
            chunk(b"fact", struct.pack("<I", len(pcm))),
            chunk(b"junk", b"xyz"),  # odd again, between fmt and data
            chunk(b"data", pcm.tobytes()),
            chunk(b"id3 ", b"trailing metadata"),
        )
    )
    assert np.array_equal(loaded(path), pcm)


def test_audio_data_before_fmt_and_odd_data_chunk(tmp_path):
    """An 8-bit mono data chunk of odd length, padded, placed before its fmt chunk."""
    data = bytes(range(0, 255, 2))[:101]
    path = tmp_path / "order.wav"
    path.write_bytes(riff(chunk(b"data", data), chunk(b"fmt ", fmt_body(PCM, 1, 8000, 8))))
    want = (np.frombuffer(data, dtype=np.uint8).astype(np.int16) - 128) * 256
    assert np.array_equal(loaded(path), want)


@pytest.mark.parametrize("declared", [0xFFFFFFFF, 0x7FFFF000])
def test_audio_streaming_length_reads_to_end(tmp_path, declared):
    pcm = np.arange(100, dtype="<i2")
    path = tmp_path / "stream.wav"
    path.write_bytes(riff(chunk(b"fmt ", fmt_body(PCM, 1, 8000, 16)), chunk(b"data", pcm.tobytes(), declared)))
    assert np.array_equal(loaded(path), pcm)


def test_audio_reads_what_espeak_ng_writes_to_a_pipe():
    """espeak-ng --stdout cannot seek back, so its header declares 0x7FFFF000 bytes of data."""
    wav = subprocess.run(["espeak-ng", "--stdout", "one two three"], capture_output=True, check=True).stdout
    assert int.from_bytes(wav[wav.index(b"data") + 4 :][:4], "little") == 0x7FFFF000
    fmt, data = audio.parse_wav(wav, "espeak")
    assert (fmt.rate, fmt.channels, fmt.bits) == (22050, 1, 16) and len(data) == len(wav) - wav.index(b"data") - 8
    pcm = np.frombuffer(audio.decode_wav(wav, "espeak"), np.int16)
    assert abs(len(pcm) - len(data) / 2 * 8000 / 22050) <= 1 and np.abs(pcm).max() > 1000


def test_audio_partial_last_frame_is_dropped(tmp_path):
    pcm = np.arange(10, dtype="<i2")
    path = tmp_path / "partial.wav"
    path.write_bytes(riff(chunk(b"fmt ", fmt_body(PCM, 2, 8000, 16)), chunk(b"data", pcm.tobytes() + b"\x01\x02")))
    assert np.array_equal(loaded(path), np.rint(pcm.reshape(-1, 2).mean(axis=1)).astype(np.int16))


def test_audio_decode_wav_from_memory():
    pcm = np.arange(-50, 50, dtype="<i2")
    blob = riff(chunk(b"fmt ", fmt_body(PCM, 1, 8000, 16)), chunk(b"data", pcm.tobytes()))
    assert audio.decode_wav(blob) == pcm.astype(np.int16).tobytes()
    fmt, data = audio.parse_wav(blob)
    assert (fmt.tag, fmt.channels, fmt.rate, fmt.bits, fmt.block_align, len(data)) == (1, 1, 8000, 16, 2, 200)


GOOD_FMT = chunk(b"fmt ", fmt_body(PCM, 1, 8000, 16))
GOOD_DATA = chunk(b"data", b"\x00\x00" * 10)


def fmt_chunk(tag: int, channels: int, rate: int, bits: int, extensible: bool = False, cut: int = 0) -> bytes:
    body = fmt_body(tag, channels, rate, bits, extensible)
    return chunk(b"fmt ", body[: len(body) - cut])


def raw_fmt(tag: int, channels: int, rate: int, byte_rate: int, align: int, bits: int) -> bytes:
    return chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, byte_rate, align, bits))


GOOD_FMT = fmt_chunk(PCM, 1, 8000, 16)
GOOD_DATA = chunk(b"data", b"\x00\x00" * 10)
EXT_BODY = fmt_body(PCM, 1, 8000, 16, extensible=True)
BAD_FILES = [  # (test id, what the message must say, file content)
    ("mp3", "not a WAV file", b"ID3\x03\x00\x00\x00 this is an mp3"),
    ("empty", "not a WAV file", b""),
    ("avi", "not a WAV file", riff(GOOD_FMT, GOOD_DATA).replace(b"WAVE", b"AVI ", 1)),
    ("rifx", "RIFX WAV files are not supported", b"RIFX" + riff(GOOD_FMT, GOOD_DATA)[4:]),
    ("no-fmt", "no fmt chunk", riff(GOOD_DATA)),
    ("no-data", "no data chunk", riff(GOOD_FMT, chunk(b"LIST", b"abcd"))),
    ("short-fmt", "fmt chunk too short", riff(fmt_chunk(PCM, 1, 8000, 16, cut=2), GOOD_DATA)),
    ("cut-in-data", "truncated (data chunk declares 20 bytes, only 14 present)", riff(GOOD_FMT, GOOD_DATA)[:-6]),
    ("cut-in-fmt", "truncated (fmt chunk declares 16 bytes, 10 present)", riff(GOOD_FMT)[:30]),
    ("adpcm", "unsupported format tag 0x0002 (Microsoft ADPCM)", riff(fmt_chunk(2, 1, 8000, 4), GOOD_DATA)),
    ("mp3-tag", "unsupported format tag 0x0055 (MPEG Layer 3)", riff(fmt_chunk(0x55, 1, 8000, 0), GOOD_DATA)),
    ("ext-guid", "unsupported WAVE_FORMAT_EXTENSIBLE sub-format",
     riff(chunk(b"fmt ", EXT_BODY[:-4] + b"\xff\xff\xff\xff"), GOOD_DATA)),
    ("ext-short", "EXTENSIBLE fmt chunk too short", riff(fmt_chunk(PCM, 1, 8000, 16, True, cut=16), GOOD_DATA)),
    ("float16", "sample size 16 bits for format tag 0x0003", riff(fmt_chunk(FLOAT, 1, 8000, 16), GOOD_DATA)),
    ("ulaw16", "sample size 16 bits for format tag 0x0007", riff(fmt_chunk(MULAW, 1, 8000, 16), GOOD_DATA)),
    ("no-channels", "fmt chunk says 0 channels", riff(raw_fmt(PCM, 0, 8000, 0, 2, 16), GOOD_DATA)),
    ("rate-0", "unsupported sample rate 0 Hz", riff(fmt_chunk(PCM, 1, 0, 16), GOOD_DATA)),
    ("rate-1M", "unsupported sample rate 1000000 Hz", riff(fmt_chunk(PCM, 1, 1000000, 16), GOOD_DATA)),
    ("align", "block align 3 does not match 1 channel(s)", riff(raw_fmt(PCM, 1, 8000, 16000, 3, 16), GOOD_DATA)),
]  # fmt: skip


@pytest.mark.parametrize(("reason", "content"), [pytest.param(r, c, id=i) for i, r, c in BAD_FILES])
def test_audio_rejects_bad_files_naming_file_and_reason(tmp_path, reason, content):
    path = tmp_path / "bad input.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError) as exc:
        audio.load_wav(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ")
    assert reason in message


def test_audio_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        audio.load_wav(tmp_path / "absent.wav")
