"""The Twilio Media Streams messages (softswitch.streams.StreamSession), sans-IO: what is built, what is
understood, and the bounded outbox that keeps a slow subscriber from holding anything up."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from softswitch.streams import StreamSession, new_stream_sid


def session(**kw) -> StreamSession:
    return StreamSession(new_stream_sid(), "call_1", "key_1", kw.pop("track", "both"), {"a": "b"}, **kw)


def test_sequence_numbers_chunks_and_timestamps():
    s = session()
    assert json.loads(s.connected()) == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = json.loads(s.start())
    assert start["sequenceNumber"] == "1" and start["start"]["tracks"] == ["inbound", "outbound"]
    t0 = 5_000_000_000
    msgs = [
        json.loads(s.media("inbound", t0, b"\x01" * 160)),
        json.loads(s.media("outbound", t0, b"\x02" * 160)),
        json.loads(s.media("inbound", t0 + 20_000_000, b"\x03" * 160)),
    ]
    assert [m["sequenceNumber"] for m in msgs] == ["2", "3", "4"]
    assert [(m["media"]["track"], m["media"]["chunk"], m["media"]["timestamp"]) for m in msgs] == [
        ("inbound", "1", "0"),
        ("outbound", "1", "0"),
        ("inbound", "2", "20"),
    ]
    assert base64.b64decode(msgs[2]["media"]["payload"]) == b"\x03" * 160
    assert json.loads(s.stop())["sequenceNumber"] == "5"


def test_a_slow_subscriber_loses_the_oldest_messages_counted_never_blocks():
    s = session(max_queue=3)
    for n in range(5):
        s.put(str(n))
    assert list(s.outbox) == ["2", "3", "4"] and s.counters["dropped"] == 2


def test_inbound_messages_understood_and_anything_else_counted():
    s = session(bidirectional=True)
    media = s.parse(json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\xff\x00").decode()}}))
    assert (media.kind, media.audio) == ("media", b"\xff\x00")
    assert s.parse('{"event": "mark", "mark": {"name": "m1"}}').name == "m1"
    assert s.parse('{"event": "clear", "streamSid": "x"}').kind == "clear"
    for bad in ("nope", "{}", '{"event": 3}', '{"event": "media"}', '{"event": "mark", "mark": {"name": 7}}', "[1]"):
        assert s.parse(bad) is None
    assert s.counters["malformed"] == 6
    listen_only = session()
    assert listen_only.parse('{"event": "clear"}') is None  # a one-way stream takes nothing in


@given(st.one_of(st.text(max_size=200), st.builds(json.dumps, st.dictionaries(st.text(max_size=8), st.text()))))
def test_parse_never_raises_and_only_understands_the_three_events(text):
    s = session(bidirectional=True)
    got = s.parse(text)
    assert (got is None and s.counters["malformed"] == 1) or got.kind in ("media", "mark", "clear")
