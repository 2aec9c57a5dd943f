"""Messages: parsing (folding, compact forms, lists, quoting, UTF-8, framing), serialisation, errors -> 400."""

from __future__ import annotations

import gc

import pytest
from cext.sipscan import pair
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.sip.errors import SipParseError
from softswitch.sip.message import Request, Response, build_response, error_response, parse, parse_reference

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def invite(extra: str = "", body: bytes = SDP, length: int | None = None) -> bytes:
    head = (
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
        "Max-Forwards: 70\r\n"
        "To: Bob <sip:bob@biloxi.example.com>\r\n"
        'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        "CSeq: 314159 INVITE\r\n"
        "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
        "Content-Type: application/sdp\r\n"
        f"{extra}"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


def test_message_parse_request_core_headers():
    msg = parse(invite())
    assert isinstance(msg, Request)
    assert msg.method == "INVITE" and msg.uri_text == "sip:bob@biloxi.example.com"
    assert msg.via.branch == "z9hG4bK776asdhds" and msg.via.transport == "UDP"
    assert msg.from_.display == "Alice" and msg.from_.tag == "1928301774"
    assert msg.to.display == "Bob" and msg.to.tag is None
    assert (msg.cseq.seq, msg.cseq.method) == (314159, "INVITE")
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.max_forwards == 70 and msg.content_type == "application/sdp"
    assert msg.body == SDP and str(msg.contacts[0].uri) == "sip:alice@pc33.atlanta.example.com"


def test_message_round_trip_is_byte_identical():
    data = invite()
    assert parse(data).serialize() == data


def test_message_serialise_keeps_order_and_fixes_content_length():
    msg = parse(invite())
    msg.body = b"hello"
    msg.add("X-Custom", "1")
    out = msg.serialize()
    names = [line.split(b":")[0] for line in out.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]]
    assert names == [
        b"Via",
        b"Max-Forwards",
        b"To",
        b"From",
        b"Call-ID",
        b"CSeq",
        b"Contact",
        b"Content-Type",
        b"Content-Length",
        b"X-Custom",
    ]
    assert b"Content-Length: 5\r\n" in out and out.endswith(b"\r\n\r\nhello")
    assert b"Content-Length: 0" in Request("OPTIONS", "sip:a@b.example").serialize()


def test_message_header_folding_and_compact_forms():
    data = (
        b"OPTIONS sip:user@example.com SIP/2.0\r\nv: SIP/2.0/UDP\r\n  host.example.com;branch=z9hG4bKx\r\n"
        b"t: sip:user@example.com\r\nf: <sip:c@example.com>\r\n\t;tag=3\r\ni: cid@x\r\nCSeq: 9\r\n OPTIONS\r\n"
        b"m: <sip:c@h.example.com>\r\nk: timer, 100rel\r\nl: 0\r\n\r\n"
    )
    msg = parse(data)
    assert msg.via.host == "host.example.com" and msg.from_.tag == "3" and msg.call_id == "cid@x"
    assert msg.cseq.method == "OPTIONS" and msg.get_all("Supported") == ["timer", "100rel"]
    assert [n for n, _ in msg.headers] == [
        "Via",
        "To",
        "From",
        "Call-ID",
        "CSeq",
        "Contact",
        "Supported",
        "Content-Length",
    ]


def test_message_header_names_are_case_insensitive():
    msg = parse(invite().replace(b"Call-ID", b"cAlL-iD").replace(b"CSeq", b"CSEQ"))
    assert msg.get("call-id") == msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.cseq.seq == 314159


def test_message_list_headers_split_outside_quotes_and_brackets():
    extra = (
        'Contact: "Bob, the 2nd" <sip:bob2@h.example.com;x=a,b>;q=0.5, <sip:bob3@h.example.com>\r\n'
        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nRoute: <sip:p3.example.com;lr>\r\n"
        "Subject: a, b, c\r\n"
    )
    msg = parse(invite(extra))
    assert [c.display for c in msg.contacts] == [None, "Bob, the 2nd", None]
    assert msg.contacts[1].params == {"q": "0.5"}
    assert msg.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>", "<sip:p3.example.com;lr>"]
    assert msg.get_all("Subject") == ["a, b, c"]  # not a list header
    assert msg.pop_first("Route") == "<sip:p1.example.com;lr>"
    assert msg.get_all("Route")[0] == "<sip:p2.example.com;lr>"


def test_message_several_vias_and_many_headers():
    vias = "".join(
        f"Via: SIP/2.0/UDP p{i}.example.com:{5060 + i};branch=z9hG4bK{i};received=192.0.2.{i}\r\n" for i in range(70)
    )
    msg = parse(invite(vias))
    assert len(msg.vias) == 71 and msg.vias[70].port == 5129 and msg.vias[70].received == "192.0.2.69"


def test_message_quoted_display_with_escapes_and_utf8():
    extra = 'P-Asserted-Identity: "J Rosenberg \\\\\\"" <sip:jdrosen@example.com>\r\n'
    data = invite(extra).replace(b'"Alice"', '"Zoë Ångström 日本"'.encode())
    msg = parse(data)
    assert msg.from_.display == "Zoë Ångström 日本"
    (pai,) = [parse_address_value(v) for v in msg.get_all("P-Asserted-Identity")]
    assert pai.display == 'J Rosenberg \\"'
    assert parse(msg.serialize()).from_.display == "Zoë Ångström 日本"


