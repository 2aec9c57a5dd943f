"""The asyncio side of the SIP stack: sockets in, the sans-IO transaction layer, transmissions out.

`SipEndpoint` owns the only clock (`loop.time()`) and the one timer the transaction layer asks for. For
each datagram or framed stream message it parses (a malformed request is answered 400 from the error's
partial message, or dropped when nothing can be answered), stamps the top Via of requests with
`received`/`rport` (RFC 3261 18.2.1, RFC 3581), works out where responses must go (18.2.2: back over
the connection for TCP and TLS; for UDP to `received`, and `rport` or the Via port or 5060), and hands
the message to the transaction layer. Events go to the transaction user (`handler`); transmissions go out
through the flow they name. Nothing here raises on input: a bad packet costs one log line.

TCP and TLS connections are one kind of thing (`_Tcp`), whether the peer opened them or we did
(`connect`): the same framing, keep-alive pong and idle close, and a request or response may arrive on
either. A transmission that cannot go out because its connection is gone ends its transaction with a
`TransportError` (17.1.4, 17.2.4).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ipaddress
import logging
import math
import re
import secrets
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
from cext.gctrack import untracked

from softswitch.config import ListenAddress
from softswitch.guard import ADMIT, Verdict
from softswitch.logs import event
from softswitch.sip.errors import SipParseError
from softswitch.sip.framer import PING, StreamFramer
from softswitch.sip.message import Request, Response, build_response, error_response, parse
from softswitch.sip.transaction import (
    ResponseReceived,
    Timeout,
    TimerConfig,
    TransactionLayer,
    Transmit,
    TransportError,
    client_key,
    new_branch,
    server_key,
)
from softswitch.transport import tls
from softswitch.transport.sockets import BindError, os_reason, udp_socket

if TYPE_CHECKING:
    from softswitch.security import Security

log = logging.getLogger("softswitch.sip")
TIMER_GRAIN_S = 0.005  # transaction timers fire up to this late (T1 is 500 ms; with a tiny T1, T1/4), sharing wake-ups
MAX_UDP_FLOWS = 4096  # peer addresses whose Flow a UDP socket keeps for reuse
_CLIENT_EVENTS = (ResponseReceived, Timeout, TransportError)
# Methods counted by name in `received_by`/`sent_by`; any other (extension methods, a peer's garbage) is
# counted as OTHER, so a hostile peer cannot grow the tables (or a metrics label) without bound.
COUNTED_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER MESSAGE UPDATE".split()
)


def tally_key(message: Request | Response) -> str | int:
    """What a message is counted under: its method (OTHER when unknown) or its status code."""
    if isinstance(message, Response):
        return message.status
    return message.method if message.method in COUNTED_METHODS else "OTHER"


class Flow(msgspec.Struct, frozen=True, gc=False):
    """Where a message came from, or goes: a UDP address through one of our sockets, or a TCP/TLS connection.

    Outside the cyclic GC (`gc=False`, and its address tuples untracked where made): it holds only str, int
    and tuples of them, so it can never be in a cycle, and every lingering transaction keeps one."""

    transport: str  # "udp", "tcp" or "tls"
    remote: tuple[str, int]
    local: tuple[str, int]  # our address: the UDP socket's; a stream's listener (our Via sent-by, 18.1.1)
    connection: int = 0  # TCP/TLS: the connection's id; 0 for UDP

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


def response_flow(request: Request, flow: Flow) -> Flow:
    """RFC 3261 18.2.2 and RFC 3581 4: where the responses to `request` go."""
    if flow.reliable:
        return flow
    via = request.via
    host = (via.received or via.host).strip("[]")
    port = via.rport or via.port or 5060
    remote = flow.remote
    return flow if remote[1] == port and remote[0] == host else Flow("udp", untracked((host, port)), flow.local)


# User-Agents of the SIP scanners seen on the internet (sipvicious and the tools built on it, and others)
SCANNERS = re.compile(r"friendly-scanner|sipvicious|sipcli|sip-scan|iwar|sundayddr|vaxsipuseragent|pplsip|smap", re.I)


def _scanner(request: Request) -> bool:
    agent = request.get("User-Agent")
    return agent is not None and SCANNERS.search(agent) is not None


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint, local: tuple[str, int]):
        self.endpoint, self.local = endpoint, local
        # one Flow per peer address, shared by its datagrams and the transactions they start (which hold it
        # for up to 64*T1): a carrier's or proxy's thousands of calls need one, not one per message
        self._flows: dict[tuple, Flow] = {}

    def datagram_received(self, data: bytes, addr) -> None:
        endpoint = self.endpoint
        if endpoint.security is not None and endpoint.security.muted(addr[0]):
            return  # a flooding or banned source: not even a Flow made
        flow = self._flows.get(addr)
        if flow is None:
            if len(self._flows) >= MAX_UDP_FLOWS:  # many peers (a scan, a spoofed flood): start again
                self._flows.clear()
            flow = self._flows[addr] = Flow("udp", untracked((addr[0], addr[1])), self.local)
        endpoint.receive(data, flow, stream=False)

    def error_received(self, exc: OSError) -> None:  # an ICMP error for something we sent: nothing to do
        event(log, "sip.udp_error", level=logging.DEBUG, reason=os_reason(exc))


class _Tcp(asyncio.Protocol):
    """One TCP or TLS connection (asyncio hands TLS over decrypted): accepted, or opened by `connect`."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        local: tuple[str, int] | None,
        kind: str = "tcp",
        target: tuple[str, int] | None = None,
    ):
        self.endpoint, self.local, self.kind = endpoint, local, kind
        self.target = target  # the (host, port) `connect` was asked for, which may be a name, not the peer IP
        self.framer = StreamFramer(endpoint.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.flow: Flow | None = None
        self.peer_names: tuple[str, ...] = ()  # TLS: the names of the client's verified certificate
        self.last_activity = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        local = self.local or (sock[0], sock[1])  # no listener for this transport: the socket's own address
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(local[0]).is_unspecified:  # bound to 0.0.0.0 or ::, a useless sent-by
                local = (sock[0], local[1])
        self.peer_names = tls.peer_names(transport.get_extra_info("peercert")) if self.kind == "tls" else ()
        self.flow = Flow(self.kind, untracked((peer[0], peer[1])), local, self.endpoint._register(self))
        self.last_activity = self.endpoint.loop.time()
        security = self.endpoint.security
        if security is not None and self.local is not None and security.banned(peer[0]):
            transport.close()  # an accepted connection from a banned address: nothing read

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.endpoint.loop.time()
        try:
            items = self.framer.feed(data)
        except SipParseError as exc:
            event(log, "sip.stream_error", level=logging.WARNING, peer=self.flow.remote, reason=exc.reason)
            self.transport.close()
            return
        for item in items:
            if item is PING:
                self.transport.write(b"\r\n")  # RFC 5626 4.4.1 pong
            else:
                self.endpoint.receive(item, self.flow, stream=True)

    def connection_lost(self, exc) -> None:
        self.endpoint._unregister(self)


class SipEndpoint:
    """Listeners, transaction layer and timer for one softswitch; `handler` is the transaction user."""

    def __init__(
        self,
        handler: Callable[[SipEndpoint, object], None],
        *,
        timers: TimerConfig | None = None,
        max_message_bytes: int = 65535,
        tcp_idle_s: float = 300.0,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_verify: bool = False,
        tls_client_ca: str | None = None,
        name: str = "sip",
        drop_scanners: bool = False,
        security: Security | None = None,
        max_transactions: int = 0,
        report_terminated: bool = True,
    ):
        """`tls_cert`/`tls_key` (PEM files) serve `tls:` listeners and are offered on connections we open;
        `tls_verify` checks the certificate of servers we connect to, off by default because trunks often
        present self-signed ones. `tcp_idle_s` closes TCP and TLS connections alike. `drop_scanners`: requests
        whose User-Agent names a known SIP scanner are dropped unanswered, before any transaction (a scanner
        learns nothing, not even that something listens). `security` is asked about every message's source
        before it is parsed (rate limits, bans: softswitch.security). Without `report_terminated` the handler
        gets no `Terminated` event (one per transaction, 32 s after its call: the switch's TU needs none)."""
        self.handler = handler
        # requests the transaction user answers without a transaction (out-of-dialog OPTIONS): `handler`'s
        # answer_statelessly(request, source flow) -> Response | None, when it has one
        self._stateless = getattr(handler, "answer_statelessly", None)
        self.security = security
        self.drop_scanners = drop_scanners
        self.name = name  # what its log events start with ("sip"; the test far end is another endpoint)
        self.max_message_bytes = max_message_bytes
        self.tcp_idle_s = tcp_idle_s
        self.tls_cert, self.tls_key, self.tls_verify = tls_cert, tls_key, tls_verify
        self.tls_client_ca = tls_client_ca  # asks TLS clients for a certificate, verified against it
        self._server_tls: ssl.SSLContext | None = None
        self._client_tls: ssl.SSLContext | None = None
        self._stream_local: dict[str, tuple[str, int]] = {}  # transport -> first listener, our sent-by
        self._connecting: dict[tuple[str, str, int], asyncio.Task[Flow]] = {}
        self.loop = asyncio.get_running_loop()
        self.txns = TransactionLayer(
            timers or TimerConfig(), max_transactions=max_transactions, report_terminated=report_terminated
        )
        self._timer_grain = min(TIMER_GRAIN_S, self.txns.config.t1 / 4)  # see _arm_timer
        self._udp: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: dict[int, _Tcp] = {}
        self._next_connection = 1
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._idle_task: asyncio.Task | None = None
        self._pumping = False
        self._callbacks: dict[object, Callable[[object], None]] = {}
        self.counters = {"received": 0, "sent": 0, "malformed": 0, "answered_400": 0, "scanners_dropped": 0}
        # Parsed messages in and out by method (str) or status code (int), retransmissions included: a dict
        # increment per message, read by the metrics scrape (api.metrics), never a metrics call per message.
        self.received_by: collections.Counter[str | int] = collections.Counter()
        self.sent_by: collections.Counter[str | int] = collections.Counter()

    async def listen(self, addr: ListenAddress) -> None:
        local = (addr.host, addr.port)
        try:
            if addr.transport == "udp":
                transport, _ = await self.loop.create_datagram_endpoint(
                    lambda: _Udp(self, local), sock=udp_socket(addr.host, addr.port)
                )
                self._udp[local] = transport
            elif addr.transport in ("tcp", "tls"):
                kind = addr.transport
                extra = {} if kind == "tcp" else self._tls_options(self._server_context(addr))
                server = await self.loop.create_server(lambda: _Tcp(self, local, kind), addr.host, addr.port, **extra)
                self._servers.append(server)
                self._stream_local.setdefault(kind, local)
            else:
                raise BindError(f"cannot listen on {addr}: transport {addr.transport} is not available yet")
        except OSError as exc:
            raise BindError(f"cannot listen on {addr}: {os_reason(exc)}") from None
        self._start_idle_check()
        event(log, f"{self.name}.listening", addr=str(addr))

    def _server_context(self, addr: ListenAddress) -> ssl.SSLContext:
        if self._server_tls is None:
            if not (self.tls_cert and self.tls_key):
                raise BindError(f"cannot listen on {addr}: no TLS certificate and key configured")
            try:
                self._server_tls = tls.server_context(self.tls_cert, self.tls_key, self.tls_client_ca)
            except tls.TlsFileError as exc:
                raise BindError(f"cannot listen on {addr}: {exc}") from None
        return self._server_tls

    @staticmethod
    def _tls_options(context: ssl.SSLContext) -> dict:
        return {
            "ssl": context,
            "ssl_handshake_timeout": tls.HANDSHAKE_TIMEOUT_S,
            "ssl_shutdown_timeout": tls.SHUTDOWN_TIMEOUT_S,
        }

    def _start_idle_check(self) -> None:
        if self._idle_task is None:
            self._idle_task = self.loop.create_task(self._close_idle())

    async def close(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._idle_task:
            self._idle_task.cancel()
        for task in list(self._connecting.values()):
            task.cancel()
        for transport in self._udp.values():
            transport.close()
        for conn in list(self._connections.values()):
            conn.transport.close()
        for server in self._servers:
            server.close()
        await asyncio.gather(*(s.wait_closed() for s in self._servers), return_exceptions=True)

    # -- input -----------------------------------------------------------------------------------
    def receive(self, data: bytes, flow: Flow, *, stream: bool) -> None:
        self.counters["received"] += 1
        security = self.security
        if security is not None and (verdict := security.admit(flow.remote[0])) is not ADMIT:
            if verdict is Verdict.BANNED and security.ban_action == "403":
                self._forbid(data, flow, stream)
            return
        now = self.loop.time()
        try:
            msg = parse(data, stream=stream, max_size=self.max_message_bytes)
        except SipParseError as exc:
            self._refuse(exc, flow)
            return
        if self.drop_scanners and isinstance(msg, Request) and _scanner(msg):
            self.counters["scanners_dropped"] += 1
            event(log, f"{self.name}.scanner_dropped", level=logging.INFO, peer=f"{flow.remote[0]}:{flow.remote[1]}")
            return
        self.received_by[tally_key(msg)] += 1
        try:  # what the parser left lazy (lower Vias, list headers) may still be malformed
            if isinstance(msg, Request):
                self._stamp_via(msg, flow)
                dest = response_flow(msg, flow)
                if self._stateless is not None and msg.method == "OPTIONS":
                    answer = self._stateless(msg, flow)
                    if answer is not None:
                        self.send_stateless(answer, dest)
                        return
            else:
                dest = flow
            self.txns.receive(msg, dest, now, reliable=flow.reliable)
        except SipParseError as exc:
            exc.partial = msg
            self._refuse(exc, flow)
            return
        self._pump()

    def _forbid(self, data: bytes, flow: Flow, stream: bool) -> None:
        """A banned source's request answered 403 without a transaction (`[security] ban_action = "403"`)."""
        try:
            msg = parse(data, stream=stream, max_size=self.max_message_bytes)
            if isinstance(msg, Request) and msg.method != "ACK":
                self.send_stateless(build_response(msg, 403, "Forbidden", to_tag=secrets.token_hex(4)), flow)
        except SipParseError:
            pass

    def _refuse(self, exc: SipParseError, flow: Flow) -> None:
        self.counters["malformed"] += 1
        response = error_response(exc)
        event(
            log,
            "sip.malformed",
            level=logging.INFO,
            peer=f"{flow.remote[0]}:{flow.remote[1]}",
            reason=exc.reason,
            answered=response is not None,
        )
        if response is None:
            return
        dest = flow
        with contextlib.suppress(SipParseError):  # a Via we can read tells us where to answer
            self._stamp_via(exc.partial, flow)
            dest = response_flow(exc.partial, flow)
            response.set("Via", ", ".join(exc.partial.get_all("Via")))
        self.counters["answered_400"] += 1
        self._send(Transmit(response, dest))

    @staticmethod
    def _stamp_via(request: Request, flow: Flow) -> None:
        """18.2.1 and RFC 3581: record the source of the request in its top Via."""
        via = request.via
        changed = False
        if via.host.strip("[]") != flow.remote[0]:
            via.params["received"] = flow.remote[0]
            changed = True
        if "rport" in via.params and not via.params["rport"]:
            via.params["rport"] = str(flow.remote[1])
            via.params.setdefault("received", flow.remote[0])
            changed = True
        if changed:
            vias = request.get_all("Via")
            request.set("Via", ", ".join([str(via), *vias[1:]]))

    # -- output ----------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Deliver the layer's events to the TU, send what it queued, and re-arm the timer. Not re-entrant:
        when the TU sends from inside its handler, only the transmissions go out; the outer loop delivers
        any new event after the handler returns, so the TU never sees events nested inside each other."""
        if self._pumping:
            for tx in self.txns.transmits():
                self._send(tx)
            return
        self._pumping = True
        try:
            while True:
                for tx in self.txns.transmits():
                    self._send(tx)
                ev = self.txns.next_event()
                if ev is None:
                    break
                callback = self._callbacks.pop(ev.key, None) if isinstance(ev, _CLIENT_EVENTS) else None
                try:
                    if callback is not None:
                        if isinstance(ev, ResponseReceived) and ev.response.status < 200:
                            self._callbacks[ev.key] = callback  # still waiting for the final response
                        callback(ev)
                    else:
                        self.handler(self, ev)
                except SipParseError as exc:  # the TU read a malformed header: the request deserves a 400
                    self._reject(ev, exc)
        finally:
            self._pumping = False
        self._arm_timer()

    def _reject(self, ev: object, exc: SipParseError) -> None:
        request, key = getattr(ev, "request", None), getattr(ev, "key", None)
        event(log, "sip.malformed", level=logging.INFO, reason=exc.reason, answered=key is not None)
        self.counters["malformed"] += 1
        if key is None or not isinstance(request, Request) or request.method == "ACK":
            return
        detail = "".join(c if c.isprintable() and c.isascii() else "?" for c in exc.reason)[:120]
        with contextlib.suppress(ValueError, KeyError):  # the TU may have answered before it failed
            self.txns.send_response(key, build_response(request, 400, f"Bad Request ({detail})"), self.loop.time())
            self.counters["answered_400"] += 1

    def _send(self, tx: Transmit) -> None:
        flow: Flow = tx.dest
        data = tx.message.serialize()
        try:
            if flow.transport == "udp":
                transport = self._udp.get(flow.local) or next(iter(self._udp.values()), None)
                if transport is None:
                    return
                transport.sendto(data, flow.remote)
            else:
                conn = self._connections.get(flow.connection)
                if conn is None or conn.transport.is_closing():
                    event(log, "sip.connection_gone", level=logging.DEBUG, peer=flow.remote)
                    self._transport_error(tx)
                    return
                conn.transport.write(data)
            self.counters["sent"] += 1
            self.sent_by[tally_key(tx.message)] += 1
        except OSError as exc:  # no route (a documentation address, say): the peer's loss, not ours
            event(log, "sip.send_failed", level=logging.DEBUG, peer=flow.remote, reason=os_reason(exc))
            if flow.reliable:
                self._transport_error(tx)

    def _transport_error(self, tx: Transmit) -> None:
        """17.1.4, 17.2.4: the transaction whose message could not go out ends with a `TransportError`.
        Reported on the next loop turn, so that a TU calling `send_request` holds the returned key first."""
        message = tx.message
        try:
            if isinstance(message, Request):
                key = client_key(message)  # an ACK matches no client transaction: nothing to tell
            else:  # the server transaction by its request's key; an RFC 2543 one cannot be found from a response
                key = server_key(Request(message.cseq.method, "", message.headers))
        except SipParseError:
            return
        self.loop.call_soon(self._fail, key)

    def _fail(self, key: object) -> None:
        self.txns.transport_error(key, self.loop.time())
        self._pump()

    def _arm_timer(self) -> None:
        """Keep a loop timer at or before the layer's next deadline, rounded up to a grain (TIMER_GRAIN_S, at most a
        quarter of T1, so retransmissions never bunch up in one wake-up): a busy switch has thousands of deadlines
        a second (each call leaves four transactions to expire 32 s later), and one wake-up serves all that fall
        within a grain. One that is armed earlier stays: it fires, finds nothing due and re-arms, which costs less
        than replacing the loop's timer every time the next deadline moves later (at every response that stops a
        retransmission timer)."""
        when = self.txns.get_timer()
        if when is None:
            return
        grain = self._timer_grain
        when = math.ceil(when / grain) * grain
        if self._timer_at is not None and self._timer_at <= when:
            return
        if self._timer:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.txns.handle_timer(self.loop.time())
        self._pump()

    # -- TCP and TLS connections ---------------------------------------------------------------------
    async def connect(self, transport: str, host: str, port: int, *, timeout: float = 5.0) -> Flow:
        """A flow to send requests we originate over (`send_request`). TCP/TLS: a live connection to that
        address if there is one, whoever opened it (RFC 3261 18.1.1, RFC 5923: one connection per peer),
        else a new one, which then serves like an accepted one (responses and requests arriving on it are
        received, idle close applies). TLS checks the server's certificate only with `tls_verify`. UDP:
        `flow_to`. ConnectionError (an OSError) with a readable reason when no connection can be had."""
        transport = transport.lower()
        host = host.strip("[]")
        if transport == "udp":
            flow = self.flow_to("udp", host, port)
            if flow is None:
                raise ConnectionError(f"cannot send to udp:{host}:{port}: no UDP listener to send from")
            return flow
        if transport not in ("tcp", "tls"):
            raise ValueError(f"cannot connect over {transport!r}: expected udp, tcp or tls")
        flow = self.flow_to(transport, host, port)
        if flow is not None:
            return flow
        target = (transport, host, port)
        task = self._connecting.get(target)
        if task is None:  # concurrent callers share one attempt, so a burst of requests opens one connection
            task = self._connecting[target] = self.loop.create_task(self._open(transport, host, port, timeout))
            task.add_done_callback(functools.partial(self._connected, target))
        return await asyncio.shield(task)  # one caller giving up does not cancel the others' attempt

    def _connected(self, target: tuple[str, str, int], task: asyncio.Task[Flow]) -> None:
        if self._connecting.get(target) is task:
            del self._connecting[target]
        if not task.cancelled():
            task.exception()  # marked retrieved: a failure whose callers all gave up is not logged as lost

    async def _open(self, transport: str, host: str, port: int, timeout: float) -> Flow:
        where = f"{transport}:{host}:{port}"
        try:
            extra = self._tls_options(self._client_context()) if transport == "tls" else {}
        except tls.TlsFileError as exc:
            raise ConnectionError(f"cannot connect to {where}: {exc}") from None
        local = self._stream_local.get(transport)
        try:
            async with asyncio.timeout(timeout):
                _, conn = await self.loop.create_connection(
                    lambda: _Tcp(self, local, transport, (host, port)), host, port, **extra
                )
        except TimeoutError:
            raise ConnectionError(f"cannot connect to {where}: no answer within {timeout:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            raise ConnectionError(f"cannot connect to {where}: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise ConnectionError(f"cannot connect to {where}: TLS handshake failed ({exc.reason or exc})") from None
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {where}: {os_reason(exc)}") from None
        self._start_idle_check()
        event(log, "sip.connected", peer=where, connection=conn.flow.connection)
        return conn.flow

    def _client_context(self) -> ssl.SSLContext:
        if self._client_tls is None:
            self._client_tls = tls.client_context(self.tls_verify, self.tls_cert, self.tls_key)
        return self._client_tls

    def _register(self, conn: _Tcp) -> int:
        ident = self._next_connection
        self._next_connection += 1
        self._connections[ident] = conn
        return ident

    def _unregister(self, conn: _Tcp) -> None:
        if conn.flow is not None:
            self._connections.pop(conn.flow.connection, None)

    def peer_names(self, flow: Flow) -> tuple[str, ...]:
        """The names in the verified certificate the TLS peer of `flow` presented; () for none (or not TLS)."""
        conn = self._connections.get(flow.connection) if flow.connection else None
        return conn.peer_names if conn is not None else ()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def _close_idle(self) -> None:
        while True:
            await asyncio.sleep(min(self.tcp_idle_s / 4, 30.0))
            cutoff = self.loop.time() - self.tcp_idle_s
            for conn in list(self._connections.values()):
                if conn.last_activity < cutoff:
                    conn.transport.close()

    # -- for the transaction user ------------------------------------------------------------------
    def respond(self, key, response) -> None:
        self.txns.send_response(key, response, self.loop.time())
        self._pump()

    def flow_to(self, transport: str, host: str, port: int) -> Flow | None:
        """A flow for a request we originate: UDP from our first UDP socket; TCP/TLS over a live connection
        to that address (one the peer opened, so NAT keeps working, RFC 5626 spirit, or one `connect`
        opened, found by the address asked for too), else None (`connect` opens one)."""
        transport = transport.lower()
        if transport == "udp":
            local = next(iter(self._udp), None)
            return None if local is None else Flow("udp", untracked((host, port)), local)
        address = (host.strip("[]"), port)
        for conn in self._connections.values():
            flow = conn.flow
            live = flow is not None and not conn.transport.is_closing()
            if live and flow.transport == transport and address in (flow.remote, conn.target):
                return flow
        return None

    def send_request(self, request: Request, flow: Flow) -> object:
        """Start a client transaction for `request` over `flow`; our top Via names the flow's local
        address and transport. Returns the transaction key (responses arrive as `ResponseReceived`)."""
        self._put_via(request, flow)
        key = self.txns.send_request(request, flow, self.loop.time(), reliable=flow.reliable)
        self._pump()
        return key

    def request(self, request: Request, flow: Flow, callback: Callable[[object], None]) -> object:
        """`send_request` for a request whose outcome goes to `callback` instead of the TU: every response
        (`ResponseReceived`) up to the final one, or the `Timeout` / `TransportError` that ends it. For
        the softswitch's own requests (OPTIONS pings, REGISTER to a trunk)."""
        self._put_via(request, flow)
        key = self.txns.send_request(request, flow, self.loop.time(), reliable=flow.reliable)
        self._callbacks[key] = callback
        self._pump()
        return key

    async def final_response(self, request: Request, flow: Flow) -> Response | None:
        """`request` over `flow`, waiting for its final response; None after a timeout or transport error."""
        done: asyncio.Future = self.loop.create_future()

        def finished(ev) -> None:
            if isinstance(ev, ResponseReceived) and ev.response.status < 200:
                return
            if not done.done():
                done.set_result(ev.response if isinstance(ev, ResponseReceived) else None)

        self.request(request, flow, finished)
        return await done

    def send_stateless(self, message, flow: Flow) -> None:
        """Send outside any transaction: the ACK for a 2xx, a 2xx retransmission."""
        if isinstance(message, Request):
            self._put_via(message, flow)
        self.txns.send_stateless(message, flow)
        self._pump()

    def cancel(self, key) -> None:
        """CANCEL our INVITE (9.1): now if a provisional came, else as soon as one does."""
        cancel = self.txns.cancel_request(key)
        if cancel is not None:
            txn = self.txns.get(key)
            self.txns.send_request(cancel, txn.dest, self.loop.time(), reliable=txn.reliable)
        self._pump()

    @staticmethod
    def _put_via(request: Request, flow: Flow) -> None:
        if "Via" in request:
            return
        host, port = flow.local
        host = f"[{host}]" if ":" in host else host
        request.add("Via", f"SIP/2.0/{flow.transport.upper()} {host}:{port};branch={new_branch()};rport", first=True)
