"""Recorder's WAV writer: what goes in comes back out (read by Python's own `wave`), the header is right
while the file is still open, hundreds of files share the writer thread, a full ring or a full disk is
counted rather than fatal, and a process killed with SIGKILL leaves a valid WAV missing at most 1 s.

The crash and disk-full cases run the writer in a child process: the first because it must really die,
the second because it lowers the child's file-size limit (RLIMIT_FSIZE), which would bind pytest too.
"""

from __future__ import annotations

import array
import errno
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cext.wav import RING_SECONDS, WavWriter

ROOT = Path(__file__).resolve().parents[2]


def pattern(start: int, count: int, channels: int = 1) -> np.ndarray:
    """A known signal: sample n of the whole recording is (n * 7919) mod 2^16 as int16."""
    n = np.arange(start * channels, (start + count) * channels, dtype=np.int64)
    return ((n * 7919) % 65536 - 32768).astype(np.int16)


def read_wav(path: Path) -> tuple[Any, np.ndarray]:
    with wave.open(str(path), "rb") as f:
        return f.getparams(), np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")


def header(path: Path) -> dict[str, int]:
    raw = path.read_bytes()[:44]
    riff, riff_size, wave_id, fmt_id, fmt_size = struct.unpack_from("<4sI4s4sI", raw, 0)
    tag, channels, rate, byte_rate, align, bits = struct.unpack_from("<HHIIHH", raw, 20)
    data_id, data_size = struct.unpack_from("<4sI", raw, 36)
    assert (riff, wave_id, fmt_id, fmt_size, data_id) == (b"RIFF", b"WAVE", b"fmt ", 16, b"data")
    return {
        "riff_size": riff_size,
        "tag": tag,
        "channels": channels,
        "rate": rate,
        "byte_rate": byte_rate,
        "align": align,
        "bits": bits,
        "data_size": data_size,
    }


def run_child(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.parametrize("rate", [8000, 16000])
def test_wav_mono_roundtrip(tmp_path, rate):
    path = tmp_path / "mono.wav"
    sent = pattern(0, rate * 2)
    w = WavWriter(path, 1, rate)
    for i in range(0, len(sent), 160):  # 20 ms at 8 kHz, as the media thread does
        chunk = sent[i : i + 160]
        assert w.write(chunk if i % 320 else chunk.tobytes()) == len(chunk)
    assert w.close() == (len(sent), 0)
    params, got = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate, params.nframes) == (1, 2, rate, len(sent))
    assert np.array_equal(got, sent)


@pytest.mark.parametrize("rate", [8000, 48000])
def test_wav_stereo_roundtrip(tmp_path, rate):
    path = tmp_path / "stereo.wav"
    frames = rate + 123
    sent = pattern(0, frames, channels=2)
    with WavWriter(path, 2, rate) as w:
        assert w.write(sent[: 2 * 1000]) == 1000
        assert w.write(array.array("h", sent[2 * 1000 :].tolist())) == frames - 1000
    assert w.closed and w.close() == (frames, 0) and w.error == 0
    params, got = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate, params.nframes) == (2, 2, rate, frames)
    assert np.array_equal(got, sent)


def test_wav_header_sizes(tmp_path):
    path = tmp_path / "h.wav"
    w = WavWriter(path, 2, 16000)
    w.write(pattern(0, 4321, channels=2))
    assert w.close() == (4321, 0)
    h = header(path)
    size = path.stat().st_size
    assert h == {
        "riff_size": size - 8,
        "tag": 1,
        "channels": 2,
        "rate": 16000,
        "byte_rate": 64000,
        "align": 4,
        "bits": 16,
        "data_size": 4321 * 4,
    }
    assert size == 44 + 4321 * 4


def test_wav_empty_file_is_valid(tmp_path):
    path = tmp_path / "empty.wav"
    assert WavWriter(path, 1, 8000).close() == (0, 0)
    params, got = read_wav(path)
    assert params.nframes == 0 and len(got) == 0
    assert header(path)["riff_size"] == 36 and path.stat().st_size == 44


def test_wav_header_is_patched_while_open(tmp_path):
    path = tmp_path / "open.wav"
    w = WavWriter(path, 1, 8000)
    w.write(pattern(0, 8000))
    t0 = time.monotonic()
    while header(path)["data_size"] != 16000 and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    assert header(path)["data_size"] == 16000 and header(path)["riff_size"] == 36 + 16000
    assert elapsed < 1.0
    assert w.stats() == (8000, 0, 0)
    _, got = read_wav(path)  # readable as it stands, before close
    assert np.array_equal(got, pattern(0, 8000))
    w.close()


def test_wav_many_writers_at_once(tmp_path):
    count, seconds = 300, 2
    writers = [WavWriter(tmp_path / f"r{i}.wav", 1 + i % 2, 8000) for i in range(count)]
    for tick in range(seconds * 50):  # interleaved 20 ms frames, like one media tick after another
        for i, w in enumerate(writers):
            frames = pattern(tick * 160 + i, 160, channels=w.channels)
            assert w.write(frames) == 160
    for w in writers:
        assert w.close() == (seconds * 8000, 0)
    for i, w in enumerate(writers):
        params, got = read_wav(tmp_path / f"r{i}.wav")
        assert params.nchannels == w.channels and params.nframes == seconds * 8000
        want = np.concatenate([pattern(t * 160 + i, 160, channels=w.channels) for t in range(seconds * 50)])
        assert np.array_equal(got, want), i


