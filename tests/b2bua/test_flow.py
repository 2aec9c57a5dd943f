"""Call flows on a whole softswitch (Services in this test's loop) against an application served by the test
(aiohttp on 127.0.0.1): an inbound SIPp call routed to `app:URL` runs a TwiML IVR whose digits (RFC 4733
from the caller) reach the action, a reject refuses the call unanswered, and calls placed through the API
with `url` run JSON and TwiML instructions, redirects, and fail cleanly on errors."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import socket
import struct
import time
import wave
from urllib.parse import parse_qsl

import numpy as np
import pytest
from aiohttp import web
from helpers import HOST, answered_call, free_port, rtp, running_switch, stream_pcmu
from helpers import api_request as api
from interop.sipp import run_uac, uas
from standardwebhooks import Webhook

from media import g711
from media.dtmf import tones as dtmf_tones
from softswitch.sip.auth import DigestClient
from softswitch.sip.message import Request
from softswitch.sip.message import parse as parse_sip

SWITCH = 15000
CALLER = {"port": 15010, "media_port": 15020, "control_port": 15012}
CALLEE = {"port": 15030, "media_port": 15040, "control_port": 15032}
CALLEE_PORT = CALLEE["port"]


class App:
    """The application: `pages[path]` is (content type, body) or a callable(params) giving one; every
    request is kept as (path, params, headers)."""

    def __init__(self) -> None:
        self.pages: dict[str, object] = {}
        self.requests: list[tuple[str, dict, dict, bytes]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        params = form if request.method == "POST" else dict(request.query)
        self.requests.append((request.path, params, {k.lower(): v for k, v in request.headers.items()}, raw))
        page = self.pages.get(request.path)
        if page is None:
            return web.Response(status=404)
        if callable(page):
            page = page(params)
        if isinstance(page, int):
            return web.Response(status=page)
        ctype, body = page
        return web.Response(body=body if isinstance(body, bytes) else body.encode(), content_type=ctype)

    def paths(self) -> list[str]:
        return [r[0] for r in self.requests]


@pytest.fixture
async def app():
    application = App()
    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", application.handle)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, HOST, port).start()
    application.url = f"http://{HOST}:{port}"
    yield application
    await runner.cleanup()


@pytest.fixture
async def switch(tmp_path, app):
    routes = f'[[routes]]\nmatch = "^4000$"\nto = "app:{app.url}/ivr"\n'
    routes += '[[routes]]\nmatch = "^4001$"\nto = "scenario:welcome"\n'
    head = '[calls]\ninband_dtmf = "always"\n'  # key tones heard in the audio too, whatever was negotiated
    # alice's secret as HA1s only (no clear text in the config): her REGISTER must still work
    ha1 = {a: hashlib.new(a, b"alice:localhost:wonderland").hexdigest() for a in ("md5", "sha256")}  # realm: the domain
    head += f'[[users]]\nname = "alice"\nha1_md5 = "{ha1["md5"]}"\nha1_sha256 = "{ha1["sha256"]}"\n'

    async with running_switch(tmp_path, SWITCH, CALLEE_PORT, "15050-15099", routes=routes, head=head) as svc:
        yield svc


def twiml(body: str) -> tuple[str, str]:
    return "text/xml", f'<?xml version="1.0" encoding="UTF-8"?>\n<Response>{body}</Response>'


def json_verbs(body: str) -> tuple[str, str]:
    return "application/json", body


def te(event: int, end: bool, duration: int) -> bytes:
    return struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)


async def until(predicate, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return value


async def test_inbound_call_routed_to_an_app_runs_a_twiml_ivr_and_the_digit_reaches_the_action(switch, app):
    app.pages["/ivr"] = twiml(
        '<Gather numDigits="1" action="/menu" timeout="8"><Say>Press one for sales.</Say></Gather>'
        "<Say>We did not get your choice.</Say>"
    )
    app.pages["/menu"] = lambda p: json_verbs(
        '[{"verb": "say", "text": "You chose ' + p.get("Digits", "") + '. Goodbye."}, {"verb": "hangup"}]'
    )
    caller = asyncio.create_task(
        asyncio.to_thread(run_uac, "uac_wait_bye", f"{HOST}:{SWITCH}", service="4000", **CALLER)
    )
    call = await answered_call(switch)
    leg = call.media.legs["a"]
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind((HOST, CALLER["media_port"] + 8))
    phone.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        for i in range(3):  # the phone speaks first: the engine latches onto it
            phone.sendto(rtp(i, 160 * i, 0x42), (HOST, leg.port))
        heard = b""
        end = loop.time() + 1.0
        while loop.time() < end:
            with contextlib.suppress(TimeoutError):
                heard += (await asyncio.wait_for(loop.sock_recv(phone, 2048), 0.05))[12:]
        speech = np.frombuffer(g711.ulaw_decode(heard), np.int16)
        assert np.sqrt(np.mean(speech.astype(float) ** 2)) > 300  # the prompt is being said
        for k, dur in enumerate((160, 320, 480, 800, 800, 800)):  # "1" as RFC 4733, mid-prompt: barge-in
            phone.sendto(rtp(10 + k, 8000, 0x42, pt=101, marker=k == 0, payload=te(1, k >= 3, dur)), (HOST, leg.port))
        result = await caller  # the app says goodbye and hangs up: SIPp gets our BYE
    finally:
        phone.close()
    assert result.ok, result.summary()
    assert app.paths() == ["/ivr", "/menu"]
    answer = result.messages.split("SIP/2.0 200 OK", 1)[1].split("\n\n\n", 1)[0]
    assert "m=audio" in answer and not any(d in answer for d in ("a=sendonly", "a=recvonly", "a=inactive"))
    (_, first, headers, raw), (_, menu, _, _) = app.requests
    assert first["CallStatus"] == "ringing" and first["Direction"] == "inbound" and first["To"] == "4000"
    assert first["CallSid"] == call.id and first["ApiVersion"] == "2010-04-01"
    assert menu["Digits"] == "1" and menu["CallStatus"] == "in-progress"
    Webhook(switch.calls.flows.route_secret).verify(raw, headers, json_parse=False)  # signed like webhooks
    admin = switch.key("admin")
    status, secret, _ = await api(switch, "GET", "/v2/flows/signing-secret", admin)
    assert status == 200 and secret["secret"] == switch.calls.flows.route_secret
    status, rec, _ = await api(switch, "GET", f"/v2/calls/{call.id}", switch.key("calls:read"))
    assert rec["hangup_by"] == "app" and rec["status"] == "completed"


async def test_inbound_call_rejected_by_the_app_is_never_answered(switch, app):
    app.pages["/ivr"] = twiml('<Reject reason="busy"/>')
    result = await asyncio.to_thread(run_uac, "uac_expect_486", f"{HOST}:{SWITCH}", service="4000", **CALLER)
    assert result.ok, result.summary()
    status, page, _ = await api(switch, "GET", "/v2/calls", switch.key("calls:read"))
    [call] = page["data"]
    assert (call["status"], call["hangup_code"], call["answered_at"]) == ("busy", 486, None)


async def place(switch, app, key: str, path: str, **extra) -> dict:
    body = {"to": "+15005550006", "from": "app", "url": f"{app.url}{path}", **extra}
    status, call, _ = await api(switch, "POST", "/v2/calls", key, json=body)
    assert status == 201, call
    return call


async def ended(switch, key: str, call_id: str, seconds: float = 15.0) -> dict:
    async def check():
        _, c, _ = await api(switch, "GET", f"/v2/calls/{call_id}", key)
        return c if c["ended_at"] else None

    deadline = time.monotonic() + seconds
    while not (c := await check()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    return c


async def test_api_call_with_url_runs_json_then_twiml_after_a_redirect_then_hangs_up(switch, app):
    key = switch.key("calls:read", "calls:write", test=True)
    secret = (await api(switch, "GET", "/v2/account/webhook-secret", key))[1]["secret"]
    app.pages["/start"] = json_verbs(
        '[{"verb": "say", "text": "Hello"}, {"verb": "pause", "length": 0.3}, {"verb": "redirect", "url": "/next"}]'
    )
    app.pages["/next"] = twiml("<Say>Goodbye</Say>")  # and the document runs out: the call is hung up
    call = await place(switch, app, key, "/start")
    done = await ended(switch, key, call["id"])
    assert done["hangup_by"] == "app" and done["status"] == "completed" and done["duration_s"] > 1.0
    assert app.paths() == ["/start", "/next"]
    for _, params, headers, raw in app.requests:
        assert params["Direction"] == "outbound-api" and params["AccountSid"].startswith("key_")
        Webhook(secret).verify(raw, headers, json_parse=False)  # signed with the placing key's webhook secret


@pytest.mark.parametrize(
    ("page", "why"),
    [
        (500, "answered 500"),
        (twiml("<Say>Hi</Say><Enqueue>support</Enqueue>"), "line 2: <Enqueue>: not a supported TwiML verb"),
        (json_verbs('[{"verb": "say"}]'), "text"),
        (("text/plain", "hello"), "must be TwiML"),
        (twiml("<Redirect>/start</Redirect>"), "only redirected"),
    ],
)
async def test_api_call_flow_errors_end_the_call_with_the_reason(switch, app, page, why):
    key = switch.key("calls:read", "calls:write", test=True)
    events = []
    switch.bus.subscribe(events.append, types=["call.flow_error"])
    app.pages["/start"] = page
    call = await place(switch, app, key, "/start")
    done = await ended(switch, key, call["id"])
    assert done["hangup_by"] == "app" and done["hangup_code"] == 500 and why in done["hangup_reason"]
    [error] = events
    assert why in error.data["reason"] and error.data["call_id"] == call["id"]
    assert why in switch.store.get_call(call["id"]).data["flow_error"]


async def test_gather_times_out_to_the_next_verb_without_calling_the_action(switch, app):
    key = switch.key("calls:read", "calls:write", test=True)
    app.pages["/start"] = json_verbs(
        '[{"verb": "gather", "num_digits": 2, "timeout": 1, "action": "/never"}, {"verb": "say", "text": "Bye"}]'
    )
    call = await place(switch, app, key, "/start")
    await answered_call(switch)
    done = await ended(switch, key, call["id"])
    assert app.paths() == ["/start"] and done["hangup_by"] == "app"


async def test_voicemail_records_the_caller_after_the_beep_and_the_action_gets_the_recording(switch, app):
    app.pages["/ivr"] = twiml(
        '<Say>Leave a message.</Say><Record maxLength="2" timeout="0" action="/saved" recordingStatusCallback="/rs"/>'
    )
    app.pages["/saved"] = twiml("<Say>Thank you.</Say><Hangup/>")
    app.pages["/rs"] = 204
    caller = asyncio.create_task(
        asyncio.to_thread(run_uac, "uac_wait_bye", f"{HOST}:{SWITCH}", service="4000", **CALLER)
    )
    call = await answered_call(switch)
    tone = (6000 * np.sin(2 * np.pi * 700 * np.arange(8000 * 5) / 8000)).astype(np.int16)
    talker = asyncio.create_task(stream_pcmu(call.media.legs["a"].port, tone, CALLER["media_port"] + 8))
    result = await caller
    talker.cancel()
    assert result.ok, result.summary()
    assert sorted(app.paths()) == ["/ivr", "/rs", "/saved"]
    saved = next(r[1] for r in app.requests if r[0] == "/saved")
    status_cb = next(r[1] for r in app.requests if r[0] == "/rs")
    assert status_cb["RecordingStatus"] == "completed" and status_cb["RecordingSid"] == saved["RecordingSid"]
    assert saved["RecordingDuration"] == "2" and saved["RecordingSid"].startswith("rec_") and saved["Digits"] == ""
    assert saved["RecordingUrl"] == f"{switch.url}/v2/recordings/{saved['RecordingSid']}"
    status, wav, _ = await api(
        switch, "GET", f"/v2/recordings/{saved['RecordingSid']}.wav", switch.key("recordings:read")
    )
    assert status == 200
    with wave.open(io.BytesIO(wav)) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    spectrum = np.abs(np.fft.rfft(audio.astype(float)))
    assert abs(np.fft.rfftfreq(audio.size, 1 / 8000)[spectrum.argmax()] - 700) < 10  # the caller's voice


async def test_record_ends_on_silence(switch, app):
    app.pages["/ivr"] = twiml('<Record timeout="1" playBeep="false" action="/saved"/>')
    app.pages["/saved"] = twiml("<Hangup/>")
    result = await asyncio.to_thread(run_uac, "uac_wait_bye", f"{HOST}:{SWITCH}", service="4000", **CALLER)
    assert result.ok, result.summary()  # the phone said nothing: a second of silence ended it
    saved = app.requests[1][1]
    assert saved["Digits"] == "" and saved["RecordingDuration"] in ("1", "2")


async def test_a_hangup_during_record_still_reaches_the_action_with_the_recording(switch, app):
    app.pages["/ivr"] = json_verbs('[{"verb": "record", "timeout": 5, "play_beep": false, "action": "/saved"}]')
    app.pages["/saved"] = 204
    result = await asyncio.to_thread(run_uac, "uac_basic_rtp", f"{HOST}:{SWITCH}", service="4000", **CALLER)
    assert result.ok, result.summary()  # SIPp plays its tone for 3 s and hangs up
    await until(lambda: len(app.requests) == 2)
    saved = app.requests[1][1]
    assert saved["Digits"] == "hangup" and saved["RecordingDuration"] in ("2", "3", "4")


@pytest.mark.parametrize(
    ("dial", "dialled"),
    [("1000", "1000"), ("<Number>1000</Number>", "1000"), (f"<Sip>sip:9999@{HOST}:{CALLEE['port']}</Sip>", "9999")],
    ids=["text", "number", "sip"],  # 9999 has no route: the URI itself is dialled
)
async def test_dial_connects_the_caller_to_the_party_and_the_flow_ends(switch, app, dial, dialled):
    app.pages["/ivr"] = twiml(
        '<Say>Connecting you.</Say><Dial timeout="10" action="/after" callerId="+15550100" '
        f'record="record-from-answer-dual">{dial}</Dial>'
    )
    with uas("uas_answer", calls=1, rtp_echo=True, **CALLEE) as callee:
        result = await asyncio.to_thread(run_uac, "uac_basic_rtp", f"{HOST}:{SWITCH}", service="4000", **CALLER)
        assert result.ok, result.summary()  # the caller talked to the callee, then hung up
        done = await asyncio.to_thread(callee.wait, 10)
    assert done.successful == 1, done.summary()
    assert "From: <sip:+15550100@" in done.messages  # the callerId the dialled party sees
    status, page, _ = await api(switch, "GET", "/v2/calls", switch.key("calls:read"))
    [call] = page["data"]
    assert call["hangup_by"] == "caller" and call["status"] == "completed"
    assert switch.store.get_call(call["id"]).data["flow_dialed"] == dialled
    assert app.paths() == ["/ivr"]  # connected: the flow ended there
    status, recs, _ = await api(switch, "GET", f"/v2/recordings?call_id={call['id']}", switch.key("recordings:read"))
    assert [(r["channels"], r["status"]) for r in recs["data"]] == [(2, "completed")]  # record-from-answer-dual


async def test_dial_to_a_busy_party_tells_the_action(switch, app):
    app.pages["/ivr"] = twiml('<Dial action="/after">1000</Dial><Say>never reached</Say>')
    app.pages["/after"] = lambda p: twiml(f"<Say>The line is {p['DialCallStatus']}.</Say><Hangup/>")
    with uas("uas_busy", calls=1, **CALLEE):
        result = await asyncio.to_thread(run_uac, "uac_wait_bye", f"{HOST}:{SWITCH}", service="4000", **CALLER)
    assert result.ok, result.summary()
    assert app.paths() == ["/ivr", "/after"] and app.requests[1][1]["DialCallStatus"] == "busy"


WELCOME = """branches:
  inbound-call:
    - {verb: say, text: Welcome to the scenario.}
    - verb: hangup
  api-initiated:
    - verb: say
      text: This is your reminder.
    - {verb: hangup}
