"""SIP transactions (RFC 3261 17, with the Accepted states of RFC 6026), sans-IO.

Theory of operation. A `TransactionLayer` holds every client and server transaction. The caller feeds
it parsed messages (`receive`), requests to send (`send_request`), responses to send (`send_response`)
and the time (`handle_timer(now)` when `get_timer()` is due); it returns nothing directly but queues
two kinds of output: `Transmit` (a message and the opaque destination to send it to) from
`transmits()`, and events for the transaction user (TU) from `next_event()`. The layer never reads a
clock or touches a socket. Retransmission timers run only over unreliable transports.

The four state machines are declared as tables (`TRANSITIONS`), the single source of truth for which
input moves which state; the methods only add the side effects (send, arm a timer, tell the TU).

  client INVITE (17.1.1):   calling -1xx-> proceeding -2xx-> accepted (6026, Timer M) ; 3xx-6xx ->
                            completed (ACK sent, Timer D: max(32 s, 64*T1), 0 reliable) ; Timer A
                            retransmits, Timer B times out
  client non-INVITE (17.1.2): trying -1xx-> proceeding -final-> completed (Timer K); E retransmits, F ends
  server INVITE (17.2.1):   proceeding -2xx-> accepted (6026, Timer L) ; 3xx-6xx -> completed (Timer G
                            retransmits, H times out) -ACK-> confirmed (Timer I)
  server non-INVITE (17.2.2): trying -1xx-> proceeding -final-> completed (Timer J)

A transport failure (17.1.4, 17.2.4) is the input "transport_error", which ends a transaction in any state.

Matching (17.1.3, 17.2.3): responses by top-Via branch and CSeq method; requests by branch, sent-by and
method (ACK matches its INVITE) when the branch has the RFC 3261 magic cookie, otherwise by the RFC 2543
rules (Request-URI, From tag, To tag, Call-ID, CSeq, top Via). We are a user agent (a B2BUA's legs), never
a proxy, so a response with more than one Via was not meant for us: it is discarded before matching
(8.1.3.3) and reported as `DiscardedResponse`, never passed up as stray (a stray 2xx would be re-ACKed).

Via ownership. The layer puts the top Via on the requests we originate (8.1.1.7, 18.1.1): `send_request`
and `send_stateless` add `Via: SIP/2.0/<transport> <via_sent_by>;branch=z9hG4bK...;rport` (a new branch,
RFC 3581 rport) when the request has none, so a dialog's requests and the ACK for a 2xx (a new branch,
8.1.1.7) get theirs here; a CANCEL and the ACK for a 3xx-6xx copy the INVITE's (9.1, 17.1.1.3). A request
with no Via and no `via_sent_by` configured, or whose Via branch lacks the z9hG4bK cookie, is our own bug:
ValueError. The rest of Via handling belongs to the transport, not to this layer: on receipt of a
response, the client transport checks that the top Via's sent-by is the one it inserted and drops it
otherwise (18.1.2); on receipt of a request, the server transport adds `received` when the sent-by host is
not the source address (18.2.1) and fills in `rport` with the source port when the request asked for it
(RFC 3581 section 4), and sends responses back per 18.2.2 and RFC 3581 section 4.

CANCEL (9.1) may only follow a provisional response: `cancel_request` in Proceeding returns the CANCEL
for the caller to send with `send_request`; in Calling it records the wish and returns None, and the layer
starts the CANCEL's client transaction itself when the first 1xx arrives. If a final response comes first,
nothing is sent: the INVITE is over (after a 2xx the TU ends the call with a BYE, 15).
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum

import msgspec
from cext.gctrack import untrack_leaf, untracked

from softswitch.sip.errors import SipParseError
from softswitch.sip.headers import parse_via
from softswitch.sip.message import Request, Response, build_response

MAGIC = "z9hG4bK"


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 timer bases in seconds (Table 4); from `[sip] t1_ms/t2_ms/t4_ms`."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


class State(Enum):
    # Members are singletons: hashed by identity in C. Enum's own __hash__ runs Python, and every input looks
    # up TRANSITIONS by (Kind, State, symbol): 35 calls of it per B2BUA call.
    __hash__ = object.__hash__

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Kind(Enum):
    __hash__ = object.__hash__  # as State's

    ICT = "client-invite"
    NICT = "client-non-invite"
    IST = "server-invite"
    NIST = "server-non-invite"


# The members as module constants: in 3.11 every attribute read on an Enum class goes through
# EnumType.__getattr__'s slow hook (type.__getattribute__ called as a wrapper, about 80 ns more), and a
# B2BUA call reads these some 40 times.
CALLING = State.CALLING
TRYING = State.TRYING
PROCEEDING = State.PROCEEDING
ACCEPTED = State.ACCEPTED
COMPLETED = State.COMPLETED
CONFIRMED = State.CONFIRMED
TERMINATED = State.TERMINATED
ICT = Kind.ICT
NICT = Kind.NICT
IST = Kind.IST
NIST = Kind.NIST
_CONSTANTS = (*State, *Kind)  # live as long as the process: a transaction referring to them is still a leaf
# (kind, state, input) -> next state. Inputs: 1xx, 2xx, 3xx+ (a response received or sent), request
# (a retransmission), ack, and timer names. An input missing from the table is absorbed unchanged.
TRANSITIONS: dict[tuple[Kind, State, str], State] = {
    (ICT, CALLING, "1xx"): PROCEEDING,
    (ICT, CALLING, "2xx"): ACCEPTED,
    (ICT, CALLING, "3xx+"): COMPLETED,
    (ICT, CALLING, "A"): CALLING,
    (ICT, CALLING, "B"): TERMINATED,
    (ICT, PROCEEDING, "1xx"): PROCEEDING,
    (ICT, PROCEEDING, "2xx"): ACCEPTED,
    (ICT, PROCEEDING, "3xx+"): COMPLETED,
    (ICT, ACCEPTED, "2xx"): ACCEPTED,
    (ICT, ACCEPTED, "M"): TERMINATED,
    (ICT, COMPLETED, "3xx+"): COMPLETED,
    (ICT, COMPLETED, "D"): TERMINATED,
    (NICT, TRYING, "1xx"): PROCEEDING,
    (NICT, TRYING, "2xx"): COMPLETED,
    (NICT, TRYING, "3xx+"): COMPLETED,
    (NICT, TRYING, "E"): TRYING,
    (NICT, TRYING, "F"): TERMINATED,
    (NICT, PROCEEDING, "1xx"): PROCEEDING,
    (NICT, PROCEEDING, "2xx"): COMPLETED,
    (NICT, PROCEEDING, "3xx+"): COMPLETED,
    (NICT, PROCEEDING, "E"): PROCEEDING,
    (NICT, PROCEEDING, "F"): TERMINATED,
    (NICT, COMPLETED, "K"): TERMINATED,
    (IST, PROCEEDING, "request"): PROCEEDING,
    (IST, PROCEEDING, "1xx"): PROCEEDING,
    (IST, PROCEEDING, "2xx"): ACCEPTED,
    (IST, PROCEEDING, "3xx+"): COMPLETED,
    (IST, ACCEPTED, "2xx"): ACCEPTED,
    (IST, ACCEPTED, "ack"): ACCEPTED,
    (IST, ACCEPTED, "L"): TERMINATED,
    (IST, COMPLETED, "request"): COMPLETED,
    (IST, COMPLETED, "ack"): CONFIRMED,
    (IST, COMPLETED, "G"): COMPLETED,
    (IST, COMPLETED, "H"): TERMINATED,
    (IST, CONFIRMED, "I"): TERMINATED,
    (NIST, TRYING, "1xx"): PROCEEDING,
    (NIST, TRYING, "2xx"): COMPLETED,
    (NIST, TRYING, "3xx+"): COMPLETED,
    (NIST, PROCEEDING, "request"): PROCEEDING,
    (NIST, PROCEEDING, "1xx"): PROCEEDING,
    (NIST, PROCEEDING, "2xx"): COMPLETED,
    (NIST, PROCEEDING, "3xx+"): COMPLETED,
    (NIST, COMPLETED, "request"): COMPLETED,
    (NIST, COMPLETED, "J"): TERMINATED,
}
# "transport_error" (17.1.4, 17.2.4): the transport could not send for the transaction, in any live state.
TRANSITIONS.update({(k, s, "transport_error"): TERMINATED for k, s, _ in list(TRANSITIONS) if s is not TERMINATED})
INITIAL = {ICT: CALLING, NICT: TRYING, IST: PROCEEDING, NIST: TRYING}


# What a lingering transaction still needs of its messages over UDP, by (kind, state); the rest is let go at
# once, warm, not 32 s later with the transaction (at 500 CPS that is some 16,000 calls' messages, the
# heap's largest part). IST accepted: retransmitted INVITEs are absorbed, the TU resends its 2xx itself
# (RFC 6026); IST completed: Timer G resends the response, H reports the request; NIST completed: a
# retransmitted request gets the response again; ICT accepted: a retransmitted 2xx goes up with its
# request; ICT completed: a retransmitted 3xx-6xx gets the ACK again; the others only absorb.
_LINGERING_KEEPS: dict[tuple[Kind, State], tuple[str, ...]] = {
    (IST, ACCEPTED): (),
    (IST, COMPLETED): ("request", "last_response"),
    (IST, CONFIRMED): (),
    (NIST, COMPLETED): ("last_response",),
    (ICT, ACCEPTED): ("request",),
    (ICT, COMPLETED): ("ack",),
    (NICT, COMPLETED): (),
}


def status_class(status: int) -> str:
    return "1xx" if status < 200 else "2xx" if status < 300 else "3xx+"


# -- what the layer hands out ---------------------------------------------------------------------
class Transmit(msgspec.Struct, frozen=True):
    """Send `message` to `dest` (whatever the transport gave or will resolve: the layer never looks)."""

    message: Request | Response
    dest: Hashable
    retransmission: bool = False


class RequestReceived(msgspec.Struct, frozen=True):
    """A new request for the TU: a new server transaction, or an ACK for a 2xx (no transaction)."""

    at: float
    key: Hashable | None
    request: Request
    source: Hashable


class ResponseReceived(msgspec.Struct, frozen=True):
    """A response for one of our client transactions (retransmitted 2xx included, for re-ACK)."""

    at: float
    key: Hashable
    response: Response
    request: Request


class StrayResponse(msgspec.Struct, frozen=True):
    """A response matching no client transaction (a 2xx retransmission after Timer M, or junk)."""

    at: float
    response: Response
    source: Hashable


class DiscardedResponse(msgspec.Struct, frozen=True):
    """A response dropped before matching: it has more than one Via (or none), so it was meant for a proxy
    on the way (8.1.3.3). Only for logging: it must not be acknowledged or passed to a dialog."""

    at: float
    response: Response
    source: Hashable
    reason: str


class Timeout(msgspec.Struct, frozen=True):
    """Timer B, F (no final response) or H (no ACK for our 3xx-6xx)."""

    at: float
    key: Hashable
    request: Request
    timer: str


class TransportError(msgspec.Struct, frozen=True):
    at: float
    key: Hashable
    request: Request


class Terminated(msgspec.Struct, frozen=True):
    at: float
    key: Hashable


Event = RequestReceived | ResponseReceived | StrayResponse | DiscardedResponse | Timeout | TransportError | Terminated


def new_branch() -> str:
    return MAGIC + secrets.token_hex(8)


def server_key(request: Request) -> Hashable:
    """17.2.3: the key a request (or its retransmission, or its ACK) maps to."""
    via = request.via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(MAGIC):
        return untracked(("s", branch, via.host.lower(), via.port, method))
    # RFC 2543 peers: the ACK for a non-2xx carries the To tag of our response, so it is left out here
    # and checked separately against the transaction's response (see `_match_2543_ack`).
    return untracked(
        ("s2543", str(request.uri_text), request.from_.tag, request.call_id, request.cseq.seq, method, str(via))
    )


def client_key(message: Request | Response) -> Hashable:
    """17.1.3: top-Via branch plus CSeq method."""
    return untracked(("c", message.via.branch, message.cseq.method))


# -- one transaction ------------------------------------------------------------------------------
class Transaction:
    """One of the four machines: its state and timers. The layer drives it (`TransactionLayer._step`,
    `_arm`); it holds no reference back, so once it lingers nothing it holds is tracked by the cyclic GC
    and it leaves the collector's walks too (see `_shed`)."""

    __slots__ = (
        "ack",
        "cancel_pending",
        "dest",
        "intervals",
        "key",
        "kind",
        "last_response",
        "reliable",
        "request",
        "state",
        "timers",
        "to_tag",
    )

    def __init__(self, kind: Kind, key: Hashable, request: Request, dest: Hashable, reliable: bool):
        self.kind = kind
        self.key = key
        self.request: Request | None = request  # None once lingering without a use for it (_LINGERING_KEEPS)
        self.dest = dest
        self.reliable = reliable
        self.state = INITIAL[kind]
        self.timers: dict[str, float] = {}
        self.intervals: dict[str, float] = {}
        self.last_response: Response | None = None
        self.ack: Request | None = None
        self.to_tag: str | None = None
        self.cancel_pending = False  # client INVITE: CANCEL asked for in Calling, sent at the first 1xx

    def disarm(self, *names: str) -> None:
        for name in names:
            self.timers.pop(name, None)


