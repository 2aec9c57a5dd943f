"""SDP parsing and serialisation (softswitch.sip.sdp): real-world samples, hold variants, malformed input,
and hypothesis properties (structured round trip; only SdpError escapes parse())."""

from __future__ import annotations

import copy
import pickle

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.sip.sdp import (
    Attribute,
    Bandwidth,
    Codec,
    Connection,
    Crypto,
    Direction,
    MediaDescription,
    Origin,
    Rtcp,
    SdpError,
    SessionDescription,
    Timing,
)

ASTERISK_OFFER = (
    "v=0\r\n"
    "o=- 1234567890 1234567890 IN IP4 192.0.2.10\r\n"
    "s=Asterisk\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\n"
    "m=audio 10000 RTP/AVP 0 8 3 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:3 GSM/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
    "a=maxptime:150\r\n"
    "a=sendrecv\r\n"
)

BARESIP_OFFER = (
    "v=0\r\n"
    "o=- 2890844526 2890844527 IN IP4 198.51.100.7\r\n"
    "s=-\r\n"
    "c=IN IP4 198.51.100.7\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/AVP 96 9 0 8 101\r\n"
    "b=AS:64\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
    "a=fmtp:96 stereo=1;sprop-stereo=1\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=rtcp:40001 IN IP4 198.51.100.7\r\n"
    "a=rtcp-rsize\r\n"
    "a=ssrc:1527459582 cname:baresip@example\r\n"
    "a=sendrecv\r\n"
    "a=label:1\r\n"
    "m=video 40002 RTP/AVP 97\r\n"
    "b=AS:1000\r\n"
    "a=rtpmap:97 H264/90000\r\n"
    "a=fmtp:97 packetization-mode=0;profile-level-id=42e01f\r\n"
    "a=sendrecv\r\n"
)

SIPP_UAC_LF = (
    "v=0\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\n"
    "s=-\n"
    "c=IN IP4 127.0.0.1\n"
    "t=0 0\n"
    "m=audio 6000 RTP/AVP 0\n"
    "a=rtpmap:0 PCMU/8000\n"
)

RFC8866_EXAMPLE = (
    "v=0\r\n"
    "o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1\r\n"
    "s=Call to John Smith\r\n"
    "i=SDP Offer #1\r\n"
    "u=http://www.jdoe.example.com/home.html\r\n"
    "e=Jane Doe <jane@jdoe.example.com>\r\n"
    "p=+1 617 555-6011\r\n"
    "c=IN IP4 233.252.0.12/127\r\n"
    "b=CT:128\r\n"
    "t=3724394400 3724398000\r\n"
    "r=7d 1h 0 25h\r\n"
    "z=2882844526 -1h 2898848070 0\r\n"
    "k=prompt\r\n"
    "a=recvonly\r\n"
    "m=audio 49170 RTP/AVP 0\r\n"
    "i=voice\r\n"
    "m=video 51372/2 RTP/AVP 99\r\n"
    "c=IN IP6 ff15::101/3\r\n"
    "a=rtpmap:99 h263-1998/90000\r\n"
)

SRTP_OFFER = (
    "v=0\r\n"
    "o=alice 1 1 IN IP6 2001:db8::1\r\n"
    "s=-\r\n"
    "c=IN IP6 2001:db8::1\r\n"
    "t=0 0\r\n"
    "m=audio 5004 RTP/SAVP 8\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n"
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj KDR=1\r\n"
    "a=rtcp-mux\r\n"
)


def _sdp(media_lines: str, session_lines: str = "c=IN IP4 192.0.2.1\r\n") -> SessionDescription:
    head = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n" + session_lines + "t=0 0\r\n"
    return SessionDescription.parse(head + media_lines)


def test_sdp_parse_asterisk_offer() -> None:
    sdp = SessionDescription.parse(ASTERISK_OFFER)
    assert sdp.origin == Origin("-", 1234567890, 1234567890, "IN", "IP4", "192.0.2.10")
    assert sdp.name == "Asterisk"
    assert sdp.connection == Connection("IN", "IP4", "192.0.2.10")
    assert sdp.timings == (Timing(0, 0),)
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == ("audio", 10000, "RTP/AVP", ("0", "8", "3", "101"))
    assert [(c.payload_type, c.name, c.clock_rate) for c in audio.codecs] == [
        (0, "PCMU", 8000),
        (8, "PCMA", 8000),
        (3, "GSM", 8000),
        (101, "telephone-event", 8000),
    ]
    assert audio.fmtp(101) == "0-16"
    assert audio.codec(101) == Codec(101, "telephone-event", 8000, 1, "0-16")
    assert (audio.ptime, audio.maxptime) == (20, 150)
    assert audio.direction is Direction.SENDRECV
    assert sdp.rtp_address(audio) == ("192.0.2.10", 10000)
    assert sdp.rtcp_address(audio) == ("192.0.2.10", 10001)


