"""Pure-Python reference of the adaptive jitter buffer in cext/native/jitter.c.

The same policy, written for reading rather than speed (the theory of operation is the comment at the top
of jitter.c); the tests feed both the same arrivals and ticks and require the same answers, frame for frame
and counter for counter. Integer arithmetic throughout, with C's fixed-width wrap-around made explicit.
"""

from __future__ import annotations

from dataclasses import dataclass

SLOTS = 32
PAYLOAD_MAX = 320
FRAME_NS = 20_000_000
FRAME_US = 20_000
FRAME_TS = 160
TS_NS = 125_000  # one 8 kHz timestamp unit
GAP_POPS = 10
MISORDER = 100
SHRINK_POPS = 25
TARGET_HOLD = 50
JITTER_K = 3
D_CAP_US = 1_000_000
DT_CLAMP_NS = 1 << 40
MASK64 = (1 << 64) - 1


def s16(x: int) -> int:
    x &= 0xFFFF
    return x - 0x10000 if x & 0x8000 else x


def s32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - 0x1_0000_0000 if x & 0x8000_0000 else x


def s64(x: int) -> int:
    x &= MASK64
    return x - (1 << 64) if x & (1 << 63) else x


@dataclass
class Frame:
    seq: int
    ts: int
    pt: int
    marker: bool
    payload: bytes


