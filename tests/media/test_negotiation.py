"""SDP to engine: two phones with different codec choices call through two legs, and media flows."""

from __future__ import annotations

import struct

import pytest
from helpers import HOST, far_end, header, rtp, wait_for

from media import g711
from media.engine import MediaEngine
from media.negotiation import accepted, answer, apply, offer
from softswitch.sip.offer_answer import OriginTracker
from softswitch.sip.sdp import SessionDescription


def phone_sdp(port: int, formats: str, rtpmaps: str) -> SessionDescription:
    return SessionDescription.parse(
        f"v=0\r\no=phone 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {formats}\r\n{rtpmaps}a=ptime:20\r\n"
    )


@pytest.fixture
def engine():
    eng = MediaEngine((29100, 29199), HOST)
    yield eng
    eng.close()


def test_negotiation_answer_offer_apply_and_relay(engine):
    a, b = engine.create_leg(), engine.create_leg()
    fa, fb = far_end(), far_end()
    # the caller offers PCMU with events on PT 96
    offer_a = phone_sdp(fa.getsockname()[1], "0 96", "a=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\n")
    our_answer, media_a = answer(a, offer_a, OriginTracker(1000, HOST))
    assert our_answer.media[0].port == a.port and media_a.payload_type == 0 and media_a.telephone_event == 96
    # we offer the callee everything; it takes PCMA and events on PT 101
    our_offer = offer(b, OriginTracker(2000, HOST))
    assert our_offer.media[0].port == b.port
    answer_b = phone_sdp(fb.getsockname()[1], "8 101", "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n")
    media_b = accepted(our_offer, answer_b)
    assert media_b.codec.name.upper() == "PCMA" and media_b.telephone_event == 101
    apply(engine, a, media_a)
    apply(engine, b, media_b)
    engine.bridge(a, b)
    voice = bytes(range(160))
    fa.sendto(rtp(1, 160, 0x1, pt=0, payload=voice), (HOST, a.port))
    got = fb.recv(2048)
    assert header(got)["pt"] == 8 and got[12:] == g711.ulaw_to_alaw(voice)
    fa.sendto(rtp(2, 320, 0x1, pt=96, marker=True, payload=struct.pack("!BBH", 3, 0x8A, 800)), (HOST, a.port))
    event = fb.recv(2048)
    assert header(event)["pt"] == 101 and event[12] == 3
    assert wait_for(lambda: [e for e in engine.events() if e.kind == "dtmf"])[0].detail["digit"] == "3"


def test_negotiation_nothing_in_common_is_refused(engine):
    leg = engine.create_leg()
    remote = phone_sdp(40000, "18", "a=rtpmap:18 G729/8000\r\n")
    our_answer, media = answer(leg, remote, OriginTracker(1, HOST))
    assert media is None and our_answer.media[0].port == 0