def test_sdp_parse_baresip_audio_and_video() -> None:
    sdp = SessionDescription.parse(BARESIP_OFFER)
    audio, video = sdp.media
    assert audio.bandwidths == (Bandwidth("AS", 64),)
    opus = audio.codecs[0]
    assert opus == Codec(96, "opus", 48000, 2, "stereo=1;sprop-stereo=1")
    assert opus.rtpmap == "96 opus/48000/2"
    assert audio.codec(9) == Codec(9, "G722", 8000)
    assert audio.rtcp == Rtcp(40001, Connection("IN", "IP4", "198.51.100.7"))
    assert not audio.rtcp_mux
    assert audio.attribute("ssrc") == "1527459582 cname:baresip@example"
    assert audio.attribute("rtcp-rsize") == ""
    assert audio.attribute("absent") is None
    assert video.codecs == (Codec(97, "H264", 90000, 1, "packetization-mode=0;profile-level-id=42e01f"),)
    assert sdp.rtp_address(video) == ("198.51.100.7", 40002)


def test_sdp_parse_sipp_lf_only_and_serialise_crlf() -> None:
    sdp = SessionDescription.parse(SIPP_UAC_LF)
    assert sdp.origin.username == "user1"
    assert sdp.media[0].codecs == (Codec(0, "PCMU", 8000),)
    assert sdp.serialize() == SIPP_UAC_LF.replace("\n", "\r\n").encode()


def test_sdp_parse_rfc8866_example_all_fields() -> None:
    sdp = SessionDescription.parse(RFC8866_EXAMPLE)
    assert sdp.info == "SDP Offer #1"
    assert sdp.uri == "http://www.jdoe.example.com/home.html"
    assert sdp.emails == ("Jane Doe <jane@jdoe.example.com>",)
    assert sdp.phones == ("+1 617 555-6011",)
    assert sdp.connection == Connection("IN", "IP4", "233.252.0.12", ttl=127)
    assert sdp.bandwidths == (Bandwidth("CT", 128),)
    assert sdp.timings == (Timing(3724394400, 3724398000, ("7d 1h 0 25h",)),)
    assert sdp.zone == "2882844526 -1h 2898848070 0"
    assert sdp.key == "prompt"
    assert sdp.direction is Direction.RECVONLY
    audio, video = sdp.media
    assert audio.title == "voice"
    assert sdp.effective_direction(audio) is Direction.RECVONLY
    assert (video.port, video.port_count) == (51372, 2)
    assert video.connections == (Connection("IN", "IP6", "ff15::101", count=3),)
    assert video.codecs == (Codec(99, "h263-1998", 90000),)


@pytest.mark.parametrize("body", [ASTERISK_OFFER, BARESIP_OFFER, RFC8866_EXAMPLE, SRTP_OFFER])
def test_sdp_serialise_reproduces_canonical_samples(body: str) -> None:
    assert SessionDescription.parse(body).serialize() == body.encode()
    assert SessionDescription.parse(body.encode()) == SessionDescription.parse(body)


@pytest.mark.parametrize("body", [ASTERISK_OFFER, BARESIP_OFFER, RFC8866_EXAMPLE, SRTP_OFFER])
def test_sdp_with_origin_is_replace_of_the_origin(body: str) -> None:
    sdp = SessionDescription.parse(body)
    origin = Origin("-", 42, 7, "IN", "IP4", "203.0.113.5")
    stamped = sdp.with_origin(origin)
    assert stamped == msgspec.structs.replace(sdp, origin=origin) and type(stamped) is SessionDescription
    assert stamped.serialize().split(b"\r\n", 2)[1] == b"o=- 42 7 IN IP4 203.0.113.5"
    assert sdp.origin != origin  # the original is untouched


