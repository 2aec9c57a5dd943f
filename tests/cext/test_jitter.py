"""The adaptive jitter buffer (cext/native/jitter.c) against its pure-Python reference (jitter_model.py).

Every scenario runs the C kernel and the model side by side on the same arrivals and ticks, requires the
same answer from both at every pop, and then checks the behaviour itself. Time is explicit: arrivals and
pops carry their own `now_ns`, pops fall on a 20 ms grid, nothing sleeps.
"""

from __future__ import annotations

import heapq
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cext.jitter import PAYLOAD_MAX, SLOTS, JitterBuffer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jitter_model import JitterModel

F = 20_000_000  # one frame, one tick, in ns
MS = 1_000_000
PHASE = 10 * MS  # pops fall mid-way between nominal arrivals unless a test says otherwise
T0 = 5_000_000_000_000  # an arbitrary monotonic-clock origin
COUNTERS = ("played", "skipped", "late", "duplicates", "flushed", "invalid")


def payload(index: int, size: int = 160) -> bytes:
    head = index.to_bytes(4, "big")
    return head + bytes((index + i) & 0xFF for i in range(size - 4))


def index_of(data: bytes) -> int:
    return int.from_bytes(data[:4], "big")


@dataclass(order=True)
class Arrival:
    now_ns: int
    order: int
    seq: int = field(compare=False)
    ts: int = field(compare=False)
    marker: bool = field(compare=False)
    data: bytes = field(compare=False)
    pt: int = field(default=0, compare=False)


def talk(
    n: int,
    *,
    seq0: int = 1000,
    ts0: int = 80_000,
    tick0: int = 0,
    delay_ms=lambda i: 0,
    lost=(),
    gaps=None,
    first: int = 0,
) -> list[Arrival]:
    """Frames first..first+n-1 sent every 20 ms from tick0 (plus `gaps[i]` silent ticks before frame i, with
    the marker on the frame after a gap), each arriving delay_ms(i) late; `lost` never arrive."""
    gaps = gaps or {}
    out, tick = [], tick0
    for k in range(n):
        i = first + k
        gap = gaps.get(i, 0)
        tick += gap
        if i not in lost:
            sent = T0 + tick * F
            out.append(
                Arrival(
                    sent + int(delay_ms(i) * MS),
                    i,
                    (seq0 + i) & 0xFFFF,
                    (ts0 + tick * 160) & 0xFFFFFFFF,
                    k == 0 or gap > 0,
                    payload(i),
                )
            )
        tick += 1
    return out


class Pair:
    """The C buffer and the model, fed the same events; every answer must agree."""

    def __init__(self, min_frames: int = 3, max_frames: int = 10, phase: int = PHASE) -> None:
        self.c, self.m = JitterBuffer(min_frames, max_frames), JitterModel(min_frames, max_frames)
        self.pending: list[Arrival] = []
        self.tick, self.phase = 0, phase
        self.played: list[int] = []

    def push(self, a: Arrival) -> None:
        for b in (self.c, self.m):
            b.push(a.seq, a.ts, a.pt, a.marker, a.data, a.now_ns)

    def pop(self, now_ns: int) -> tuple[int, bytes, int]:
        got, want = self.c.pop(now_ns), self.m.pop(now_ns)
        assert got == want
        return got

    def stats(self) -> dict[str, int]:
        got, want = self.c.stats(), self.m.stats()
        assert got == want
        return got

    def feed(self, arrivals: list[Arrival]) -> None:
        for a in arrivals:
            heapq.heappush(self.pending, a)

    def run(self, ticks: int) -> list[int | str]:
        """Pop `ticks` times (arrivals due by each pop go in first): frame index, 'C' (conceal) or '-'."""
        out: list[int | str] = []
        for _ in range(ticks):
            now = T0 + self.tick * F + self.phase
            while self.pending and self.pending[0].now_ns <= now:
                self.push(heapq.heappop(self.pending))
            status, data, _pt = self.pop(now)
            if status > 0:
                assert status == len(data)
                out.append(index_of(data))
                self.played.append(index_of(data))
            else:
                out.append("C" if status == 0 else "-")
            self.tick += 1
        return out


