"""The UAS core's 2xx retransmission and ACK wait (RFC 3261 13.3.1.4, RFC 6026 section 7.1), sans-IO.

Theory of operation. A 2xx to an INVITE ends the INVITE server transaction's care for it (RFC 6026 moves
the transaction to Accepted, where it only absorbs retransmitted INVITEs), so the UAS core must carry the
2xx end to end itself: it retransmits the response first T1 after sending it, then at intervals that
double up to T2 (T1, 2*T1, 4*T1, T2, T2, ...), and stops when the ACK for it arrives. If no ACK has come
64*T1 after the first transmission, the core gives up and should end the dialog with a BYE (13.3.1.4).
This holds over every transport, reliable ones (TCP, TLS, WebSocket) included: 13.3.1.4 puts the 2xx
retransmission in the UAS core, not in the transport layer, because a later hop may be UDP and lose the
2xx or its ACK there; only the transaction layer's own retransmissions stop over a reliable transport.

`InviteOkRetransmitter` is that machine for one 2xx: the caller arms one timer at `get_timer()`, calls
`handle_timer(now)` when it is due and sends the responses it returns, passes ACKs that may belong to it
to `receive_ack(ack, now)`, and reads `AckReceived` / `AckTimeout` from `next_event()`. It never reads a
clock: every time is the caller's `now`, in seconds on one monotonic clock. T1 and T2 come from config:
the same `TimerConfig` (`transaction.py`, 0.5 s and 4 s by default) the transaction layer uses.

The ACK is matched to the 2xx by Call-ID, From tag, To tag and CSeq number (the ACK's CSeq method is ACK),
which is what 13.2.2.4 makes the UAC copy from the 2xx and its INVITE.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

import msgspec

from softswitch.sip.message import Request, Response
from softswitch.sip.transaction import TimerConfig

__all__ = ["AckReceived", "AckTimeout", "InviteOkRetransmitter", "OkState", "RetransmitEvent", "acknowledges"]


class OkState(Enum):
    __hash__ = object.__hash__  # members are singletons: hashed in C (Enum's own __hash__ runs Python)

    WAITING = "waiting"  # retransmitting and waiting for the ACK
    ACKED = "acked"
    TIMED_OUT = "timed-out"


WAITING = OkState.WAITING  # read at every step: a module constant is not an Enum class attribute's slow read
# (state, input) -> next state; inputs are "retransmit" (the interval timer), "ack" and "timeout" (64*T1).
# A pair missing from the table is absorbed unchanged (an ACK repeated after the first, a late timer).
TRANSITIONS: dict[tuple[OkState, str], OkState] = {
    (OkState.WAITING, "retransmit"): OkState.WAITING,
    (OkState.WAITING, "ack"): OkState.ACKED,
    (OkState.WAITING, "timeout"): OkState.TIMED_OUT,
}


class AckReceived(msgspec.Struct, frozen=True):
    """The ACK for our 2xx arrived: retransmission stopped."""

    at: float
    ack: Request


class AckTimeout(msgspec.Struct, frozen=True):
    """No ACK for our 2xx within 64*T1 (13.3.1.4): the caller ends the dialog with a BYE."""

    at: float
    response: Response


RetransmitEvent = AckReceived | AckTimeout


class InviteOkRetransmitter:
    """Retransmits a 2xx to an INVITE until its ACK arrives (13.3.1.4): first after T1, then at intervals
    doubling up to T2, over any transport. 64*T1 after the start without an ACK, it stops and reports
    `AckTimeout`. Drive it with `get_timer()` / `handle_timer(now)`; feed ACKs to `receive_ack`."""

    __slots__ = ("_events", "_give_up_at", "_identity", "_interval", "_retransmit_at", "config", "response", "state")

    def __init__(self, response: Response, now: float, config: TimerConfig | None = None):
        if not 200 <= response.status < 300 or response.cseq.method != "INVITE":
            raise ValueError("only a 2xx to an INVITE is retransmitted by the UAS core")
        config = config if config is not None else TimerConfig()
        self.response = response
        self._identity = _identity(response)  # read now: the transaction layer may drop the parsed headers later
        self.config = config
        self.state = WAITING
        self._interval = config.t1
        self._retransmit_at = now + config.t1
        self._give_up_at = now + 64 * config.t1
        self._events: deque[RetransmitEvent] = deque()

    @property
    def done(self) -> bool:
        return self.state is not WAITING

    def _step(self, symbol: str) -> bool:
        """Apply one input; whether it moved the machine (or kept it retransmitting)."""
        following = TRANSITIONS.get((self.state, symbol))
        if following is None:
            return False
        self.state = following
        return True

    def get_timer(self) -> float | None:
        """When `handle_timer` is next due, or None once stopped."""
        if self.done:
            return None
        return min(self._retransmit_at, self._give_up_at)

    def handle_timer(self, now: float) -> list[Response]:
        """The responses to send now: the 2xx once if its retransmission is due; [] otherwise (and on the
        timeout, which queues `AckTimeout`)."""
        if self.done:
            return []
        if now >= self._give_up_at:
            self._step("timeout")
            self._events.append(AckTimeout(now, self.response))
            return []
        if now < self._retransmit_at or not self._step("retransmit"):
            return []
        while self._retransmit_at <= now:  # a late call sends once, then keeps to the schedule
            self._interval = min(self._interval * 2, self.config.t2)
            self._retransmit_at += self._interval
        return [self.response]

    def receive_ack(self, ack: Request, now: float) -> bool:
        """Whether `ack` acknowledges our 2xx (same Call-ID, tags and CSeq number). The first one stops
        the retransmission and queues `AckReceived`; repeats are recognised (to absorb) but change nothing."""
        if ack.method != "ACK" or _identity(ack) != self._identity:
            return False
        if self._step("ack"):
            self._events.append(AckReceived(now, ack))
        return True

    def next_event(self) -> RetransmitEvent | None:
        return self._events.popleft() if self._events else None


def acknowledges(ack: Request, response: Response) -> bool:
    """Whether `ack` is the ACK for the 2xx `response` (same Call-ID, tags and CSeq number, 13.2.2.4)."""
    return ack.method == "ACK" and _identity(ack) == _identity(response)


def _identity(message: Request | Response) -> tuple[str, int, str | None, str | None]:
    return message.call_id, message.cseq.seq, message.from_.tag, message.to.tag
