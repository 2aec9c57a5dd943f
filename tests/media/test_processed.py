"""The processed path over real sockets: jitter buffer, transcoding, mixing, playing, recording, RFC 4733,
and seamless switches between relay and processed."""

from __future__ import annotations

import itertools
import struct
import time
import wave

import dtmf_signals
import numpy as np
import pytest
from helpers import HOST, far_end, header, rtp, wait_for

from media import g711
from media.engine import MediaEngine

PCMU_SILENCE = b"\xff" * 160


@pytest.fixture
def engine():
    eng = MediaEngine((28000, 28999), HOST)
    yield eng
    eng.close()


def pair(engine, codec_a="PCMU", codec_b="PCMU", te=(101, 101)):
    a, b = engine.create_leg(), engine.create_leg()
    fa, fb = far_end(), far_end()
    for leg, sock, codec, te_pt in ((a, fa, codec_a, te[0]), (b, fb, codec_b, te[1])):
        engine.set_remote(leg, HOST, sock.getsockname()[1])
        engine.set_codec(leg, codec, te_pt=te_pt)
    return a, b, fa, fb


def tone(freq: float, frames: int, amplitude: int = 8000, seed: int = 0) -> np.ndarray:
    """A tone with a little noise on it, so that no two 20 ms frames are alike."""
    t = np.arange(frames * 160) / 8000
    noise = np.random.default_rng(seed).normal(0, amplitude / 30, t.size)
    return (amplitude * np.sin(2 * np.pi * freq * t) + noise).astype(np.int16)


def stream(sock, port, pcm: np.ndarray, ssrc: int, codec: str = "PCMU", start_seq: int = 0, pace: bool = True):
    """Send PCM as 20 ms RTP frames in real time (the processed path plays out on its own clock)."""
    enc = g711.ulaw_encode if codec == "PCMU" else g711.alaw_encode
    pt = 0 if codec == "PCMU" else 8
    start = time.monotonic()
    for i in range(len(pcm) // 160):
        if pace:
            time.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
        sock.sendto(rtp(start_seq + i, 160 * i, ssrc, pt=pt, payload=enc(pcm[i * 160 : (i + 1) * 160])), (HOST, port))


def collect(sock, seconds: float) -> list[bytes]:
    sock.settimeout(0.05)
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            out.append(sock.recv(2048))
        except TimeoutError:
            continue
    return out


def test_processed_transcodes_pcmu_to_pcma_in_relay(engine):
    a, b, fa, fb = pair(engine, "PCMU", "PCMA")
    engine.bridge(a, b)
    payload = bytes(range(256))[:160]
    fa.sendto(rtp(1, 160, 0x10, pt=0, payload=payload), (HOST, a.port))
    got = fb.recv(2048)
    assert header(got)["pt"] == 8
    assert got[12:] == g711.ulaw_to_alaw(payload)
    fb.sendto(rtp(1, 160, 0x11, pt=8, payload=got[12:]), (HOST, b.port))
    back = fa.recv(2048)
    assert header(back)["pt"] == 0 and back[12:] == g711.alaw_to_ulaw(got[12:])


def test_processed_bridge_carries_audio_through_the_jitter_buffer(engine):
    a, b, fa, fb = pair(engine)
    engine.bridge(a, b, mode="processed")
    sent = tone(440, 40)
    stream(fa, a.port, sent, 0x20)
    packets = collect(fb, 0.4)
    seqs = [header(p)["seq"] for p in packets]
    assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(seqs))  # one continuous stream
    audio = np.frombuffer(b"".join(g711.ulaw_decode(p[12:]) for p in packets), np.int16)
    expected = np.frombuffer(g711.ulaw_decode(g711.ulaw_encode(sent)), np.int16).reshape(-1, 160)
    assert len(frames_in_order(audio, expected)) >= 35  # of 40 frames; a few may be concealed under load
    assert engine.stats(b).processed


