"""The simulated far end of test-mode calls (`sk_test_...` API keys): calls that never leave the box.

Why a real SIP/RTP user agent instead of a shortcut in call control: a test call then goes through the
same B2BUA, media anchoring, recording, answering machine detection and media streams as a live one; only
the far end is fake. `TestFarEnd` is a UAS with its own `SipEndpoint` on loopback (an ephemeral UDP port);
a hidden trunk points at it. It answers by the user part of the INVITE's Request-URI ("+" optional):

  number         behaviour
  +15005550006   180, then 200 after `answer_delay_s` (1 s) with an SDP answer (PCMU or PCMA, whichever the
                 offer lists first; telephone-event if offered); sends a person's speech (a short "hello?",
                 then talk with pauses) as 20 ms RTP frames; BYE after `talk_s` (10 s) unless the caller's
                 BYE comes first
  +15005550007   like 0006, but a voicemail greeting: `greeting_s` (5 s) of speech, 400 ms of silence, a
                 1000 Hz beep of 500 ms at -10 dBm0, then silence; BYE after `greeting_talk_s` (20 s)
  +15005550001   486 Busy Here
  +15005550002   180 Ringing, never answers (a CANCEL gets 200, the INVITE 487)
  +15005550003   503 Service Unavailable
  anything else  404 Not Found

Also: the 2xx is retransmitted until its ACK (RFC 3261 13.3.1.4); the BYE waits for that ACK (15) and
is sent anyway after the ACK timeout. An INVITE without SDP gets our offer in the 200 and the answer is
read from the ACK. OPTIONS gets 200; a re-INVITE or UPDATE gets 200 with the same SDP (a new address in
its offer is followed); BYE, INFO, MESSAGE, NOTIFY get 200; other methods 405; in-dialog requests for no
dialog 481. RTP goes to the address of the offer, or to the source of RTP received (symmetric RTP);
received RTP is otherwise ignored. The audio is made once with numpy: voiced syllables with harmonics,
formants, a moving pitch and syllable envelopes, so no beep or tone detector mistakes the speech for a tone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import socket
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

import numpy as np

from media.dtmf import dbm0_amplitude
from media.g711 import alaw_encode, ulaw_encode
from softswitch.config import ListenAddress
from softswitch.logs import event
from softswitch.sip.dialog import Dialog, DialogError, DialogId, dialog_id_of
from softswitch.sip.dialog_timers import AckTimeout, InviteOkRetransmitter
from softswitch.sip.errors import SipParseError
from softswitch.sip.message import Request, Response, build_response
from softswitch.sip.offer_answer import Capabilities, CodecSpec, OriginTracker, build_answer, build_offer, negotiate
from softswitch.sip.sdp import SdpError, SessionDescription
from softswitch.sip.transaction import RequestReceived, State, TimerConfig
from softswitch.sip.uri import SipUri
from softswitch.transport.endpoint import Flow, SipEndpoint
from softswitch.transport.sockets import BindError

__all__ = ["BUSY", "HUMAN", "NO_ANSWER", "UNAVAILABLE", "VOICEMAIL", "TestFarEnd", "human_audio", "voicemail_audio"]

log = logging.getLogger("softswitch.testmode")

HUMAN, VOICEMAIL = "15005550006", "15005550007"
BUSY, NO_ANSWER, UNAVAILABLE = "15005550001", "15005550002", "15005550003"
REJECT = {BUSY: 486, UNAVAILABLE: 503}
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, MESSAGE, NOTIFY"
_ALLOWED = frozenset(m.strip() for m in ALLOW.split(","))
_IN_DIALOG_ONLY = frozenset(("BYE", "UPDATE", "INFO", "NOTIFY", "PRACK"))
RATE = 8000
FRAME = 160  # samples in 20 ms
PTIME_S = 0.02
BEEP_HZ, BEEP_S, BEEP_DBM0, BEEP_GAP_S = 1000.0, 0.5, -10.0, 0.4
SPEECH_DBM0 = -18.0  # RMS level of the voiced parts
_SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}
_VOWELS = ((730, 1090), (270, 2290), (530, 1840), (570, 840), (300, 870), (660, 1720), (490, 1350))


# -- audio -------------------------------------------------------------------------------------------
def _syllable(rng: np.random.Generator, f0_from: float, f0_to: float, seconds: float) -> np.ndarray:
    """One voiced syllable: harmonics of a gliding, jittered pitch shaped by three broad formants, with
    breath noise, in an envelope. Rich enough that no beep detector fits it with a few sines."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    jitter = np.cumsum(rng.normal(0, 0.004, n))
    f0 = np.linspace(f0_from, f0_to, n) * (1 + 0.04 * np.sin(2 * np.pi * rng.uniform(4, 7) * t) + jitter / 8)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    f1, f2 = _VOWELS[rng.integers(len(_VOWELS))]
    out = np.zeros(n)
    for k in range(1, 40):
        fk = k * f0
        gain = 1 / (1 + ((fk - f1) / 160) ** 2) + 0.8 / (1 + ((fk - f2) / 220) ** 2)
        gain = gain + 0.4 / (1 + ((fk - 2500) / 300) ** 2) + 0.15
        out += np.where(fk < 3600, gain / k**0.3, 0.0) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    out += rng.normal(0, 0.35, n) * out.std()  # breath
    return out * np.sin(np.pi * np.arange(n) / n) ** 0.6