def balanced(s: dict[str, int]) -> bool:
    return s["pushed"] == sum(s[k] for k in COUNTERS) + s["buffered_frames"]


# -- scenarios --------------------------------------------------------------------------------------------


def test_jitter_in_order_stream_plays_every_frame_once_with_the_configured_delay():
    p = Pair(3, 10)
    p.feed(talk(100))
    out = p.run(102)
    # level 3 reached at the third pop: frame i plays at pop i + 2, i.e. (3 - 1) x 20 ms + phase after arrival
    assert out == ["-", "-", *range(100)]
    s = p.stats()
    assert s["played"] == 100 and s["concealed"] == 0 and s["skipped"] == 0
    assert s["jitter_us"] == 0 and s["target_frames"] == 3
    assert balanced(s)


@pytest.mark.parametrize("min_frames", [1, 2, 5])
def test_jitter_in_order_delay_follows_min_frames(min_frames):
    p = Pair(min_frames, 10)
    p.feed(talk(40))
    out = p.run(40 + min_frames - 1)
    assert out == ["-"] * (min_frames - 1) + list(range(40))


def test_jitter_reordering_within_the_window_is_restored():
    p = Pair(3, 10)
    p.feed(talk(100, delay_ms=lambda i: 30 if i % 2 == 0 else 0))  # every even frame comes after the odd one
    out = p.run(110)
    played = [x for x in out if isinstance(x, int)]
    assert played == list(range(100))
    assert "C" not in out[: out.index(99)]  # concealment only once the stream has ended
    s = p.stats()
    assert s["late"] == 0 and s["duplicates"] == 0


def test_jitter_reordering_at_the_start_moves_the_anchor_back():
    p = Pair(3, 10)
    arrivals = talk(20)
    arrivals[0].now_ns, arrivals[1].now_ns = arrivals[1].now_ns + 1, arrivals[0].now_ns  # 1 before 0
    p.feed(arrivals)
    out = p.run(25)
    assert [x for x in out if isinstance(x, int)] == list(range(20))


def test_jitter_loss_gives_concealment_at_the_right_place():
    p = Pair(3, 10)
    p.feed(talk(60, lost={10, 30, 31}))
    out = p.run(62)
    assert out == ["-", "-", *["C" if i in {10, 30, 31} else i for i in range(60)]]
    s = p.stats()
    assert s["concealed"] == 3 and s["late"] == 0 and s["played"] == 57


def test_jitter_duplicates_are_dropped():
    p = Pair(3, 10)
    first = talk(50)
    again = [Arrival(a.now_ns + 5 * MS, 10_000 + a.order, a.seq, a.ts, a.marker, a.data) for a in first]
    resent = [Arrival(a.now_ns + 200 * MS, 20_000 + a.order, a.seq, a.ts, a.marker, a.data) for a in first[:20]]
    p.feed(first + again + resent)  # a copy 5 ms later (still held) and one 200 ms later (already played)
    out = p.run(60)
    assert [x for x in out if isinstance(x, int)] == list(range(50))
    s = p.stats()
    assert s["duplicates"] == 70 and s["late"] == 0 and s["played"] == 50
    assert balanced(s)


def test_jitter_late_packet_is_counted_and_concealed():
    p = Pair(3, 3)  # target pinned: the delay stays 2 frames + phase
    p.feed(talk(40, delay_ms=lambda i: 100 if i == 10 else 0))
    out = p.run(42)
    assert out == ["-", "-", *["C" if i == 10 else i for i in range(40)]]
    s = p.stats()
    assert s["late"] == 1 and s["concealed"] == 1 and s["duplicates"] == 0
    assert balanced(s)


def test_jitter_sequence_and_timestamp_wrap():
    p = Pair(2, 10)
    p.feed(talk(60, seq0=65_500, ts0=2**32 - 160 * 20))
    out = p.run(61)
    assert out == ["-", *range(60)]
    s = p.stats()
    assert s["jitter_us"] == 0 and s["overflows"] == 0 and s["resets"] == 0 and s["concealed"] == 0


