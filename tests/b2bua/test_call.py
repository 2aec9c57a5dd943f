"""Call control in-process (the switch's own objects in this test's event loop), with SIPp on both sides:
what needs time is driven by firing the call's timers explicitly instead of waiting for them."""

from __future__ import annotations

import asyncio
import socket
import struct
import wave

import dtmf_signals as sig
import numpy as np
import pytest
from helpers import answered_call, header, rtp, stream_pcmu, trunk_switch_config
from interop.sipp import run_uac, uas

from media.dtmf import detect, tones
from media.g711 import ulaw_decode, ulaw_encode
from softswitch.b2bua.recording import RecordingError
from softswitch.b2bua.session_timer import SessionTimer
from softswitch.config import parse
from softswitch.server import Services

SWITCH = 14800
CALLER = {"port": 14810, "media_port": 14820, "control_port": 14812}
CALLEE = {"port": 14830, "media_port": 14840, "control_port": 14832}


def config(tmp_path, inband_dtmf: str = "auto") -> str:
    return trunk_switch_config(
        tmp_path,
        switch=SWITCH,
        callee=CALLEE["port"],
        rtp_ports="14900-14999",
        api_port=14801,
        head=f'[calls]\ninband_dtmf = "{inband_dtmf}"\n[amd]\nbeep_gap_ms = 300',
        routes="""[[routes]]
match = "^2000$"
to = "trunk:carrier"
machine_detection = "enable"
[[routes]]
match = "^2001$"
to = "trunk:carrier"
machine_detection = "detect_message_end"
amd = { end_silence_ms = 2500 }
""",
    )


@pytest.fixture
async def services(tmp_path):
    svc = Services(parse(config(tmp_path)))
    await svc.start()
    yield svc
    await svc.close()


@pytest.fixture
async def listening(tmp_path):
    """A switch that listens for key tones on every side, even those that negotiated telephone-event."""
    svc = Services(parse(config(tmp_path, inband_dtmf="always")))
    await svc.start()
    yield svc
    await svc.close()


async def ended(svc: Services, call_id: str):
    for _ in range(200):
        record = svc.store.get_call(call_id)
        if record is not None and record.ended_at:
            return record
        await asyncio.sleep(0.02)
    raise AssertionError("the call did not end")


async def test_call_we_refresh_the_session_of_a_peer_without_timer_support(services):
    with uas("uas_hold", calls=1, **CALLEE) as callee:
        caller = asyncio.create_task(asyncio.to_thread(run_uac, "uac_wait_bye", f"127.0.0.1:{SWITCH}", **CALLER))
        call = await answered_call(services)
        # neither SIPp side supports RFC 4028: we are the refresher on both sides, at half the interval
        assert call.a.st == SessionTimer(1800, we_refresh=True) and call.b.st == SessionTimer(1800, we_refresh=True)
        assert call.timers["st_b"].when() - services.calls.now() == pytest.approx(900, abs=1)
        call.timers.pop("st_b").cancel()
        call._session_due("b")  # the refresh is due now: a re-INVITE with the same SDP to the callee
        for _ in range(100):
            if "st_b" in call.timers:
                break
            await asyncio.sleep(0.02)
        assert "st_b" in call.timers and call.state == "answered"  # the 200 came back: re-armed
        call.hangup("system", 200, "test over")
        result = await caller
        done = await asyncio.to_thread(callee.wait, 10)
    assert result.ok, result.summary()
    assert done.successful == 1, done.summary()
    assert "CSeq: " in done.messages and done.messages.count("INVITE sip:") >= 2  # the refresh reached it