class TransactionLayer:
    """Every transaction of one SIP endpoint, keyed for matching, with one timer heap."""

    def __init__(
        self,
        timers: TimerConfig = TimerConfig(),
        auto_trying: bool = True,
        *,
        via_sent_by: str | None = None,
        transport: str = "UDP",
        max_transactions: int = 0,
        report_terminated: bool = True,
    ):
        """`via_sent_by` ("192.0.2.1:5060", or a host name) and `transport` ("UDP", "TCP", "TLS", "WS"...)
        make the Via added to requests sent without one; without `via_sent_by`, every request must carry
        its own. With `max_transactions`, a request that would start a transaction past that many live ones
        is answered 503 statelessly instead (RFC 3261 21.5.4): the memory a flood can pin stays bounded.
        Without `report_terminated`, a transaction's end is not an event: a TU that never waits for it (the
        endpoint's) is spared one for every transaction, 32 s after its call."""
        if via_sent_by is not None:
            try:
                parse_via(f"SIP/2.0/{transport} {via_sent_by}")
            except SipParseError as exc:
                raise ValueError(f"bad via_sent_by {via_sent_by!r} or transport {transport!r}") from exc
        self.config = timers
        self.auto_trying = auto_trying
        self.via_sent_by = via_sent_by
        self.transport = transport.upper()
        self.max_transactions = max_transactions
        self.report_terminated = report_terminated
        self.refused_full = 0  # requests answered 503 for max_transactions
        self._txns: dict[Hashable, Transaction] = {}
        self._heap: list[tuple[float, int, Hashable, str]] = []
        self._seq = itertools.count()
        self._events: deque[Event] = deque()
        self._out: list[Transmit] = []
        self._lingering: list[Transaction] = []  # began lingering since the last input

    # -- output --------------------------------------------------------------------------------
    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def transmits(self) -> list[Transmit]:
        """Messages to send now, in order; the list is handed over (the layer keeps no copy)."""
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline at which `handle_timer` must be called, or None."""
        while self._heap:
            deadline, _, key, name = self._heap[0]
            txn = self._txns.get(key)
            if txn is not None and txn.timers.get(name) == deadline:
                return deadline
            heapq.heappop(self._heap)
        return None

    def __len__(self) -> int:
        return len(self._txns)

    def get(self, key: Hashable) -> Transaction | None:
        return self._txns.get(key)

    # -- client side ---------------------------------------------------------------------------
    def send_request(
        self, request: Request, dest: Hashable, now: float, *, reliable: bool = False, transport: str | None = None
    ) -> Hashable:
        """Start a client transaction and return its key. A request without a Via gets one here, in place
        (see "Via ownership" above; `transport` overrides the layer's for it); one that has a Via keeps it,
        and its branch must carry the z9hG4bK cookie. ValueError for an ACK, a bad or missing Via, or a
        branch already in use."""
        if request.method == "ACK":
            raise ValueError("an ACK is not a transaction: send it with `send_stateless`")
        self._put_via(request, transport)
        kind = ICT if request.method == "INVITE" else NICT
        key = client_key(request)
        if key in self._txns:
            raise ValueError(f"a client transaction with branch {request.via.branch} exists")
        txn = self._txns[key] = Transaction(kind, key, request, dest, reliable)
        self._out.append(Transmit(request, dest))
        t = self.config
        if kind is ICT:
            if not reliable:
                txn.intervals["A"] = t.t1
                self._arm(txn, "A", now, t.t1)
            self._arm(txn, "B", now, 64 * t.t1)
        else:
            if not reliable:
                txn.intervals["E"] = t.t1
                self._arm(txn, "E", now, t.t1)
            self._arm(txn, "F", now, 64 * t.t1)
        return key

    def send_stateless(self, message: Request | Response, dest: Hashable, *, transport: str | None = None) -> None:
        """Send outside any transaction: the ACK for a 2xx, a 2xx retransmitted by the UAS core. A request
        without a Via gets one with a new branch, in place, as in `send_request`; so sending the same ACK
        object again (a 2xx retransmission, `Dialog.ack_for`) repeats it with the same branch."""
        if isinstance(message, Request):
            self._put_via(message, transport)
        self._out.append(Transmit(message, dest))

    def cancel_request(self, key: Hashable) -> Request | None:
        """Cancel our INVITE (9.1), which may only be done once a provisional response has arrived.

        In Proceeding: the CANCEL, for the caller to send with `send_request` (its own transaction, same
        branch, method CANCEL). In Calling: None, and the wish is kept: the first 1xx makes the layer send
        the CANCEL itself (a `Transmit`; its responses come as `ResponseReceived` for the CANCEL), while a
        final response arriving first cancels the wish and nothing is sent. None as well when there is
        nothing left to cancel: no such client INVITE, a final response already in, or a CANCEL started."""
        txn = self._txns.get(key)
        if txn is None or txn.kind is not ICT:
            return None
        if txn.state is CALLING:
            txn.cancel_pending = True
            return None
        if txn.state is not PROCEEDING:
            return None
        cancel = _from_invite(txn.request, "CANCEL", ("Route", "From", "To", "Call-ID"))
        return None if client_key(cancel) in self._txns else cancel

    def transport_error(self, key: Hashable, now: float) -> None:
        """The transport could not send for this transaction (17.1.4, 17.2.4): tell the TU, terminate."""
        txn = self._txns.get(key)
        if txn is not None and (txn.kind, txn.state, "transport_error") in TRANSITIONS:
            self._events.append(TransportError(now, key, txn.request))
            self._step(txn, "transport_error", now)

    def _put_via(self, request: Request, transport: str | None) -> None:
        """Add our top Via to a request that has none; check the branch of one that has (8.1.1.7)."""
        if "Via" not in request:
            if self.via_sent_by is None:
                raise ValueError(f"{request.method} has no Via and no via_sent_by is configured to add one")
            proto = (transport or self.transport).upper()
            request.add("Via", f"SIP/2.0/{proto} {self.via_sent_by};branch={new_branch()};rport", first=True)
            return
        try:
            branch = request.via.branch
        except SipParseError as exc:
            raise ValueError(f"the top Via of our {request.method} is malformed: {exc.reason}") from exc
        if not (branch or "").startswith(MAGIC):
            raise ValueError(f"the Via branch {branch!r} of our {request.method} lacks the {MAGIC} cookie")

    # -- receiving -----------------------------------------------------------------------------
    def receive(self, message: Request | Response, source: Hashable, now: float, *, reliable: bool = False) -> None:
        """Hand a parsed message to its transaction, or to the TU when it starts one (or is stray)."""
        if self._lingering:
            self._shed()
        if isinstance(message, Response):
            self._receive_response(message, source, now)
        else:
            self._receive_request(message, source, now, reliable)

    def _receive_response(self, response: Response, source: Hashable, now: float) -> None:
        try:
            vias = len(response.get_all("Via"))
        except SipParseError:
            vias = 0
        if vias != 1:
            self._events.append(DiscardedResponse(now, response, source, f"{vias} Via values (8.1.3.3)"))
            return
        txn = self._txns.get(client_key(response))
        if txn is None:
            self._events.append(StrayResponse(now, response, source))
            return
        cls = status_class(response.status)
        old = txn.state
        if self._step(txn, cls, now) is None:
            return
        t = self.config
        if txn.kind is ICT:
            txn.disarm("A", "B")  # 17.1.1.2: any response stops retransmission; B only guards the wait for one
            if cls != "1xx":
                txn.cancel_pending = False  # over before any 1xx: there is nothing left to CANCEL (9.1)
            if cls == "2xx":
                if old is not ACCEPTED:
                    self._arm(txn, "M", now, 64 * t.t1)
            elif cls == "3xx+":
                if txn.ack is None:
                    # 17.1.1.3: the ACK copies the INVITE's top Via, Route, From, Call-ID; To from the response
                    txn.ack = _from_invite(txn.request, "ACK", ("Route", "From", "Call-ID"), response.get("To") or "")
                    self._arm(txn, "D", now, 0 if txn.reliable else max(32.0, 64 * t.t1))  # Table 4
                self._out.append(Transmit(txn.ack, txn.dest, retransmission=old is COMPLETED))
                if old is COMPLETED:
                    return  # a retransmitted final response is absorbed (17.1.1.2)
        else:
            if cls == "1xx" and "E" in txn.timers:
                txn.intervals["E"] = t.t2  # 17.1.2.2: in Proceeding, retransmit every T2
            if cls != "1xx":
                txn.disarm("E", "F")
                self._arm(txn, "K", now, 0 if txn.reliable else t.t4)
        self._events.append(ResponseReceived(now, txn.key, response, txn.request))
        if txn.cancel_pending:  # the first 1xx: now the CANCEL asked for in Calling may go (9.1)
            txn.cancel_pending = False
            cancel = _from_invite(txn.request, "CANCEL", ("Route", "From", "To", "Call-ID"))
            self.send_request(cancel, txn.dest, now, reliable=txn.reliable)
        self._fire_zero(txn, now)

    def _receive_request(self, request: Request, source: Hashable, now: float, reliable: bool) -> None:
        key = server_key(request)
        txn = self._txns.get(key)
        if request.method == "ACK":
            if txn is None or txn.kind is not IST or txn.state is ACCEPTED or not self._ack_matches(txn, request):
                self._events.append(RequestReceived(now, None, request, source))  # ACK for a 2xx: the TU's
                return
            if self._step(txn, "ack", now) is CONFIRMED:
                txn.disarm("G", "H")
                self._arm(txn, "I", now, 0 if txn.reliable else self.config.t4)
                self._fire_zero(txn, now)
            return
        if txn is not None:
            if self._step(txn, "request", now) is not None and txn.last_response is not None:
                self._out.append(Transmit(txn.last_response, txn.dest, retransmission=True))
            return
        if self.max_transactions and len(self._txns) >= self.max_transactions:
            self.refused_full += 1
            tag = secrets.token_hex(4)
            busy = build_response(request, 503, "Service Unavailable", to_tag=tag, headers=[("Retry-After", "5")])
            self._out.append(Transmit(busy, source))
            return
        kind = IST if request.method == "INVITE" else NIST
        txn = self._txns[key] = Transaction(kind, key, request, source, reliable)
        self._events.append(RequestReceived(now, key, request, source))
        if kind is IST and self.auto_trying:
            self.send_response(key, build_response(request, 100), now)

    def _ack_matches(self, txn: Transaction, ack: Request) -> bool:
        if txn.key[0] != "s2543":
            return True
        return ack.to.tag == txn.to_tag  # 17.2.3: an RFC 2543 ACK also matches on our To tag

    # -- server side ---------------------------------------------------------------------------
    def send_response(self, key: Hashable, response: Response, now: float) -> None:
        """Send a response in a server transaction (the only way a TU answers a request)."""
        txn = self._txns.get(key)
        if txn is None or txn.kind not in (IST, NIST):
            raise KeyError(f"no server transaction {key!r}")
        cls = status_class(response.status)
        old = txn.state
        if self._step(txn, cls, now) is None:
            raise ValueError(f"cannot send {response.status} in state {txn.state.value}")
        txn.last_response = response
        txn.to_tag = response.to.tag
        self._out.append(Transmit(response, txn.dest, retransmission=old is ACCEPTED))
        t = self.config
        if txn.kind is IST:
            if cls == "2xx" and old is not ACCEPTED:
                self._arm(txn, "L", now, 64 * t.t1)
            elif cls == "3xx+":
                if not txn.reliable:
                    txn.intervals["G"] = t.t1
                    self._arm(txn, "G", now, t.t1)
                self._arm(txn, "H", now, 64 * t.t1)
        elif cls != "1xx":
            self._arm(txn, "J", now, 0 if txn.reliable else 64 * t.t1)
            self._fire_zero(txn, now)

    # -- timers --------------------------------------------------------------------------------
    def handle_timer(self, now: float) -> None:
        """Fire every timer due at `now` (call when `get_timer()` <= now)."""
        if self._lingering:
            self._shed()
        while self._heap and self._heap[0][0] <= now:
            deadline, _, key, name = heapq.heappop(self._heap)
            txn = self._txns.get(key)
            if txn is None or txn.timers.get(name) != deadline:
                continue
            del txn.timers[name]
            self._fire(txn, name, deadline)

    def _fire(self, txn: Transaction, name: str, now: float) -> None:
        if (txn.kind, txn.state, name) not in TRANSITIONS:
            return
        if name in ("B", "F", "H"):
            self._events.append(Timeout(now, txn.key, txn.request, name))
        self._step(txn, name, now)
        if name in ("A", "E", "G"):
            message = txn.last_response if name == "G" else txn.request
            self._out.append(Transmit(message, txn.dest, retransmission=True))
            cap = None if name == "A" else self.config.t2
            interval = txn.intervals[name]
            if txn.state is not PROCEEDING or name != "E":
                interval = interval * 2 if cap is None else min(interval * 2, cap)
            txn.intervals[name] = interval
            self._arm(txn, name, now, interval)

    def _fire_zero(self, txn: Transaction, now: float) -> None:
        """Zero-length timers (reliable transports) fire at once rather than on the next tick."""
        for name, deadline in list(txn.timers.items()):
            if deadline <= now:
                del txn.timers[name]
                self._fire(txn, name, now)

    def _step(self, txn: Transaction, symbol: str, now: float) -> State | None:
        """Apply one input to `txn`; returns the new state, or None if the table absorbs it."""
        new = TRANSITIONS.get((txn.kind, txn.state, symbol))
        if new is None:
            return None
        old, txn.state = txn.state, new
        if new is TERMINATED and old is not TERMINATED:
            self._terminate(txn, now)
        elif new is not old and (new is ACCEPTED or new is COMPLETED or new is CONFIRMED):
            # lingering: the final response is in, only retransmissions are absorbed now (for up to 64*T1)
            self._lingering.append(txn)
        return new

    def _arm(self, txn: Transaction, name: str, now: float, delay: float) -> None:
        txn.timers[name] = now + delay
        self._schedule(txn, name, now + delay)

    def _shed(self) -> None:
        """Lingering transactions keep their messages' text, not its parsed headers, and they and their messages
        leave the cyclic GC's walks (`Message.keep_for_resend`, `untrack_leaf`). On a busy switch they are most
        of the heap (a call's four transactions linger 32 s; the call is long gone), and a full collection
        walks every tracked object of it. Done at the next input, once the TU has handled the one that ended
        the transaction; a later read parses again."""
        for txn in self._lingering:
            keeps = _LINGERING_KEEPS.get((txn.kind, txn.state))
            if keeps is not None and not txn.reliable:  # over TCP/TLS a send may still fail and report them
                for name in ("request", "last_response", "ack"):
                    if name not in keeps:
                        setattr(txn, name, None)
            for message in (txn.request, txn.last_response, txn.ack):
                if message is not None:
                    message.keep_for_resend()
            untrack_leaf(txn, _CONSTANTS)  # its key, Flow and timer dicts hold scalars; its messages now too
        self._lingering.clear()

    def _schedule(self, txn: Transaction, name: str, deadline: float) -> None:
        heapq.heappush(self._heap, untracked((deadline, next(self._seq), txn.key, name)))

    def _terminate(self, txn: Transaction, now: float) -> None:
        txn.timers.clear()
        if self._txns.get(txn.key) is txn:
            del self._txns[txn.key]
        if self.report_terminated:
            self._events.append(Terminated(now, txn.key))

    # -- helpers ---------------------------------------------------------------------------------
    def find_invite_for_cancel(self, cancel: Request) -> Hashable | None:
        """9.2: the INVITE server transaction a CANCEL refers to (same key, method INVITE)."""
        probe = Request("INVITE", cancel.uri_text, cancel.headers)
        probe.set("CSeq", f"{cancel.cseq.seq} INVITE")
        key = server_key(probe)
        txn = self._txns.get(key)
        return key if txn is not None and txn.kind is IST else None


def _from_invite(invite: Request, method: str, copied: tuple[str, ...], to: str | None = None) -> Request:
    """A request the INVITE's client transaction makes from it: a CANCEL (9.1) or the ACK for a 3xx-6xx
    (17.1.1.3). Request-URI, only the top Via (so the same branch) and the `copied` headers as the INVITE
    had them, `to` as To if given, the INVITE's CSeq number with `method`, Max-Forwards 70."""
    headers = [("Via", invite.get_all("Via")[0])]
    headers += [(n, v) for n, v in invite.headers if n in copied]
    if to is not None:
        headers.append(("To", to))
    headers += [("CSeq", f"{invite.cseq.seq} {method}"), ("Max-Forwards", "70")]
    return Request(method, invite.uri_text, headers)