def test_jitter_burst_raises_the_target_and_calm_lowers_it():
    rng = random.Random(7)
    delays = [0.0] * 100 + [rng.uniform(0, 80) for _ in range(100)] + [0.0] * 700
    p = Pair(2, 12)
    p.feed(talk(len(delays), delay_ms=lambda i: delays[i]))
    p.run(100)
    calm = p.stats()
    assert calm["target_frames"] == 2 and calm["jitter_us"] == 0
    p.run(105)
    burst = p.stats()
    assert burst["jitter_us"] > 15_000
    assert burst["target_frames"] >= 4
    assert burst["level_frames"] > calm["level_frames"]  # underruns let the level rebuild higher
    p.run(700)
    after = p.stats()
    assert after["target_frames"] == 2 and after["jitter_us"] < 1_000
    assert after["skipped"] > 0 and after["level_frames"] <= 3  # the delay was given back
    assert p.played == sorted(set(p.played))
    assert balanced(after)


def test_jitter_level_above_target_shrinks_one_frame_per_half_second():
    p = Pair(2, 2)
    # a 100 ms stall: frames 20..24 arrive together with frame 25; the underruns grow the delay by 4 frames
    p.feed(talk(400, delay_ms=lambda i: (25 - i) * 20 if 20 <= i <= 24 else 0))
    above_from, skips = None, []
    for n in range(200):
        p.run(1)
        s = p.stats()  # after the pop: the level the next pop sees, less the frame that arrives before it
        if above_from is None and s["level_frames"] + 1 > 2:
            above_from = n
        if s["skipped"] > len(skips):
            skips.append(n)
    assert above_from == 25
    assert skips == [above_from + 24 + 25 * k for k in range(4)]  # one frame per 25 pops above the target
    assert s["level_frames"] + 1 == 2 and s["concealed"] == 4 and s["skipped"] == 4
    assert p.played == sorted(set(p.played)) and len(p.played) == 200 - 1 - 4  # a skip costs no pop
    assert len(set(range(p.played[-1])) - set(p.played)) == 4


def test_jitter_shrinks_at_a_talk_spurt_start_first():
    p = Pair(2, 2)
    # the same stall, then a short silence (3 ticks) before frame 30 starts a new talk spurt
    p.feed(talk(60, delay_ms=lambda i: (25 - i) * 20 if 20 <= i <= 24 else 0, gaps={30: 3}))
    p.run(60)
    s = p.stats()
    assert 30 not in p.played and 31 in p.played  # the spurt's first frame was dropped, at once
    assert s["skipped"] >= 1
    assert p.played == sorted(set(p.played))


def test_jitter_talk_spurt_short_of_the_target_buffers_again():
    p = Pair(3, 10)
    p.feed(talk(40, gaps={20: 6}))  # 120 ms of silence (suppressed) before frame 20
    out = p.run(50)
    # frame 19 plays at pop 21, then 6 pops of underrun (conceal); frame 20 arrives at tick 26 and waits
    # for the level to reach 3 again instead of playing at once
    start = out.index(20)
    assert out[start - 2 : start] == ["-", "-"]
    assert start == 26 + 2
    assert [x for x in out if isinstance(x, int)] == list(range(40))
    assert p.stats()["resets"] == 0


def test_jitter_long_gap_goes_back_to_buffering():
    p = Pair(3, 10)
    p.feed(talk(60, gaps={30: 25}))  # 500 ms with nothing: hold, or silence suppression
    out = p.run(95)
    end_first = out.index(29)
    assert out[end_first + 1 : end_first + 11] == ["C"] * 10
    assert out[end_first + 11] == "-"
    resume = out.index(30)
    assert out[resume - 2 : resume] == ["-", "-"]  # re-anchored on frame 30, buffered to the target again
    assert [x for x in out if isinstance(x, int)] == list(range(60))
    assert out[:resume].count("C") == 10
    s = p.stats()
    assert s["resets"] == 1 and s["overflows"] == 0


def test_jitter_resync_on_a_big_sequence_jump():
    p = Pair(3, 10)
    p.feed(talk(30))
    jumped = talk(30, first=30, tick0=30, seq0=1000 + 5000, ts0=80_000 + 900_000)
    p.feed(jumped)
    out = p.run(70)
    s = p.stats()
    assert s["overflows"] == 1 and s["resets"] == 1
    assert s["flushed"] == 2  # frames 28 and 29 were still held when frame 30 arrived
    assert [x for x in out if isinstance(x, int)] == [*range(28), *range(30, 60)]
    jump = out.index(30)
    assert out[jump - 2 : jump] == ["-", "-"]  # buffering again on the new sequence space
    assert balanced(s)