async def test_call_ends_when_the_peer_refresher_stays_silent(services):
    with uas("uas_hold", calls=1, **CALLEE) as callee:
        caller = asyncio.create_task(asyncio.to_thread(run_uac, "uac_wait_bye", f"127.0.0.1:{SWITCH}", **CALLER))
        call = await answered_call(services)
        call.a.st = SessionTimer(90, we_refresh=False)  # as if the caller had taken the refresher role
        call.timers.pop("st_a").cancel()
        call._session_due("a")  # interval - min(32, interval/3) passed without its refresh
        record = await ended(services, call.id)
        result = await caller
        done = await asyncio.to_thread(callee.wait, 10)
    assert (record.hangup_by, record.hangup_reason, record.status) == ("system", "session timer expired", "completed")
    assert result.ok, result.summary()  # both sides got our BYE
    assert done.successful == 1, done.summary()


async def test_call_events_are_published_in_order_on_the_bus(services):
    seen = []
    services.bus.subscribe(lambda ev: seen.append((ev.type, ev.call_id)), types=["call.*"])
    with uas("uas_answer", calls=1, rtp_echo=True, **CALLEE) as callee:
        result = await asyncio.to_thread(run_uac, "uac_basic_rtp", f"127.0.0.1:{SWITCH}", **CALLER)
        await asyncio.to_thread(callee.wait, 10)
    assert result.ok, result.summary()
    types = [t for t, _ in seen]
    assert types == ["call.initiated", "call.ringing", "call.answered", "call.completed"]
    assert len({c for _, c in seen}) == 1 and seen[0][1].startswith("call_")


async def test_call_rfc4733_digits_from_the_caller_become_call_dtmf_events(services):
    seen = []
    services.bus.subscribe(seen.append, types=["call.dtmf"])
    with uas("uas_hold", calls=1, **CALLEE) as callee:
        caller = asyncio.create_task(asyncio.to_thread(run_uac, "uac_wait_bye", f"127.0.0.1:{SWITCH}", **CALLER))
        call = await answered_call(services)
        leg = call.media.legs["a"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind(("127.0.0.1", CALLER["media_port"] + 4))
            for seq, (event, end, duration) in enumerate([(9, False, 160), (9, False, 320), (9, True, 640)]):
                payload = struct.pack("!BBH", event, 0x80 | 10 if end else 10, duration)
                phone.sendto(rtp(100 + seq, 8000, 0x4242, pt=101, payload=payload), ("127.0.0.1", leg.port))
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.02)
        call.hangup("system", 200, "test over")
        await caller
        await asyncio.to_thread(callee.wait, 10)
    assert len(seen) == 1
    (ev,) = seen
    assert ev.call_id == call.id
    assert (ev.data["digit"], ev.data["source"], ev.data["from"]) == ("9", "rfc4733", "caller")
    assert ev.data["duration_ms"] == 80  # 640 timestamp units at 8 kHz


def te_packet(seq: int, ts: int, event: int, end: bool, duration: int) -> bytes:
    return rtp(seq, ts, 0x4343, pt=101, payload=struct.pack("!BBH", event, 0x80 | 10 if end else 10, duration))


