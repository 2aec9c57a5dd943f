"""One `call.dtmf` per key press whichever ways the far end signalled it: the merger, with explicit times."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from softswitch.b2bua.dtmf import DtmfMerger, parse_dtmf_relay

MS = 1_000_000


def test_dtmf_merger_drops_the_same_press_from_a_second_source():
    merger = DtmfMerger()
    assert merger.accept("a", "5", "rfc4733", 1000 * MS, 100)
    # the engine hears the tones after its jitter buffer: 60 ms later, reported after the pause
    assert not merger.accept("a", "5", "inband", 1060 * MS, 95)
    assert merger.accept("a", "5", "rfc4733", 1200 * MS, 100)  # the next press, same key
    assert not merger.accept("a", "5", "inband", 1260 * MS, 95)
    assert not merger.accept("a", "5", "info", 1300 * MS, 100)  # INFO placed to end as it arrived


def test_dtmf_merger_keeps_presses_of_one_source_and_other_keys_and_sides():
    merger = DtmfMerger()
    assert merger.accept("a", "7", "inband", 0, 40)
    assert merger.accept("a", "7", "inband", 80 * MS, 40)  # 40 ms pause: a second press, same source
    assert merger.accept("a", "8", "rfc4733", 10 * MS, 40)  # another key at the same time
    assert merger.accept("b", "7", "rfc4733", 0, 40)  # the other party
    assert merger.accept("a", "7", "rfc4733", 400 * MS, 40)  # long after: a new press from a new source


@given(
    st.lists(st.tuples(st.sampled_from("0123456789*#ABCD"), st.integers(40, 300), st.integers(40, 1000)), max_size=30),
    st.integers(-60, 100),
)
def test_dtmf_merger_each_press_once_when_sent_both_ways(presses, skew_ms):
    """Any run of presses sent as RFC 4733 and as tones (seen `skew_ms` later): as many digits, in order."""
    merger, t, out = DtmfMerger(), 0, []
    for digit, on_ms, off_ms in presses:
        reports = [("rfc4733", t), ("inband", t + skew_ms * MS)]
        for source, start in sorted(reports, key=lambda r: r[1] + on_ms * MS):
            if merger.accept("a", digit, source, start, on_ms):
                out.append(digit)
        t += (on_ms + off_ms) * MS
    assert out == [d for d, _, _ in presses]


@given(st.lists(st.tuples(st.sampled_from("0123456789*#ABCD"), st.integers(0, 500), st.integers(0, 2000))))
def test_dtmf_merger_never_drops_a_single_source(reports):
    merger, t = DtmfMerger(), 0
    for digit, duration, gap in reports:
        assert merger.accept("a", digit, "inband", t, duration)
        t += gap * MS


def test_dtmf_relay_body_parsing():
    assert parse_dtmf_relay(b"Signal=5\r\nDuration=160\r\n") == ("5", 160)
    assert parse_dtmf_relay(b"signal= #\nduration=abc") == ("#", 0)
    assert parse_dtmf_relay(b"Signal=55\r\n") is None
    assert parse_dtmf_relay(b"Duration=100") is None
