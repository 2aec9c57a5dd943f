"""The test-mode far end (softswitch/testmode.py) driven over real sockets on 127.0.0.1: by SIPp for the
call flows a carrier would see, and by a small UAC on SipEndpoint where the RTP and timing are checked."""

from __future__ import annotations

import asyncio
import itertools
import secrets

import numpy as np
import pytest
from helpers import header
from interop.sipp import free_udp_port, run_uac, sipp_binary

from media.amd import AmdParams, analyze
from media.dtmf import dbm0_amplitude
from media.g711 import ulaw_decode
from softswitch.config import ListenAddress
from softswitch.sip.dialog import Dialog, new_tag
from softswitch.sip.message import Request, Response, build_response
from softswitch.sip.sdp import SessionDescription
from softswitch.sip.transaction import RequestReceived, ResponseReceived, TimerConfig
from softswitch.testmode import TestFarEnd, human_audio, voicemail_audio
from softswitch.transport.endpoint import SipEndpoint

assert sipp_binary(), "SIPp (sip-tester) is installed by .ci/run"

HOST = "127.0.0.1"
FAST = TimerConfig(t1=0.05, t2=0.4, t4=0.5)


def offer(port: int, formats: str = "0 101") -> bytes:
    lines = [
        "v=0",
        f"o=caller 1 1 IN IP4 {HOST}",
        "s=-",
        f"c=IN IP4 {HOST}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
    ]
    lines += ["a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


class Rtp(asyncio.DatagramProtocol):
    """A caller's RTP port: every packet with its arrival time."""

    def __init__(self) -> None:
        self.packets: list[tuple[float, bytes]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.packets.append((asyncio.get_running_loop().time(), data))

    @property
    def port(self) -> int:
        return self.transport.get_extra_info("sockname")[1]


class Caller:
    """A minimal UAC on SipEndpoint: INVITE, ACK when told, BYE; records what the far end sends."""

    def __init__(self, far: tuple[str, int]) -> None:
        self.far = far
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.requests: list[tuple[float, Request]] = []
        self.ok_repeats = 0
        self.endpoint: SipEndpoint | None = None
        self.rtp = Rtp()
        self.invite: Request | None = None
        self.dialog: Dialog | None = None

    async def start(self) -> Caller:
        self.endpoint = SipEndpoint(self.on_event, timers=FAST)
        self.port = free_udp_port()
        await self.endpoint.listen(ListenAddress("udp", HOST, self.port))
        await self.endpoint.loop.create_datagram_endpoint(lambda: self.rtp, local_addr=(HOST, 0))
        self.flow = self.endpoint.flow_to("udp", *self.far)
        return self

    async def close(self) -> None:
        self.rtp.transport.close()
        await self.endpoint.close()

    def on_event(self, endpoint: SipEndpoint, ev: object) -> None:
        if isinstance(ev, RequestReceived) and ev.key is not None:
            self.requests.append((endpoint.loop.time(), ev.request))
            request = ev.request
            if self.dialog is not None and request.call_id == self.dialog.call_id:
                endpoint.respond(ev.key, self.dialog.create_response(request, 200))
            else:
                endpoint.respond(ev.key, build_response(request, 481))
        elif isinstance(ev, ResponseReceived) and ev.response.status == 200:
            self.ok_repeats += 1  # a 2xx retransmission, after the transaction handed over the first

    def new_request(self, method: str, number: str, body: bytes = b"", call_id: str | None = None) -> Request:
        host, port = self.far
        headers = [
            ("Max-Forwards", "70"),
            ("From", f"<sip:caller@{HOST}:{self.port}>;tag={new_tag()}"),
            ("To", f"<sip:{number}@{host}:{port}>"),
            ("Call-ID", call_id or secrets.token_hex(8)),
            ("CSeq", f"1 {method}"),
            ("Contact", f"<sip:caller@{HOST}:{self.port}>"),
        ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return Request(method, f"sip:{number}@{host}:{port}", headers, body)

    def send_invite(self, number: str, body: bytes | None = None) -> object:
        self.invite = self.new_request("INVITE", number, offer(self.rtp.port) if body is None else body)
        return self.endpoint.request(self.invite, self.flow, self.on_response)

    def on_response(self, ev: object) -> None:
        if isinstance(ev, ResponseReceived):
            self.responses.put_nowait(ev.response)

    async def next_response(self, timeout: float = 3.0) -> Response:
        return await asyncio.wait_for(self.responses.get(), timeout)

    async def answered(self, number: str, *, ack: bool = True, body: bytes | None = None) -> Response:
        """INVITE `number` and wait for its 200 (ACKed unless told not to); the 1xx are skipped."""
        self.send_invite(number, body)
        while (response := await self.next_response()).status < 200:
            pass
        assert response.status == 200, response
        self.dialog = Dialog.uac(self.invite, response)
        if ack:
            self.ack()
        return response

    def ack(self, body: bytes = b"") -> None:
        ack = self.dialog.create_ack(body=body, content_type="application/sdp" if body else None)
        self.endpoint.send_stateless(ack, self.flow)

    async def in_dialog(self, method: str, body: bytes = b"") -> Response:
        request = self.dialog.create_request(method, body=body, content_type="application/sdp" if body else None)
        return await self.endpoint.final_response(request, self.flow)

    def byes(self) -> list[float]:
        return [at for at, request in self.requests if request.method == "BYE"]


@pytest.fixture
async def far():
    far_end = TestFarEnd(timers=FAST, answer_delay_s=0.2, talk_s=1.5, greeting_talk_s=3.0, greeting_s=1.5)
    await far_end.start()
    yield far_end
    await far_end.close()


@pytest.fixture
async def caller(far):
    uac = await Caller(far.address).start()
    yield uac
    await uac.close()


def sipp(scenario: str, far: TestFarEnd, service: str):
    """SIPp as the caller, in a thread: the far end's loop must keep running meanwhile."""
    host, port = far.address
    return asyncio.to_thread(run_uac, scenario, f"{host}:{port}", port=free_udp_port(), service=service, timeout_s=10)


# -- the behaviour table through SIPp -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("scenario", "number"),
    [
        ("uac_expect_486", "+15005550001"),
        ("uac_expect_503", "+15005550003"),
        ("uac_expect_404", "+15005559999"),
        ("uac_cancel", "+15005550002"),
        ("uac_wait_bye", "15005550006"),
        ("uac_wait_bye", "+15005550007"),
    ],
)
async def test_sipp_caller_gets_the_behaviour_of_each_magic_number(far, scenario, number):
    result = await sipp(scenario, far, number)
    assert result.ok, result.summary()
    assert far.calls == 0


# -- 0006: a person ------------------------------------------------------------------------------------
async def test_human_number_rings_answers_streams_speech_and_hangs_up_after_talk_s(far, caller):
    loop = asyncio.get_running_loop()
    started = loop.time()
    caller.send_invite("+15005550006")
    statuses = []
    while (response := await caller.next_response()).status < 200:
        statuses.append(response.status)
    answered_at = loop.time()
    assert 180 in statuses and response.status == 200
    assert answered_at - started >= 0.19
    caller.dialog = Dialog.uac(caller.invite, response)
    caller.ack()
    answer = SessionDescription.parse(response.body)
    media = answer.media[0]
    assert [c.name for c in media.codecs] == ["PCMU", "telephone-event"]
    assert [c.payload_type for c in media.codecs] == [0, 101]
    assert far.calls == 1

    await asyncio.sleep(1.2)
    packets = list(caller.rtp.packets)
    headers = [header(data) for _, data in packets]
    assert all(data[0] >> 6 == 2 and len(data) == 172 for _, data in packets)
    assert {h["pt"] for h in headers} == {0} and len({h["ssrc"] for h in headers}) == 1
    assert headers[0]["marker"] and not any(h["marker"] for h in headers[1:])
    assert all((b["seq"] - a["seq"]) % 65536 == 1 for a, b in itertools.pairwise(headers))
    assert all((b["ts"] - a["ts"]) % 2**32 == 160 for a, b in itertools.pairwise(headers))
    times = [at for at, _ in packets]
    in_one_second = sum(1 for at in times if times[0] <= at < times[0] + 1.0)
    assert 47 <= in_one_second <= 53
    pcm = np.frombuffer(ulaw_decode(b"".join(data[12:] for _, data in packets)), dtype=np.int16)
    assert np.abs(pcm).max() > 1000  # it speaks
    spectrum = np.abs(np.fft.rfft(pcm.astype(float))) ** 2
    assert spectrum.max() / spectrum.sum() < 0.05  # not a tone: the energy is spread over many frequencies

    while not caller.byes():
        await asyncio.sleep(0.02)
    assert 1.3 <= caller.byes()[0] - answered_at <= 1.8
    count = len(caller.rtp.packets)
    await asyncio.sleep(0.1)
    assert len(caller.rtp.packets) <= count + 1  # RTP stopped with the BYE
    assert far.calls == 0


async def test_bye_from_the_caller_stops_the_rtp_and_a_pcma_offer_gets_pcma(far, caller):
    response = await caller.answered("+15005550006")
    assert SessionDescription.parse(response.body).media[0].codecs[0].name == "PCMU"
    await caller.in_dialog("BYE")
    assert far.calls == 0

    caller.dialog = None
    caller.send_invite("15005550006", offer(caller.rtp.port, "8"))
    while (response := await caller.next_response()).status < 200:
        pass
    caller.dialog = Dialog.uac(caller.invite, response)
    caller.ack()
    codecs = SessionDescription.parse(response.body).media[0].codecs
    assert [(c.payload_type, c.name) for c in codecs] == [(8, "PCMA")]
    caller.rtp.packets.clear()
    await asyncio.sleep(0.3)
    assert {header(data)["pt"] for _, data in caller.rtp.packets} == {8}
    bye = await caller.in_dialog("BYE")
    assert bye.status == 200
    await asyncio.sleep(0.05)
    count = len(caller.rtp.packets)
    await asyncio.sleep(0.2)
    assert len(caller.rtp.packets) == count
    assert far.calls == 0 and not caller.byes()


async def test_the_2xx_is_retransmitted_until_the_ack_and_the_bye_waits_for_it(caller):
    far = TestFarEnd(timers=FAST, answer_delay_s=0.05, talk_s=0.1)
    await far.start()
    try:
        caller.far = far.address
        caller.flow = caller.endpoint.flow_to("udp", *far.address)
        await caller.answered("15005550006", ack=False)
        await asyncio.sleep(0.4)
        assert caller.ok_repeats >= 2  # at 50, 150, 350 ms
        assert not caller.byes()  # talk_s is over, but 15: no BYE before the ACK
        caller.ack()
        await asyncio.sleep(0.1)
        repeats = caller.ok_repeats
        assert len(caller.byes()) == 1
        await asyncio.sleep(0.3)
        assert caller.ok_repeats == repeats
        assert far.calls == 0
    finally:
        await far.close()


async def test_an_invite_without_sdp_gets_an_offer_and_the_ack_carries_the_answer(far, caller):
    response = await caller.answered("15005550006", ack=False, body=b"")
    ours = SessionDescription.parse(response.body)
    assert {c.name for c in ours.media[0].codecs} >= {"PCMU", "PCMA"}
    await asyncio.sleep(0.1)
    assert not caller.rtp.packets  # nowhere to send before the answer
    answer = offer(caller.rtp.port, "8").replace(b"o=caller 1 1", b"o=caller 1 2")
    caller.ack(answer)
    await asyncio.sleep(0.2)
    assert caller.rtp.packets and {header(data)["pt"] for _, data in caller.rtp.packets} == {8}


# -- 0007: a voicemail ----------------------------------------------------------------------------------
def test_the_generated_audio_is_judged_human_and_machine_with_the_beep_where_stated():
    assert analyze(human_audio()).result == "human"
    greeting = np.concatenate([voicemail_audio(5.0), np.zeros(3 * 8000, dtype=np.int16)])
    verdict = analyze(greeting)
    assert verdict.result == "machine" and verdict.end == "beep"
    assert abs(verdict.beep_end_ms - 5900) <= 60


async def test_voicemail_number_plays_greeting_silence_beep_then_silence(far, caller):
    loop = asyncio.get_running_loop()
    await caller.answered("+15005550007")
    answered_at = loop.time()
    while not caller.byes():
        await asyncio.sleep(0.05)
    assert 2.8 <= caller.byes()[0] - answered_at <= 3.4
    payload = b"".join(data[12:] for _, data in caller.rtp.packets)
    pcm = np.frombuffer(ulaw_decode(payload), dtype=np.int16).astype(float)
    assert len(pcm) >= 2.7 * 8000
    speech, gap, beep, after = pcm[:12000], pcm[12000:15200], pcm[15200:19200], pcm[19200:]
    assert np.abs(speech).max() > 1000 and np.abs(gap).max() < 10 and np.abs(after).max() < 10
    spectrum = np.abs(np.fft.rfft(beep))
    assert abs(np.argmax(spectrum) * 8000 / len(beep) - 1000) <= 4
    level = 20 * np.log10(np.sqrt(np.mean(beep**2)) * np.sqrt(2) / dbm0_amplitude(0))
    assert -10.5 <= level <= -9.5
    verdict = analyze(pcm.astype(np.int16), AmdParams(greeting_ms=1000))
    assert verdict.result == "machine" and abs(verdict.beep_end_ms - 2400) <= 60


# -- the rest of a UAS's duties ------------------------------------------------------------------------
async def test_options_reinvite_in_dialog_requests_and_cancel(far, caller):
    options = await caller.endpoint.final_response(caller.new_request("OPTIONS", "15005550006"), caller.flow)
    assert options.status == 200 and "INVITE" in options.get("Allow")

    response = await caller.answered("15005550006")
    reinvite = await caller.in_dialog("INVITE", offer(caller.rtp.port).replace(b"o=caller 1 1", b"o=caller 1 2"))
    assert reinvite.status == 200 and reinvite.body == response.body
    caller.ack()
    assert (await caller.in_dialog("INFO")).status == 200
    assert (await caller.in_dialog("SUBSCRIBE")).status == 405

    stray = caller.new_request("BYE", "15005550006")
    stray.set("To", f"{stray.get('To')};tag=nosuchdialog")
    assert (await caller.endpoint.final_response(stray, caller.flow)).status == 481

    caller.responses = asyncio.Queue()
    key = caller.send_invite("+15005550002")
    while (ringing := await caller.next_response()).status == 100:
        pass
    assert ringing.status == 180 and far.calls == 2
    caller.endpoint.cancel(key)
    assert (await caller.next_response()).status == 487
    assert far.calls == 1


async def test_close_ends_calls_at_once_without_a_bye(caller):
    far = TestFarEnd(timers=FAST, answer_delay_s=0.05)
    await far.start()
    caller.far = far.address
    caller.flow = caller.endpoint.flow_to("udp", *far.address)
    await caller.answered("15005550006")
    await asyncio.sleep(0.1)
    assert caller.rtp.packets
    await far.close()
    await asyncio.sleep(0.05)  # what was sent before the close may still be on its way
    count = len(caller.rtp.packets)
    await asyncio.sleep(0.2)
    assert len(caller.rtp.packets) == count and far.calls == 0 and not caller.byes()