def test_processed_stereo_recording_holds_each_party(engine, tmp_path):
    a, b, fa, fb = pair(engine)
    bridge = engine.bridge(a, b)
    path = tmp_path / "call.wav"
    engine.record(bridge, str(path), stereo=True)
    left, right = tone(500, 50, 6000, seed=1), tone(1500, 50, 3000, seed=2)
    for i in range(50):  # both parties talk at once, in real time
        fa.sendto(rtp(i, 160 * i, 0x30, payload=g711.ulaw_encode(left[i * 160 : (i + 1) * 160])), (HOST, a.port))
        fb.sendto(rtp(i, 160 * i, 0x31, payload=g711.ulaw_encode(right[i * 160 : (i + 1) * 160])), (HOST, b.port))
        time.sleep(0.02)
    time.sleep(0.2)
    engine.stop_recording(bridge)
    done = wait_for(lambda: [e for e in engine.events() if e.kind == "recording_done"])[0]
    assert done.detail["path"] == str(path) and done.detail["size"] == path.stat().st_size
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        frames = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
    assert done.detail["duration_s"] == pytest.approx(len(frames) / 8000)
    for channel, freq in ((0, 500), (1, 1500)):
        rec = frames[:, channel].astype(float)
        assert np.abs(rec).max() > 1000
        spectrum = np.abs(np.fft.rfft(rec))
        assert abs(np.argmax(spectrum) * 8000 / len(rec) - freq) < 20  # each channel holds its own party
    expected = np.frombuffer(g711.ulaw_decode(g711.ulaw_encode(left)), np.int16).reshape(-1, 160)
    matched = frames_in_order(frames[:, 0], expected)
    assert len(matched) >= 45, matched  # every frame sent, in order, bar a few concealed under load


def frames_in_order(recorded: np.ndarray, expected: np.ndarray) -> list[int]:
    """Indices of the expected 20 ms frames found whole in the recording, checked to be increasing."""
    index = {frame.tobytes(): k for k, frame in enumerate(expected)}
    usable = len(recorded) // 160 * 160
    found = [index[f.tobytes()] for f in recorded[:usable].reshape(-1, 160) if f.tobytes() in index]
    assert found == sorted(found), "frames out of order"
    return found


def test_processed_mono_recording_is_the_mix(engine, tmp_path):
    a, b, fa, fb = pair(engine)
    bridge = engine.bridge(a, b)
    path = tmp_path / "mono.wav"
    engine.record(bridge, str(path), stereo=False)
    for i in range(30):
        fa.sendto(rtp(i, 160 * i, 0x40, payload=g711.ulaw_encode(np.full(160, 1000, np.int16))), (HOST, a.port))
        fb.sendto(rtp(i, 160 * i, 0x41, payload=g711.ulaw_encode(np.full(160, 2000, np.int16))), (HOST, b.port))
        time.sleep(0.02)
    time.sleep(0.2)
    engine.stop_recording(bridge)
    wait_for(lambda: [e for e in engine.events() if e.kind == "recording_done"])
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1
        samples = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    assert (samples == quantized(1000) + quantized(2000)).sum() > 160 * 20


def test_processed_conference_each_hears_the_others(engine):
    legs = [engine.create_leg() for _ in range(3)]
    socks = [far_end() for _ in range(3)]
    for leg, sock in zip(legs, socks, strict=True):
        engine.set_remote(leg, HOST, sock.getsockname()[1])
    engine.conference(legs)
    values = [1000, 2000, 4000]
    for i in range(25):
        for leg, sock, v in zip(legs, socks, values, strict=True):
            sock.sendto(
                rtp(i, 160 * i, 0x50 + v, payload=g711.ulaw_encode(np.full(160, v, np.int16))), (HOST, leg.port)
            )
        time.sleep(0.02)
    q = {
        v: int(np.frombuffer(g711.ulaw_decode(g711.ulaw_encode(np.array([v], np.int16))), np.int16)[0]) for v in values
    }
    for k, sock in enumerate(socks):
        heard = [np.frombuffer(g711.ulaw_decode(p[12:]), np.int16) for p in collect(sock, 0.1)]
        others = sum(q[v] for j, v in enumerate(values) if j != k)
        want = quantized(others)
        assert any((frame == want).all() for frame in heard), (k, want)