def test_jitter_restart_behind_needs_two_packets_in_sequence_once_the_stream_ran_dry():
    p = Pair(3, 10)
    p.feed(talk(25))
    p.run(20)

    def behind(k: int, tick: int) -> Arrival:  # a sender that restarted its sequence 700 behind
        return Arrival(T0 + tick * F + k, 0, (1000 - 700 + k) & 0xFFFF, 5_000 + 160 * k, False, payload(500 + k))

    p.push(behind(0, 20))
    p.push(behind(1, 20))  # two in sequence, but frames are still held: stragglers, not a restart
    assert p.stats()["late"] == 2 and p.stats()["overflows"] == 0
    p.run(8)  # the old stream plays out and runs dry
    assert p.stats()["buffered_frames"] == 0
    p.push(behind(2, 28))  # continues the stragglers, and now nothing is held: the sender restarted
    p.push(behind(3, 28))
    s = p.stats()
    assert s["overflows"] == 1 and s["resets"] == 1 and s["late"] == 2 and s["buffered_frames"] == 2
    # buffering on the new stream: the level stays 2, so it starts once frame 502 has waited 3 x 20 ms
    assert p.run(6) == ["-", "-", "-", 502, 503, "C"]
    assert p.played == [*range(25), 502, 503]


def test_jitter_short_spurt_starts_after_the_target_delay():
    p = Pair(4, 10)
    p.feed(talk(2))
    out = p.run(8)
    # the level never reaches 4: the first frame starts once it has waited 4 x 20 ms
    assert out == ["-", "-", "-", "-", 0, 1, "C", "C"]


def test_jitter_refuses_empty_and_oversized_payloads():
    p = Pair(1, 10)
    for size, seq in ((0, 1), (PAYLOAD_MAX + 1, 2), (PAYLOAD_MAX, 3)):
        p.push(Arrival(T0, 0, seq, seq * 160, False, b"\x00" * size))
    s = p.stats()
    assert s["invalid"] == 2 and s["buffered_frames"] == 1
    status, data, _pt = p.pop(T0 + PHASE)
    assert status == PAYLOAD_MAX and len(data) == PAYLOAD_MAX


def test_jitter_returns_the_payload_type_of_each_frame():
    p = Pair(1, 10)
    for i, pt in enumerate((0, 8, 0)):
        p.push(Arrival(T0 + i * F, 0, i, i * 160, i == 0, payload(i), pt=pt))
        assert p.pop(T0 + i * F + PHASE)[2] == pt


@pytest.mark.parametrize(
    ("bounds", "target"), [((0, 100), 1), ((40, 100), SLOTS - 4), ((6, 3), 3), ((2, 10), 2)]
)  # fmt: skip
def test_jitter_init_clamps_the_bounds(bounds, target):
    assert JitterBuffer(*bounds).stats()["target_frames"] == target
    assert JitterModel(*bounds).stats()["target_frames"] == target


def test_jitter_nothing_pushed_is_buffering():
    p = Pair()
    assert p.run(3) == ["-", "-", "-"]
    assert p.stats()["pushed"] == 0


# -- properties -------------------------------------------------------------------------------------------

network = st.fixed_dictionaries(
    {
        "frames": st.integers(1, 400),
        "seed": st.integers(0, 2**32 - 1),  # draws each frame's fate at the rates below
        "seq0": st.integers(0, 0xFFFF),
        "ts0": st.integers(0, 0xFFFFFFFF),
        "bounds": st.tuples(st.integers(1, 8), st.integers(1, 30)),
        "phase": st.integers(0, F - 1),
        "jitter_ms": st.sampled_from([0, 4, 40, 200]),  # uniform extra delay per packet
        "loss_pct": st.sampled_from([0, 2, 10, 30]),
        "dup_pct": st.sampled_from([0, 5, 30]),  # duplicated, the copy up to 120 ms later
        "dtx_pct": st.sampled_from([0, 3, 10]),  # silence (1-40 ticks, nothing sent) before a talk spurt
        "stall_pct": st.sampled_from([0, 1, 5]),  # 100-200 ms more for one packet
        "burst_pct": st.sampled_from([0, 0, 1]),  # a loss burst of 32-90 frames: past the slots
        "fifo": st.booleans(),  # no reordering: a stalled packet holds back the ones behind it
    }
)


