"""`/v2/calls` and `/v2/recordings` on a whole softswitch (Services in this test's loop) with real calls:
SIPp calls through the switch to a SIPp callee on a trunk; the API lists them, records them (the WAV
downloaded holds the audio the caller sent), sends digits, plays a WAV fetched by URL, and hangs up."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import wave
from pathlib import Path

import aiohttp
import msgspec
import numpy as np
import pytest
import soundfile
from aiohttp import web
from helpers import answered_call, free_port, header, http_receiver, running_switch, stream_pcmu
from helpers import api_request as api
from interop.sipp import run_uac, uas
from standardwebhooks import Webhook

from media import g711
from softswitch.testmode import TestFarEnd

SWITCH = 14300
CALLER = {"port": 14310, "media_port": 14320, "control_port": 14312}
CALLEE = {"port": 14330, "media_port": 14340, "control_port": 14332}
SECOND = {"port": 14380, "media_port": 14390, "control_port": 14382}
TONE = (8000 * np.sin(2 * np.pi * 700 * np.arange(8000) / 8000)).astype(np.int16)


@pytest.fixture
async def switch(tmp_path):
    second = f"""[[trunks]]
name = "second"
address = "127.0.0.1:{SECOND["port"]}"
ping_interval_s = 0
[[routes]]
match = "^2002$"
to = "trunk:second"
"""
    far = TestFarEnd(answer_delay_s=0.3, talk_s=3.0, greeting_s=2.0, greeting_talk_s=6.0)
    async with running_switch(tmp_path, SWITCH, CALLEE["port"], "14350-14379", routes=second, far_end=far) as svc:
        yield svc


async def send_tone(port: int, from_port: int = CALLER["media_port"] + 8) -> None:
    """A phone sending a second of 700 Hz in real time (from a socket the engine latches onto)."""
    await stream_pcmu(port, TONE, from_port)


async def play_and_capture(switch, call, key: str, body: dict, seconds: float) -> list[bytes]:
    """POST /play to the callee and the RTP it then receives (the callee's leg pointed at a socket here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as far:
        far.bind(("127.0.0.1", CALLEE["media_port"] + 6))
        far.setblocking(False)
        switch.engine.set_remote(call.media.legs["b"], "127.0.0.1", CALLEE["media_port"] + 6)
        status, reply, _ = await api(switch, "POST", f"/v2/calls/{call.id}/play", key, json=body)
        assert status == 200, reply
        packets = []
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            with contextlib.suppress(TimeoutError):
                packets.append(await asyncio.wait_for(loop.sock_recv(far, 2048), 0.1))
    return packets


async def callee_says(port: int) -> None:
    await send_tone(port, CALLEE["media_port"] + 8)


async def until(predicate, seconds: float = 5.0):
    for _ in range(int(seconds / 0.05)):
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_api_live_call_listed_recorded_downloaded_and_hung_up(switch):
    key = switch.key("calls:read", "calls:write", "recordings:read", "recordings:write")
    with uas("uas_hold", calls=1, **CALLEE) as callee:
        caller = asyncio.create_task(asyncio.to_thread(run_uac, "uac_wait_bye", f"127.0.0.1:{SWITCH}", **CALLER))
        call = await answered_call(switch)
        status, page, headers = await api(switch, "GET", "/v2/calls?status=in-progress", key)
        assert status == 200 and "X-Request-Id" in headers
        assert [(c["id"], c["status"], c["direction"]) for c in page["data"]] == [(call.id, "in-progress", "inbound")]
        status, rec, _ = await api(switch, "POST", f"/v2/calls/{call.id}/record", key, json={"action": "start"})
        assert status == 201 and rec["status"] == "in-progress" and rec["channels"] == 2
        status, body, _ = await api(switch, "POST", f"/v2/calls/{call.id}/record", key, json={"action": "start"})
        assert status == 409 and body["error"]["code"] == "conflict"
        for action, state in (("pause", "paused"), ("resume", "in-progress")):
            status, body, _ = await api(switch, "POST", f"/v2/calls/{call.id}/record", key, json={"action": action})
            assert status == 200 and body["status"] == state
        await send_tone(call.media.legs["a"].port)
        status, _, _ = await api(switch, "POST", f"/v2/calls/{call.id}/record", key, json={"action": "stop"})
        assert status == 200

        async def completed():
            s, r, _ = await api(switch, "GET", f"/v2/recordings/{rec['id']}", key)
            return r if s == 200 and r["status"] == "completed" else None

        done = await until(completed)
        status, body, _ = await api(switch, "POST", f"/v2/calls/{call.id}/dtmf", key, json={"digits": "12#"})
        assert status == 200 and body["id"] == call.id
        status, body, _ = await api(switch, "POST", f"/v2/calls/{call.id}/hangup", key)
        assert status == 200
        await caller
        await asyncio.to_thread(callee.wait, 10)
    status, body, _ = await api(switch, "GET", f"/v2/calls/{call.id}", key)
    assert (body["status"], body["hangup_by"], body["from"].startswith("sip:")) == ("completed", "api", True)
    status, body, _ = await api(switch, "POST", f"/v2/calls/{call.id}/hangup", key)
    assert status == 409  # ended

    status, wav, headers = await api(switch, "GET", done["media_url"], key)
    assert status == 200 and headers["Content-Type"] == "audio/wav" and len(wav) == done["size"]
    with wave.open(io.BytesIO(wav)) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert np.sqrt(np.mean(audio[:, 0].astype(float) ** 2)) > 2000  # the caller's tone, on the left
    status, part, headers = await api_range(switch, done["media_url"], key, 44, 143)
    assert status == 206 and part == wav[44:144] and headers["Content-Range"] == f"bytes 44-143/{len(wav)}"

    status, page, _ = await api(switch, "GET", f"/v2/recordings?call_id={call.id}", key)
    assert [r["id"] for r in page["data"]] == [done["id"]]
    status, _, _ = await api(switch, "DELETE", f"/v2/recordings/{done['id']}", key)
    assert status == 200
    status, body, _ = await api(switch, "GET", f"/v2/recordings/{done['id']}", key)
    assert status == 404 and body["error"]["code"] == "not_found"
    assert list(Path(switch.cfg.media.recordings_dir).glob("*.wav")) == []  # the file went with the row


async def api_range(svc, path: str, key: str, first: int, last: int):
    headers = {"Authorization": f"Bearer {key}", "Range": f"bytes={first}-{last}"}
    async with svc.http.get(svc.url + path, headers=headers) as r:
        return r.status, await r.read(), r.headers.copy()


async def test_api_play_a_wav_by_url_to_the_callee(switch):
    key = switch.key("calls:write")
    blob = io.BytesIO()
    with wave.open(blob, "wb") as w:  # 16 kHz: the player converts
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.repeat(TONE[:4000], 2).astype("<i2").tobytes())

    async def hold(request: web.Request) -> web.Response:
        return web.Response(body=blob.getvalue(), content_type="audio/wav")

    web_app = web.Application()
    web_app.router.add_get("/hold.wav", hold)
    runner = web.AppRunner(web_app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        with uas("uas_hold", calls=1, **CALLEE) as callee:
            caller = asyncio.create_task(asyncio.to_thread(run_uac, "uac_wait_bye", f"127.0.0.1:{SWITCH}", **CALLER))
            call = await answered_call(switch)
            body = {"url": f"http://127.0.0.1:{port}/hold.wav", "to": "callee"}
            packets = await play_and_capture(switch, call, key, body, 0.8)
            status, _, _ = await api(switch, "POST", f"/v2/calls/{call.id}/stop-play", key, json={"to": "callee"})
            assert status == 200
            bad = {"url": f"http://127.0.0.1:{port}/missing.wav"}
            status, reply, _ = await api(switch, "POST", f"/v2/calls/{call.id}/play", key, json=bad)
            assert status == 422 and reply["error"]["param_errors"][0]["param"] == "url"
            call.hangup("system", 200, "test over")
            await caller
            await asyncio.to_thread(callee.wait, 10)
    finally:
        await runner.cleanup()
    audio = np.frombuffer(b"".join(g711.ulaw_decode(p[12:]) for p in packets if header(p)["pt"] == 0), "<i2")
    assert len(audio) >= 8 * 300 and np.sqrt(np.mean(audio.astype(float) ** 2)) > 2000  # the file's 700 Hz


async def test_api_calls_errors_scopes_filters_and_test_keys(switch):
    reader = switch.key("calls:read")
    with uas("uas_answer", calls=2, rtp_echo=True, **CALLEE) as callee:
        for _ in range(2):
            result = await asyncio.to_thread(run_uac, "uac_basic_rtp", f"127.0.0.1:{SWITCH}", **CALLER)
            assert result.ok, result.summary()
        await asyncio.to_thread(callee.wait, 10)
    status, page, _ = await api(switch, "GET", "/v2/calls?limit=1", reader)
    assert status == 200 and len(page["data"]) == 1 and page["has_more"] is True
    first = page["data"][0]
    status, page, _ = await api(switch, "GET", f"/v2/calls?limit=1&starting_after={first['id']}", reader)
    assert len(page["data"]) == 1 and page["data"][0]["id"] != first["id"] and page["has_more"] is False
    status, page, _ = await api(switch, "GET", "/v2/calls?status=completed&to=1000&direction=inbound", reader)
    assert len(page["data"]) == 2
    status, page, _ = await api(switch, "GET", "/v2/calls?created_after=2999-01-01T00:00:00Z", reader)
    assert page["data"] == []
    status, body, _ = await api(switch, "GET", "/v2/calls?status=talking", reader)
    assert status == 422 and body["error"]["param_errors"][0]["param"] == "status"
    status, body, _ = await api(switch, "GET", "/v2/calls?starting_after=call_nope", reader)
    assert status == 422 and body["error"]["param_errors"][0]["param"] == "starting_after"
    status, body, _ = await api(switch, "GET", "/v2/calls/call_nope", reader)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, _ = await api(switch, "POST", f"/v2/calls/{first['id']}/hangup", reader)
    assert status == 403 and body["error"]["code"] == "forbidden"
    writer = switch.key("calls:write")
    status, body, _ = await api(switch, "POST", f"/v2/calls/{first['id']}/dtmf", writer, json={"digits": "12x"})
    assert status == 422 and body["error"]["param_errors"][0]["param"] == "digits"
    status, page, _ = await api(switch, "GET", "/v2/calls", switch.key("calls:read", test=True))
    assert page["data"] == []  # test keys see test calls only


async def test_api_place_a_call_recorded_from_the_answer_then_hang_up(switch):
    key = switch.key("calls:read", "calls:write", "recordings:read")
    body = {"to": "1000", "from": "+15550001111", "record": "dual", "metadata": {"order": "42"}, "timeout": 20}
    body["status_callback"] = "https://app.example/status"
    with uas("uas_hold", calls=1, **CALLEE) as callee:
        status, call, headers = await api(switch, "POST", "/v2/calls", key, json=body)
        assert status == 201 and call["status"] == "queued" and headers["Location"] == f"/v2/calls/{call['id']}"
        assert call["metadata"] == {"order": "42"} and call["direction"] == "outbound"
        assert call["from"].startswith("sip:+15550001111@")

        async def in_progress():
            s, c, _ = await api(switch, "GET", f"/v2/calls/{call['id']}", key)
            return c if c["status"] == "in-progress" else None

        live = await until(in_progress)
        assert live["answered_at"] is not None
        status, page, _ = await api(switch, "GET", f"/v2/recordings?call_id={call['id']}", key)
        assert [r["status"] for r in page["data"]] == ["in-progress"]  # started as the call was answered
        rec_id = page["data"][0]["id"]
        await callee_says(switch.calls.calls[call["id"]].media.legs["b"].port)
        status, ended, _ = await api(switch, "POST", f"/v2/calls/{call['id']}/hangup", key)
        assert status == 200
        done = await asyncio.to_thread(callee.wait, 10)
    assert done.successful == 1, done.summary()  # the callee got our INVITE, answered, and got our BYE

    async def completed():
        s, r, _ = await api(switch, "GET", f"/v2/recordings/{rec_id}", key)
        return r if r["status"] == "completed" else None

    rec = await until(completed)
    status, wav, _ = await api(switch, "GET", rec["media_url"], key)
    with wave.open(io.BytesIO(wav)) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert np.sqrt(np.mean(audio[:, 1].astype(float) ** 2)) > 2000  # what the callee sent, on the right
    status, final, _ = await api(switch, "GET", f"/v2/calls/{call['id']}", key)
    assert (final["status"], final["hangup_by"], final["metadata"]) == ("completed", "api", {"order": "42"})


async def test_api_place_a_call_refusals(switch):
    key = switch.key("calls:write")
    status, body, _ = await api(switch, "POST", "/v2/calls", key, json={"to": "5555", "from": "alice"})
    assert status == 422 and body["error"]["param_errors"] == [{"param": "to", "reason": "no route matches 5555"}]
    status, body, _ = await api(switch, "POST", "/v2/calls", key, json={"to": "12 34", "from": "alice"})
    assert status == 422 and body["error"]["param_errors"][0]["param"] == "to"
    status, body, _ = await api(switch, "POST", "/v2/calls", key, json={"to": "1000", "from": "alice", "url": "x"})
    assert status == 422 and body["error"]["param_errors"][0]["param"] == "url"  # not built yet: unknown field
    status, body, _ = await api(
        switch, "POST", "/v2/calls", switch.key("calls:write", test=True), json={"to": "1", "from": "alice"}
    )
    assert status == 422  # E.164 or names: a one-digit number is neither
    status, body, _ = await api(switch, "POST", "/v2/calls", switch.key("calls:read"), json={"to": "1000", "from": "a"})
    assert status == 403
    assert switch.calls.calls == {}


async def test_api_place_a_call_and_connect_the_answered_party_to_another(switch):
    key = switch.key("calls:read", "calls:write")
    body = {"to": "1000", "from": "+15550001111", "connect": "2002"}
    with uas("uas_hold", calls=1, **CALLEE) as callee, uas("uas_hold", calls=1, **SECOND) as second:
        status, call, _ = await api(switch, "POST", "/v2/calls", key, json=body)
        assert status == 201

        async def connected():
            live = switch.calls.calls.get(call["id"])
            return live if live is not None and live.state == "answered" and not live.a.virtual else None

        live = await until(connected)
        assert live.media.negotiated["a"].remote_rtp[1] == SECOND["media_port"]  # media now to the second party
        status, _, _ = await api(switch, "POST", f"/v2/calls/{call['id']}/hangup", key)
        assert status == 200
        first, other = await asyncio.to_thread(callee.wait, 10), await asyncio.to_thread(second.wait, 10)
    assert first.successful == 1 and other.successful == 1, (first.summary(), other.summary())
    assert "From: <sip:1000@" in other.messages  # the second party sees who it is connected to
    status, final, _ = await api(switch, "GET", f"/v2/calls/{call['id']}", key)
    assert final["status"] == "completed"
    status, body, _ = await api(switch, "POST", "/v2/calls", key, json={"to": "1000", "from": "a", "connect": "7777"})
    assert status == 422 and body["error"]["param_errors"][0]["param"] == "connect"


async def test_api_blind_transfer_of_the_callee(switch):
    key = switch.key("calls:read", "calls:write")
    with uas("uas_hold", calls=1, **CALLEE) as callee, uas("uas_hold", calls=1, **SECOND) as second:
        caller = asyncio.create_task(asyncio.to_thread(run_uac, "uac_wait_bye", f"127.0.0.1:{SWITCH}", **CALLER))
        call = await answered_call(switch)
        status, body, _ = await api(switch, "POST", f"/v2/calls/{call.id}/transfer", key, json={"to": "7777"})
        assert status == 422 and body["error"]["param_errors"][0]["param"] == "to"
        status, body, _ = await api(switch, "POST", f"/v2/calls/{call.id}/transfer", key, json={"to": "2002"})
        assert status == 202
        first = await asyncio.to_thread(callee.wait, 10)  # the replaced callee got our BYE
        assert first.successful == 1, first.summary()

        async def moved():
            return call.media.negotiated["b"].remote_rtp[1] == SECOND["media_port"] and call.transfer is None

        await until(moved)
        status, _, _ = await api(switch, "POST", f"/v2/calls/{call.id}/hangup", key)
        assert status == 200
        result = await caller
        other = await asyncio.to_thread(second.wait, 10)
    assert result.ok, result.summary()  # the caller stayed in the call until our BYE
    assert other.successful == 1, other.summary()
    assert call.record.data["transfers"] == [{"by": "api", "side": "b", "to": "2002"}]


async def test_api_test_keys_place_calls_to_the_simulated_far_end_only(switch):
    test_key = switch.key("calls:read", "calls:write", test=True)
    live_key = switch.key("calls:read")
    events = []
    switch.bus.subscribe(events.append, types=["call.answered", "call.amd"])
    status, busy, _ = await api(switch, "POST", "/v2/calls", test_key, json={"to": "+15005550001", "from": "app"})
    assert status == 201
    status, human, _ = await api(switch, "POST", "/v2/calls", test_key, json={"to": "+15005550006", "from": "app"})
    body = {"to": "+15005550007", "from": "app", "machine_detection": "detect_beep"}
    status, machine, _ = await api(switch, "POST", "/v2/calls", test_key, json=body)

    async def final(call_id: str, states: tuple[str, ...]):
        s, c, _ = await api(switch, "GET", f"/v2/calls/{call_id}", test_key)
        return c if c["status"] in states else None

    assert (await until(lambda: final(busy["id"], ("busy",))))["hangup_code"] == 486
    await until(lambda: final(human["id"], ("in-progress",)))
    status, _, _ = await api(switch, "POST", f"/v2/calls/{human['id']}/hangup", test_key)
    assert status == 200
    done = await until(lambda: final(machine["id"], ("completed",)), seconds=12)  # the far end's BYE
    assert done["answered_by"] == "machine_end_beep" and done["hangup_by"] == "callee"
    amd = [e.data for e in events if e.type == "call.amd"]
    assert len(amd) == 1 and abs(amd[0]["beep_end_ms"] - 2900) < 400  # 2 s greeting, 0.4 s, 0.5 s beep
    status, page, _ = await api(switch, "GET", "/v2/calls", test_key)
    assert {c["id"] for c in page["data"]} == {busy["id"], human["id"], machine["id"]}
    status, page, _ = await api(switch, "GET", "/v2/calls", live_key)
    assert page["data"] == []  # test calls are not live data
    status, _, _ = await api(switch, "GET", f"/v2/calls/{human['id']}", live_key)
    assert status == 404
    assert switch.test_far_end.calls == 0


async def test_api_machine_detection_config_changes_this_calls_parameters_only(switch):
    key = switch.key("calls:read", "calls:write", test=True)
    events = []
    switch.bus.subscribe(events.append, types=["call.amd"])
    body = {"to": "+15005550007", "from": "app", "machine_detection": "detect"}
    quick = body | {"machine_detection_config": {"greeting_ms": 800, "max_words": 20}}
    status, call, _ = await api(switch, "POST", "/v2/calls", key, json=quick)
    assert status == 201
    status, other, _ = await api(switch, "POST", "/v2/calls", key, json=body)
    assert status == 201

    async def verdicts():
        return {e.call_id: e.data for e in events} if len(events) == 2 else None

    amd = await until(verdicts, seconds=12)
    # the 2 s greeting is a machine 800 ms after it starts; with the server's parameters, at its beep (2.4 s)
    assert (amd[call["id"]]["result"], amd[call["id"]]["reason"]) == ("machine", "long_greeting")
    assert amd[call["id"]]["decision_ms"] < 1500
    assert (amd[other["id"]]["result"], amd[other["id"]]["reason"]) == ("machine", "beep")
    assert amd[other["id"]]["decision_ms"] > 2000
    for c in (call, other):
        await api(switch, "POST", f"/v2/calls/{c['id']}/hangup", key)

    for config, param in (
        ({"greeting_ms": 0}, "machine_detection_config.greeting_ms"),
        ({"silence_threshold_dbm0": 3.5}, "machine_detection_config.silence_threshold_dbm0"),
        ({"max_words": True}, "machine_detection_config.max_words"),
        ({"greetings_ms": 900}, "machine_detection_config.greetings_ms"),
        ({"between_words_ms": 3_000_000_000}, "machine_detection_config.between_words_ms"),
        ({"word_ms": 100.5}, "machine_detection_config.word_ms"),
    ):
        status, err, _ = await api(switch, "POST", "/v2/calls", key, json=body | {"machine_detection_config": config})
        assert status == 422 and err["error"]["param_errors"][0]["param"] == param, err
    off = {"to": "+15005550007", "from": "app", "machine_detection_config": {"greeting_ms": 900}}
    status, err, _ = await api(switch, "POST", "/v2/calls", key, json=off)
    assert status == 422 and err["error"]["param_errors"] == [
        {"param": "machine_detection_config", "reason": "machine_detection is off"}
    ]


async def test_api_status_callback_gets_the_calls_events_signed_with_the_keys_secret(switch):
    key = switch.key("calls:read", "calls:write", test=True)
    status, secret, _ = await api(switch, "GET", "/v2/account/webhook-secret", key)
    assert status == 200 and secret["secret"].startswith("whsec_")
    assert (await api(switch, "GET", "/v2/account/webhook-secret", key))[1] == secret  # the same every time
    verifier = Webhook(secret["secret"])
    async with http_receiver() as (url, got):
        body = {"to": "+15005550006", "from": "app", "status_callback": url}
        status, human, _ = await api(switch, "POST", "/v2/calls", key, json=body)
        assert status == 201 and human["status_callback"] == url
        body = {
            "to": "+15005550001",
            "from": "app",
            "status_callback": url,
            "status_callback_events": ["call.completed"],
        }
        status, busy, _ = await api(switch, "POST", "/v2/calls", key, json=body)
        assert status == 201

        async def ended():
            done = [msgspec.json.decode(raw) for _, raw in got]
            return done if sum(e["type"] == "call.completed" for e in done) == 2 else None

        events = await until(ended, seconds=10)  # the far end hangs up after talk_s (3 s)
        for headers, raw in got:
            verifier.verify(raw, {k.lower(): v for k, v in headers.items()})  # raises on a bad signature
        human_events = [e for e in events if e["data"]["call_id"] == human["id"]]
        assert [e["type"] for e in human_events] == [
            "call.initiated",
            "call.ringing",
            "call.answered",
            "call.completed",
        ]
        assert [(e["type"], e["data"]["status"]) for e in events if e["data"]["call_id"] == busy["id"]] == [
            ("call.completed", "busy")
        ]
        status, page, _ = await api(switch, "GET", f"/v2/calls/{human['id']}/webhook-deliveries", key)
        assert status == 200 and len(page["data"]) == 4
        assert {(d["status"], d["attempts"][0]["status_code"]) for d in page["data"]} == {("delivered", 204)}
        assert {d["event_id"] for d in page["data"]} == {e["id"] for e in human_events}
    status, page, _ = await api(switch, "GET", "/v2/webhooks", switch.key("webhooks:write", test=True))
    assert page["data"] == []  # a call's own callback is not an account-wide endpoint
    body = {"to": "+15005550006", "from": "app", "status_callback": "ftp://example.com/x"}
    status, err, _ = await api(switch, "POST", "/v2/calls", key, json=body)
    assert status == 422 and err["error"]["param_errors"][0]["param"] == "status_callback"
    status, page, _ = await api(switch, "GET", "/v2/calls", key)
    assert len(page["data"]) == 2  # the refused one was never placed


def wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    blob = io.BytesIO()
    with wave.open(blob, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return blob.getvalue()


async def audio_ready(switch, key: str, audio_id: str) -> dict:
    async def check():
        _, audio, _ = await api(switch, "GET", f"/v2/audio-files/{audio_id}", key)
        return audio if audio["status"] != "pending" else None

    return await until(check)


async def test_api_audio_files_any_format_converted_once_played_by_id_downloaded_and_deleted(switch):
    key = switch.key("calls:read", "calls:write")
    blob = wav_bytes(np.repeat(TONE[:4000], 2), 16000)  # half a second at 16 kHz
    upload = {"data": blob, "headers": {"Content-Type": "audio/wav"}}
    status, wav_file, headers = await api(switch, "POST", "/v2/audio-files?name=hold", key, **upload)
    assert status == 201 and (wav_file["name"], wav_file["size"], wav_file["status"]) == ("hold", len(blob), "pending")
    assert headers["Location"] == f"/v2/audio-files/{wav_file['id']}"
    ready = await audio_ready(switch, key, wav_file["id"])
    assert (ready["status"], ready["format"], ready["duration_s"]) == ("ready", "WAV", 0.5)
    mp3 = io.BytesIO()  # an MP3 at 44.1 kHz stereo, sent as a multipart form's file part
    t = np.arange(44100) / 44100
    soundfile.write(mp3, np.stack([0.3 * np.sin(2 * np.pi * 700 * t)] * 2, axis=1), 44100, format="MP3")
    form = aiohttp.FormData()
    form.add_field("file", mp3.getvalue(), filename="prompt.mp3", content_type="audio/mpeg")
    status, audio, _ = await api(switch, "POST", "/v2/audio-files?name=prompt", key, data=form)
    assert status == 201
    audio = await audio_ready(switch, key, audio["id"])
    assert (audio["status"], audio["format"]) == ("ready", "MP3") and abs(audio["duration_s"] - 1.0) < 0.1
    status, bad, _ = await api(switch, "POST", "/v2/audio-files", key, data=b"not audio at all")
    assert status == 201
    bad = await audio_ready(switch, key, bad["id"])
    assert bad["status"] == "error" and "not a WAV, FLAC, OGG or MP3" in bad["error"]
    status, wav, headers = await api(switch, "GET", f"/v2/audio-files/{audio['id']}.wav", key)
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
    status, page, _ = await api(switch, "GET", "/v2/audio-files", key)
    assert [a["id"] for a in page["data"]] == [bad["id"], audio["id"], wav_file["id"]]
    status, _, _ = await api(switch, "GET", f"/v2/audio-files/{audio['id']}", switch.key("calls:read", test=True))
    assert status == 404  # test keys do not see live uploads
    with uas("uas_hold", calls=1, **CALLEE) as callee:
        caller = asyncio.create_task(asyncio.to_thread(run_uac, "uac_wait_bye", f"127.0.0.1:{SWITCH}", **CALLER))
        call = await answered_call(switch)
        packets = await play_and_capture(switch, call, key, {"audio_id": audio["id"], "to": "callee"}, 0.6)
        both = {"audio_id": audio["id"], "url": "http://127.0.0.1:1/x.wav"}
        status, reply, _ = await api(switch, "POST", f"/v2/calls/{call.id}/play", key, json=both)
        assert status == 422 and reply["error"]["param_errors"][0]["param"] == "url"
        call.hangup("system", 200, "test over")
        await caller
        await asyncio.to_thread(callee.wait, 10)
    audio_rx = np.frombuffer(b"".join(g711.ulaw_decode(p[12:]) for p in packets if header(p)["pt"] == 0), "<i2")
    assert np.sqrt(np.mean(audio_rx.astype(float) ** 2)) > 1500  # the MP3's 700 Hz, converted once
    status, _, _ = await api(switch, "DELETE", f"/v2/audio-files/{audio['id']}", key)
    assert status == 200
    status, _, _ = await api(switch, "GET", f"/v2/audio-files/{audio['id']}", key)
    assert status == 404