class JitterModel:
    """push(seq, ts, pt, marker, payload, now_ns); pop(now_ns) -> (status_or_len, payload, pt); stats()."""

    def __init__(self, min_frames: int = 2, max_frames: int = 10) -> None:
        max_frames = max(1, min(max_frames, SLOTS - 4))
        min_frames = max(1, min(min_frames, max_frames))
        self.min_frames, self.max_frames, self.target = min_frames, max_frames, min_frames
        self.frames: dict[int, Frame] = {}  # seq -> frame; at most SLOTS, all within the window
        self.active = self.playing = self.has_floor = self.bad_valid = False
        self.next_seq = self.max_seq = self.floor = self.bad_seq = 0
        self.played_mask = 0
        self.last_ts = 0
        self.since_ns = 0
        self.above = self.empty_run = 0
        self.have_ref = False
        self.ref_arrival_ns = self.ref_ts = 0
        self.jitter_q4 = 0
        self.hold_run = self.hold_max = 0
        self.counters = dict.fromkeys(
            ("pushed", "played", "concealed", "late", "duplicates", "overflows", "resets", "skipped", "flushed",
             "invalid"),
            0,
        )  # fmt: skip

    # -- helpers ----------------------------------------------------------------------------------------
    def _level(self) -> int:
        return ((self.max_seq - self.next_seq) & 0xFFFF) + 1 if self.frames else 0

    def _store(self, seq: int, ts: int, pt: int, marker: bool, payload: bytes, now_ns: int) -> None:
        if not self.frames:
            self.max_seq = seq
            if not self.playing:
                self.since_ns = now_ns
        elif s16(seq - self.max_seq) > 0:
            self.max_seq = seq
        self.frames[seq] = Frame(seq, ts, pt, marker, payload)

    def _advance(self, played: bool) -> None:
        self.played_mask = ((self.played_mask << 1) | int(played)) & MASK64
        self.next_seq = (self.next_seq + 1) & 0xFFFF

    def _retarget(self) -> None:
        j_us = self.jitter_q4 >> 4
        want = 1 + -(-JITTER_K * j_us // FRAME_US)
        want = max(self.min_frames, min(want, self.max_frames))
        if want > self.target:
            self.target, self.hold_run = want, 0
        elif want < self.target:
            self.hold_max = want if self.hold_run == 0 else max(self.hold_max, want)
            self.hold_run += 1
            if self.hold_run >= TARGET_HOLD:
                self.target, self.hold_run = self.hold_max, 0
        else:
            self.hold_run = 0

    def _arrival(self, ts: int, now_ns: int) -> None:
        """RFC 3550 A.8 interarrival jitter, in microseconds (x16 fixed point)."""
        if self.have_ref:
            dt = max(-DT_CLAMP_NS, min(s64(now_ns - self.ref_arrival_ns), DT_CLAMP_NS))
            d = dt - s32(ts - self.ref_ts) * TS_NS
            us = min(abs(d) // 1000, D_CAP_US)
            self.jitter_q4 += us - ((self.jitter_q4 + 8) >> 4)
            self._retarget()
        self.have_ref, self.ref_arrival_ns, self.ref_ts = True, now_ns, ts

    def _resync(self, seq: int, ts: int, now_ns: int) -> None:
        self.counters["flushed"] += len(self.frames)
        self.frames.clear()
        self.counters["overflows"] += 1
        self.counters["resets"] += 1
        self.playing = self.has_floor = self.bad_valid = False
        self.next_seq = self.max_seq = seq
        self.played_mask = 0
        self.above = self.empty_run = 0
        self.have_ref, self.ref_arrival_ns, self.ref_ts = True, now_ns, ts

    def _stop_playing(self, now_ns: int) -> None:
        self.playing = False
        self.has_floor, self.floor = True, self.next_seq
        self.since_ns = now_ns
        self.above = self.empty_run = 0

    def _spurt(self, f: Frame) -> bool:
        return f.marker and not ((self.played_mask & 1) and ((f.ts - self.last_ts) & 0xFFFFFFFF) == FRAME_TS)

    # -- the interface ----------------------------------------------------------------------------------
    def push(self, seq: int, ts: int, pt: int, marker: bool, payload: bytes, now_ns: int) -> None:
        c = self.counters
        c["pushed"] += 1
        if not 0 < len(payload) <= PAYLOAD_MAX:
            c["invalid"] += 1
            return
        seq &= 0xFFFF
        ts &= 0xFFFFFFFF
        pt &= 0xFF
        marker = bool(marker)
        if not self.active:
            self.active = True
            self.next_seq = self.max_seq = seq
            self._store(seq, ts, pt, marker, payload, now_ns)
            self._arrival(ts, now_ns)
            return
        d = s16(seq - self.next_seq)
        if not self.playing:
            if (
                d < 0
                and (not self.has_floor or s16(seq - self.floor) >= 0)
                and (not self.frames or (self.max_seq - seq) & 0xFFFF < SLOTS)
            ):
                self.played_mask = self.played_mask >> -d if -d < 64 else 0  # an earlier frame: anchor back
                self.next_seq = seq
                self._store(seq, ts, pt, marker, payload, now_ns)
                self._arrival(ts, now_ns)
                return
            if 0 < d < SLOTS and not self.frames:
                self.played_mask = (self.played_mask << d) & MASK64  # an empty buffer: anchor on this frame
                self.next_seq = seq
                self._store(seq, ts, pt, marker, payload, now_ns)
                self._arrival(ts, now_ns)
                return
        if d < 0:
            if d < -MISORDER:
                if not self.frames and self.bad_valid and seq == self.bad_seq:
                    self._resync(seq, ts, now_ns)
                    self._store(seq, ts, pt, marker, payload, now_ns)
                    return
                self.bad_valid, self.bad_seq = True, (seq + 1) & 0xFFFF
                c["late"] += 1
                return
            if -d <= 64 and (self.played_mask >> (-d - 1)) & 1:
                c["duplicates"] += 1
            else:
                c["late"] += 1
                self._arrival(ts, now_ns)
            return
        if d >= SLOTS:
            self._resync(seq, ts, now_ns)
            self._store(seq, ts, pt, marker, payload, now_ns)
            return
        if seq in self.frames:
            c["duplicates"] += 1
            return
        self._store(seq, ts, pt, marker, payload, now_ns)
        self._arrival(ts, now_ns)

    def _emit(self, f: Frame) -> tuple[int, bytes, int]:
        del self.frames[f.seq]
        self.last_ts = f.ts
        self.counters["played"] += 1
        self.empty_run = 0
        self._advance(True)
        return len(f.payload), f.payload, f.pt

    def pop(self, now_ns: int) -> tuple[int, bytes, int]:
        c = self.counters
        started = False
        if not self.active:
            return -1, b"", 0
        if not self.playing:
            if not self.frames:
                return -1, b"", 0
            waited = now_ns >= self.since_ns and now_ns - self.since_ns >= self.target * FRAME_NS
            if self._level() < self.target and not waited:
                return -1, b"", 0
            self.playing, started = True, True
            self.above = self.empty_run = 0
        lvl = self._level()
        if lvl > self.target:
            self.above += 1
        elif lvl < self.target:
            self.above = 0
        head = self.frames.get(self.next_seq)
        if head is None:
            if self.frames:  # lost, or later than the delay we keep
                c["concealed"] += 1
                self.empty_run = 0
                self._advance(False)
                return 0, b"", 0
            self.empty_run += 1
            if self.empty_run > GAP_POPS:
                self._stop_playing(now_ns)
                c["resets"] += 1
                return -1, b"", 0
            c["concealed"] += 1  # underrun: wait for this frame, one frame more delay
            return 0, b"", 0
        if not started and self._spurt(head) and lvl < self.target:
            self._stop_playing(now_ns)  # talk-spurt start short of the target: lengthen the silence
            return -1, b"", 0
        if not started and lvl > self.target and (self._spurt(head) or self.above >= SHRINK_POPS):
            nxt = self.frames.get((self.next_seq + 1) & 0xFFFF)
            if nxt is not None:
                del self.frames[head.seq]
                c["skipped"] += 1
                self.above = 0
                self._advance(False)
                head = nxt
        return self._emit(head)

    def stats(self) -> dict[str, int]:
        return {
            **self.counters,
            "target_frames": self.target,
            "level_frames": self._level(),
            "buffered_frames": len(self.frames),
            "jitter_us": self.jitter_q4 >> 4,
            "playing": int(self.playing),
        }
