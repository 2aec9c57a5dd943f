"""MediaEngine: the Python face of the compiled media loop (cext/engine.pyx, cext/native/engine.c).

Python here only sets up and tears down: it allocates RTP/RTCP port pairs from `[media] rtp_ports`,
binds the sockets (so a bind failure is an ordinary OSError), hands a duplicate of each RTP socket to the
media thread, and turns the thread's event batches into `MediaEvent`s. Packets never reach Python.
Everything here is safe to call from the asyncio thread; `attach(loop, callback)` delivers events there.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cext.engine import Engine

from media.quality import mos, r_factor

MODES = ("relay",)
_ZERO = dict.fromkeys(
    (
        "rx_packets rx_bytes tx_packets tx_bytes expected lost jitter_ts rx_invalid rx_foreign "
        "rx_duplicates ssrc_changes"
    ).split(),
    0,
) | {"latched": False}


@dataclass(frozen=True, slots=True)
class Leg:
    """One RTP endpoint of ours: `port` is what goes into our SDP (RTCP is `port + 1`)."""

    id: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class LegStats:
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
        )


@dataclass(frozen=True, slots=True)
class MediaEvent:
    """Something the media thread saw: `latched`/`relatched` (the far end's address learnt), `ssrc_changed`,
    `leg_closed` (with the final statistics, for the call record)."""

    kind: str
    leg: int
    remote: tuple[str, int] | None
    stats: LegStats


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

    def bind(self, host: str) -> tuple[socket.socket, socket.socket]:
        """Bind the next free pair; raises OSError when every port is taken."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(len(self._free)):
            port = self._free.popleft()
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtcp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtp.bind((host, port))
                rtcp.bind((host, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                self._free.append(port)
                continue
            rtp.setblocking(False)
            rtcp.setblocking(False)
            return rtp, rtcp
        raise OSError(f"no free RTP port pair in {self.low}-{self.high} on {host}")

    def release(self, port: int) -> None:
        self._free.append(port)


class MediaEngine:
    """The media engine: legs, bridges, events. Create once per process; `close()` at shutdown."""

    def __init__(self, rtp_ports: tuple[int, int] = (20000, 29999), host: str = "127.0.0.1"):
        self.host = host
        self.ports = PortPool(*rtp_ports)
        self._engine = Engine(max(len(self.ports), 1))
        self._free_ids = deque(range(self._engine.max_legs))
        self._legs: dict[int, tuple[Leg, socket.socket, socket.socket]] = {}
        self._closing: dict[int, tuple[Leg, socket.socket, socket.socket]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[MediaEvent] = []
        self._engine.start()

    # -- legs ----------------------------------------------------------------------------------------
    def create_leg(self, host: str | None = None) -> Leg:
        """Allocate a port pair and a leg id; the leg receives at once and latches its far end."""
        if not self._free_ids or not self.ports:
            self._reclaim()
        if not self._free_ids:
            raise OSError("no free media leg")
        rtp, rtcp = self.ports.bind(host or self.host)
        leg = Leg(self._free_ids.popleft(), host or self.host, rtp.getsockname()[1])
        try:
            self._engine.add_leg(leg.id, rtp)
        except BaseException:
            rtp.close()
            rtcp.close()
            self.ports.release(leg.port)
            self._free_ids.append(leg.id)
            raise
        self._legs[leg.id] = (leg, rtp, rtcp)
        return leg

    def set_remote(self, leg: Leg, host: str, port: int) -> None:
        """Where to send until the far end's first packet shows its real address (from its SDP)."""
        self._engine.set_remote(leg.id, host, port)

    def bridge(self, a: Leg, b: Leg, mode: str = "relay") -> None:
        """Connect two legs: each one's packets go to the other."""
        if mode not in MODES:
            raise NotImplementedError(f"bridge mode {mode!r} is not available yet (have: {', '.join(MODES)})")
        self._engine.bridge(a.id, b.id)

    def unbridge(self, leg: Leg) -> None:
        self._engine.unbridge(leg.id)

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
        entry = self._legs.pop(leg.id, None)
        if entry is not None:
            self._engine.del_leg(leg.id)
            self._closing[leg.id] = entry

    def _finish(self, leg_id: int) -> None:
        entry = self._closing.pop(leg_id, None)
        if entry is not None:
            leg, rtp, rtcp = entry
            rtp.close()
            rtcp.close()
            self.ports.release(leg.port)
            self._free_ids.append(leg.id)

    def _reclaim(self, timeout: float = 0.5) -> None:
        """Wait (briefly) for destroyed legs to be released when the pools have run dry."""
        deadline = time.monotonic() + timeout
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
        batch = [
            MediaEvent(kind, leg, remote, LegStats.from_counters(stats))
            for kind, leg, remote, stats in self._engine.events()
        ]
        for event in batch:
            if event.kind == "leg_closed":
                self._finish(event.leg)
        return batch

    @property
    def event_fd(self) -> int:
        return self._engine.event_fd

    def attach(self, loop: asyncio.AbstractEventLoop, callback: Callable[[list[MediaEvent]], None]) -> None:
        """Deliver event batches to `callback` on `loop` whenever the media thread signals."""
        self._loop = loop
        loop.add_reader(self.event_fd, lambda: callback(self.events()))

    def cpu_seconds(self) -> float:
        """CPU time the media thread has used."""
        return self._engine.cpu_seconds()

    def close(self) -> None:
        """Stop the media thread (every leg is closed and reported) and release the ports."""
        if self._loop is not None:
            self._loop.remove_reader(self.event_fd)
            self._loop = None
        self._engine.stop()
        self._closing.update(self._legs)
        self._legs.clear()
        self._drain()
        for leg_id in list(self._closing):
            self._finish(leg_id)