def parse_address_value(text):
    from softswitch.sip.headers import parse_address

    return parse_address(text)


def test_message_response_parse():
    data = (
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bKa\r\nTo: <sip:b@x>;tag=9\r\n"
        b"From: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse(data)
    assert isinstance(msg, Response) and (msg.status, msg.reason) == (180, "Ringing") and msg.to.tag == "9"
    assert msg.serialize() == data


def test_message_udp_body_without_length_and_extra_bytes():
    no_length = invite().replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    assert parse(no_length).body == SDP
    assert parse(invite(length=10)).body == SDP[:10]  # extra datagram bytes are dropped (18.3)
    with pytest.raises(SipParseError, match="Content-Length"):
        parse(no_length, stream=True)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.replace(f"Content-Length: {len(SDP)}".encode(), b"Content-Length: 999"), "exceeds"),
        (lambda d: d.replace(f"Content-Length: {len(SDP)}".encode(), b"Content-Length: -1"), "Content-Length"),
        (lambda d: d.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), "does not match"),
        (lambda d: d.replace(b"CSeq: 314159", b"CSeq: 99999999999"), "CSeq"),
        (lambda d: d.replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), "Max-Forwards"),
        (lambda d: d.replace(b"Call-ID: a84b", b"Call-ID: a84b\r\nCall-ID: x"), "more than one Call-ID"),
        (lambda d: d.replace(b"To: Bob <sip:bob@biloxi.example.com>\r\n", b""), "missing To"),
        (lambda d: d.replace(b'"Alice" <', b'"Alice <'), "address"),
        (lambda d: d.replace(b"Via: SIP/2.0/UDP pc33", b"Via: SIP/2.0/UDP ;pc33"), "Via"),
        (lambda d: d.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards 70\r\n"), "header line"),
        (lambda d: d.replace(b"sip:bob@biloxi.example.com SIP", b"<sip:bob@biloxi.example.com> SIP"), "Request-URI"),
        (lambda d: d.split(b"\r\n\r\n")[0], "blank line"),
    ],
)
def test_message_malformed_raises_with_400_response(mutate, reason):
    with pytest.raises(SipParseError, match=reason) as info:
        parse(mutate(invite()))
    assert info.value.status == 400
    response = error_response(info.value)
    if reason == "blank line":
        assert response is None  # no headers could be read: nothing to answer
        return
    assert response is not None and response.status == 400
    assert response.get("Call-ID").startswith("a84b")
    assert response.get("Via") == "SIP/2.0/UDP " + ("pc33" if reason != "Via" else ";pc33") + (
        ".atlanta.example.com;branch=z9hG4bK776asdhds"
    )
    assert response.serialize().startswith(b"SIP/2.0 400 Bad Request (")


def test_message_bad_version_is_505():
    with pytest.raises(SipParseError) as info:
        parse(invite().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1))
    assert info.value.status == 505 and error_response(info.value).status == 505


# A SIP DIGIT is ASCII (RFC 3261 25.1): other scripts' digits, which int() would read, are refused.
ONE, TWO, ZERO, FIVE, SIX = "\u0661", "\u0662", "\u0660", "\u0665", "\u0666"  # Arabic-Indic 1 2 0 5 6


def ok_response(status: str = "200") -> bytes:
    head = invite(body=b"").split(b"\r\n", 1)[1].decode()
    return f"SIP/2.0 {status} OK\r\n{head}".encode()


@pytest.mark.parametrize(
    "data",
    [
        invite().replace(b"CSeq: 314159", f"CSeq: {ONE}".encode()),
        invite().replace(b"CSeq: 314159", f"CSeq: 3{ONE}".encode()),
        invite().replace(b"atlanta.example.com;branch", f"atlanta.example.com:{FIVE}{ZERO}{SIX}{ZERO};branch".encode()),
        invite().replace(b"SIP/2.0\r\n", f"SIP/{TWO}.{ZERO}\r\n".encode(), 1),
        ok_response(f"2{ZERO}{ZERO}"),
    ],
    ids=["cseq", "cseq-mixed", "via-port", "version", "status"],
)
def test_message_non_ascii_digits_are_refused(data):
    assert parse(ok_response()).status == 200  # the ASCII spelling is fine
    for parser in (parse, parse_reference):
        with pytest.raises(SipParseError) as info:
            parser(data)
        assert info.value.status == 400


def test_message_version_check_is_case_insensitive():
    assert parse_reference(invite().replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1)).method == "INVITE"


def test_message_oversize_is_refused():
    with pytest.raises(SipParseError) as info:
        parse(invite(body=b"x" * 70000))
    assert info.value.status == 513