def test_sdp_unknown_attributes_kept_verbatim_in_order() -> None:
    lines = "m=audio 4000 RTP/AVP 0\r\na=x-weird:  two  spaces \ta\r\na=flag\r\na=empty:\r\na=x-Ü:ünïcode\r\n"
    sdp = _sdp(lines, "c=IN IP4 192.0.2.1\r\na=group:BUNDLE 0\r\na=ice-lite\r\n")
    assert sdp.attributes == (Attribute("group", "BUNDLE 0"), Attribute("ice-lite"))
    assert sdp.media[0].attributes == (
        Attribute("x-weird", "  two  spaces \ta"),
        Attribute("flag"),
        Attribute("empty", ""),
        Attribute("x-Ü", "ünïcode"),
    )
    assert sdp.serialize().decode().endswith(lines)


def test_sdp_ipv6_connection_and_origin() -> None:
    sdp = SessionDescription.parse(SRTP_OFFER)
    assert sdp.origin.addrtype == "IP6"
    assert sdp.connection == Connection("IN", "IP6", "2001:db8::1")
    assert sdp.rtp_address(sdp.media[0]) == ("2001:db8::1", 5004)
    assert Connection.ip("2001:db8::5") == Connection("IN", "IP6", "2001:db8::5")
    assert Connection.ip("192.0.2.5") == Connection("IN", "IP4", "192.0.2.5")


def test_sdp_crypto_lines_kept_and_rtcp_mux() -> None:
    audio = SessionDescription.parse(SRTP_OFFER).media[0]
    assert audio.proto == "RTP/SAVP"
    assert audio.crypto == (
        Crypto(1, "AES_CM_128_HMAC_SHA1_80", "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"),
        Crypto(2, "AES_CM_128_HMAC_SHA1_32", "inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj", ("KDR=1",)),
    )
    assert audio.rtcp_mux
    sdp = SessionDescription.parse(SRTP_OFFER)
    assert sdp.rtcp_address(audio) == ("2001:db8::1", 5004)


@pytest.mark.parametrize(
    ("session_lines", "media_lines", "expected"),
    [
        ("c=IN IP4 192.0.2.1\r\n", "", Direction.SENDRECV),
        ("c=IN IP4 192.0.2.1\r\n", "a=sendonly\r\n", Direction.SENDONLY),
        ("c=IN IP4 192.0.2.1\r\n", "a=recvonly\r\n", Direction.RECVONLY),
        ("c=IN IP4 192.0.2.1\r\n", "a=inactive\r\n", Direction.INACTIVE),
        ("c=IN IP4 192.0.2.1\r\na=sendonly\r\n", "", Direction.SENDONLY),
        ("c=IN IP4 192.0.2.1\r\na=inactive\r\n", "a=sendrecv\r\n", Direction.SENDRECV),
        ("c=IN IP4 0.0.0.0\r\n", "", Direction.SENDONLY),
        ("c=IN IP4 0.0.0.0\r\n", "a=recvonly\r\n", Direction.INACTIVE),
        ("c=IN IP4 0.0.0.0\r\n", "a=sendonly\r\n", Direction.SENDONLY),
        ("c=IN IP4 192.0.2.1\r\n", "c=IN IP4 0.0.0.0\r\n", Direction.SENDONLY),
        ("c=IN IP6 ::\r\n", "", Direction.SENDONLY),
    ],
)
def test_sdp_hold_variants(session_lines: str, media_lines: str, expected: Direction) -> None:
    sdp = _sdp("m=audio 4000 RTP/AVP 0\r\n" + media_lines, session_lines)
    assert sdp.effective_direction(sdp.media[0]) is expected


def test_sdp_direction_helpers() -> None:
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert Direction.INACTIVE.reversed() is Direction.INACTIVE
    assert Direction.from_flags(True, True) is Direction.SENDRECV
    media = _sdp("m=audio 4000 RTP/AVP 0\r\na=sendrecv\r\na=x:1\r\n").media[0]
    held = media.with_direction(Direction.SENDONLY)
    assert held.attributes == (Attribute("x", "1"), Attribute("sendonly"))
    assert held.with_direction(None).direction is None


def test_sdp_rejected_stream() -> None:
    sdp = _sdp("m=audio 4000 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\n")
    video = sdp.media[1]
    assert video.is_rejected
    assert sdp.effective_direction(video) is Direction.INACTIVE
    assert sdp.rtp_address(video) is None
    assert sdp.rtcp_address(video) is None
    assert video.codecs == (Codec(31, "H261", 90000),)


