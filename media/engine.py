"""MediaEngine: the Python face of the compiled media loop (cext/engine.pyx, cext/native/engine.c).

Python here only sets up and tears down: it allocates RTP/RTCP port pairs from `[media] rtp_ports`, has
the compiled engine bind them as sockets of its own (a bind failure is an ordinary OSError, and the next
pair is tried), and turns the media thread's event batches into `MediaEvent`s. Packets never reach Python.
Everything here is safe to call from the asyncio thread; `attach(loop, callback)` delivers events there.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import itertools
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import msgspec
from cext.engine import Engine, close_recording, open_recording

from media.audio import load_wav
from media.quality import mos, r_factor

MODES = ("relay", "processed")
_ZERO = dict.fromkeys(
    (
        "rx_packets rx_bytes tx_packets tx_bytes expected lost jitter_ts rx_invalid rx_foreign "
        "rx_duplicates ssrc_changes"
    ).split(),
    0,
) | {"latched": False}


class Leg(msgspec.Struct, frozen=True):
    """One RTP endpoint of ours: `port` is what goes into our SDP (RTCP is `port + 1`)."""

    id: int
    host: str
    port: int


class LegStats(msgspec.Struct, frozen=True):
    """Counters of one leg (RFC 3550): what we received from its far end and sent to it."""

    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    expected: int
    lost: int
    jitter_ms: float
    rx_invalid: int
    rx_foreign: int
    rx_duplicates: int
    ssrc_changes: int
    latched: bool
    processed: bool = False
    dtmf_events: int = 0
    jb_concealed: int = 0
    jb_late: int = 0
    rtcp_rx: int = 0
    rtcp_tx: int = 0
    remote_loss_pct: float = 0.0  # the far end's last report of our stream (RTCP)
    remote_jitter_ms: float = 0.0
    rtt_ms: float | None = None

    @property
    def loss_pct(self) -> float:
        return 100.0 * max(self.lost, 0) / self.expected if self.expected else 0.0

    @property
    def r_factor(self) -> float:
        # mouth-to-ear delay is not measured on an anchored leg; a jitter buffer of twice the jitter
        # plus one 20 ms frame is the usual stand-in
        return r_factor(self.loss_pct, 2 * self.jitter_ms + 20.0)

    @property
    def mos(self) -> float:
        return mos(self.r_factor)

    @classmethod
    def from_counters(cls, c: dict, clock_rate: int = 8000) -> LegStats:
        return cls(
            c["rx_packets"],
            c["rx_bytes"],
            c["tx_packets"],
            c["tx_bytes"],
            c["expected"],
            c["lost"],
            1000.0 * c["jitter_ts"] / clock_rate,
            c["rx_invalid"],
            c["rx_foreign"],
            c["rx_duplicates"],
            c["ssrc_changes"],
            c["latched"],
            c.get("processed", False),
            c.get("dtmf_events", 0),
            c.get("jb_concealed", 0),
            c.get("jb_late", 0),
            c.get("rtcp_rx", 0),
            c.get("rtcp_tx", 0),
            100.0 * c.get("rtcp_fraction_lost", 0) / 256,
            1000.0 * c.get("rtcp_jitter_ts", 0) / clock_rate,
            c["rtt_us"] / 1000 if c.get("rtt_us") else None,
        )


DTMF_DIGITS = "0123456789*#ABCD!"  # RFC 4733 event codes 0-16 (16: flash)
CODECS = {"PCMU": 0, "PCMA": 8}
AMD_SEGMENTS = ("silence", "voice", "tone")  # cext/native/amd.h's kinds


class Bridge(msgspec.Struct, frozen=True):
    """A group of legs whose audio the engine connects: two legs relay, more (or features) are mixed."""

    id: int


class MediaEvent(msgspec.Struct, frozen=True):
    """Something the media thread saw. Kinds: `latched`/`relatched` (the far end's address learnt),
    `ssrc_changed`, `leg_closed` (final statistics, for the call record), `dtmf` (`digit`, `start_ns`,
    `duration_ms`, `source`: `rfc4733` or `inband`), `dtmf_sent`, `amd` (`segment`, `start_ms`, `freq_hz`,
    `now_ms`: a boundary of the AMD kernel), `play_done` (`play_id`, `interrupted`), `stream_mark` (`mark`,
    `cleared`: a media stream's mark reached, or dropped by a clear),
    `recording_done` (`path`, `duration_s`, `size`, `dropped_frames`, `error`; `leg` is the bridge id)."""

    kind: str
    leg: int
    remote: tuple[str, int] | None
    stats: LegStats
    detail: dict = msgspec.field(default_factory=dict)


_PORT_TAKEN = (errno.EADDRINUSE, errno.EACCES)


@dataclass
class PortPool:
    """Even RTP ports (RTCP on the next) from a range; freed ports go to the back of the queue, so a port is
    not reused while the far end may still be sending to it."""

    low: int
    high: int
    _free: deque[int] = field(init=False)

    def __post_init__(self) -> None:
        first = self.low + (self.low % 2)
        self._free = deque(range(first, self.high, 2))

    def __len__(self) -> int:
        return len(self._free)

    def claim(self, bind: Callable[[int], object]) -> int:
        """Take the next free even port for which `bind(port)` succeeds (it binds the port and the one above);
        a pair in use (EADDRINUSE, EACCES: another process holds it) is passed over, any other error (out of
        descriptors, a bad address) is raised at once. Raises OSError when every port is taken; a port whose
        bind failed goes back to the pool whatever the error."""
        for _ in range(len(self._free)):
            port = self._free.popleft()
            try:
                bind(port)
            except BaseException as exc:
                if isinstance(exc, OSError) and exc.errno in _PORT_TAKEN:
                    self._free.append(port)  # tried again last: its holder may let it go
                    continue
                self._free.appendleft(port)
                raise
            return port
        raise OSError(f"no free RTP port pair in {self.low}-{self.high}")

    def release(self, port: int) -> None:
        self._free.append(port)


def srtp_available() -> str | None:
    """None when the engine can do SRTP here, else why not (the process's libcrypto is missing)."""
    from cext.srtp import available

    return available()


class MediaEngine:
    """The media engine: legs, bridges, events. Create once per process; `close()` at shutdown."""

    def __init__(self, rtp_ports: tuple[int, int] = (20000, 29999), host: str = "127.0.0.1"):
        self.host = host
        self.ports = PortPool(*rtp_ports)
        self._engine = Engine(max(len(self.ports), 1))
        self._free_ids = deque(range(self._engine.max_legs))
        self._legs: dict[int, Leg] = {}
        self._closing: dict[int, Leg] = {}  # destroyed, until the media thread has closed their sockets
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[MediaEvent] = []
        self._free_groups = deque(range(self._engine.max_legs))
        self._members: dict[int, set[int]] = {}
        self._bridge_of: dict[int, int] = {}  # leg id -> its bridge id (one lookup, not a scan of every bridge)
        self._recordings: dict[int, tuple[str, int]] = {}  # rec id -> (path, bridge id)
        self._plays: dict[int, bytes] = {}  # play id -> PCM kept alive until play_done
        self._ids = itertools.count(1)
        self._closer = ThreadPoolExecutor(1, thread_name_prefix="recording-close")
        self._done: list[MediaEvent] = []
        self._done_lock = threading.Lock()
        self._engine.start()

    # -- legs ----------------------------------------------------------------------------------------
    def create_leg(self, host: str | None = None) -> Leg:
        """Allocate a port pair and a leg id; the leg receives at once and latches its far end. The sockets are
        the media thread's own (`Engine.open_leg`), closed when it lets the leg go. RuntimeError once the engine
        is closed (no thread would take the sockets)."""
        if not self._free_ids or not self.ports:
            self._reclaim()
        if not self._free_ids:
            raise OSError("no free media leg")
        host = host or self.host
        leg_id = self._free_ids.popleft()
        try:
            port = self.ports.claim(lambda p: self._engine.open_leg(leg_id, host, p))
        except BaseException:
            self._free_ids.appendleft(leg_id)
            raise
        leg = self._legs[leg_id] = Leg(leg_id, host, port)
        return leg

    def set_remote(self, leg: Leg, host: str, port: int) -> None:
        """Where to send until the far end's first packet shows its real address (from its SDP)."""
        self._engine.set_remote(leg.id, host, port)

    def set_srtp(self, leg: Leg, ours: bytes | None, theirs: bytes | None, tag_len: int = 10) -> None:
        """SRTP on the leg (RFC 3711, SDES keys): what we send protected with `ours` (a 30-byte master key
        and salt), what the far end sends checked and decrypted with `theirs`; packets that do not
        authenticate are dropped (counted as invalid) before they can latch the leg. None, None: plain RTP."""
        self._engine.srtp(leg.id, ours, theirs, tag_len)

    def set_codec(self, leg: Leg, codec: str = "PCMU", pt: int | None = None, te_pt: int | None = None) -> None:
        """What the leg's far end negotiated: PCMU or PCMA (with its payload type) and telephone-event."""
        number = CODECS[codec.upper()]
        self._engine.set_codec(leg.id, number, number if pt is None else pt, -1 if te_pt is None else te_pt)

    def bridge(self, a: Leg, b: Leg, mode: str = "relay") -> Bridge:
        """Connect two legs: relayed packet by packet, or `processed` (mixed every 20 ms) when asked or
        when a feature (recording, playing, gain) needs it."""
        if mode not in MODES:
            raise ValueError(f"bridge mode {mode!r}: use one of {', '.join(MODES)}")
        return self.conference([a, b], processed=mode == "processed")

    def conference(self, legs: list[Leg], processed: bool = False) -> Bridge:
        """Put legs in one bridge: each hears the sum of the others (up to 32 parties)."""
        if not self._free_groups:
            raise OSError("no free bridge")
        bridge = Bridge(self._free_groups.popleft())
        self._members[bridge.id] = set()
        self._engine.group_mode(bridge.id, processed)
        for leg in legs:
            self.join(bridge, leg)
        return bridge

    def join(self, bridge: Bridge, leg: Leg) -> None:
        self._forget_bridge(leg.id)
        self._members[bridge.id].add(leg.id)
        self._bridge_of[leg.id] = bridge.id
        self._engine.join(leg.id, bridge.id)

    def leave(self, leg: Leg) -> None:
        self._forget_bridge(leg.id)
        self._engine.leave(leg.id)

    def _forget_bridge(self, leg_id: int) -> None:
        old = self._bridge_of.pop(leg_id, None)
        if old is not None and old in self._members:
            self._members[old].discard(leg_id)

    def unbridge(self, bridge: Bridge) -> None:
        """Disconnect every leg of the bridge (a recording running on it is stopped)."""
        for leg_id in self._members.pop(bridge.id, set()):
            self._bridge_of.pop(leg_id, None)
            self._engine.leave(leg_id)
        self._engine.group_mode(bridge.id, False)
        self._free_groups.append(bridge.id)

    def set_mode(self, bridge: Bridge, processed: bool) -> None:
        """Force the processed path (True) or let the engine relay when nothing needs the audio (False)."""
        self._engine.group_mode(bridge.id, processed)

    def set_gain(self, leg: Leg, gain_db: float = 0.0, muted: bool = False) -> None:
        """How loud this leg is in its bridge's mix, or muted (it still hears the others)."""
        self._engine.gain(leg.id, 10 ** (gain_db / 20), muted)

    def record(self, bridge: Bridge, path: str, stereo: bool = True) -> int:
        """Record the bridge to a WAV file (stereo: first leg left, second right; mono: the mix).
        Returns the recording id; `recording_done` reports path, duration and size."""
        writer = open_recording(os.fsencode(path), 2 if stereo else 1)  # OSError here if it cannot be created
        rec_id = next(self._ids)
        self._recordings[rec_id] = (path, bridge.id)
        self._engine.rec_start(bridge.id, writer, 2 if stereo else 1, rec_id)
        return rec_id

    def stop_recording(self, bridge: Bridge) -> None:
        self._engine.rec_stop(bridge.id)

    def pause_recording(self, bridge: Bridge, paused: bool = True) -> None:
        self._engine.rec_pause(bridge.id, paused)

    def play(self, leg: Leg, pcm: bytes, loop: bool = False) -> int:
        """Play 8 kHz mono PCM16 into a leg (what its far end hears), replacing the bridge audio until it
        ends; a leg in no bridge gets a bridge of its own. Returns the id `play_done` will carry."""
        if leg.id not in self._bridge_of:
            self.conference([leg])
        play_id = next(self._ids)
        data = bytes(pcm)
        self._plays[play_id] = data
        self._engine.play(leg.id, data, loop, play_id)
        return play_id

    def play_file(self, leg: Leg, path: str, loop: bool = False) -> int:
        """Play a WAV file (any common rate, width and channel count: converted once, here) into a leg."""
        return self.play(leg, load_wav(path), loop)

    def stop_play(self, leg: Leg) -> None:
        self._engine.play_stop(leg.id)

    def send_dtmf(self, leg: Leg, digits: str, duration_ms: int = 100) -> None:
        """Send digits to the leg's far end as RFC 4733 events (the leg must have a telephone-event PT)."""
        for digit in digits.upper():
            if digit not in DTMF_DIGITS[:16]:
                raise ValueError(f"not a DTMF digit: {digit!r}")
            self._engine.dtmf(leg.id, DTMF_DIGITS.index(digit), duration_ms)

    def detect_dtmf(self, leg: Leg, on: bool = True) -> None:
        """Listen for DTMF tones in what the leg's far end sends (`dtmf` events with source `inband`). The
        leg's bridge then also feeds the tick: relayed packets still go out on arrival, a copy is decoded."""
        self._engine.inband(leg.id, on)

    def detect_amd(self, leg: Leg, params: dict | None) -> None:
        """Start answering machine detection on what the leg's far end sends (`params`: the AMD kernel's,
        see media.amd.AmdParams.kernel), from now on; None stops it. Reports `amd` segment events."""
        self._engine.amd(leg.id, params)

    # -- media streams ---------------------------------------------------------------------------------
    def stream_tap(self, leg: Leg, rx: bool = True, tx: bool = False) -> None:
        """Copy the leg's audio out for media streams (`frames()`): what its far end sends (rx) and what the
        leg sends it (tx). Relayed, each packet's payload as it passes (no added delay); processed, each
        20 ms tick's frame after the jitter buffer and the mix."""
        self._engine.stream_tap(leg.id, int(rx) | (2 if tx else 0))

    def stream_play(self, leg: Leg, on: bool = True) -> None:
        """Start (or stop) the leg's stream playout: audio pushed with `stream_push` is mixed into what the
        leg sends, paced at 20 ms with 60 ms of jitter tolerance. The leg's bridge is processed meanwhile."""
        if on and leg.id not in self._bridge_of:
            self.conference([leg])
        self._engine.stream_play(leg.id, on)

    def stream_push(self, leg: Leg, ulaw: bytes) -> None:
        """Queue 8 kHz mu-law audio for the leg's stream playout (up to 65 s; beyond, it is dropped)."""
        self._engine.stream_push(leg.id, ulaw)

    def stream_mark(self, leg: Leg, mark: int) -> None:
        """A `stream_mark` event (detail `mark`, `cleared`) once the audio pushed before it has played."""
        self._engine.stream_mark(leg.id, mark)

    def stream_clear(self, leg: Leg) -> None:
        """Drop the queued audio at once; marks still waiting are reported with `cleared`."""
        self._engine.stream_clear(leg.id)

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        """The tapped frames queued since the last call, in order: (leg id, track 0 rx / 1 tx, CLOCK_MONOTONIC
        ns, mu-law bytes: 160 per 20 ms). One batch for every tapped leg."""
        return self._engine.frames()

    @property
    def dropped_frames(self) -> int:
        """Tapped frames lost because nobody took them in time (counted, never blocking the media thread)."""
        return self._engine.dropped_frames

    def stats(self, leg: Leg) -> LegStats | None:
        """Live counters (each exact, the set possibly a packet apart); None for a destroyed leg."""
        counters = self._engine.leg_stats(leg.id)
        if counters is None:
            # created but not yet seen by the media thread: nothing has been counted
            return LegStats.from_counters(_ZERO) if leg.id in self._legs else None
        return LegStats.from_counters(counters)

    def destroy_leg(self, leg: Leg) -> None:
        """Stop the leg; its final statistics arrive as a `leg_closed` event. Its port and id return to
        the pools only then, once the media thread has let go of the socket."""
        if self._legs.pop(leg.id, None) is not None:
            self._forget_bridge(leg.id)  # the media thread takes it out of its bridge as it closes it
            self._engine.del_leg(leg.id)
            self._closing[leg.id] = leg

    def _finish(self, leg_id: int) -> None:
        leg = self._closing.pop(leg_id, None)
        if leg is not None:
            self.ports.release(leg.port)
            self._free_ids.append(leg.id)

    def _reclaim(self, timeout: float = 2.0) -> None:
        """Wait (briefly) for destroyed legs to be released when the pools have run dry."""
        deadline = time.monotonic() + timeout
        self._engine.release()  # the destroy commands of this callback, deferred (attach)
        while self._closing and time.monotonic() < deadline:
            self._pending.extend(self._drain())
            if self._free_ids and self.ports:
                return
            select.select([self.event_fd], [], [], max(0.0, deadline - time.monotonic()))

    @property
    def leg_count(self) -> int:
        return len(self._legs)

    # -- events --------------------------------------------------------------------------------------
    def events(self) -> list[MediaEvent]:
        """Every event the media thread queued since the last call (a batch, never one per packet)."""
        out, self._pending = self._pending + self._drain(), []
        return out

    def _drain(self) -> list[MediaEvent]:
        batch = []
        for kind, leg, remote, stats, values in self._engine.events():
            if kind == "recording_done":  # the writer must be closed first: reported when it is
                self._closer.submit(self._recording_done, values[0], leg, values[1])
                continue
            detail = self._detail(kind, values)
            if kind == "dtmf_inband":
                kind = "dtmf"
            batch.append(MediaEvent(kind, leg, remote, LegStats.from_counters(stats), detail))
            if kind == "leg_closed":
                self._finish(leg)
        with self._done_lock:
            batch += self._done
            self._done.clear()
        return batch

    def _detail(self, kind: str, v: tuple[int, int, int, int]) -> dict:
        if kind in ("dtmf", "dtmf_inband"):
            source = "rfc4733" if kind == "dtmf" else "inband"
            return {"digit": DTMF_DIGITS[v[0]], "start_ns": v[1], "duration_ms": v[2], "source": source}
        if kind == "amd":  # a segment boundary, in ms since detection started
            return {"segment": AMD_SEGMENTS[v[0]], "start_ms": v[1] // 8, "freq_hz": v[2], "now_ms": v[3] // 8}
        if kind == "dtmf_sent":
            return {"digit": DTMF_DIGITS[v[0]]}
        if kind == "stream_mark":
            return {"mark": v[0], "cleared": bool(v[1])}
        if kind == "play_done":
            self._plays.pop(v[0], None)
            return {"play_id": v[0], "interrupted": bool(v[1])}
        return {}

    def _recording_done(self, rec_id: int, bridge_id: int, writer: int) -> None:
        """Close a finished recording off the media thread, then report it like any other event."""
        path, _ = self._recordings.pop(rec_id, ("", bridge_id))
        error, frames, dropped = close_recording(writer)
        size = os.path.getsize(path) if path and os.path.exists(path) else 0
        detail = {
            "recording_id": rec_id,
            "path": path,
            "duration_s": frames / 8000,
            "size": size,
            "dropped_frames": dropped,
            "error": error,
        }
        with self._done_lock:
            self._done.append(MediaEvent("recording_done", bridge_id, None, LegStats.from_counters(_ZERO), detail))
        os.eventfd_write(self.event_fd, 1)

    @property
    def event_fd(self) -> int:
        return self._engine.event_fd

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[list[MediaEvent]], None],
        frames: Callable[[list[tuple[int, int, int, bytes]]], None] | None = None,
    ) -> None:
        """Deliver event batches to `callback` on `loop` whenever the media thread signals, and the tapped
        stream frames to `frames` (one batch per wake-up, not a call per frame).
        From then on the commands a callback pushes wake the media thread once, when it returns (a call's
        set-up and each of its messages push several, and each wake-up was a system call on this thread
        and a context switch on the other): `Engine.defer_wakes`."""
        self._loop = loop
        self._engine.defer_wakes(functools.partial(loop.call_soon, self._engine.release))

        def ready() -> None:
            callback(self.events())
            if frames is not None:
                batch = self._engine.frames()
                if batch:
                    frames(batch)

        loop.add_reader(self.event_fd, ready)

    def cpu_seconds(self) -> float:
        """CPU time the media thread has used."""
        return self._engine.cpu_seconds()

    def close(self) -> None:
        """Stop the media thread (every leg is closed and reported) and release the ports."""
        if self._loop is not None:
            self._loop.remove_reader(self.event_fd)
            self._loop = None
            self._engine.defer_wakes(None)  # what is owed is released
        self._engine.stop()
        self._closing.update(self._legs)
        self._legs.clear()
        self._drain()
        self._closer.shutdown(wait=True)  # every recording is finished on disk before close returns
        for leg_id in list(self._closing):
            self._finish(leg_id)