def _speech(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Words of 1-3 syllables with pauses of 60-220 ms between them, `seconds` long, at SPEECH_DBM0 RMS."""
    parts: list[np.ndarray] = []
    total = 0
    want = int(seconds * RATE)
    base = rng.uniform(110, 190)
    while total < want:
        for _ in range(rng.integers(1, 4)):
            start = base * rng.uniform(0.85, 1.25)
            parts.append(_syllable(rng, start, start * rng.uniform(0.75, 1.1), rng.uniform(0.12, 0.26)))
        parts.append(np.zeros(int(rng.uniform(0.06, 0.22) * RATE)))
        total = sum(len(p) for p in parts)
    audio = np.concatenate(parts)[:want]
    voiced = audio[np.abs(audio) > 1e-6]
    rms = float(np.sqrt(np.mean(voiced**2))) if voiced.size else 1.0
    audio *= dbm0_amplitude(SPEECH_DBM0) / np.sqrt(2) / rms
    fade = min(len(audio), 80)
    audio[len(audio) - fade :] *= np.linspace(1, 0, fade)
    return audio


def _pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio), -32768, 32767).astype(np.int16)


@functools.lru_cache(maxsize=4)
def human_audio(seed: int = 6) -> np.ndarray:
    """A person answering (8 kHz PCM16, played in a loop): "hello?" (0.9 s), a pause long enough for
    answering machine detection to say human, then talk and pauses. Made once: it is deterministic."""
    rng = np.random.default_rng(seed)
    gap = np.zeros
    pieces = [_speech(rng, 0.9), gap(int(2.0 * RATE)), _speech(rng, 1.8), gap(int(1.5 * RATE))]
    pieces += [_speech(rng, 2.4), gap(int(2.0 * RATE))]
    return _pcm16(np.concatenate(pieces))


@functools.lru_cache(maxsize=4)
def voicemail_audio(greeting_s: float = 5.0, seed: int = 7) -> np.ndarray:
    """A voicemail greeting (8 kHz PCM16, played once, silence after): `greeting_s` of speech, 400 ms of
    silence, then the 1000 Hz beep of 500 ms at -10 dBm0 (the beep starts at greeting_s + 0.4 s)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(BEEP_S * RATE)) / RATE
    beep = dbm0_amplitude(BEEP_DBM0) * np.sin(2 * np.pi * BEEP_HZ * t)
    return _pcm16(np.concatenate([_speech(rng, greeting_s), np.zeros(int(BEEP_GAP_S * RATE)), beep]))


@functools.lru_cache(maxsize=16)
def _encoded(codec: str, kind: str, greeting_s: float) -> bytes:
    pcm = human_audio() if kind == HUMAN else voicemail_audio(greeting_s)
    return (ulaw_encode if codec == "PCMU" else alaw_encode)(pcm)