def test_processed_player_plays_and_reports_done(engine):
    leg = engine.create_leg()
    sock = far_end()
    engine.set_remote(leg, HOST, sock.getsockname()[1])
    prompt = tone(800, 10)
    play_id = engine.play(leg, prompt.tobytes())
    done = wait_for(lambda: [e for e in engine.events() if e.kind == "play_done"])[0]
    assert done.detail == {"play_id": play_id, "interrupted": False}
    audio = b"".join(p[12:] for p in collect(sock, 0.1))
    assert g711.ulaw_encode(prompt) in audio


def test_processed_player_loop_and_stop(engine):
    leg = engine.create_leg()
    sock = far_end()
    engine.set_remote(leg, HOST, sock.getsockname()[1])
    engine.play(leg, tone(300, 2).tobytes(), loop=True)
    assert len(collect(sock, 0.3)) >= 10  # still playing well past the prompt's 40 ms
    engine.stop_play(leg)
    done = wait_for(lambda: [e for e in engine.events() if e.kind == "play_done"])[0]
    assert done.detail["interrupted"]


def quantized(value: int) -> int:
    """What a linear value becomes after mu-law encoding and decoding."""
    return int(np.frombuffer(g711.ulaw_decode(g711.ulaw_encode(np.array([value], np.int16))), np.int16)[0])


def te(event: int, end: bool, duration: int) -> bytes:
    return struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)


def test_processed_rfc4733_received_once_per_press(engine):
    a, b, fa, fb = pair(engine, te=(101, 96))
    engine.bridge(a, b)
    seq = 100
    for event, ts in ((5, 8000), (11, 16000)):
        for k, dur in enumerate((160, 320, 480, 800, 800, 800)):
            pkt = rtp(seq, ts, 0x60, pt=101, marker=k == 0, payload=te(event, k >= 3, dur))
            fa.sendto(pkt, (HOST, a.port))
            seq += 1
    relayed = [header(p) | {"payload": p[12:]} for p in collect(fb, 0.2)]
    assert {h["pt"] for h in relayed} == {96}  # payload type mapped to what B negotiated
    digits = wait_for(lambda: [e for e in engine.events() if e.kind == "dtmf"])
    assert [(e.detail["digit"], e.detail["duration_ms"]) for e in digits] == [("5", 100), ("#", 100)]


def test_processed_rfc4733_lost_end_reported_at_next_event(engine):
    a, b, fa, fb = pair(engine)
    engine.bridge(a, b)
    fa.sendto(rtp(1, 800, 0x61, pt=101, marker=True, payload=te(1, False, 160)), (HOST, a.port))
    fa.sendto(rtp(2, 800, 0x61, pt=101, payload=te(1, False, 640)), (HOST, a.port))
    fa.sendto(rtp(3, 4000, 0x61, pt=101, marker=True, payload=te(2, True, 400)), (HOST, a.port))
    digits = wait_for(lambda: [e for e in engine.events() if e.kind == "dtmf"])
    digits += [e for e in engine.events() if e.kind == "dtmf"]
    assert [(e.detail["digit"], e.detail["duration_ms"]) for e in digits] == [("1", 80), ("2", 50)]


def test_processed_send_dtmf_as_rfc4733(engine):
    a, b, fa, fb = pair(engine)
    engine.bridge(a, b)
    for i in range(3):
        fa.sendto(rtp(i, 160 * i, 0x70), (HOST, b.port if False else a.port))
        fb.recv(2048)
    engine.send_dtmf(b, "7", duration_ms=100)
    packets = [p for p in collect(fb, 0.4)]
    events = [(header(p), p[12:]) for p in packets if header(p)["pt"] == 101]
    assert events[0][0]["marker"] and events[0][1][0] == 7
    durations = [struct.unpack("!H", body[2:4])[0] for _, body in events]
    assert durations[:5] == [160, 320, 480, 640, 800] and durations[-3:] == [800, 800, 800]
    assert [bool(body[1] & 0x80) for _, body in events][-3:] == [True, True, True]
    assert len({h["ts"] for h, _ in events}) == 1
    seqs = [header(p)["seq"] for p in packets]
    assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(seqs))
    assert wait_for(lambda: [e for e in engine.events() if e.kind == "dtmf_sent"])[0].detail["digit"] == "7"


