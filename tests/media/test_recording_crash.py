"""A recording survives `kill -9` of the process that writes it: the WAV opens, at most 1 s is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import wave

import numpy as np

CHILD = textwrap.dedent(
    """
    import socket, struct, sys, time
    from media.engine import MediaEngine
    eng = MediaEngine((29000, 29099), "127.0.0.1")
    a, b = eng.create_leg(), eng.create_leg()
    socks = []
    for leg in (a, b):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        eng.set_remote(leg, "127.0.0.1", s.getsockname()[1])
        socks.append(s)
    bridge = eng.bridge(a, b)
    eng.record(bridge, sys.argv[1], stereo=True)
    print("ready", flush=True)
    start, i = time.monotonic(), 0
    while True:
        for leg, s, level in ((a, socks[0], 0x20), (b, socks[1], 0x40)):
            s.sendto(struct.pack("!BBHII", 0x80, 0, i & 0xFFFF, 160 * i, 7 + level) + bytes([level]) * 160,
                     ("127.0.0.1", leg.port))
        i += 1
        time.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
    """
)


def test_recording_crash_leaves_a_valid_wav(tmp_path):
    path = tmp_path / "crash.wav"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        time.sleep(3.0)
        os.kill(child.pid, signal.SIGKILL)
        recorded_for = time.monotonic() - started
    finally:
        child.wait(timeout=10)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        n = w.getnframes()
        frames = np.frombuffer(w.readframes(n), np.int16).reshape(-1, 2)
    assert 44 + n * 4 <= path.stat().st_size
    assert n >= (recorded_for - 1.0 - 0.2) * 8000  # at most 1 s lost (plus the jitter buffer's start)
    from media import g711

    left = np.frombuffer(g711.ulaw_decode(b"\x20"), np.int16)[0]
    right = np.frombuffer(g711.ulaw_decode(b"\x40"), np.int16)[0]
    talking = frames[np.any(frames != 0, axis=1)]
    assert len(talking) >= 0.9 * n - 1600
    assert (talking[:, 0] == left).mean() > 0.95 and (talking[:, 1] == right).mean() > 0.95