"""


async def test_scenarios_saved_validated_then_run_by_a_route_and_by_start(switch, app):
    live, test = switch.key("calls:read", "calls:write"), switch.key("calls:read", "calls:write", test=True)
    bad = WELCOME.replace("text: This is your reminder.", "txt: This is your reminder.")
    status, err, _ = await api(switch, "POST", "/v2/scenarios", live, json={"name": "welcome", "script": bad})
    assert status == 422 and err["error"]["param_errors"][0]["reason"].startswith("line 7, column 7:")
    status, saved, _ = await api(switch, "POST", "/v2/scenarios", live, json={"name": "welcome", "script": WELCOME})
    assert status == 201 and saved["branches"] == ["inbound-call", "api-initiated"]
    status, _, _ = await api(switch, "POST", "/v2/scenarios", live, json={"name": "welcome", "script": WELCOME})
    assert status == 409
    result = await asyncio.to_thread(run_uac, "uac_wait_bye", f"{HOST}:{SWITCH}", service="4001", **CALLER)
    assert result.ok, result.summary()  # the route ran inbound-call: said welcome, hung up
    status, mine, _ = await api(switch, "POST", "/v2/scenarios", test, json={"name": "welcome", "script": WELCOME})
    assert status == 201  # test keys' scenarios are apart from live ones
    status, call, _ = await api(
        switch, "POST", f"/v2/scenarios/{mine['id']}/start", test, json={"to": "+15005550006", "from": "app"}
    )
    assert status == 201
    done = await ended(switch, test, call["id"])
    assert done["hangup_by"] == "app" and done["duration_s"] > 1.0  # said the reminder, then hung up
    amd = {"machine_detection": "detect", "machine_detection_config": {"greeting_ms": 0}}
    start = {"to": "+15005550006", "from": "app"} | amd
    status, err, _ = await api(switch, "POST", f"/v2/scenarios/{mine['id']}/start", test, json=start)
    assert status == 422 and err["error"]["param_errors"][0]["param"] == "machine_detection_config.greeting_ms"
    status, _, _ = await api(switch, "GET", f"/v2/scenarios/{mine['id']}", live)
    assert status == 404
    status, page, _ = await api(switch, "GET", "/v2/scenarios", live)
    assert [s["id"] for s in page["data"]] == [saved["id"]]
    status, changed, _ = await api(switch, "PATCH", f"/v2/scenarios/{saved['id']}", live, json={"name": "hello"})
    assert status == 200 and changed["name"] == "hello"
    status, _, _ = await api(switch, "DELETE", f"/v2/scenarios/{saved['id']}", live)
    assert status == 200 and switch.store.get_scenario(saved["id"]) is None


def wav_tone(freq: float, seconds: float) -> bytes:
    blob = io.BytesIO()
    with wave.open(blob, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((8000 * np.sin(2 * np.pi * freq * np.arange(int(8000 * seconds)) / 8000)).astype("<i2").tobytes())
    return blob.getvalue()


async def test_moving_from_verb_to_verb_leaves_no_audio_gap_over_60_ms(switch, app):
    tones = {"/a.wav": wav_tone(500, 0.6), "/b.wav": wav_tone(900, 0.6)}
    app.pages.update({path: ("audio/wav", blob) for path, blob in tones.items()})
    app.pages["/ivr"] = twiml("<Play>/a.wav</Play><Play>/b.wav</Play><Say>Done.</Say><Pause length='1'/>")
    caller = asyncio.create_task(
        asyncio.to_thread(run_uac, "uac_wait_bye", f"{HOST}:{SWITCH}", service="4000", **CALLER)
    )
    call = await answered_call(switch)
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind((HOST, CALLER["media_port"] + 8))
    phone.setblocking(False)
    loop = asyncio.get_running_loop()
    frames: list[bytes] = []
    try:
        phone.sendto(rtp(0, 0, 0x42), (HOST, call.media.legs["a"].port))  # latch
        end = loop.time() + 2.5
        while loop.time() < end:
            with contextlib.suppress(TimeoutError):
                frames.append((await asyncio.wait_for(loop.sock_recv(phone, 2048), 0.05))[12:])
    finally:
        phone.close()
    await caller

    def tone_of(frame: bytes) -> int:
        pcm = np.frombuffer(g711.ulaw_decode(frame), np.int16).astype(float)
        if len(pcm) < 160 or np.abs(pcm).mean() < 1000:
            return 0
        return int(np.fft.rfftfreq(160, 1 / 8000)[np.abs(np.fft.rfft(pcm[:160])).argmax()])

    heard = [tone_of(f) for f in frames]
    first_b = heard.index(900)
    last_a = max(i for i, f in enumerate(heard[:first_b]) if f == 500)
    assert sum(f == 500 for f in heard) >= 28 and sum(f == 900 for f in heard) >= 28  # both played whole
    assert (first_b - last_a - 1) * 20 <= 60, heard[last_a : first_b + 1]  # the gap between the two verbs


async def test_gather_hears_a_key_pressed_as_tones_in_the_audio(switch, app):
    app.pages["/ivr"] = twiml('<Gather numDigits="1" action="/menu" timeout="5"><Say>Press a key.</Say></Gather>')
    app.pages["/menu"] = twiml("<Hangup/>")
    caller = asyncio.create_task(
        asyncio.to_thread(run_uac, "uac_wait_bye", f"{HOST}:{SWITCH}", service="4000", **CALLER)
    )
    call = await answered_call(switch)
    quiet = np.zeros(8000 // 2, np.int16)
    keys = np.frombuffer(dtmf_tones("2", on_ms=120), np.int16)
    await stream_pcmu(call.media.legs["a"].port, np.concatenate([quiet, keys, quiet]), CALLER["media_port"] + 8)
    result = await caller
    assert result.ok, result.summary()
    assert app.paths() == ["/ivr", "/menu"] and app.requests[1][1]["Digits"] == "2"


def register_from(port: int, user: str, password: str, domain: str) -> None:
    """REGISTER `user` (digest answered) from 127.0.0.1:`port`, as a phone there would: the switch then sends
    the user's calls to that address (the flow the REGISTER came on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, port))
        sock.settimeout(5)
        auth: list[tuple[str, str]] = []
        for cseq in (1, 2):
            headers = [
                ("Via", f"SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK-reg{cseq}"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{user}@{domain}>;tag=reg1"),
                ("To", f"<sip:{user}@{domain}>"),
                ("Call-ID", f"reg-{port}"),
                ("CSeq", f"{cseq} REGISTER"),
                ("Contact", f"<sip:{user}@{HOST}:{port}>"),
                ("Expires", "300"),
                *auth,
            ]
            sock.sendto(Request("REGISTER", f"sip:{domain}", headers).serialize(), (HOST, SWITCH))
            reply = parse_sip(sock.recv(4096))
            if reply.status == 200:
                return
            assert reply.status == 401, reply.status
            challenge = reply.get("WWW-Authenticate")
            auth = [("Authorization", DigestClient(user, password).authorize(challenge, "REGISTER", f"sip:{domain}"))]
        raise AssertionError("REGISTER not accepted")


async def test_dial_a_client_reaches_the_registered_user(switch, app):
    await asyncio.to_thread(register_from, CALLEE["port"], "alice", "wonderland", switch.cfg.sip.domain)
    app.pages["/ivr"] = twiml("<Dial><Client>alice</Client></Dial>")
    with uas("uas_answer", calls=1, rtp_echo=True, **CALLEE) as callee:
        result = await asyncio.to_thread(run_uac, "uac_basic_rtp", f"{HOST}:{SWITCH}", service="4000", **CALLER)
        assert result.ok, result.summary()
        done = await asyncio.to_thread(callee.wait, 10)
    assert done.successful == 1 and "INVITE sip:alice@" in done.messages, done.summary()


async def test_when_the_dialled_party_hangs_up_the_caller_stays_and_the_flow_goes_on(switch, app):
    app.pages["/ivr"] = twiml('<Dial action="/after">1000</Dial><Say>never reached</Say>')
    app.pages["/after"] = lambda p: twiml(f"<Say>Your call lasted {p['DialCallDuration']} seconds.</Say><Hangup/>")
    with uas("uas_bye", calls=1, **CALLEE) as callee:  # answers, then hangs up after a while
        result = await asyncio.to_thread(run_uac, "uac_wait_bye", f"{HOST}:{SWITCH}", service="4000", **CALLER)
        done = await asyncio.to_thread(callee.wait, 10)
    assert result.ok, result.summary()  # the caller was kept, heard the flow go on, and got our BYE
    assert done.successful == 1, done.summary()
    assert app.paths() == ["/ivr", "/after"]
    after = app.requests[1][1]
    assert after["DialCallStatus"] == "completed" and int(after["DialCallDuration"]) >= 0
    status, page, _ = await api(switch, "GET", "/v2/calls", switch.key("calls:read"))
    [call] = page["data"]
    assert (call["status"], call["hangup_by"]) == ("completed", "app")


async def test_dial_answer_on_bridge_leaves_the_call_unanswered_until_the_party_answers(switch, app):
    app.pages["/ivr"] = twiml('<Dial answerOnBridge="true">1000</Dial>')
    with uas("uas_busy", calls=1, **CALLEE):  # the party is busy: the caller hears busy, never an answer
        result = await asyncio.to_thread(run_uac, "uac_expect_486", f"{HOST}:{SWITCH}", service="4000", **CALLER)
    assert result.ok, result.summary()
    status, page, _ = await api(switch, "GET", "/v2/calls", switch.key("calls:read"))
    [call] = page["data"]
    assert (call["status"], call["answered_at"]) == ("busy", None)