def inband_digits(engine, timeout: float = 2.0) -> list:
    """The in-band digits reported until none has come for half a second."""
    found, deadline, quiet_since = [], time.monotonic() + timeout, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.5:
        new = [e for e in engine.events() if e.kind == "dtmf"]
        if new:
            found += new
            quiet_since = time.monotonic()
        time.sleep(0.02)
    return found


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_processed_inband_dtmf_heard_on_a_relayed_leg_once_per_press_with_times(engine, codec):
    a, b, fa, fb = pair(engine, codec, codec)
    engine.bridge(a, b)
    engine.detect_dtmf(a)
    pcm = dtmf_signals.pcm(dtmf_signals.sequence("1#5D", tone_ms=80, pause_ms=60, lead_ms=100))
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % 160 + 1600, np.int16)])
    stream(fa, a.port, pcm, 0x90, codec=codec)
    relayed = collect(fb, 0.1)
    digits = inband_digits(engine)
    assert [(e.detail["digit"], e.detail["source"], e.leg) for e in digits] == [(d, "inband", a.id) for d in "1#5D"]
    assert all(70 <= e.detail["duration_ms"] <= 90 for e in digits)
    starts = [e.detail["start_ns"] / 1e6 for e in digits]
    assert all(abs((y - x) - 140) < 25 for x, y in itertools.pairwise(starts))  # 80 ms tone + 60 ms pause
    assert relayed and not engine.stats(b).processed  # still relayed on arrival, only tapped for the detector
    assert engine.stats(a).dtmf_events == 4


def test_processed_inband_dtmf_stops_when_told_and_ignores_the_other_leg(engine):
    a, b, fa, fb = pair(engine)
    engine.bridge(a, b)
    engine.detect_dtmf(a)
    keys = dtmf_signals.pcm(dtmf_signals.sequence("9", tone_ms=80, lead_ms=60))
    keys = np.concatenate([keys, np.zeros(-len(keys) % 160 + 960, np.int16)])
    stream(fb, b.port, keys, 0x91)  # B's far end is not listened to
    assert inband_digits(engine, 1.0) == []
    engine.detect_dtmf(a, on=False)
    stream(fa, a.port, keys, 0x92)
    assert inband_digits(engine, 1.0) == []
    engine.detect_dtmf(a)
    stream(fa, a.port, keys, 0x93)
    assert [e.detail["digit"] for e in inband_digits(engine)] == ["9"]


def test_processed_events_between_audio_packets_are_not_read_as_lost_audio(engine):
    a, b, fa, fb = pair(engine)
    engine.bridge(a, b, mode="processed")
    audio = g711.ulaw_encode(tone(440, 40))
    start = time.monotonic()
    for i in range(40):  # a phone sending events alongside its audio: every other sequence number is an event
        time.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
        fa.sendto(rtp(2 * i, 160 * i, 0x95, payload=audio[160 * i : 160 * (i + 1)]), (HOST, a.port))
        fa.sendto(rtp(2 * i + 1, 160 * i, 0x95, pt=101, payload=te(3, False, 160)), (HOST, a.port))
    collect(fb, 0.3)
    stats = engine.stats(a)
    # the pops after the stream ended conceal until the buffer calls it a pause (10); not 40 more for gaps
    assert stats.rx_packets == 80 and stats.jb_concealed <= 12


def test_processed_switching_modes_keeps_one_continuous_stream(engine, tmp_path):
    a, b, fa, fb = pair(engine)
    bridge = engine.bridge(a, b)
    received = []
    seq = 0

    def talk(frames):
        nonlocal seq
        for _ in range(frames):
            fa.sendto(rtp(seq, 160 * seq, 0x80, payload=g711.ulaw_encode(tone(400, 1))), (HOST, a.port))
            seq += 1
            time.sleep(0.02)
            fb.settimeout(0.001)
            try:
                while True:
                    received.append(header(fb.recv(2048)))
            except (TimeoutError, BlockingIOError):
                pass

    talk(10)
    engine.record(bridge, str(tmp_path / "r.wav"))  # relay -> processed
    talk(20)
    engine.stop_recording(bridge)  # processed -> relay
    talk(20)
    received += [header(p) for p in collect(fb, 0.1)]
    seqs = [h["seq"] for h in received]
    steps = [(y - x) & 0xFFFF for x, y in itertools.pairwise(seqs)]
    assert all(step == 1 for step in steps), steps
    assert len({h["ssrc"] for h in received}) == 1
    ts_steps = [(y["ts"] - x["ts"]) & 0xFFFFFFFF for x, y in itertools.pairwise(received)]
    assert all(0 < step <= 160 * 4 for step in ts_steps), ts_steps