# -- RTP ---------------------------------------------------------------------------------------------
class _RtpStream(asyncio.DatagramProtocol):
    """Sends `audio` (G.711 bytes) as 20 ms RTP frames paced by the loop; silence after it unless `repeat`.
    Received RTP is dropped, but its source becomes the destination (symmetric RTP)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, repeat: bool):
        self.loop, self.repeat = loop, repeat
        self.audio, self.silence, self.payload_type = b"", b"", 0
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self.dest: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.sent = self.received = 0
        self._offset = 0
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def use(self, codec: str, payload_type: int, audio: bytes) -> None:
        """Send `audio` (already in `codec`, PCMU or PCMA) under `payload_type`."""
        self.audio, self.payload_type = audio, payload_type
        self.silence = bytes([_SILENCE[codec]]) * FRAME

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) >= 12 and data[0] >> 6 == 2 and 72 <= (data[1] & 0x7F) <= 76:
            return  # RTCP (RFC 5761 4) on a muxed port: not a source of RTP
        if len(data) >= 12 and data[0] >> 6 == 2:
            self.received += 1
            self.dest = (addr[0], addr[1])

    @property
    def port(self) -> int:
        return self.transport.get_extra_info("sockname")[1]

    def start(self, dest: tuple[str, int] | None) -> None:
        """Start sending to `dest` (None: wait for an address); a second call only changes the address."""
        if dest is not None:
            self.dest = dest
        if self._handle is None and self.transport is not None:
            self._next = self.loop.time()
            self._tick(marker=True)

    def _tick(self, marker: bool = False) -> None:
        frame = self.audio[self._offset : self._offset + FRAME]
        if len(frame) < FRAME:
            if self.repeat and self.audio:
                self._offset = 0
                frame = self.audio[:FRAME]
            else:
                frame = self.silence
        self._offset += FRAME
        if self.dest is not None and self.transport is not None:
            header = struct.pack(
                "!BBHII", 0x80, (0x80 if marker else 0) | self.payload_type, self.seq, self.timestamp, self.ssrc
            )
            self.transport.sendto(header + frame, self.dest)
            self.sent += 1
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + FRAME) & 0xFFFFFFFF
        self._next += PTIME_S
        now = self.loop.time()
        if self._next < now - 0.2:  # the loop stalled: resume from now rather than burst to catch up
            self._next = now
        self._handle = self.loop.call_at(self._next, self._tick)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.transport is not None:
            self.transport.close()


# -- calls -------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Call:
    number: str
    invite: Request
    invite_key: object
    flow: Flow
    dialog: Dialog
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    tasks: set[asyncio.Task] = field(default_factory=set)
    ok: InviteOkRetransmitter | None = None
    ok_timer: asyncio.TimerHandle | None = None
    rtp: _RtpStream | None = None
    origin: OriginTracker | None = None
    offer: SessionDescription | None = None  # the caller's, or ours when the INVITE had none
    answer_body: bytes = b""
    we_offered: bool = False
    bye_due: bool = False


def _codecs_for(offer: SessionDescription | None) -> tuple[CodecSpec, ...]:
    """PCMU or PCMA, whichever the offer names first (PCMU when we offer), then telephone-event."""
    first = "PCMU"
    if offer is not None and offer.media:
        names = [c.name.upper() for c in offer.media[0].codecs if c.clock_rate == RATE]
        first = next((n for n in names if n in _SILENCE), "PCMU")
    codecs = (CodecSpec(first, RATE), CodecSpec("PCMA" if first == "PCMU" else "PCMU", RATE))
    return (*codecs, CodecSpec("telephone-event", RATE))


def _number(request: Request) -> str:
    uri = request.uri
    user = uri.user if isinstance(uri, SipUri) else None
    return (user or "").split(";")[0].removeprefix("+")


class TestFarEnd:
    """A SIP user agent (UAS) on 127.0.0.1 that answers the magic test numbers (see the module docstring)."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(
        self,
        *,
        user_agent: str = "softswitch-test-far-end",
        timers: TimerConfig | None = None,
        answer_delay_s: float = 1.0,
        talk_s: float = 10.0,
        greeting_talk_s: float = 20.0,
        greeting_s: float = 5.0,
    ):
        """The durations are the behaviour table's; tests shorten them."""
        self.user_agent = user_agent
        self.timers = timers or TimerConfig()
        self.answer_delay_s, self.talk_s = answer_delay_s, talk_s
        self.greeting_talk_s, self.greeting_s = greeting_talk_s, greeting_s
        self.endpoint: SipEndpoint | None = None
        self.address: tuple[str, int] | None = None
        self._calls: dict[DialogId, _Call] = {}
        self._by_invite: dict[object, _Call] = {}

    @property
    def calls(self) -> int:
        """Calls in progress (ringing or answered)."""
        return len(self._calls)

    async def start(self, host: str = "127.0.0.1") -> tuple[str, int]:
        """Bind UDP on an ephemeral port of `host`; returns the (host, port) to send INVITEs to."""
        self.endpoint = SipEndpoint(self._on_event, timers=self.timers, name="testmode")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for attempt in range(20):  # the listener needs its real port up front, for our Via and Contact
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((host, 0))
                port = probe.getsockname()[1]
            try:
                await self.endpoint.listen(ListenAddress("udp", host, port))
                break
            except BindError:
                if attempt == 19:
                    raise
        self.address = (host, port)
        return self.address

    async def close(self) -> None:
        """Stop at once: no BYE; calls, timers, RTP sockets and the SIP endpoint go."""
        tasks = [task for call in self._calls.values() for task in call.tasks]
        for call in list(self._calls.values()):
            self._drop(call)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.endpoint is not None:
            await self.endpoint.close()
            self.endpoint = None

    # -- events ------------------------------------------------------------------------------------
    def _on_event(self, endpoint: SipEndpoint, ev: object) -> None:
        if isinstance(ev, RequestReceived):
            try:
                self._on_request(ev)
            except (SipParseError, SdpError, DialogError) as exc:  # a peer's malformed message: one log line
                event(log, "testmode.bad_request", level=logging.INFO, reason=str(exc))
                if ev.key is not None and ev.request.method != "ACK":
                    endpoint.respond(ev.key, self._response(ev.request, 400))

    def _on_request(self, ev: RequestReceived) -> None:
        request, method = ev.request, ev.request.method
        if method == "ACK":
            call = self._calls.get(dialog_id_of(request))
            if call is not None:
                self._on_ack(call, request)
            return
        if ev.key is None:
            return
        if method not in _ALLOWED:
            self._respond(ev, self._response(request, 405, headers=[("Allow", ALLOW)]))
        elif method == "CANCEL":
            self._on_cancel(ev)
        elif request.to.tag:
            self._in_dialog(ev)
        elif method == "OPTIONS":
            self._respond(ev, self._response(request, 200, headers=[("Allow", ALLOW), ("Accept", "application/sdp")]))
        elif method == "INVITE":
            self._on_invite(ev)
        elif method in _IN_DIALOG_ONLY:
            self._respond(ev, self._response(request, 481))
        else:
            self._respond(ev, self._response(request, 200))  # MESSAGE out of dialog: taken and dropped

    def _respond(self, ev: RequestReceived, response: Response) -> None:
        self.endpoint.respond(ev.key, response)

    def _response(self, request: Request, status: int, headers: list[tuple[str, str]] = ()) -> Response:
        response = build_response(request, status, to_tag=secrets.token_hex(4), headers=headers)
        response.add("Server", self.user_agent)
        return response

    # -- a new call --------------------------------------------------------------------------------
    def _on_invite(self, ev: RequestReceived) -> None:
        request = ev.request
        number = _number(request)
        event(log, "testmode.invite", number=number, call_id=request.call_id)
        if number in REJECT:
            self._respond(ev, self._response(request, REJECT[number]))
            return
        if number not in (HUMAN, VOICEMAIL, NO_ANSWER):
            self._respond(ev, self._response(request, 404))
            return
        host, port = self.address
        dialog = Dialog.uas(request, f"<sip:far-end@{host}:{port}>")
        call = _Call(number, request, ev.key, ev.source, dialog)
        if request.body:
            call.offer = SessionDescription.parse(request.body)
            if number != NO_ANSWER and not self._codec_possible(call.offer):
                self._respond(ev, self._final(call, 488))
                return
        self._calls[dialog.id] = call
        self._by_invite[ev.key] = call
        self._respond(ev, self._final(call, 180))
        if number != NO_ANSWER:
            self._later(call, self.answer_delay_s, lambda: self._spawn(call, self._answer(call)))

    @staticmethod
    def _codec_possible(offer: SessionDescription) -> bool:
        caps = Capabilities("127.0.0.1", _codecs_for(offer))
        answer = build_answer(offer, caps, [9] * len(offer.media))
        return negotiate(offer, answer, we_offered=False) is not None

    def _final(self, call: _Call, status: int, body: bytes = b"") -> Response:
        response = call.dialog.create_response(
            call.invite, status, body=body, content_type="application/sdp" if body else None
        )
        response.add("Server", self.user_agent)
        if status >= 200 and body:
            response.add("Allow", ALLOW)
        return response

    async def _answer(self, call: _Call) -> None:
        loop = self.endpoint.loop
        host = self.address[0]
        codec = _codecs_for(call.offer)[0].name
        stream = _RtpStream(loop, call.number == HUMAN)
        stream.use(codec, 0 if codec == "PCMU" else 8, self._audio(call, codec))
        call.rtp = stream
        await loop.create_datagram_endpoint(lambda: stream, local_addr=(host, 0))
        txn = self.endpoint.txns.get(call.invite_key)
        if call.dialog.id not in self._calls or txn is None or txn.state is not State.PROCEEDING:
            self._drop(call)  # cancelled meanwhile
            return
        call.origin = OriginTracker(secrets.randbelow(2**31), host, username="far-end")
        caps = Capabilities(host, _codecs_for(call.offer), ptime=20, session_name="test far end")
        port = stream.port
        if call.offer is None:
            call.we_offered = True
            call.offer = call.origin.stamp(build_offer(caps, port))
            sdp = call.offer
        else:
            sdp = call.origin.stamp(build_answer(call.offer, caps, [port] * len(call.offer.media)))
        call.answer_body = sdp.serialize()
        response = self._final(call, 200, call.answer_body)
        self.endpoint.respond(call.invite_key, response)
        self._by_invite.pop(call.invite_key, None)
        call.ok = InviteOkRetransmitter(response, loop.time(), self.timers)
        self._arm_ok(call)
        if not call.we_offered:
            media = negotiate(call.offer, sdp, we_offered=False)
            stream.payload_type = media.payload_type  # the offerer's number for it
            stream.start(media.remote_rtp)
        hangup = self.talk_s if call.number == HUMAN else self.greeting_talk_s
        self._later(call, hangup, lambda: self._hangup(call))
        event(log, "testmode.answered", number=call.number, call_id=call.dialog.call_id, codec=codec)

    # -- 2xx and ACK -------------------------------------------------------------------------------
    def _arm_ok(self, call: _Call) -> None:
        when = call.ok.get_timer() if call.ok is not None else None
        if when is not None:
            call.ok_timer = self.endpoint.loop.call_at(when, lambda: self._ok_due(call))

    def _ok_due(self, call: _Call) -> None:
        for response in call.ok.handle_timer(self.endpoint.loop.time()):
            self.endpoint.send_stateless(response, call.flow)
        if isinstance(call.ok.next_event(), AckTimeout):
            event(log, "testmode.ack_timeout", level=logging.WARNING, call_id=call.dialog.call_id)
            if call.bye_due:
                self._send_bye(call)
            return
        self._arm_ok(call)

    def _on_ack(self, call: _Call, ack: Request) -> None:
        if call.ok is None or not call.ok.receive_ack(ack, self.endpoint.loop.time()):
            return
        if call.ok_timer is not None:
            call.ok_timer.cancel()
        if call.we_offered and call.rtp is not None and call.offer.media:
            try:
                answer = SessionDescription.parse(ack.body) if ack.body else None
            except SdpError:
                answer = None
            media = None if answer is None else negotiate(call.offer, answer, we_offered=True)
            if media is None:
                self._send_bye(call)
                return
            if media.codec.name.upper() not in _SILENCE:
                self._send_bye(call)
                return
            call.rtp.use(media.codec.name.upper(), media.payload_type, self._audio(call, media.codec.name.upper()))
            call.rtp.start(media.remote_rtp)
        if call.bye_due:
            self._send_bye(call)

    def _audio(self, call: _Call, codec: str) -> bytes:
        return _encoded(codec, call.number, self.greeting_s)

    def _hangup(self, call: _Call) -> None:
        if call.ok is not None and call.ok.done:
            self._send_bye(call)
        else:
            call.bye_due = True  # 15: the callee's BYE waits for the ACK (or its timeout)

    def _send_bye(self, call: _Call) -> None:
        try:
            bye = call.dialog.create_request("BYE", headers=[("User-Agent", self.user_agent)])
        except DialogError:
            self._drop(call)
            return
        flow = self._flow_to_peer(call)
        self._drop(call)
        if flow is not None:
            self.endpoint.request(bye, flow, lambda ev: None)
        event(log, "testmode.bye", call_id=call.dialog.call_id)

    def _flow_to_peer(self, call: _Call) -> Flow | None:
        """Where in-dialog requests go: over the INVITE's connection, or by UDP to the first route or the
        remote target."""
        if call.flow.reliable:
            return call.flow
        hops = [route.uri for route in call.dialog.route_set] + [call.dialog.remote_target]
        uri = hops[0]
        if not isinstance(uri, SipUri):
            return None
        return self.endpoint.flow_to("udp", uri.host.strip("[]"), uri.port or 5060)

    # -- CANCEL and in-dialog requests ---------------------------------------------------------------
    def _on_cancel(self, ev: RequestReceived) -> None:
        invite_key = self.endpoint.txns.find_invite_for_cancel(ev.request)
        if invite_key is None:
            self._respond(ev, self._response(ev.request, 481))
            return
        self._respond(ev, self._response(ev.request, 200))  # 9.2: the CANCEL's 200, then the INVITE's 487
        call = self._by_invite.get(invite_key)
        txn = self.endpoint.txns.get(invite_key)
        if call is not None and txn is not None and txn.state is State.PROCEEDING:
            self.endpoint.respond(invite_key, self._final(call, 487))
            self._drop(call)

    def _in_dialog(self, ev: RequestReceived) -> None:
        request = ev.request
        call = self._calls.get(dialog_id_of(request))
        if call is None:
            self._respond(ev, self._response(request, 481))  # 12.2.2
            return
        refused = call.dialog.receive_request(request)
        if refused is not None:
            self._respond(ev, refused)
            return
        method = request.method
        if method == "BYE":
            self._respond(ev, call.dialog.create_response(request, 200))
            self._drop(call)
            event(log, "testmode.caller_bye", call_id=call.dialog.call_id)
        elif method in ("INVITE", "UPDATE") and call.answer_body:
            self._follow_offer(call, request)
            body = call.answer_body if (request.body or method == "INVITE") else b""
            response = call.dialog.create_response(
                request, 200, body=body, content_type="application/sdp" if body else None
            )
            self._respond(ev, response)
            if method == "INVITE":
                loop = self.endpoint.loop
                if call.ok_timer is not None:
                    call.ok_timer.cancel()
                call.ok = InviteOkRetransmitter(response, loop.time(), self.timers)
                self._arm_ok(call)
        else:
            self._respond(ev, call.dialog.create_response(request, 200))

    @staticmethod
    def _follow_offer(call: _Call, request: Request) -> None:
        """A re-offer that moves the caller's media (not a hold) moves where our RTP goes."""
        if not request.body or call.rtp is None or call.we_offered:
            return
        try:
            offer = SessionDescription.parse(request.body)
        except SdpError:
            return
        if not offer.media:
            return
        address = offer.rtp_address(offer.media[0])
        connection = offer.effective_connection(offer.media[0])
        if address is not None and connection is not None and not connection.is_hold:
            call.rtp.start(address)

    # -- bookkeeping -------------------------------------------------------------------------------
    def _later(self, call: _Call, delay: float, action: Callable[[], None]) -> None:
        call.timers.append(self.endpoint.loop.call_later(delay, action))

    def _spawn(self, call: _Call, work: Coroutine[None, None, None]) -> None:
        task = self.endpoint.loop.create_task(work)
        call.tasks.add(task)
        task.add_done_callback(call.tasks.discard)

    def _drop(self, call: _Call) -> None:
        """Forget a call: its timers, its 2xx retransmission, its RTP."""
        for handle in call.timers:
            handle.cancel()
        call.timers.clear()
        for task in call.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if call.ok_timer is not None:
            call.ok_timer.cancel()
        if call.rtp is not None:
            call.rtp.close()
        self._calls.pop(call.dialog.id, None)
        self._by_invite.pop(call.invite_key, None)
        call.dialog.terminate()