async def press_keys(port: int, digits: str, *, tones_too: bool, events_too: bool) -> None:
    """A phone on the caller's side pressing keys for 100 ms each, 100 ms apart, in real time: the tones
    in its PCMU audio and/or each press as RFC 4733 events (end packet sent three times)."""
    pcm = np.frombuffer(tones(digits, on_ms=100, off_ms=100), "<i2")
    pcm = np.concatenate([np.zeros(800, np.int16), pcm, np.zeros(1600, np.int16)])
    silence = np.zeros_like(pcm)
    audio = ulaw_encode(pcm if tones_too else silence)
    loop = asyncio.get_running_loop()
    seq, start = 0, loop.time()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", CALLER["media_port"] + 4))
        for i in range(len(pcm) // 160):
            await asyncio.sleep(max(0.0, start + i * 0.02 - loop.time()))
            phone.sendto(rtp(seq, 160 * i, 0x4343, payload=audio[i * 160 : (i + 1) * 160]), ("127.0.0.1", port))
            seq += 1
            press, at = divmod(i - 5, 10)  # 100 ms lead, then a key every 200 ms (5 frames on, 5 off)
            if events_too and 0 <= press < len(digits) and at < 5:
                event = "0123456789*#ABCD".index(digits[press])
                ts = 160 * (5 + 10 * press)
                for _ in range(3 if at == 4 else 1):
                    phone.sendto(te_packet(seq, ts, event, at == 4, 160 * (at + 1)), ("127.0.0.1", port))
                    seq += 1


@pytest.mark.parametrize("tones_too,events_too", [(True, False), (True, True)], ids=["inband", "both"])
async def test_call_inband_digits_from_the_caller_become_one_call_dtmf_per_press(listening, tones_too, events_too):
    seen = []
    listening.bus.subscribe(seen.append, types=["call.dtmf"])
    with uas("uas_hold", calls=1, **CALLEE) as callee:
        caller = asyncio.create_task(asyncio.to_thread(run_uac, "uac_wait_bye", f"127.0.0.1:{SWITCH}", **CALLER))
        call = await answered_call(listening)
        assert call.media.listening == {"a": True, "b": True}
        await press_keys(call.media.legs["a"].port, "47#7", tones_too=tones_too, events_too=events_too)
        for _ in range(50):
            if len(seen) >= 4:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # a duplicate would come within this
        call.hangup("system", 200, "test over")
        await caller
        await asyncio.to_thread(callee.wait, 10)
    assert [(e.data["digit"], e.data["from"]) for e in seen] == [(d, "caller") for d in "47#7"]
    assert {e.data["source"] for e in seen} <= ({"inband", "rfc4733"} if events_too else {"inband"})
    assert all(90 <= e.data["duration_ms"] <= 110 for e in seen)


async def far_end_says(port: int, pcm: np.ndarray, bind_port: int = CALLEE["media_port"] + 8) -> None:
    """A side sending `pcm` (8 kHz PCM16) as PCMU in real time from another socket of its host, as a far
    end whose media comes from elsewhere than its SDP said (the engine latches onto it)."""
    await stream_pcmu(port, pcm, bind_port)


async def caller_says(port: int, pcm: np.ndarray) -> None:
    await far_end_says(port, pcm, CALLER["media_port"] + 8)


TONE_1S = (8000 * np.sin(2 * np.pi * 700 * np.arange(8000) / 8000)).astype(np.int16)


def beep(ms: int, hz: float) -> np.ndarray:
    t = np.arange(ms * 8) / 8000
    return (6000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@pytest.mark.parametrize(
    "number,says,answered_by",
    [
        ("2000", "Hello?", "human"),
        ("2001", "Hi, this is Sam, leave a message.", "machine_end_beep"),
    ],
    ids=["enable-human", "message-end-machine"],
)
async def test_call_machine_detection_holds_call_answered_for_the_verdict(services, number, says, answered_by):
    seen = []
    services.bus.subscribe(seen.append, types=["call.answered", "call.amd"])
    speech = sig.pcm(sig.speech(says, rms_dbm0=-16.0))
    pcm = [np.zeros(4000, np.int16), speech]
    if answered_by == "machine_end_beep":
        pcm += [np.zeros(2400, np.int16), beep(500, 1000.0)]
    pcm = np.concatenate([*pcm, np.zeros(8000 * 3, np.int16)])
    with uas("uas_hold", calls=1, **CALLEE) as callee:
        caller = asyncio.create_task(
            asyncio.to_thread(run_uac, "uac_wait_bye", f"127.0.0.1:{SWITCH}", service=number, **CALLER)
        )
        call = await answered_call(services)
        assert seen == []  # answered, but call.answered waits for the detector
        assert call.amd.params.beep_gap_ms == 300  # [amd] from the config
        assert call.amd.params.end_silence_ms == (2500 if number == "2001" else 2000)  # the route's, over it
        await far_end_says(call.media.legs["b"].port, pcm)
        for _ in range(50):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.05)
        call.hangup("system", 200, "test over")
        await caller
        await asyncio.to_thread(callee.wait, 10)
    assert [e.type for e in seen] == ["call.answered", "call.amd"]
    answered, amd = seen
    assert answered.data["answered_by"] == answered_by == amd.data["answered_by"]
    loud = np.flatnonzero(np.abs(speech.astype(float)) > 300)  # espeak-ng pads its speech with silence
    speech_end_ms = 500 + loud[-1] / 8
    if answered_by == "human":  # a short greeting, then a second of silence
        assert amd.data["result"] == "human" and amd.data["beep_end_ms"] is None
        assert speech_end_ms + 900 <= amd.data["decision_ms"] <= speech_end_ms + 1400
    else:  # the beep decides at once; its end is reported
        beep_end_ms = 500 + len(speech) / 8 + 300 + 500
        assert amd.data["result"] == "machine" and amd.data["reason"] == "beep"
        assert abs(amd.data["beep_end_ms"] - beep_end_ms) <= 150


@pytest.mark.parametrize("mode", ["dual", "mono"])
async def test_call_recording_started_on_a_live_call_holds_the_caller_audio(services, mode):
    seen = []
    services.bus.subscribe(seen.append, types=["recording.*"])
    tone = (8000 * np.sin(2 * np.pi * 700 * np.arange(8000) / 8000)).astype(np.int16)
    with uas("uas_hold", calls=1, **CALLEE) as callee:
        caller = asyncio.create_task(asyncio.to_thread(run_uac, "uac_wait_bye", f"127.0.0.1:{SWITCH}", **CALLER))
        call = await answered_call(services)
        rec = services.calls.recordings.start(call, mode)
        with pytest.raises(RecordingError):
            services.calls.recordings.start(call, mode)  # one at a time
        await caller_says(call.media.legs["a"].port, tone)
        services.calls.recordings.stop(call)
        for _ in range(100):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.02)
        call.hangup("system", 200, "test over")
        await caller
        await asyncio.to_thread(callee.wait, 10)
    assert [e.type for e in seen] == ["recording.started", "recording.ready"]
    ready = seen[1].data
    assert ready["recording_id"] == rec.id and ready["status"] == "completed" and ready["call_id"] == call.id
    with wave.open(ready["path"]) as w:
        assert (w.getnchannels(), w.getframerate()) == ((2 if mode == "dual" else 1), 8000)
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
    assert abs(ready["duration_s"] - len(audio) / 8000) < 0.05 and ready["size"] > 0
    caller_rms = float(np.sqrt(np.mean(audio[:, 0].astype(float) ** 2)))
    assert caller_rms > 2000  # the 700 Hz tone the caller sent (about 5,600 RMS over its second)
    if mode == "dual":
        assert float(np.sqrt(np.mean(audio[:, 1].astype(float) ** 2))) < 100  # the callee said nothing