def test_processed_recording_pause_leaves_out_the_paused_time(engine, tmp_path):
    a, b, fa, fb = pair(engine)
    bridge = engine.bridge(a, b)
    path = tmp_path / "paused.wav"
    engine.record(bridge, str(path))
    start = time.monotonic()
    for i in range(60):
        if i == 15:
            engine.pause_recording(bridge)
        if i == 40:
            engine.pause_recording(bridge, False)
        fa.sendto(rtp(i, 160 * i, 0x90), (HOST, a.port))
        time.sleep(0.02)
    engine.stop_recording(bridge)
    elapsed = time.monotonic() - start
    done = wait_for(lambda: [e for e in engine.events() if e.kind == "recording_done"])[0]
    assert done.detail["duration_s"] < elapsed - 0.35  # the 0.5 s paused is not in the file


def test_processed_muted_party_is_not_heard(engine):
    legs = [engine.create_leg() for _ in range(3)]
    socks = [far_end() for _ in range(3)]
    for leg, sock in zip(legs, socks, strict=True):
        engine.set_remote(leg, HOST, sock.getsockname()[1])
    engine.conference(legs)
    engine.set_gain(legs[2], muted=True)
    for i in range(25):
        for leg, sock, v in zip(legs, socks, (1000, 2000, 4000), strict=True):
            payload = g711.ulaw_encode(np.full(160, v, np.int16))
            sock.sendto(rtp(i, 160 * i, 0x60 + v, payload=payload), (HOST, leg.port))
        time.sleep(0.02)
    heard_by_0 = [np.frombuffer(g711.ulaw_decode(p[12:]), np.int16) for p in collect(socks[0], 0.1)]
    assert any((f == quantized(quantized(2000))).all() for f in heard_by_0)  # B only, not the muted C
    assert not any((f == quantized(quantized(2000) + quantized(4000))).all() for f in heard_by_0)
    heard_by_2 = [np.frombuffer(g711.ulaw_decode(p[12:]), np.int16) for p in collect(socks[2], 0.1)]
    assert any((f == quantized(quantized(1000) + quantized(2000))).all() for f in heard_by_2)  # C still hears


def test_processed_play_file_resamples_any_wav(engine, tmp_path):
    path = tmp_path / "prompt.wav"
    t = np.arange(4800) / 48000
    stereo = np.stack([8000 * np.sin(2 * np.pi * 600 * t)] * 2, axis=1).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(stereo.tobytes())
    leg = engine.create_leg()
    sock = far_end()
    engine.set_remote(leg, HOST, sock.getsockname()[1])
    engine.play_file(leg, str(path))
    wait_for(lambda: [e for e in engine.events() if e.kind == "play_done"])
    audio = np.frombuffer(b"".join(g711.ulaw_decode(p[12:]) for p in collect(sock, 0.1)), np.int16)
    loud = audio[np.abs(audio) > 100].size
    assert 600 <= loud <= 820  # 100 ms of 8 kHz audio, from 48 kHz stereo
    spectrum = np.abs(np.fft.rfft(audio.astype(float)))
    assert abs(np.argmax(spectrum) * 8000 / len(audio) - 600) < 30


def test_processed_rtp_header_with_csrc_extension_and_padding(engine):
    a, b, fa, fb = pair(engine)
    engine.bridge(a, b)
    csrc = struct.pack("!I", 0xC5C5C5C5)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x10\x01\x00\x00"
    body = struct.pack("!BBH", 9, 0x8A, 640) + b"\x00\x00\x00\x04"  # 4 bytes of padding
    packet = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 1, 101 | 0x80, 5, 999, 0x77) + csrc + extension + body
    fa.sendto(packet, (HOST, a.port))
    digits = wait_for(lambda: [e for e in engine.events() if e.kind == "dtmf"])
    assert digits[0].detail["digit"] == "9" and digits[0].detail["duration_ms"] == 80
