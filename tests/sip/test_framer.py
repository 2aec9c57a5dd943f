"""Stream framing: messages split anywhere, several per chunk, CRLF keep-alives, size limit."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.sip.errors import SipParseError
from softswitch.sip.framer import PING, StreamFramer
from softswitch.sip.message import parse


def message(n: int, body: bytes = b"") -> bytes:
    return (
        f"OPTIONS sip:u@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h.example.com;branch=z9hG4bK{n}\r\n"
        f"From: <sip:a@example.com>;tag={n}\r\nTo: <sip:u@example.com>\r\nCall-ID: {n}@h\r\n"
        f"CSeq: {n} OPTIONS\r\nl: {len(body)}\r\n\r\n"
    ).encode() + body


STREAM = message(1) + b"\r\n\r\n" + message(2, b"hello\r\n\r\nworld") + b"\r\n" + message(3, b"x" * 300)


def test_framer_whole_stream_in_one_chunk():
    items = StreamFramer().feed(STREAM)
    assert items[1] is PING
    msgs = [parse(m, stream=True) for m in items if m is not PING]
    assert [m.cseq.seq for m in msgs] == [1, 2, 3]
    assert msgs[1].body == b"hello\r\n\r\nworld"


def test_framer_byte_by_byte():
    framer = StreamFramer()
    out = []
    for i in range(len(STREAM)):
        out += framer.feed(STREAM[i : i + 1])
    assert out == StreamFramer().feed(STREAM) and framer.pending == 0


@given(st.lists(st.integers(1, len(STREAM) - 1), max_size=12, unique=True))
def test_framer_any_split_gives_same_messages(cuts):
    framer, out, start = StreamFramer(), [], 0
    for cut in [*sorted(cuts), len(STREAM)]:
        out += framer.feed(STREAM[start:cut])
        start = cut
    assert out == [message(1), PING, message(2, b"hello\r\n\r\nworld"), message(3, b"x" * 300)]


def test_framer_waits_for_body():
    framer = StreamFramer()
    data = message(5, b"0123456789")
    assert framer.feed(data[:-3]) == [] and framer.pending == len(data) - 3
    assert framer.feed(data[-3:]) == [data]


def test_framer_requires_content_length():
    data = message(1).replace(b"l: 0\r\n", b"")
    with pytest.raises(SipParseError, match="Content-Length"):
        StreamFramer().feed(data)


def test_framer_enforces_max_size():
    with pytest.raises(SipParseError) as info:
        StreamFramer(max_size=1000).feed(message(1, b"x" * 2000))
    assert info.value.status == 513
    with pytest.raises(SipParseError):
        StreamFramer(max_size=1000).feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"y" * 2000)