@pytest.mark.parametrize(
    ("pt", "name", "rate"),
    [
        (0, "PCMU", 8000),
        (3, "GSM", 8000),
        (4, "G723", 8000),
        (8, "PCMA", 8000),
        (9, "G722", 8000),
        (13, "CN", 8000),
        (18, "G729", 8000),
    ],
)
def test_sdp_static_payload_type_defaults(pt: int, name: str, rate: int) -> None:
    media = _sdp(f"m=audio 4000 RTP/AVP {pt}\r\n").media[0]
    assert media.codecs == (Codec(pt, name, rate),)


def test_sdp_codecs_rtpmap_overrides_and_unknown_dynamic_skipped() -> None:
    media = _sdp("m=audio 4000 RTP/AVP 0 96 97 x\r\na=rtpmap:0 PCMU/16000\r\na=rtpmap:97 L16/8000/2\r\n").media[0]
    assert media.payload_types == (0, 96, 97)
    assert media.codecs == (Codec(0, "PCMU", 16000), Codec(97, "L16", 8000, 2))
    assert media.fmtp(96) is None


def test_sdp_rtcp_attribute_forms() -> None:
    sdp = _sdp(
        "m=audio 4000 RTP/AVP 0\r\na=rtcp:4005\r\n"
        "m=audio 4010 RTP/AVP 0\r\na=rtcp:5000 IN IP6 2001:db8::9\r\n"
        "m=audio 4020 RTP/AVP 0\r\na=rtcp-mux\r\n"
        "m=audio 4030 RTP/AVP 0\r\nc=IN IP4 192.0.2.99\r\n"
    )
    assert [sdp.rtcp_address(m) for m in sdp.media] == [
        ("192.0.2.1", 4005),
        ("2001:db8::9", 5000),
        ("192.0.2.1", 4020),
        ("192.0.2.99", 4031),
    ]
    assert sdp.media[0].rtcp == Rtcp(4005)


def test_sdp_ptime_decimal_and_bytes_input() -> None:
    sdp = SessionDescription.parse(_sdp("m=audio 4000 RTP/AVP 0\r\na=ptime:30.0\r\n").serialize())
    assert sdp.media[0].ptime == 30


def test_sdp_blank_lines_and_trailing_spaces_ignored() -> None:
    sdp = SessionDescription.parse("v=0 \r\no=- 1 1 IN IP4 192.0.2.1\r\ns= \r\n\r\nt=0 0\r\n\r\n\r\n")
    assert sdp.name == ""
    assert sdp.to_text() == "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns= \r\nt=0 0\r\n"


def test_sdp_serialise_refuses_line_breaks_in_fields() -> None:
    sdp = SessionDescription(Origin("-", 1, 1, "IN", "IP4", "192.0.2.1"), name="x\r\nm=audio 1 RTP/AVP 0")
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        sdp.serialize()