async def test_call_placed_by_the_api_reaches_the_callee_is_answered_recorded_and_hung_up(services):
    seen = []
    services.bus.subscribe(lambda ev: seen.append(ev.type), types=["call.*", "recording.*"])
    with uas("uas_hold", calls=1, **CALLEE) as callee:
        call = services.calls.originate("1000", "+15550001111")
        assert call.a.virtual and call.record.direction == "outbound" and call.record.legs[0].role == "api"
        answered = await answered_call(services)
        assert answered is call and call.media.mode == "relay"
        rec = services.calls.recordings.start(call, "mono")  # the parked side's leg keeps the bridge usable
        await far_end_says(call.media.legs["b"].port, TONE_1S)
        services.calls.recordings.stop(call)
        for _ in range(100):
            if "recording.ready" in seen:
                break
            await asyncio.sleep(0.02)
        call.hangup("api", 200, "done")
        done = await asyncio.to_thread(callee.wait, 10)
    assert done.successful == 1, done.summary()  # it got our BYE and answered it
    assert "From: <sip:+15550001111@" in done.messages
    assert seen == [
        "call.initiated",
        "call.ringing",
        "call.answered",
        "recording.started",
        "recording.ready",
        "call.completed",
    ]
    with wave.open(rec.path) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert float(np.sqrt(np.mean(audio.astype(float) ** 2))) > 2000  # what the callee said
    record = await ended(services, call.id)
    assert (record.status, record.hangup_by) == ("completed", "api")


