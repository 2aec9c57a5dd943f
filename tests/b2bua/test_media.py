"""SDP rewriting between the two sides of a call, over a real media engine and real RTP sockets."""

from __future__ import annotations

import pytest
from helpers import HOST, far_end, header, rtp

from media.engine import MediaEngine
from softswitch.b2bua.media import CallMedia, MediaRefused
from softswitch.sip.sdp import Direction, SessionDescription


def sdp(port: int, codecs: str = "8 0 101", direction: str = "sendrecv", version: int = 1) -> bytes:
    lines = [
        "v=0",
        f"o=peer 42 {version} IN IP4 {HOST}",
        "s=-",
        f"c=IN IP4 {HOST}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {codecs}",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:18 G729/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.fixture
def engine():
    eng = MediaEngine((24000, 24099))
    yield eng
    eng.close()


def audio(body: bytes):
    desc = SessionDescription.parse(body)
    return desc, desc.media[0]


def test_media_offer_keeps_caller_codecs_in_order_on_our_port(engine):
    media = CallMedia(engine)
    offer, m = audio(media.offer_from("a", sdp(4000, "8 0 18 101")))
    assert m.port == media.legs["b"].port and offer.connection.address == HOST
    assert [c.name for c in m.codecs] == ["PCMA", "PCMU", "telephone-event"]  # G.729 is not ours to carry
    media.close()


def test_media_answer_names_the_callee_codec_and_relays_rtp_both_ways(engine):
    a_far, b_far = far_end(), far_end()
    media = CallMedia(engine)
    media.offer_from("a", sdp(a_far.getsockname()[1]))
    answer_b = sdp(b_far.getsockname()[1], codecs="0 101")
    reply, m = audio(media.answer_from("b", answer_b))
    assert m.port == media.legs["a"].port
    assert [c.name for c in m.codecs] == ["PCMU", "telephone-event"]
    assert media.mode == "relay" and media.answered
    a_far.sendto(rtp(1, 160, 0x1111), (HOST, media.legs["a"].port))
    data, _ = b_far.recvfrom(2048)
    assert header(data)["pt"] == 0 and header(data)["seq"] == 1
    b_far.sendto(rtp(7, 320, 0x2222), (HOST, media.legs["b"].port))
    data, _ = a_far.recvfrom(2048)
    assert header(data)["seq"] == 7
    stats = media.close()
    assert stats["a"]["rx_packets"] == 1 and stats["b"]["rx_packets"] == 1
    assert stats["a"]["codec"] == "PCMU"


def test_media_hold_direction_crosses_both_ways(engine):
    media = CallMedia(engine)
    _, m = audio(media.offer_from("a", sdp(4000, direction="sendonly")))
    assert m.direction is Direction.SENDONLY
    _, m = audio(media.answer_from("b", sdp(4100, "8 101", direction="recvonly")))
    assert m.direction is Direction.RECVONLY
    media.close()


def test_media_refuses_an_offer_without_a_common_codec(engine):
    media = CallMedia(engine)
    with pytest.raises(MediaRefused, match="no codec"):
        media.offer_from("a", sdp(4000, "18"))
    with pytest.raises(MediaRefused, match="malformed"):
        media.offer_from("a", b"v=0\r\nnot sdp\r\n")
    media.close()


def test_media_refresh_is_an_offer_with_the_same_origin_version(engine):
    media = CallMedia(engine)
    media.offer_from("a", sdp(4000, version=3))
    media.answer_from("b", sdp(4100, "8 101"))
    assert media.is_refresh("a", sdp(4000, version=3))
    assert not media.is_refresh("a", sdp(4000, version=4))
    assert not media.is_refresh("b", sdp(4100, "8 101", version=5))
    media.close()


def test_media_late_offer_goes_to_the_callee_then_the_caller(engine):
    media = CallMedia(engine)
    _, m = audio(media.initial_offer("b"))
    assert [c.name for c in m.codecs] == ["PCMU", "PCMA", "telephone-event"]
    assert media.answer_from("b", sdp(4100, "8 101")) is None
    _, m = audio(media.late_offer_for("a"))
    assert [c.name for c in m.codecs] == ["PCMA", "telephone-event"]
    media.late_answer("a", sdp(4000, "8 101"))
    assert media.mode == "relay"
    media.close()


def test_media_transfer_offer_carries_only_the_remaining_party_codec(engine):
    media = CallMedia(engine)
    media.offer_from("a", sdp(4000))
    media.answer_from("b", sdp(4100, "8 101", direction="recvonly"))
    _, m = audio(media.transfer_offer("b"))
    assert [c.name for c in m.codecs] == ["PCMA", "telephone-event"] and m.port == media.legs["b"].port
    assert media.answer_from("b", sdp(4200, "8 101")) is None  # the target's answer re-points leg b
    assert media.negotiated["b"].remote_rtp == (HOST, 4200)
    media.close()


@pytest.mark.parametrize(
    "policy,caller_codecs,listening",
    [
        # a caller without telephone-event: neither side gets it offered, both can only send tones
        ("auto", "0", {"a": True, "b": True}),
        ("auto", "0 101", {"a": False, "b": False}),
        ("always", "0 101", {"a": True, "b": True}),
        ("never", "0", {"a": False, "b": False}),
    ],
)
def test_media_inband_dtmf_listening_follows_the_policy_and_the_negotiation(engine, policy, caller_codecs, listening):
    media = CallMedia(engine, inband_dtmf=policy)
    media.offer_from("a", sdp(30000, caller_codecs))
    media.answer_from("b", sdp(30002, "0 101" if "101" in caller_codecs else "0"))
    assert media.listening == listening
    media.close()


def savp(port: int, *cryptos: str) -> bytes:
    body = sdp(port, codecs="0 101").decode().replace("RTP/AVP", "RTP/SAVP")
    return (body + "".join(f"a=crypto:{c}\r\n" for c in cryptos)).encode()


def test_media_srtp_offer_over_tls_answered_with_our_key_and_relayed_to_a_plain_side(engine):
    import base64
    import os

    from cext.srtp import Srtp

    a_far, b_far = far_end(), far_end()
    theirs = os.urandom(30)
    media = CallMedia(engine)
    media.secure.add("a")
    offer_b, mb = audio(
        media.offer_from(
            "a",
            savp(
                a_far.getsockname()[1],
                "1 AES_CM_256_HMAC_SHA1_80 inline:" + base64.b64encode(os.urandom(46)).decode(),  # not ours
                "2 AES_CM_128_HMAC_SHA1_32 inline:" + base64.b64encode(theirs).decode() + "|2^20",
            ),
        )
    )
    assert mb.proto == "RTP/AVP" and not mb.attribute_values("crypto")  # the other side gets plain RTP
    reply, ma = audio(media.answer_from("b", sdp(b_far.getsockname()[1], codecs="0 101")))
    assert ma.proto == "RTP/SAVP" and ma.port == media.legs["a"].port
    [crypto] = ma.attribute_values("crypto")
    tag, suite, key = crypto.split()
    ours = base64.b64decode(key.removeprefix("inline:"))
    assert (tag, suite, len(ours)) == ("2", "AES_CM_128_HMAC_SHA1_32", 30) and ours != theirs
    # the caller's SRTP reaches the callee as plain RTP, and back, with the keys the SDP carried
    send, receive = Srtp(theirs, 4), Srtp(ours, 4)
    a_far.sendto(send.protect(rtp(1, 160, 0x1111)), (HOST, media.legs["a"].port))
    assert len(b_far.recv(2048)) == 172
    b_far.sendto(rtp(5, 160, 0x2222), (HOST, media.legs["b"].port))
    assert len(receive.unprotect(a_far.recv(2048))) == 172
    media.close()


def test_media_srtp_refused_over_plain_signalling_or_without_a_known_suite(engine):
    import base64
    import os

    key = base64.b64encode(os.urandom(30)).decode()
    media = CallMedia(engine)
    with pytest.raises(MediaRefused, match="needs TLS"):
        media.offer_from("a", savp(4000, f"1 AES_CM_128_HMAC_SHA1_80 inline:{key}"))
    media.secure.add("a")
    with pytest.raises(MediaRefused, match="suite"):
        media.offer_from("a", savp(4000, f"1 F8_128_HMAC_SHA1_80 inline:{key}"))
    media.close()
