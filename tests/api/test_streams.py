"""Media streams from real calls (SIPp caller -> softswitch -> SIPp callee, audio from sockets here) to a
WebSocket server in the test: Twilio's message sequence, fields and types, the audio itself, audio sent
back reaching the caller, marks and clear, a subscriber killed mid-call, and the listen-only endpoint."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import time

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from helpers import HOST, answered_call, free_port, http_receiver, make_cert, rtp, running_switch, stream_pcmu
from helpers import api_request as api
from interop.sipp import run_uac, uas

from media import g711

SWITCH = 14400
CALLER = {"port": 14410, "media_port": 14420, "control_port": 14412}
CALLEE = {"port": 14430, "media_port": 14440, "control_port": 14432}


def tone(freq: float, seconds: float, seed: int) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    noise = np.random.default_rng(seed).normal(0, 200, t.size)
    return (8000 * np.sin(2 * np.pi * freq * t) + noise).astype(np.int16)


def ulaw(pcm: np.ndarray) -> bytes:
    """As the engine re-encodes it: mu-law's negative zero (0x7F) comes back as 0xFF."""
    return g711.ulaw_encode(pcm).replace(b"\x7f", b"\xff")


@pytest.fixture
async def switch(tmp_path):
    async with running_switch(tmp_path, SWITCH, CALLEE["port"], "14450-14499") as svc:
        yield svc


class Subscriber:
    """A WebSocket server: records every message; `send` talks back on the open connection."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.raw: list[str] = []
        self.ws: web.WebSocketResponse | None = None
        self.connections = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        self.connections += 1
        async for msg in ws:
            self.raw.append(msg.data)
            self.messages.append(json.loads(msg.data))
        return ws

    async def send(self, message: dict | str) -> None:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    def of(self, event: str) -> list[dict]:
        return [m for m in self.messages if m["event"] == event]

    async def wait(self, predicate, seconds: float = 5.0):
        deadline = time.monotonic() + seconds
        while not (value := predicate()):
            assert time.monotonic() < deadline, [m["event"] for m in self.messages][-20:]
            await asyncio.sleep(0.02)
        return value


@contextlib.asynccontextmanager
async def subscriber(tls: ssl.SSLContext | None = None):
    """A Subscriber on ws://, or wss:// with `tls` (its server context)."""
    sub = Subscriber()
    app = web.Application()
    app.router.add_get("/ws", sub.handle)
    sub.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await sub.runner.setup()
    port = free_port()
    await web.TCPSite(sub.runner, HOST, port, ssl_context=tls).start()
    sub.url = f"{'wss' if tls else 'ws'}://{HOST}:{port}/ws"
    try:
        yield sub
    finally:
        await sub.runner.cleanup()


@contextlib.asynccontextmanager
async def live_call(switch):
    """A real call: SIPp caller and callee, answered; hung up (through the API) at the end."""
    with uas("uas_hold", calls=1, **CALLEE):
        caller = asyncio.create_task(asyncio.to_thread(run_uac, "uac_wait_bye", f"{HOST}:{SWITCH}", **CALLER))
        call = await answered_call(switch)
        try:
            yield call
        finally:
            if call.state != "ended":
                await api(switch, "POST", f"/v2/calls/{call.id}/hangup", switch.key("calls:write"))
            await caller