def simulate(net: dict) -> tuple[list, dict, list[int]]:
    """Run the plan through both buffers; return the pop answers, the final stats and the frames played."""
    rng = random.Random(net["seed"])
    arrivals, tick, order, burst, last = [], 0, 0, 0, 0

    def pct(key: str) -> bool:
        return rng.randrange(100) < net[key]

    for i in range(net["frames"]):
        gap = rng.randint(1, 40) if pct("dtx_pct") else 0
        tick += gap
        burst = rng.randint(32, 90) if burst == 0 and pct("burst_pct") else max(burst - 1, 0)
        delay = rng.uniform(0, net["jitter_ms"]) + (rng.uniform(100, 200) if pct("stall_pct") else 0)
        now = T0 + tick * F + int(delay * MS)
        if net["fifo"]:
            now = last = max(now, last)
        if burst == 0 and not pct("loss_pct"):
            seq, ts = (net["seq0"] + i) & 0xFFFF, (net["ts0"] + tick * 160) & 0xFFFFFFFF
            marker = i == 0 or gap > 0
            arrivals.append(Arrival(now, order, seq, ts, marker, payload(i)))
            order += 1
            if pct("dup_pct"):
                arrivals.append(Arrival(now + rng.randrange(120) * MS, order, seq, ts, marker, payload(i)))
                order += 1
        tick += 1
    p = Pair(*net["bounds"], phase=net["phase"])
    p.feed(arrivals)
    answers = p.run(tick + 20)
    return answers, p.stats(), p.played


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(network)
def test_jitter_matches_the_model_on_random_networks(net):
    answers, stats, _played = simulate(net)  # Pair asserts C == model at every pop and every stats()
    assert stats["played"] == sum(1 for a in answers if isinstance(a, int))
    assert stats["concealed"] == answers.count("C")
    assert balanced(stats)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(network)
def test_jitter_plays_each_frame_at_most_once_and_in_order(net):
    _answers, stats, played = simulate(net)
    assert played == sorted(set(played))
    assert 0 < stats["target_frames"] <= max(net["bounds"])


push_op = st.tuples(
    st.just("push"),
    st.one_of(st.integers(-40, 40), st.integers(0, 0xFFFF).map(lambda s: ("abs", s))),  # seq: near, or anywhere
    st.one_of(st.integers(-480, 480), st.integers(0, 0xFFFFFFFF).map(lambda t: ("abs", t))),  # ts
    st.booleans(),  # marker
    st.sampled_from([0, 1, 160, 160, 160, PAYLOAD_MAX, PAYLOAD_MAX + 1]),  # payload size
    st.integers(0, 100),  # ms since the previous event
)
pop_op = st.tuples(st.just("pop"), st.integers(0, 60))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(push_op, pop_op, pop_op), max_size=400),
    st.tuples(st.integers(1, 8), st.integers(1, 30)),
    st.integers(0, 2**62),
)
def test_jitter_matches_the_model_on_arbitrary_input(ops, bounds, t0):
    """Adversarial streams: random jumps both ways, bad lengths, time standing still, any timestamps."""
    p = Pair(*bounds)
    now, cursor, n = t0, 0, 0
    for op in ops:
        if op[0] == "pop":
            now += op[1] * MS
            p.pop(now)
            continue
        _kind, dseq, dts, marker, size, dt = op
        now += dt * MS
        if isinstance(dseq, tuple):
            cursor = seq = dseq[1]
        else:
            cursor += 1
            seq = cursor + dseq
        ts = dts[1] if isinstance(dts, tuple) else seq * 160 + dts
        p.push(Arrival(now, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, marker, payload(n, size) if size >= 4 else b"x" * size))
        n += 1
    assert balanced(p.stats())