async def test_call_placed_by_the_api_without_a_route_or_with_a_bad_party_is_refused(services):
    with pytest.raises(LookupError):
        services.calls.originate("5555", "api")
    with pytest.raises(ValueError, match="from"):
        services.calls.originate("1000", "a b\r\nVia: x")
    assert services.calls.calls == {}


async def _packets(sock: socket.socket, seconds: float) -> list[bytes]:
    loop = asyncio.get_running_loop()
    out, deadline = [], loop.time() + seconds
    sock.setblocking(False)
    while loop.time() < deadline:
        try:
            out.append(await asyncio.wait_for(loop.sock_recv(sock, 2048), max(deadline - loop.time(), 0.01)))
        except TimeoutError:
            break
    return out


@pytest.mark.parametrize("method", ["rfc4733", "inband"])
async def test_call_send_dtmf_reaches_the_far_end(services, method):
    with uas("uas_hold", calls=1, **CALLEE) as callee:
        caller = asyncio.create_task(asyncio.to_thread(run_uac, "uac_wait_bye", f"127.0.0.1:{SWITCH}", **CALLER))
        call = await answered_call(services)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as far:
            far.bind(("127.0.0.1", CALLEE["media_port"] + 6))
            services.engine.set_remote(call.media.legs["b"], "127.0.0.1", CALLEE["media_port"] + 6)
            assert call.send_dtmf("b", "1#", method=method) == method
            packets = await _packets(far, 1.0)
        call.hangup("system", 200, "test over")
        await caller
        await asyncio.to_thread(callee.wait, 10)
    if method == "rfc4733":  # events 1 and 11 (#) on the callee's telephone-event payload type (101)
        events = {p[12] for p in packets if header(p)["pt"] == 101}
        assert events == {1, 11}
    else:  # PCMU audio whose tones our own detector hears as the two keys
        audio = b"".join(ulaw_decode(p[12:]) for p in packets if header(p)["pt"] == 0)
        assert [e.digit for e in detect(np.frombuffer(audio, "<i2"))] == ["1", "#"]


def test_call_tones_are_the_q23_pairs():
    pcm = np.frombuffer(tones("5D", on_ms=80, off_ms=50), "<i2")
    assert len(pcm) == 2 * (640 + 400)
    assert [e.digit for e in detect(pcm)] == ["5", "D"]
    with pytest.raises(ValueError):
        tones("5x")


async def test_call_failed_over_holds_a_slot_on_the_trunk_that_answered_only(tmp_path):
    dead = {"port": 14850, "control_port": 14852}
    routes = f"""[[trunks]]
name = "dead"
address = "127.0.0.1:{dead["port"]}"
max_calls = 1
ping_interval_s = 0
[[routes]]
match = "^3000$"
to = "trunk:dead"
[[routes]]
match = "^3000$"
to = "trunk:carrier"
"""
    cfg = config(tmp_path).replace('[[trunks]]\nname = "carrier"', '[[trunks]]\nname = "carrier"\nmax_calls = 5')
    svc = Services(parse(cfg + routes))
    await svc.start()
    try:
        with uas("uas_503", calls=1, **dead) as first, uas("uas_hold", calls=1, **CALLEE) as second:
            call = svc.calls.originate("3000", "+15550001111")
            answered = await answered_call(svc)
            assert answered is call
            assert [(leg.role, leg.status_code) for leg in call.record.legs] == [
                ("api", None),
                ("outbound", 503),
                ("outbound", 200),
            ]
            policy = svc.calls.policy
            # the 503 trunk gave its slot back when the call moved on; the answering trunk holds one
            assert (policy.active(("trunk", "dead")), policy.active(("trunk", "carrier"))) == (0, 1)
            call.hangup("api", 200, "done")
            first.stop()
            await asyncio.to_thread(second.wait, 10)
        await ended(svc, call.id)
        assert (policy.active(("trunk", "dead")), policy.active(("trunk", "carrier"))) == (0, 0)
    finally:
        await svc.close()