def test_wav_full_ring_drops_and_counts(tmp_path):
    path = tmp_path / "burst.wav"
    w = WavWriter(path, 1, 8000)
    sent = pattern(0, 8000 * (RING_SECONDS + 2))
    accepted = w.write(sent)  # one call far larger than the ring: the excess is refused, not waited for
    assert RING_SECONDS * 8000 <= accepted < len(sent)
    assert w.stats()[1] == len(sent) - accepted
    assert w.close() == (accepted, len(sent) - accepted)
    _, got = read_wav(path)
    assert np.array_equal(got, sent[:accepted])


def test_wav_write_rejects_bad_input(tmp_path):
    w = WavWriter(tmp_path / "bad.wav", 2, 8000)
    with pytest.raises(ValueError, match="whole number"):
        w.write(b"\x00\x01\x02\x03\x04\x05")
    with pytest.raises(TypeError, match="int16"):
        w.write(np.zeros(4, dtype=np.float32))
    with pytest.raises(TypeError, match="int16"):
        w.write(np.zeros(4, dtype=">i2"))
    assert w.write(b"") == 0
    assert w.close() == (0, 0)
    with pytest.raises(ValueError, match="closed"):
        w.write(b"\x00\x00\x00\x00")
    assert w.close() == (0, 0)


def test_wav_open_errors(tmp_path):
    with pytest.raises(OSError) as exc:
        WavWriter(tmp_path / "no" / "such" / "dir.wav", 1, 8000)
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(ValueError, match="channels"):
        WavWriter(tmp_path / "x.wav", 3, 8000)
    with pytest.raises(ValueError, match="rate"):
        WavWriter(tmp_path / "x.wav", 1, 0)


def test_wav_disk_full_counts_and_reports(tmp_path):
    """A write that fails part-way (here EFBIG from a file-size limit, as ENOSPC would) is counted, never fatal."""
    path = tmp_path / "full.wav"
    child = run_child(
        """
        import json, resource, signal, sys
        import numpy as np
        from cext.wav import WavWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
        resource.setrlimit(resource.RLIMIT_FSIZE, (44 + 10001, resource.RLIM_INFINITY))
        w = WavWriter(sys.argv[1], 1, 8000)
        n = np.arange(16000, dtype=np.int64)
        sent = ((n * 7919) % 65536 - 32768).astype(np.int16)
        accepted = sum(w.write(sent[i : i + 160]) for i in range(0, 16000, 160))
        written, dropped = w.close()
        print(json.dumps({"accepted": accepted, "written": written, "dropped": dropped, "error": w.error}))
        """,
        str(path),
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    result = json.loads(out)
    assert result == {"accepted": 16000, "written": 5000, "dropped": 11000, "error": errno.EFBIG}
    assert path.stat().st_size == 44 + 10000  # the frame cut in half by the limit was truncated away
    params, got = read_wav(path)
    assert params.nframes == 5000
    assert np.array_equal(got, pattern(0, 5000))


def test_wav_survives_sigkill_losing_at_most_one_second(tmp_path):
    path = tmp_path / "killed.wav"
    child = run_child(
        """
        import sys, time
        import numpy as np
        from cext.wav import WavWriter
        w = WavWriter(sys.argv[1], 1, 8000)
        t0 = time.monotonic()
        for i in range(150):  # 3 s of 20 ms frames, paced in real time
            n = np.arange(i * 160, (i + 1) * 160, dtype=np.int64)
            w.write(((n * 7919) % 65536 - 32768).astype(np.int16))
            print((i + 1) * 160, flush=True)
            time.sleep(max(0.0, t0 + (i + 1) * 0.02 - time.monotonic()))
        w.close()
        """,
        str(path),
    )
    with child:
        reported = 0
        for line in child.stdout:
            reported = int(line)
            if reported >= 2 * 8000 - 80:  # about 2 s in, mid-stream
                os.kill(child.pid, signal.SIGKILL)
                break
        rest = child.stdout.read().split()  # anything it printed between our read and the kill
        reported = int(rest[-1]) if rest else reported
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL, child.stderr.read()

    size = path.stat().st_size
    h = header(path)
    assert 44 + h["data_size"] <= size and 8 + h["riff_size"] <= size
    assert h["riff_size"] == 36 + h["data_size"]
    params, got = read_wav(path)
    assert params.nframes == h["data_size"] // 2
    assert reported - params.nframes <= 8000  # at most 1 s of what was written is missing
    assert params.nframes <= reported + 160  # (one frame may have gone in after the last line we read)
    assert params.nframes > 0
    assert np.array_equal(got, pattern(0, params.nframes))


def test_wav_fork_child_neither_hangs_nor_touches_parent_file(tmp_path):
    """After fork() the child has no writer thread: it must still record on its own and release inherited writers."""
    child = run_child(
        """
        import os, sys
        import numpy as np
        from cext.wav import WavWriter
        d = sys.argv[1]
        sent = np.arange(1000, dtype=np.int16)
        parent = WavWriter(f"{d}/parent.wav", 1, 8000)
        parent.write(sent)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                parent.close()  # released without flushing: the data is the parent's
                own = WavWriter(f"{d}/child.wav", 1, 8000)
                own.write(sent[:500])
                status = 0 if own.close() == (500, 0) and parent.error != 0 else 2
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), parent.close())
        """,
        str(tmp_path),
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.split() == ["0", "(1000,", "0)"]
    assert np.array_equal(read_wav(tmp_path / "parent.wav")[1], np.arange(1000, dtype=np.int16))
    assert np.array_equal(read_wav(tmp_path / "child.wav")[1], np.arange(500, dtype=np.int16))