def test_sdp_error_carries_line_and_status() -> None:
    with pytest.raises(SdpError) as info:
        SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 x\r\ns=-\r\nt=0 0\r\nm=audio port RTP/AVP 0\r\n")
    assert info.value.line == 5
    assert info.value.status == 400
    assert "m= port" in info.value.reason
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "empty"),
        ("o=- 1 1 IN IP4 x\r\nv=0\r\n", "starts with v="),
        ("v=1\r\no=- 1 1 IN IP4 x\r\ns=-\r\n", "unsupported SDP version"),
        ("v=0\r\nv=0\r\no=- 1 1 IN IP4 x\r\ns=-\r\n", "first line"),
        ("v=0\r\no=- 1 1 IN IP4\r\ns=-\r\n", "6 fields"),
        ("v=0\r\no=- x 1 IN IP4 h\r\ns=-\r\n", "sess-id"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\no=- 1 1 IN IP4 h\r\ns=-\r\n", "duplicate o="),
        ("v=0\r\ns=-\r\n", "missing o="),
        ("v=0\r\no=- 1 1 IN IP4 h\r\n", "missing o= or s="),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nx=1\r\n", "unknown line type"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nnonsense\r\n", "<type>=<value>"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4\r\n", "c="),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 1.2.3.4/1/2/3\r\n", "bad address"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP6 ::1/x\r\n", "suffix"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nb=AS64\r\n", "b="),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0\r\n", "t="),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nr=1d 1h 0\r\n", "r= without"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\na=\r\n", "attribute name"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 70000 RTP/AVP 0\r\n", "out of range"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1/0 RTP/AVP 0\r\n", "port count"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1\r\n", "m="),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\nt=0 0\r\n", "not allowed in a media"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\ni=a\r\ni=b\r\n", "duplicate i="),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n", "rtpmap"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:200 X/8000\r\n", "payload type"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0 X/8000/0\r\n", "zero channels"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\na=fmtp:\r\n", "fmtp"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\na=ptime:fast\r\n", "ptime"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\na=ptime\r\n", "needs a value"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:1 IN IP4\r\n", "rtcp"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\na=crypto:1 AES\r\n", "crypto"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio ٣ RTP/AVP 0\r\n", "expected a number"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\ni=a\rb\r\n", "stray CR"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=\x00\r\n", "NUL"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=\ud800\r\n", "surrogates"),
    ],
)
def test_sdp_malformed_raises_sdp_error(body: str, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        SessionDescription.parse(body)


def test_sdp_bytes_not_utf8() -> None:
    with pytest.raises(SdpError, match="not UTF-8"):
        SessionDescription.parse(b"v=0\r\no=- 1 1 IN IP4 h\r\ns=\xff\r\n")


def test_sdp_wrong_input_type_is_our_bug() -> None:
    with pytest.raises(TypeError):
        SessionDescription.parse(12)  # type: ignore[arg-type]


# --- hypothesis ---------------------------------------------------------------------------------------

_CHECKED = {"rtpmap", "fmtp", "ptime", "maxptime", "rtcp", "crypto"}
_text_char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00")
_text = st.text(_text_char, max_size=20).filter(lambda s: not s.endswith((" ", "\t")))
_token = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=10)
_host = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="/"), min_size=1)
_number = st.integers(min_value=0, max_value=2**64)
_port = st.integers(min_value=0, max_value=65535)

_connection = st.one_of(
    st.builds(
        lambda host, ttl, count: Connection("IN", "IP4", host, ttl, count if ttl is not None else None),
        _host,
        st.none() | st.integers(0, 255),
        st.none() | st.integers(1, 255),
    ),
    st.builds(lambda host, count: Connection("IN", "IP6", host, count=count), _host, st.none() | st.integers(1, 9)),
    st.builds(Connection, _token, _token.filter(lambda t: t not in ("IP4", "IP6")), _token),
)
_free_attribute = st.builds(
    Attribute,
    st.text(_text_char.filter(lambda c: c != ":"), min_size=1, max_size=12).filter(lambda n: n not in _CHECKED),
    st.none() | _text,
).filter(lambda a: not str(a).endswith((" ", "\t")))
_checked_attribute = st.one_of(
    st.builds(
        lambda pt, name, rate, ch: Attribute("rtpmap", f"{pt} {name}/{rate}" + (f"/{ch}" if ch else "")),
        st.integers(0, 127),
        _host,
        st.integers(1, 10**6),
        st.none() | st.integers(1, 8),
    ),
    st.builds(lambda fmt, params: Attribute("fmtp", f"{fmt} {params}".rstrip()), _token, _text),
    st.builds(lambda ms: Attribute("ptime", str(ms)), st.integers(1, 1000)),
    st.builds(lambda port, host: Attribute("rtcp", f"{port} IN IP4 {host}"), _port, _token),
    st.builds(
        lambda tag, suite, key: Attribute("crypto", f"{tag} {suite} inline:{key}"), st.integers(0, 99), _token, _token
    ),
    st.sampled_from([Attribute(d.value) for d in Direction] + [Attribute("rtcp-mux")]),
)
_attributes = st.lists(_free_attribute | _checked_attribute, max_size=6).map(tuple)
_bandwidths = st.lists(st.builds(Bandwidth, _token.filter(lambda t: ":" not in t), _number), max_size=2).map(tuple)
_media = st.builds(
    MediaDescription,
    media=_token,
    port=_port,
    proto=_token,
    formats=st.lists(_token, max_size=5).map(tuple),
    port_count=st.none() | st.integers(1, 65535),
    title=st.none() | _text,
    connections=st.lists(_connection, max_size=2).map(tuple),
    bandwidths=_bandwidths,
    key=st.none() | _text,
    attributes=_attributes,
)
_session = st.builds(
    SessionDescription,
    origin=st.builds(Origin, _token, _number, _number, _token, _token, _token),
    name=_text,
    info=st.none() | _text,
    uri=st.none() | _text,
    emails=st.lists(_text, max_size=2).map(tuple),
    phones=st.lists(_text, max_size=2).map(tuple),
    connection=st.none() | _connection,
    bandwidths=_bandwidths,
    timings=st.lists(st.builds(Timing, _number, _number, st.lists(_text, max_size=2).map(tuple)), max_size=3).map(
        tuple
    ),
    zone=st.none() | _text,
    key=st.none() | _text,
    attributes=_attributes,
    media=st.lists(_media, max_size=4).map(tuple),
)


