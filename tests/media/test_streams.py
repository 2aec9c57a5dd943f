"""Media streams in the engine over real sockets: tapped frames out (what a leg hears and what it is sent,
in one batch per wake-up) and a subscriber's audio played in, paced, with marks and clear."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers import HOST, far_end, rtp

from media import g711
from media.engine import MediaEngine

from .test_processed import collect, pair, stream, tone


@pytest.fixture
def engine():
    eng = MediaEngine((28000, 28999), HOST)
    yield eng
    eng.close()


def ulaw(pcm: np.ndarray) -> bytes:
    """PCM as mu-law, without 0x7F (negative zero, which decodes to 0 and comes back as 0xFF)."""
    return g711.ulaw_encode(pcm).replace(b"\x7f", b"\xff")


def ulaw_tone(freq: float, frames: int, seed: int = 0) -> bytes:
    return ulaw(tone(freq, frames, seed=seed))


def contiguous(haystack: bytes, needle: bytes) -> bool:
    return needle in haystack


def gather_frames(engine: MediaEngine, seconds: float) -> list[tuple[int, int, int, bytes]]:
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        out += engine.frames()
        time.sleep(0.01)
    return out


def test_tapped_relay_gives_each_packet_heard_and_sent_as_it_passes(engine):
    a, b, fa, fb = pair(engine)
    engine.bridge(a, b)
    engine.stream_tap(a, rx=True, tx=True)
    from_a, from_b = tone(440, 40, seed=1), tone(1000, 40, seed=2)
    sender = threading.Thread(target=stream, args=(fb, b.port, from_b, 0x22))
    sender.start()
    stream(fa, a.port, from_a, 0x11)
    sender.join()
    frames = gather_frames(engine, 0.3)
    relayed = collect(fb, 0.1)
    assert len(relayed) > 0  # the relay still forwards on arrival (fb got a's packets)
    rx = b"".join(f[3] for f in frames if f[0] == a.id and f[1] == 0)
    tx = b"".join(f[3] for f in frames if f[0] == a.id and f[1] == 1)
    assert {f[0] for f in frames} == {a.id} and all(len(f[3]) == 160 for f in frames)
    # what a's far end sent, and what a was sent (b's audio): relayed, the payloads themselves, as they passed
    assert rx == g711.ulaw_encode(from_a) and tx == g711.ulaw_encode(from_b)
    gaps = np.diff([f[2] for f in frames if f[1] == 0]) / 1e6
    assert np.median(gaps) == pytest.approx(20, abs=2)  # at the pace they came
    engine.stream_tap(a, rx=False, tx=False)
    engine.frames()
    stream(fa, a.port, from_a[: 160 * 10], 0x11, start_seq=100)
    assert gather_frames(engine, 0.2) == []  # untapped: nothing more


def test_stream_playout_is_paced_exact_and_marks_come_when_played(engine):
    leg, fa = engine.create_leg(), far_end()
    engine.set_remote(leg, HOST, fa.getsockname()[1])
    engine.set_codec(leg, "PCMU")
    engine.stream_play(leg)
    audio = ulaw_tone(700, 50, seed=3)  # 1 s
    pushed_at = time.monotonic()
    for i in range(0, len(audio), 2000):  # faster than real time, in uneven chunks: a TTS burst
        engine.stream_push(leg, audio[i : i + 2000])
    engine.stream_mark(leg, 7)
    marks, arrivals, payload = [], [], b""
    fa.settimeout(0.05)
    end = time.monotonic() + 1.6
    while time.monotonic() < end:
        try:
            pkt = fa.recv(2048)
        except TimeoutError:
            pkt = None
        if pkt is not None:
            arrivals.append(time.monotonic())
            payload += pkt[12:]
        marks += [(e.detail, time.monotonic()) for e in engine.events() if e.kind == "stream_mark"]
    assert contiguous(payload, audio)  # every sample, in order, no gap
    audible = [
        t for t, i in zip(arrivals, range(0, len(payload), 160), strict=False) if payload[i : i + 160] != b"\xff" * 160
    ]
    assert 48 <= len(audible) <= 52  # 50 frames of audio, 20 ms each: paced, not burst
    assert audible[-1] - audible[0] == pytest.approx(0.98, abs=0.08)
    [(detail, at)] = marks
    assert detail == {"mark": 7, "cleared": False}
    assert at - pushed_at >= 0.95  # after the audio before it had played, not when it was queued


def test_stream_clear_drops_queued_audio_and_reports_waiting_marks(engine):
    leg, fa = engine.create_leg(), far_end()
    engine.set_remote(leg, HOST, fa.getsockname()[1])
    engine.stream_play(leg)
    engine.stream_push(leg, ulaw_tone(700, 150))  # 3 s
    engine.stream_mark(leg, 1)
    engine.stream_mark(leg, 2)
    time.sleep(0.3)
    assert [e for e in engine.events() if e.kind == "stream_mark"] == []
    engine.stream_clear(leg)
    cleared_at = time.monotonic()
    time.sleep(0.15)
    marks = [e.detail for e in engine.events() if e.kind == "stream_mark"]
    assert marks == [{"mark": 1, "cleared": True}, {"mark": 2, "cleared": True}]
    collect(fa, 0.05)  # what left before the clear
    after = b"".join(p[12:] for p in collect(fa, 0.3))
    assert after and after == b"\xff" * len(after)  # silence at once: barge-in
    assert time.monotonic() - cleared_at < 1
    engine.stream_mark(leg, 3)  # nothing queued: played at once
    time.sleep(0.1)
    assert [e.detail for e in engine.events() if e.kind == "stream_mark"] == [{"mark": 3, "cleared": False}]


def test_stream_playout_absorbs_a_jittery_real_time_sender_without_gaps(engine):
    leg, fa = engine.create_leg(), far_end()
    engine.set_remote(leg, HOST, fa.getsockname()[1])
    engine.stream_play(leg)
    audio = ulaw_tone(500, 60, seed=4)  # 1.2 s in 20 ms chunks, each up to 40 ms late
    late = np.random.default_rng(5).uniform(0, 0.04, 60)
    received: list[bytes] = []
    catcher = threading.Thread(target=lambda: received.extend(collect(fa, 1.8)))
    catcher.start()
    start = time.monotonic()
    for i in range(60):
        time.sleep(max(0.0, start + i * 0.02 + late[i] - time.monotonic()))
        engine.stream_push(leg, audio[i * 160 : (i + 1) * 160])
    catcher.join()
    assert contiguous(b"".join(p[12:] for p in received), audio)


def test_stream_playout_mixes_with_the_bridge_and_processed_taps_give_ticks(engine):
    a, b, fa, fb = pair(engine)
    engine.bridge(a, b)
    engine.stream_play(a)  # the bot speaks to a's far end, over what b says
    engine.stream_tap(a, rx=False, tx=True)
    engine.stream_push(a, ulaw_tone(900, 25))
    b_says = tone(300, 25, seed=6)
    stream(fb, b.port, b_says, 0x33)
    heard = np.frombuffer(g711.ulaw_decode(b"".join(p[12:] for p in collect(fa, 0.3))), np.int16)
    spectrum = np.abs(np.fft.rfft(heard.astype(float)))
    freqs = np.fft.rfftfreq(heard.size, 1 / 8000)
    for f in (300, 900):  # both are heard
        band = (freqs > f - 20) & (freqs < f + 20)
        assert spectrum[band].max() > 20 * np.median(spectrum)
    tx = [f for f in engine.frames() if f[:2] == (a.id, 1)]
    assert len(tx) >= 24 and {len(f[3]) for f in tx} == {160}  # processed: a frame per tick, the mix
    engine.stream_play(a, False)
    time.sleep(0.1)
    engine.frames()
    assert engine.stats(a).processed is False  # back to relay once the playout stopped
    engine.stream_tap(a, rx=False, tx=True)
    fb.sendto(rtp(499, 79840, 0x33), (HOST, b.port))
    time.sleep(0.05)
    assert [f[:2] for f in engine.frames()] == [(a.id, 1)]  # what a is sent, tapped as it is relayed
    fb.sendto(rtp(500, 80000, 0x33), (HOST, b.port))
    assert len(collect(fa, 0.2)) >= 1