def test_message_build_response_copies_and_tags():
    req = parse(invite("Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp\r\nTimestamp: 54\r\n"))
    resp = build_response(req, 486, to_tag="xyz")
    assert [v.host for v in resp.vias] == ["pc33.atlanta.example.com", "proxy.example.com"]
    assert resp.to.tag == "xyz" and resp.from_.tag == "1928301774" and resp.cseq.seq == 314159
    assert resp.reason == "Busy Here"
    trying = build_response(req, 100, to_tag="xyz")
    assert trying.to.tag is None and trying.get("Timestamp") == "54"


def test_message_built_response_reads_as_its_wire_form():
    """build_response hands the request's parsed From/To/CSeq on (tagged To made anew): they must read the
    same as the response parsed back from its bytes."""
    req = parse(invite())
    for status, tag in ((100, "t1"), (180, "t1"), (486, None), (200, "t2")):
        resp = build_response(req, status, to_tag=tag)
        wire = parse(resp.serialize())
        assert (str(resp.from_), str(resp.to), resp.cseq) == (str(wire.from_), str(wire.to), wire.cseq)
        assert resp.to.tag == (tag if status > 100 else None)


def test_message_header_pairs_are_not_tracked_by_the_garbage_collector():
    """A header is a tuple of two str, which cannot be part of a cycle: the fast parser, the constructors and
    set/add/pop_first make it untracked, so collections do not walk it (the reference parser, for malformed
    or unusual input, leaves that to the first collection)."""
    req = parse(invite("Route: <sip:a.example.com;lr>, <sip:b.example.com;lr>\r\n"))
    resp = build_response(req, 180, to_tag="t1")
    built = Request("OPTIONS", "sip:a@example.com", [("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("X-Mine", "1")])
    built.set("Subject", "s")
    built.add("Via", "SIP/2.0/UDP b;branch=z9hG4bK2", first=True)
    assert req.pop_first("Route") == "<sip:a.example.com;lr>"
    for msg in (req, resp, built):
        assert msg.headers and not any(gc.is_tracked(h) for h in msg.headers), msg
    assert built.headers[:2] == [("Via", "SIP/2.0/UDP b;branch=z9hG4bK2"), ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")]
    assert parse(req.serialize()).headers == req.headers  # the same pairs as ever, read back from the wire
    odd = pair("X-List", ["not", "a", "str"])  # anything else stays tracked: it could hold a cycle
    assert gc.is_tracked(odd) and odd == ("X-List", ["not", "a", "str"])


def test_message_ack_errors_are_never_answered():
    ack = invite().replace(b"INVITE sip", b"ACK sip").replace(b"314159 INVITE", b"314159 ACK")
    with pytest.raises(SipParseError) as info:
        parse(ack.replace(b"Max-Forwards: 70", b"Max-Forwards: 900"))
    assert error_response(info.value) is None


def test_message_set_add_remove():
    msg = parse(invite("Route: <sip:a.example.com;lr>\r\nRoute: <sip:b.example.com;lr>\r\n"))
    msg.set("Route", "<sip:c.example.com;lr>")
    assert msg.get_all("Route") == ["<sip:c.example.com;lr>"]
    msg.add("Via", "SIP/2.0/UDP me.example.com;branch=z9hG4bKme", first=True)
    assert msg.via.host == "me.example.com"
    msg.remove("Route")
    assert "Route" not in msg
    msg.set("To", "<sip:carol@example.com>;tag=9")
    assert msg.to.tag == "9"


# -- property tests ---------------------------------------------------------------------------------
_token = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9\-.!%*_+`'~]{0,10}", fullmatch=True)
_value = st.from_regex(r"[A-Za-z0-9][ -~]{0,30}[A-Za-z0-9]", fullmatch=True).filter(lambda v: "\\" not in v)


@settings(max_examples=200)
@given(
    extra=st.lists(st.tuples(_token.map(lambda t: "X-" + t), _value), max_size=8),
    body=st.binary(max_size=200),
    method=st.sampled_from(["INVITE", "OPTIONS", "MESSAGE", "FOO-BAR"]),
)
def test_message_property_round_trip(extra, body, method):
    req = Request(
        method,
        "sip:bob@example.com",
        [
            ("Via", "SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1"),
            ("From", "<sip:a@example.com>;tag=1"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "c@1"),
            ("CSeq", f"7 {method}"),
            *extra,
        ],
        body,
    )
    data = req.serialize()
    again = parse(data)
    assert again.method == method and again.body == body
    assert again.headers[: len(req.headers)] == req.headers
    assert again.serialize() == data


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_message_random_bytes_raise_only_parse_errors(data):
    try:
        parse(data)
    except SipParseError as exc:
        error_response(exc)


@settings(max_examples=300)
@given(st.data())
def test_message_mutated_invites_raise_only_parse_errors(data):
    raw = bytearray(invite())
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            raw[pos] = data.draw(st.sampled_from(b' \r\n:;,<>"\\@=%\t\x00\xff0aZ'))
        elif op == "delete":
            del raw[pos]
        else:
            raw.insert(pos, data.draw(st.sampled_from(b' \r\n:;,<>"\\@=%')))
    try:
        msg = parse(bytes(raw))
        msg.serialize()
    except SipParseError as exc:
        response = error_response(exc)
        if response is not None:
            response.serialize()