def _exercise(sdp: SessionDescription) -> None:
    """Every accessor on a parsed description: none may raise."""
    for media in sdp.media:
        _ = (media.codecs, media.ptime, media.maxptime, media.rtcp, media.rtcp_mux, media.crypto, media.direction)
        _ = (sdp.effective_direction(media), sdp.rtp_address(media), sdp.rtcp_address(media))
        for pt in media.payload_types:
            media.fmtp(pt)


@settings(max_examples=300)
@given(_session)
def test_sdp_hypothesis_round_trip(sdp: SessionDescription) -> None:
    assert SessionDescription.parse(sdp.serialize()) == sdp
    assert SessionDescription.parse(sdp.to_text().replace("\r\n", "\n")) == sdp
    _exercise(sdp)


def _parse_or_sdp_error(data: str | bytes) -> None:
    try:
        sdp = SessionDescription.parse(data)
    except SdpError:
        return
    _exercise(sdp)
    assert SessionDescription.parse(sdp.serialize()) == sdp


@settings(max_examples=300)
@given(st.text())
def test_sdp_hypothesis_arbitrary_text_only_sdp_error(data: str) -> None:
    _parse_or_sdp_error(data)


@settings(max_examples=300)
@given(st.binary())
def test_sdp_hypothesis_arbitrary_bytes_only_sdp_error(data: bytes) -> None:
    _parse_or_sdp_error(data)


_line = st.tuples(st.sampled_from("vosiuepcbtrzkamx"), st.sampled_from(["=", "", " ="]), st.text(max_size=30))


@settings(max_examples=500)
@given(st.lists(_line, max_size=12), st.sampled_from(["\r\n", "\n"]))
def test_sdp_hypothesis_random_lines_after_valid_header_only_sdp_error(lines: list, eol: str) -> None:
    body = eol.join(["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", *(k + sep + v for k, sep, v in lines)])
    _parse_or_sdp_error(body)
    _parse_or_sdp_error(body.encode("utf-8", "surrogatepass"))


@settings(max_examples=300)
@given(_session, st.data())
def test_sdp_hypothesis_mutated_valid_body_only_sdp_error(sdp: SessionDescription, data: st.DataObject) -> None:
    text = sdp.to_text()
    position = data.draw(st.integers(0, len(text)))
    insert = data.draw(st.text(max_size=5))
    cut = data.draw(st.integers(0, 5))
    _parse_or_sdp_error(text[:position] + insert + text[position + cut :])


# --- the fast paths of parse(): line ends, structure first, checked attributes, the objects built -------------------


def _head(eol: str = "\r\n") -> str:
    return eol.join(["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0", ""])


@pytest.mark.parametrize("body", [ASTERISK_OFFER, BARESIP_OFFER, RFC8866_EXAMPLE, SRTP_OFFER])
def test_sdp_line_ends_crlf_lf_mixed_and_a_last_lone_cr_parse_alike(body: str) -> None:
    expected = SessionDescription.parse(body)
    lines = body.split("\r\n")
    mixed = "".join(line + ("\r\n" if i % 2 else "\n") for i, line in enumerate(lines[:-1]))
    for variant in (body.replace("\r\n", "\n"), mixed, body[:-1], body[:-2] + "\r", body + "\r\n \t\r\n\n"):
        assert SessionDescription.parse(variant) == expected
        assert SessionDescription.parse(variant.encode()) == expected


def test_sdp_fields_split_on_runs_of_spaces_and_tabs() -> None:
    spaced = "v=0\r\no=- \t1  1 IN\tIP4 192.0.2.1\r\ns=-\r\nc= IN  IP4\t192.0.2.1 \r\n"
    spaced += "t=0\t0\r\nm=audio  4000\tRTP/AVP 0  8\r\n"
    assert SessionDescription.parse(spaced) == SessionDescription.parse(_head() + "m=audio 4000 RTP/AVP 0 8\r\n")