def media_message(sid: str, audio: bytes) -> dict:
    """What a bot sends to be played: Twilio's inbound `media` message."""
    return {"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(audio).decode()}}


def media_of(sub: Subscriber, track: str) -> bytes:
    return b"".join(base64.b64decode(m["media"]["payload"]) for m in sub.of("media") if m["media"]["track"] == track)


async def test_stream_both_tracks_of_a_real_call_in_twilios_format_then_stopped(switch):
    key = switch.key("calls:read", "calls:write", "webhooks:write")
    events = []
    switch.bus.subscribe(events.append, types=["stream.started", "stream.stopped"])
    async with subscriber() as sub, http_receiver() as (hook, delivered), live_call(switch) as call:
        body = {"url": hook, "events": ["stream.started", "stream.stopped"]}
        assert (await api(switch, "POST", "/v2/webhooks", key, json=body))[0] == 201
        body = {"url": sub.url, "track": "both", "parameters": {"lang": "en"}}
        status, stream, headers = await api(switch, "POST", f"/v2/calls/{call.id}/streams", key, json=body)
        assert status == 201 and stream["id"].startswith("MZ") and len(stream["id"]) == 34, stream
        assert headers["Location"] == f"/v2/calls/{call.id}/streams/{stream['id']}"
        await sub.wait(lambda: sub.of("start"))
        caller_says, callee_says = tone(700, 1.0, 1), tone(1100, 1.0, 2)
        await asyncio.gather(
            stream_pcmu(call.media.legs["a"].port, caller_says, CALLER["media_port"] + 8),
            stream_pcmu(call.media.legs["b"].port, callee_says, CALLEE["media_port"] + 8),
        )
        call.on_dtmf("a", "5", "rfc4733", 100, time.monotonic_ns())  # the caller presses 5
        await asyncio.sleep(0.2)
        status, stopped, _ = await api(switch, "DELETE", f"/v2/calls/{call.id}/streams/{stream['id']}", key)
        assert status == 200 and stopped["status"] == "stopped"
        await sub.wait(lambda: sub.of("stop"))
        status, page, _ = await api(switch, "GET", f"/v2/calls/{call.id}", key)
        assert page["status"] == "in-progress"  # the call goes on without its stream
        await sub.wait(lambda: len(delivered) == 2)  # as webhooks too
    sid = stream["id"]
    delivered = [json.loads(body) for _, body in delivered]
    assert [(d["type"], d["data"]["stream_id"], d["data"]["call_id"]) for d in delivered] == [
        ("stream.started", sid, call.id),
        ("stream.stopped", sid, call.id),
    ]
    connected, start, *rest = sub.messages
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start == {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": sid,
        "start": {
            "accountSid": start["start"]["accountSid"],
            "streamSid": sid,
            "callSid": call.id,
            "tracks": ["inbound", "outbound"],
            "customParameters": {"lang": "en"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    assert [m["sequenceNumber"] for m in rest] == [str(n) for n in range(2, len(rest) + 2)]
    assert rest[-1] == {
        "event": "stop",
        "sequenceNumber": str(len(rest) + 1),
        "streamSid": sid,
        "stop": {"accountSid": start["start"]["accountSid"], "callSid": call.id},
    }
    [dtmf] = sub.of("dtmf")
    assert dtmf == {"event": "dtmf", "streamSid": sid, "sequenceNumber": dtmf["sequenceNumber"],
                    "dtmf": {"track": "inbound_track", "digit": "5"}}  # fmt: skip
    for track in ("inbound", "outbound"):
        media = [m for m in sub.of("media") if m["media"]["track"] == track]
        assert all(set(m) == {"event", "sequenceNumber", "media", "streamSid"} for m in media)
        assert all(isinstance(v, str) for m in media for v in m["media"].values())
        assert [m["media"]["chunk"] for m in media] == [str(n) for n in range(1, len(media) + 1)]
        stamps = [int(m["media"]["timestamp"]) for m in media]
        assert stamps == sorted(stamps) and np.median(np.diff(stamps)) == 20
        assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in media)
    # the audio itself: what the caller said is inbound, what it heard (the callee) outbound, byte-exact
    assert media_of(sub, "inbound") == g711.ulaw_encode(caller_says)
    assert media_of(sub, "outbound") == g711.ulaw_encode(callee_says)
    assert [(e.type, e.data["stream_id"]) for e in events] == [("stream.started", sid), ("stream.stopped", sid)]
    assert events[1].data["reason"] == "stopped through the API" and events[1].data["messages_dropped"] == 0


def tls_server(directory, name: str) -> tuple[ssl.SSLContext, str]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and the certificate's file."""
    cert, key = make_cert(directory, name)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


async def test_stream_over_wss_to_a_subscriber_whose_ca_is_in_webhooks_ca_file(tmp_path):
    trusted, trusted_cert = tls_server(tmp_path, "trusted")
    stranger, _ = tls_server(tmp_path, "stranger")  # a certificate nothing names: never connected to
    ca_line = f'ca_file = "{trusted_cert}"\n'
    async with (
        running_switch(tmp_path, SWITCH, CALLEE["port"], "14450-14499", head=ca_line) as switch,
        subscriber(trusted) as sub,
        subscriber(stranger) as rogue,
        live_call(switch) as call,
    ):
        key = switch.key("calls:read", "calls:write")
        for target in (sub, rogue):
            status, _, _ = await api(switch, "POST", f"/v2/calls/{call.id}/streams", key, json={"url": target.url})
            assert status == 201
        await sub.wait(lambda: sub.of("start"))
        said = tone(700, 0.5, 3)
        await stream_pcmu(call.media.legs["a"].port, said, CALLER["media_port"] + 8)
        await sub.wait(lambda: len(media_of(sub, "inbound")) >= len(said))
    assert sub.url.startswith("wss://") and sub.connections == 1
    assert media_of(sub, "inbound")[: len(said)] == ulaw(said)  # the caller's audio, byte-exact, over TLS
    assert rogue.connections == 0  # its certificate failed verification: no handshake completed


async def test_bidirectional_stream_plays_into_the_call_with_marks_clear_and_survives_its_subscriber(switch):
    key = switch.key("calls:read", "calls:write")
    async with subscriber() as sub, live_call(switch) as call:
        phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        phone.bind((HOST, CALLER["media_port"] + 8))
        phone.setblocking(False)
        loop = asyncio.get_running_loop()
        for i in range(5):  # the caller's phone speaks first, so the engine latches onto it
            phone.sendto(rtp(i, 160 * i, 0x77), (HOST, call.media.legs["a"].port))
            await asyncio.sleep(0.02)
        body = {"url": sub.url, "bidirectional": True}
        status, stream, _ = await api(switch, "POST", f"/v2/calls/{call.id}/streams", key, json=body)
        assert status == 201 and stream["bidirectional"] is True
        await sub.wait(lambda: sub.of("start"))
        bot = ulaw(tone(500, 1.0, 3))
        sent_at = time.monotonic()
        for i in range(0, len(bot), 160):  # a burst, faster than real time: paced by the softswitch
            await sub.send(media_message(stream["id"], bot[i : i + 160]))
        await sub.send({"event": "mark", "streamSid": stream["id"], "mark": {"name": "greeting"}})
        await sub.send("this is not JSON")
        await sub.send({"event": "bogus"})
        heard = b""
        end = loop.time() + 1.6
        while loop.time() < end:
            with contextlib.suppress(TimeoutError):
                heard += (await asyncio.wait_for(loop.sock_recv(phone, 2048), 0.05))[12:]
        assert bot in heard  # the subscriber's audio reached the caller whole, in order
        [mark] = await sub.wait(lambda: sub.of("mark"))
        assert mark["mark"] == {"name": "greeting"} and mark["streamSid"] == stream["id"]
        assert time.monotonic() - sent_at >= 0.95  # echoed once played, not when queued
        # barge-in: 3 s queued, then clear: the mark comes back at once and the caller hears silence
        long = ulaw(tone(600, 3.0, 4))
        for i in range(0, len(long), 800):
            await sub.send(media_message(stream["id"], long[i : i + 800]))
        await sub.send({"event": "mark", "streamSid": stream["id"], "mark": {"name": "long"}})
        await asyncio.sleep(0.4)
        await sub.send({"event": "clear", "streamSid": stream["id"]})
        cleared_at = time.monotonic()
        await sub.wait(lambda: len(sub.of("mark")) == 2)
        assert time.monotonic() - cleared_at < 0.5 and sub.of("mark")[1]["mark"] == {"name": "long"}
        await asyncio.sleep(0.1)
        while True:  # what left before the clear
            try:
                phone.recv(2048)
            except BlockingIOError:
                break
        after = b""
        end = loop.time() + 0.3
        while loop.time() < end:
            with contextlib.suppress(TimeoutError):
                after += (await asyncio.wait_for(loop.sock_recv(phone, 2048), 0.05))[12:]
        assert after and after == b"\xff" * len(after)
        status, listed, _ = await api(switch, "GET", f"/v2/calls/{call.id}/streams", key)
        assert listed["data"][0]["malformed_received"] == 2 and listed["data"][0]["status"] == "streaming"
        # the subscriber dies: the call stays up; the stream is dialled again, then given up
        await sub.runner.cleanup()
        await asyncio.sleep(4.5)
        status, page, _ = await api(switch, "GET", f"/v2/calls/{call.id}", key)
        assert page["status"] == "in-progress"
        status, listed, _ = await api(switch, "GET", f"/v2/calls/{call.id}/streams", key)
        assert listed["data"][0]["status"] == "stopped" and listed["data"][0]["reason"]
        phone.close()


async def test_listen_only_websocket_on_the_api_and_a_stream_placed_with_the_call(switch):
    key = switch.key("calls:read", "calls:write", test=True)
    async with subscriber() as sub:
        body = {"to": "+15005550006", "from": "app", "stream": {"url": sub.url, "track": "inbound"}}
        status, placed, _ = await api(switch, "POST", "/v2/calls", key, json=body)
        assert status == 201
        await sub.wait(lambda: len(sub.of("media")) > 25)  # started as the simulated far end answered
        assert sub.of("start")[0]["start"]["callSid"] == placed["id"]
        assert any(set(base64.b64decode(m["media"]["payload"])) - {0xFF} for m in sub.of("media"))  # it talks
        url = switch.url.replace("http", "ws") + f"/v2/calls/{placed['id']}/stream?track=both"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await switch.http.ws_connect(url, headers={"Authorization": "Bearer nope"})
        assert refused.value.status == 401
    async with switch.http.ws_connect(url, headers={"Authorization": f"Bearer {key}"}) as ws:
        got = [json.loads((await ws.receive(timeout=2)).data) for _ in range(12)]
    assert [m["event"] for m in got[:3]] == ["connected", "start", "media"]
    assert got[1]["start"]["tracks"] == ["inbound", "outbound"]
    assert {m["media"]["track"] for m in got[2:]} == {"inbound"}  # the API's side sends nothing to hear
    await asyncio.sleep(0.1)
    status, listed, _ = await api(switch, "GET", f"/v2/calls/{placed['id']}/streams", key)
    assert [s["status"] for s in listed["data"]] == ["streaming", "stopped"]  # the listener left
    async with switch.http.ws_connect(url, headers={"Authorization": f"Bearer {key}"}) as ws:
        assert json.loads((await ws.receive(timeout=2)).data)["event"] == "connected"
        await api(switch, "POST", f"/v2/calls/{placed['id']}/hangup", key)
        last = None
        while (msg := await ws.receive(timeout=3)).type == aiohttp.WSMsgType.TEXT:
            last = json.loads(msg.data)
        assert last["event"] == "stop" and msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_stream_refusals(switch):
    key = switch.key("calls:read", "calls:write")
    status, err, _ = await api(switch, "POST", "/v2/calls/call_nope/streams", key, json={"url": "ws://x.example/"})
    assert status == 404
    async with live_call(switch) as call:
        path = f"/v2/calls/{call.id}/streams"
        status, err, _ = await api(switch, "POST", path, key, json={"url": "http://x.example/"})
        assert status == 422 and err["error"]["param_errors"][0]["param"] == "url"
        status, err, _ = await api(switch, "POST", path, key, json={"url": "ws://x.example/", "track": "sideways"})
        assert status == 422 and err["error"]["param_errors"][0]["param"] == "track"
        status, _, _ = await api(switch, "DELETE", f"{path}/MZnope", key)
        assert status == 404
        async with subscriber() as sub:
            status, _, _ = await api(switch, "POST", path, key, json={"url": sub.url, "bidirectional": True})
            assert status == 201
            status, err, _ = await api(switch, "POST", path, key, json={"url": sub.url, "bidirectional": True})
            assert status == 409 and "bidirectional" in err["error"]["message"]
