"""RFC 3264 offer/answer (softswitch.sip.offer_answer): answers to Asterisk/baresip/SIPp offers, rejected
streams, payload numbers, directions and hold, re-offers and our o= line, our own offers, and the
negotiated stream the media engine consumes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.sip.offer_answer import (
    Capabilities,
    CodecSpec,
    NegotiatedMedia,
    OriginChange,
    OriginTracker,
    build_answer,
    build_offer,
    codec_spec,
    hold,
    negotiate,
    origin_change,
    resume,
    set_direction,
)
from softswitch.sip.sdp import Codec, Direction, MediaDescription, SessionDescription

OUR_ADDRESS = "203.0.113.5"
CAPS = Capabilities(OUR_ADDRESS, [("PCMU", 8000), ("PCMA", 8000), ("telephone-event", 8000)])


def _offer(media: str, *, session: str = "c=IN IP4 192.0.2.10\r\n", version: int = 1, sess_id: int = 77) -> str:
    return f"v=0\r\no=peer {sess_id} {version} IN IP4 192.0.2.10\r\ns=-\r\n{session}t=0 0\r\n{media}"


ASTERISK_AUDIO = (
    "m=audio 10000 RTP/AVP 8 0 3 101\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:3 GSM/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)
BARESIP_AUDIO_VIDEO = (
    "m=audio 40000 RTP/AVP 111 9 0 100\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 useinbandfec=1\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:100 telephone-event/8000\r\n"
    "a=fmtp:100 0-15\r\n"
    "a=rtcp:40005\r\n"
    "m=video 40002 RTP/AVP 97\r\n"
    "a=rtpmap:97 H264/90000\r\n"
)


def _answer(offer_text: str, caps: Capabilities = CAPS, ports: tuple[int, ...] = (20000, 20002)) -> SessionDescription:
    offer = SessionDescription.parse(offer_text)
    return build_answer(offer, caps, ports[: len(offer.media)])


def test_offer_answer_asterisk_offer_answered_in_our_order() -> None:
    answer = _answer(_offer(ASTERISK_AUDIO))
    (audio,) = answer.media
    assert answer.connection is not None and answer.connection.address == OUR_ADDRESS
    assert (audio.port, audio.proto, audio.formats) == (20000, "RTP/AVP", ("0", "8", "101"))
    assert [c.name for c in audio.codecs] == ["PCMU", "PCMA", "telephone-event"]
    assert audio.fmtp(101) == "0-16"
    assert audio.direction is Direction.SENDRECV
    assert SessionDescription.parse(answer.serialize()) == answer


def test_offer_answer_keeps_offerer_dynamic_payload_numbers() -> None:
    caps = Capabilities(OUR_ADDRESS, [("opus", 48000, 2), ("G722", 8000), ("telephone-event", 8000)])
    ours = build_offer(caps, 30000).media[0]
    assert ours.formats == ("96", "9", "97")
    answer = _answer(_offer(BARESIP_AUDIO_VIDEO), caps)
    audio = answer.media[0]
    assert audio.formats == ("111", "9", "100")
    assert audio.codecs[0] == Codec(111, "opus", 48000, 2, "useinbandfec=1")
    assert audio.codec(100) == Codec(100, "telephone-event", 8000, 1, "0-15")


def test_offer_answer_video_rejected_with_port_zero_and_one_format() -> None:
    answer = _answer(_offer(BARESIP_AUDIO_VIDEO), Capabilities(OUR_ADDRESS, [("G722", 8000), ("PCMU", 8000)]))
    audio, video = answer.media
    assert audio.formats == ("9", "0")
    assert video == MediaDescription("video", 0, "RTP/AVP", ("97",))
    assert "m=video 0 RTP/AVP 97\r\n" in answer.to_text()


def test_offer_answer_no_common_codec_rejected() -> None:
    answer = _answer(_offer("m=audio 4000 RTP/AVP 18 4\r\n"))
    assert answer.media == (MediaDescription("audio", 0, "RTP/AVP", ("18",)),)


def test_offer_answer_only_telephone_event_in_common_is_rejected() -> None:
    answer = _answer(_offer("m=audio 4000 RTP/AVP 18 101\r\na=rtpmap:101 telephone-event/8000\r\n"))
    assert answer.media[0].is_rejected


@pytest.mark.parametrize(
    "media",
    [
        "m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\n",
        "m=image 4000 udptl t38\r\n",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
        "m=audio 0 RTP/AVP 0\r\n",
    ],
)
def test_offer_answer_unsupported_or_disabled_stream_rejected(media: str) -> None:
    offered = SessionDescription.parse(_offer(media)).media[0]
    (answered,) = _answer(_offer(media)).media
    assert (answered.port, answered.proto, answered.formats) == (0, offered.proto, offered.formats[:1])


def test_offer_answer_channels_must_match_when_given() -> None:
    stereo = Capabilities(OUR_ADDRESS, [("opus", 48000, 2)])
    mono = Capabilities(OUR_ADDRESS, [("opus", 48000, 1)])
    assert _answer(_offer(BARESIP_AUDIO_VIDEO), stereo).media[0].formats == ("111",)
    assert _answer(_offer(BARESIP_AUDIO_VIDEO), mono).media[0].is_rejected


def test_offer_answer_codec_names_match_case_insensitively_and_by_rate() -> None:
    media = "m=audio 4000 RTP/AVP 97 98\r\na=rtpmap:97 pcmu/16000\r\na=rtpmap:98 pcma/8000\r\n"
    assert _answer(_offer(media)).media[0].formats == ("98",)


@pytest.mark.parametrize(
    ("offer_direction", "ours", "expected"),
    [
        ("a=sendrecv\r\n", Direction.SENDRECV, Direction.SENDRECV),
        ("", Direction.SENDRECV, Direction.SENDRECV),
        ("a=sendonly\r\n", Direction.SENDRECV, Direction.RECVONLY),
        ("a=recvonly\r\n", Direction.SENDRECV, Direction.SENDONLY),
        ("a=inactive\r\n", Direction.SENDRECV, Direction.INACTIVE),
        ("a=sendrecv\r\n", Direction.SENDONLY, Direction.SENDONLY),
        ("a=sendrecv\r\n", Direction.RECVONLY, Direction.RECVONLY),
        ("a=sendonly\r\n", Direction.SENDONLY, Direction.INACTIVE),
        ("a=recvonly\r\n", Direction.INACTIVE, Direction.INACTIVE),
    ],
)
def test_offer_answer_direction_rfc3264_6_1(offer_direction: str, ours: Direction, expected: Direction) -> None:
    caps = Capabilities(OUR_ADDRESS, [("PCMU", 8000)], direction=ours)
    answer = _answer(_offer("m=audio 4000 RTP/AVP 0\r\n" + offer_direction), caps)
    assert answer.media[0].direction is expected


def test_offer_answer_session_level_and_zero_address_hold() -> None:
    session_sendonly = _answer(_offer("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4 192.0.2.10\r\na=sendonly\r\n"))
    assert session_sendonly.media[0].direction is Direction.RECVONLY
    old_style = _answer(_offer("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4 0.0.0.0\r\n"))
    assert old_style.media[0].direction is Direction.RECVONLY


def test_offer_answer_telephone_event_fmtp_intersection() -> None:
    offer = _offer("m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16,32-35\r\n")

    def fmtp(ours: str | None) -> str | None:
        caps = Capabilities(OUR_ADDRESS, [("PCMU", 8000), CodecSpec("telephone-event", 8000, fmtp=ours)])
        media = _answer(offer, caps).media[0]
        return media.fmtp(101) if "101" in media.formats else "dropped"

    assert fmtp(None) == "0-16,32-35"
    assert fmtp("0-15") == "0-15"
    assert fmtp("0-16,33,40") == "0-16,33"
    assert fmtp("0-20,30-40") == "0-16,32-35"
    assert fmtp("50-60") == "dropped"
    assert fmtp("not a list") == "0-16,32-35"


def test_offer_answer_telephone_event_without_fmtp_means_0_to_15() -> None:
    offer = _offer("m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
    caps = Capabilities(OUR_ADDRESS, [("PCMU", 8000), CodecSpec("telephone-event", 8000, fmtp="0-16")])
    assert _answer(offer, caps).media[0].fmtp(101) is None  # mirrors the offer: 0-15 on both sides
    narrower = Capabilities(OUR_ADDRESS, [("PCMU", 8000), CodecSpec("telephone-event", 8000, fmtp="0-11")])
    assert _answer(offer, narrower).media[0].fmtp(101) == "0-11"


def test_offer_answer_ptime_rtcp_mux_and_our_fmtp() -> None:
    offer = _offer(
        "m=audio 4000 RTP/AVP 18 0\r\na=fmtp:18 annexb=yes\r\na=rtcp-mux\r\n"
        "m=audio 4002 RTP/AVP 18\r\na=fmtp:18 annexb=yes\r\n"
    )
    caps = Capabilities(OUR_ADDRESS, [CodecSpec("G729", 8000, fmtp="annexb=no")], ptime=30, rtcp_mux=True)
    first, second = _answer(offer, caps).media
    assert first.formats == ("18",)
    assert first.fmtp(18) == "annexb=no"
    assert (first.ptime, first.rtcp_mux) == (30, True)
    assert (second.port, second.rtcp_mux) == (20002, False)


def test_offer_answer_ipv6_answer() -> None:
    offer = _offer("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP6 2001:db8::10\r\n")
    answer = _answer(offer, Capabilities("2001:db8::5", [("PCMU", 8000)]))
    assert "c=IN IP6 2001:db8::5\r\n" in answer.to_text()
    result = negotiate(SessionDescription.parse(offer), answer, we_offered=False)
    assert result is not None and result.remote_rtp == ("2001:db8::10", 4000)


def test_offer_answer_ports_must_cover_every_section() -> None:
    offer = SessionDescription.parse(_offer(BARESIP_AUDIO_VIDEO))
    with pytest.raises(ValueError, match="2 media sections"):
        build_answer(offer, CAPS, [20000])


@pytest.mark.parametrize(
    "spec",
    [
        CodecSpec("PC MU", 8000),
        CodecSpec("PCMU/2", 8000),
        CodecSpec("", 8000),
        CodecSpec("PCMU", 0),
        CodecSpec("opus", 48000, 0),
        CodecSpec("opus", 48000, payload_type=128),
        CodecSpec("opus", 48000, payload_type=-1),
    ],
)
def test_offer_answer_capabilities_refuse_a_codec_no_rtpmap_line_can_say(spec: CodecSpec) -> None:
    with pytest.raises(ValueError, match=r"rtpmap|payload type"):
        Capabilities(OUR_ADDRESS, [("PCMU", 8000), spec])


def test_offer_answer_capabilities_need_a_media_codec() -> None:
    with pytest.raises(ValueError, match="media codec"):
        Capabilities(OUR_ADDRESS, [("telephone-event", 8000)])
    assert codec_spec(("opus", 48000, 2)) == CodecSpec("opus", 48000, 2)


def test_offer_answer_origin_tracker_versions() -> None:
    tracker = OriginTracker(4242, OUR_ADDRESS, username="softswitch", sess_version=7)
    first = tracker.stamp(_answer(_offer(ASTERISK_AUDIO)))
    assert str(first.origin) == "softswitch 4242 7 IN IP4 203.0.113.5"
    again = tracker.stamp(_answer(_offer(ASTERISK_AUDIO, version=2)))
    assert again.origin.sess_version == 7
    changed = tracker.stamp(_answer(_offer("m=audio 10000 RTP/AVP 8\r\n", version=3)))
    assert (changed.origin.sess_id, changed.origin.sess_version) == (4242, 8)
    assert tracker.last == changed
    assert OriginTracker(1, "2001:db8::1").origin.addrtype == "IP6"


def test_offer_answer_reoffer_with_port_change() -> None:
    tracker = OriginTracker(9, OUR_ADDRESS)
    first_offer = SessionDescription.parse(_offer(ASTERISK_AUDIO, version=1))
    first = tracker.stamp(build_answer(first_offer, CAPS, [20000]))
    reoffer = SessionDescription.parse(_offer(ASTERISK_AUDIO.replace("10000", "10100"), version=2))
    assert origin_change(first_offer, reoffer) is OriginChange.MODIFIED
    second = tracker.stamp(build_answer(reoffer, CAPS, [20000]))
    assert second == first  # our side did not change: same version
    result = negotiate(reoffer, second, we_offered=False)
    assert result is not None and result.remote_rtp == ("192.0.2.10", 10100)


def test_offer_answer_reoffer_with_codec_change_bumps_our_version() -> None:
    tracker = OriginTracker(9, OUR_ADDRESS, sess_version=3)
    tracker.stamp(_answer(_offer(ASTERISK_AUDIO)))
    reoffer = _offer("m=audio 10000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n", version=2)
    second = tracker.stamp(_answer(reoffer))
    assert second.origin.sess_version == 4
    assert second.media[0].formats == ("8", "101")


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (None, (77, 1), OriginChange.NEW_SESSION),
        ((77, 1), (77, 1), OriginChange.UNCHANGED),
        ((77, 1), (77, 2), OriginChange.MODIFIED),
        ((77, 2), (77, 1), OriginChange.STALE),
        ((77, 1), (78, 2), OriginChange.NEW_SESSION),
    ],
)
def test_offer_answer_origin_change(previous, current, expected) -> None:
    def sdp(ids: tuple[int, int]) -> SessionDescription:
        return SessionDescription.parse(_offer(ASTERISK_AUDIO, sess_id=ids[0], version=ids[1]))

    assert origin_change(None if previous is None else sdp(previous), sdp(current)) is expected


def test_offer_answer_build_offer_payload_types() -> None:
    caps = Capabilities(
        "192.0.2.1",
        [
            ("PCMU", 8000),
            ("opus", 48000, 2),
            CodecSpec("iLBC", 8000, fmtp="mode=30", payload_type=102),
            ("G722", 8000),
            ("telephone-event", 8000),
            ("telephone-event", 48000),
        ],
        ptime=20,
    )
    offer = build_offer(caps, 40000)
    (audio,) = offer.media
    assert audio.formats == ("0", "96", "102", "9", "97", "98")
    assert audio.codec(102) == Codec(102, "iLBC", 8000, 1, "mode=30")
    assert audio.fmtp(97) == "0-16"
    assert (audio.ptime, audio.direction) == (20, Direction.SENDRECV)
    assert offer.connection is not None and offer.connection.address == "192.0.2.1"
    assert SessionDescription.parse(offer.serialize()) == offer


def test_offer_answer_our_offer_answered_by_peer_then_negotiated() -> None:
    ours = Capabilities(OUR_ADDRESS, [("opus", 48000, 2), ("PCMA", 8000), ("telephone-event", 8000)], rtcp_mux=True)
    peer = Capabilities("198.51.100.7", [("PCMA", 8000), ("telephone-event", 8000)], ptime=30, rtcp_mux=True)
    offer = OriginTracker(1, OUR_ADDRESS).stamp(build_offer(ours, 30000))
    answer = OriginTracker(2, "198.51.100.7").stamp(build_answer(offer, peer, [50000]))
    mine = negotiate(offer, answer, we_offered=True)
    theirs = negotiate(offer, answer, we_offered=False)
    assert mine == NegotiatedMedia(
        index=0,
        media="audio",
        payload_type=8,
        codec=Codec(8, "PCMA", 8000),
        telephone_event=97,
        remote_rtp=("198.51.100.7", 50000),
        remote_rtcp=("198.51.100.7", 50000),
        rtcp_mux=True,
        ptime=30,
        direction=Direction.SENDRECV,
    )
    assert theirs is not None
    assert (theirs.remote_rtp, theirs.payload_type, theirs.telephone_event) == ((OUR_ADDRESS, 30000), 8, 97)


def test_offer_answer_negotiate_uses_remote_numbers_and_rtcp_attribute() -> None:
    offer = SessionDescription.parse(_offer(BARESIP_AUDIO_VIDEO))
    caps = Capabilities(OUR_ADDRESS, [("G722", 8000), ("telephone-event", 8000)], ptime=20)
    answer = build_answer(offer, caps, [20000, 20002])
    result = negotiate(offer, answer, we_offered=False)
    assert result is not None
    assert (result.payload_type, result.codec.name, result.codec.clock_rate) == (9, "G722", 8000)
    assert result.telephone_event == 100
    assert (result.remote_rtp, result.remote_rtcp, result.rtcp_mux) == (
        ("192.0.2.10", 40000),
        ("192.0.2.10", 40005),
        False,
    )
    assert result.ptime == 20
    assert negotiate(offer, answer, 1, we_offered=False) is None  # video rejected
    assert negotiate(offer, answer, 5, we_offered=False) is None


def test_offer_answer_negotiate_direction_and_hold() -> None:
    offer = SessionDescription.parse(_offer("m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n"))
    answer = build_answer(offer, CAPS, [20000])
    result = negotiate(offer, answer, we_offered=False)
    assert result is not None and result.direction is Direction.RECVONLY
    assert result.telephone_event is None
    assert result.ptime == 20  # default


def test_offer_answer_hold_and_resume() -> None:
    tracker = OriginTracker(5, OUR_ADDRESS)
    offer = tracker.stamp(build_offer(CAPS, 30000))
    held = tracker.stamp(hold(offer))
    assert held.media[0].direction is Direction.SENDONLY
    assert held.origin.sess_version == offer.origin.sess_version + 1
    assert tracker.stamp(hold(held)).media[0].direction is Direction.SENDONLY
    resumed = tracker.stamp(resume(held))
    assert resumed.media[0].direction is Direction.SENDRECV
    assert resumed.origin.sess_version == offer.origin.sess_version + 2
    recvonly = set_direction(offer, Direction.RECVONLY)
    assert hold(recvonly).media[0].direction is Direction.INACTIVE


def test_offer_answer_hold_moves_session_level_direction_and_skips_rejected() -> None:
    sdp = SessionDescription.parse(
        _offer("m=audio 4000 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\n", session="a=recvonly\r\n")
    )
    held = hold(sdp)
    assert held.direction is None
    assert held.media[0].direction is Direction.INACTIVE
    assert held.media[1] == sdp.media[1]


def test_offer_answer_peer_hold_answered_then_negotiated() -> None:
    offer = SessionDescription.parse(_offer(ASTERISK_AUDIO))
    held_offer = set_direction(offer, Direction.SENDONLY)
    answer = build_answer(held_offer, CAPS, [20000])
    assert answer.media[0].direction is Direction.RECVONLY
    result = negotiate(held_offer, answer, we_offered=False)
    assert result is not None and (result.direction.sends, result.direction.receives) == (False, True)


_codec_names = st.sampled_from(["PCMU", "PCMA", "G722", "G729", "opus", "telephone-event", "speex", "iLBC"])
_rates = st.sampled_from([8000, 16000, 48000])


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 127), _codec_names, _rates), min_size=1, max_size=6, unique_by=lambda c: c[0]),
    st.lists(st.tuples(_codec_names, _rates), min_size=1, max_size=4),
    st.sampled_from(list(Direction)),
)
def test_offer_answer_hypothesis_answer_invariants(offered, prefs, direction) -> None:
    lines = [f"m=audio 4000 RTP/AVP {' '.join(str(pt) for pt, _, _ in offered)}"]
    lines += [f"a=rtpmap:{pt} {name}/{rate}" for pt, name, rate in offered]
    offer = SessionDescription.parse(
        _offer("\r\n".join([*lines, f"a={direction.value}", "m=video 5000 RTP/AVP 31", ""]))
    )
    if all(name == "telephone-event" for name, _ in prefs):
        prefs.append(("PCMU", 8000))
    answer = build_answer(offer, Capabilities(OUR_ADDRESS, prefs), [20000, 20002])
    assert len(answer.media) == 2
    reread = SessionDescription.parse(answer.serialize())
    assert reread == answer
    assert [m.codecs for m in answer.media] == [m.codecs for m in reread.media]  # what it was built from = its text
    audio = answer.media[0]
    assert set(audio.formats) <= set(offer.media[0].formats)
    assert answer.media[1].is_rejected
    if audio.is_rejected:
        assert audio.formats == offer.media[0].formats[:1]
        assert negotiate(offer, answer, we_offered=False) is None
        return
    offered_codecs = {c.payload_type: (c.name.lower(), c.clock_rate) for c in offer.media[0].codecs}
    assert all(offered_codecs[c.payload_type] == (c.name.lower(), c.clock_rate) for c in audio.codecs)
    assert audio.direction is direction.reversed()
    result = negotiate(offer, answer, we_offered=False)
    assert result is not None and result.payload_type == int(audio.formats[0])


@settings(max_examples=200)
@given(
    st.lists(
        st.builds(
            CodecSpec,
            _codec_names,
            _rates,
            st.sampled_from([None, 1, 2]),
            st.sampled_from([None, "", "   ", "0-15", " useinbandfec=1 ", "mode=20\t"]),
            st.one_of(st.none(), st.integers(96, 127)),
        ),
        min_size=1,
        max_size=5,
    ).filter(lambda specs: any(not s.is_auxiliary for s in specs)),
)
def test_offer_answer_hypothesis_our_offer_knows_the_codecs_its_text_reads_back_as(specs) -> None:
    try:
        offer = build_offer(Capabilities(OUR_ADDRESS, specs, ptime=20), 20000)
    except ValueError:  # more codecs than dynamic payload types
        return
    reread = SessionDescription.parse(offer.serialize())
    assert reread == offer and reread.media[0].codecs == offer.media[0].codecs