def test_sdp_values_keep_other_unicode_line_breaks() -> None:
    sdp = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 h\r\ns=a\x0bb\x0c\x1c\x85\u2028c\u2029\r\ni=x\x1d\x1e\r\n")
    assert (sdp.name, sdp.info) == ("a\x0bb\x0c\x1c\x85\u2028c\u2029", "x\x1d\x1e")


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=\rx\r\n", 3, "stray CR"),
        ("v=0\r\r\no=- 1 1 IN IP4 h\r\ns=-\r\n", 1, "stray CR"),
        ("v=0\no=- 1 1 IN IP4 h\r \r\ns=-\n", 2, "stray CR"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\r", 3, "stray CR"),
        ("v=0\r\nnonsense\r\ns=\x00\r\n", 2, "<type>=<value>"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=\x00\r\nbad\r\n", 3, "NUL"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=x\r\nm=audio 1 RTP/AVP 0\r\nnonsense\r\n", 6, "<type>=<value>"),
        ("v=0\r\no=- x 1 IN IP4 h\r\ns=-\r\nX=1\r\n", 4, "unknown line type 'X'"),
        ("o=- 1 1 IN IP4 h\r\nv=0\r\n\r\nv\r\n", 4, "<type>=<value>"),
        ("\r\n \r\nv=2\r\n", 3, "unsupported SDP version"),
        ("\r\n \r\no=- 1 1 IN IP4 h\r\n", 3, "starts with v="),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\n=x\r\n", 4, "got '=x'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nab=c\r\n", 4, "got 'ab=c'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\nv=0\r\n", 5, "first line"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\no=- 2 2 IN IP4 h\r\n", 4, "duplicate o="),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nc=IN IP4 h\r\n", 5, "duplicate session-level c="),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nu=x\r\nu=y\r\n", 5, "duplicate u="),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\nk=a\r\nk=b\r\n", 6, "duplicate k= line in a media"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\nb=AS 1\r\n", 5, "b="),
        ("v=0\r\no=- 123456789012345678901 1 IN IP4 h\r\ns=-\r\n", 2, "sess-id: expected a number"),
    ],
)
def test_sdp_error_line_and_reason(body: str, line: int, reason: str) -> None:
    """The first malformed line (stray CR, NUL, no '<type>=', unknown type) wins over any earlier other error."""
    variants = [body, body.encode()] + ([] if reason == "stray CR" else [body.replace("\r\n", "\n")])
    for data in variants:
        with pytest.raises(SdpError, match=reason) as info:
            SessionDescription.parse(data)
        assert info.value.line == line


@pytest.mark.parametrize("bad", ["a", "b", "m", "e", "p", "s", "t", "r", "i", "k", "c", "o", "z", "u", "v"])
@pytest.mark.parametrize("media", ["", "m=audio 1 RTP/AVP 0\r\n"])
def test_sdp_line_without_equals_sign_is_malformed(bad: str, media: str) -> None:
    body = "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n" + media + bad + "\r\na=x\r\n"
    with pytest.raises(SdpError, match=f"expected '<type>=<value>', got '{bad}'") as info:
        SessionDescription.parse(body)
    assert info.value.line == (6 if media else 5)


@pytest.mark.parametrize(
    ("attribute", "error"),
    [
        ("rtpmap:0 PCMU/8000", None),
        ("rtpmap:99 X/1", None),
        ("rtpmap:099 X/1", None),
        ("rtpmap:119 X/90000/2", None),
        ("rtpmap:127 X/8000", None),
        ("rtpmap:128 X/8000", "out of range"),
        ("rtpmap:200 X/8000", "out of range"),
        ("rtpmap:0127 X/8000", "rtpmap: expected"),
        ("rtpmap:1\t X/8000/010", None),
        ("rtpmap:1 X/8000/00", "zero channels"),
        ("rtpmap:1 X/8000/000", "zero channels"),
        ("rtpmap:1 X/8000/1000", "rtpmap: expected"),
        ("rtpmap:1 X/", "rtpmap: expected"),
        ("ptime:20", None),
        ("ptime:20.125", None),
        ("maxptime:1234567", "ptime"),
        ("ptime:20.", "ptime"),
        ("fmtp:101 0-16", None),
        ("fmtp:101", None),
        ("fmtp: 101", "fmtp"),
        ("rtcp:65535", None),
        ("rtcp:65536", "rtcp port"),
        ("crypto:1 AES inline:x", None),
        ("crypto:1000000000 AES inline:x", "crypto tag"),
    ],
)
def test_sdp_checked_attribute_boundaries(attribute: str, error: str | None) -> None:
    body = _head() + "m=audio 1 RTP/AVP 0\r\na=" + attribute + "\r\n"
    if error is None:
        _exercise(SessionDescription.parse(body))
    else:
        with pytest.raises(SdpError, match=error) as info:
            SessionDescription.parse(body)
        assert info.value.line == 7


_ATTRIBUTE_VALUE_CHARS = st.sampled_from([*"0123456789 \t/.:-_xX", "12", "7", "/0", "00", "127", "128"])


@settings(max_examples=500)
@given(st.sampled_from(["rtpmap", "fmtp", "ptime", "maxptime", "rtcp", "crypto"]), st.lists(_ATTRIBUTE_VALUE_CHARS))
def test_sdp_hypothesis_checked_attribute_accepted_iff_its_accessor_parses_it(name: str, chars: list[str]) -> None:
    """parse() checks these values quickly; it must accept exactly those the accessors can read."""
    value = "".join(chars).rstrip(" \t")
    media = MediaDescription("audio", 1, "RTP/AVP", ("0",), attributes=(Attribute(name, value),))
    try:
        _ = (media.codecs, media.fmtp(0), media.ptime, media.maxptime, media.rtcp, media.crypto)
        readable = True
    except SdpError:
        readable = False
    body = _head() + f"m=audio 1 RTP/AVP 0\r\na={name}:{value}\r\n"
    try:
        parsed = SessionDescription.parse(body)
    except SdpError as exc:
        assert not readable
        assert exc.line == 7
    else:
        assert readable
        assert parsed.media == (media,)


def test_sdp_parsed_objects_are_ordinary_frozen_instances() -> None:
    sdp = SessionDescription.parse(BARESIP_OFFER)
    audio = sdp.media[0]
    built = [sdp, sdp.origin, sdp.connection, audio, audio.bandwidths[0], audio.attributes[0]]
    expected = (SessionDescription, Origin, Connection, MediaDescription, Bandwidth, Attribute)
    for obj, cls in zip(built, expected, strict=True):
        assert type(obj) is cls
        assert obj == copy.copy(obj) == pickle.loads(pickle.dumps(obj))
        assert hash(obj) == hash(msgspec.structs.replace(obj))
        with pytest.raises(AttributeError, match="immutable"):
            setattr(obj, obj.__struct_fields__[0], None)
    assert Attribute("rtpmap", "96 opus/48000/2") == audio.attributes[0]
    assert sdp.origin == Origin("-", 2890844526, 2890844527, "IN", "IP4", "198.51.100.7")
    assert audio.bandwidths == (Bandwidth("AS", 64),)


def test_sdp_codecs_resolved_once_and_invisible_to_equality() -> None:
    audio = SessionDescription.parse(BARESIP_OFFER).media[0]
    fresh = SessionDescription.parse(BARESIP_OFFER).media[0]
    first = audio.codecs
    assert audio.codecs is first  # resolved on the first read, kept for the next ones
    assert audio == fresh and hash(audio) == hash(fresh)  # a cache, not part of the description
    assert "_codecs" not in repr(audio)
    assert pickle.loads(pickle.dumps(audio)).codecs == first
    changed = msgspec.structs.replace(audio, formats=audio.formats[1:])
    assert changed.codecs == first[1:]  # a copy with other formats resolves its own


def test_sdp_repeat_lines_do_not_leak_between_parses() -> None:
    repeated = SessionDescription.parse(_head() + "r=7d 1h 0 25h\r\nr=1d 1h 0\r\n")
    assert repeated.timings == (Timing(0, 0, ("7d 1h 0 25h", "1d 1h 0")),)
    assert SessionDescription.parse(_head()).timings == (Timing(0, 0),)


def test_sdp_bytearray_and_memoryview_bodies() -> None:
    data = BARESIP_OFFER.encode()
    expected = SessionDescription.parse(data)
    assert SessionDescription.parse(bytearray(data)) == expected
    assert SessionDescription.parse(memoryview(data)) == expected
    assert SessionDescription.parse(memoryview(data + data)[: len(data)]) == expected
