"""The asyncio side of the SIP stack: sockets in, the sans-IO transaction layer, transmissions out.

`SipEndpoint` owns the only clock (`loop.time()`) and the one timer the transaction layer asks for. For
each datagram or framed stream message it parses (a malformed request is answered 400 from the error's
partial message, or dropped when nothing can be answered), stamps the top Via of requests with
`received`/`rport` (RFC 3261 18.2.1, RFC 3581), works out where responses must go (18.2.2: back over
the connection for TCP; for UDP to `received`, and `rport` or the Via port or 5060), and hands the
message to the transaction layer. Events go to the transaction user (`handler`); transmissions go out
through the flow they name. Nothing here raises on input: a bad packet costs one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from softswitch.config import ListenAddress
from softswitch.logs import event
from softswitch.sip.errors import SipParseError
from softswitch.sip.framer import PING, StreamFramer
from softswitch.sip.message import Request, build_response, error_response, parse
from softswitch.sip.transaction import TimerConfig, TransactionLayer, Transmit, new_branch
from softswitch.transport.sockets import BindError, os_reason, udp_socket

log = logging.getLogger("softswitch.sip")


@dataclass(frozen=True, slots=True)
class Flow:
    """Where a message came from, or goes: a UDP address through one of our sockets, or a TCP connection."""

    transport: str  # "udp" or "tcp"
    remote: tuple[str, int]
    local: tuple[str, int]
    connection: int = 0  # TCP: the connection's id; 0 for UDP

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


def response_flow(request: Request, flow: Flow) -> Flow:
    """RFC 3261 18.2.2 and RFC 3581 4: where the responses to `request` go."""
    if flow.reliable:
        return flow
    via = request.via
    host = via.received or via.host
    port = via.rport or via.port or 5060
    return Flow("udp", (host.strip("[]"), port), flow.local)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint, local: tuple[str, int]):
        self.endpoint, self.local = endpoint, local

    def datagram_received(self, data: bytes, addr) -> None:
        self.endpoint.receive(data, Flow("udp", (addr[0], addr[1]), self.local), stream=False)

    def error_received(self, exc: OSError) -> None:  # an ICMP error for something we sent: nothing to do
        event(log, "sip.udp_error", level=logging.DEBUG, reason=os_reason(exc))


class _Tcp(asyncio.Protocol):
    def __init__(self, endpoint: SipEndpoint, local: tuple[str, int]):
        self.endpoint, self.local = endpoint, local
        self.framer = StreamFramer(endpoint.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.flow: Flow | None = None
        self.last_activity = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.flow = Flow("tcp", (peer[0], peer[1]), self.local, self.endpoint._register(self))
        self.last_activity = self.endpoint.loop.time()

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
    ):
        self.handler = handler
        self.max_message_bytes = max_message_bytes
        self.tcp_idle_s = tcp_idle_s
        self.loop = asyncio.get_running_loop()
        self.txns = TransactionLayer(timers or TimerConfig())
        self._udp: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: dict[int, _Tcp] = {}
        self._next_connection = 1
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._idle_task: asyncio.Task | None = None
        self.counters = {"received": 0, "sent": 0, "malformed": 0, "answered_400": 0}

    async def listen(self, addr: ListenAddress) -> None:
        local = (addr.host, addr.port)
        try:
            if addr.transport == "udp":
                transport, _ = await self.loop.create_datagram_endpoint(
                    lambda: _Udp(self, local), sock=udp_socket(addr.host, addr.port)
                )
                self._udp[local] = transport
            elif addr.transport == "tcp":
                self._servers.append(await self.loop.create_server(lambda: _Tcp(self, local), addr.host, addr.port))
            else:
                raise BindError(f"cannot listen on {addr}: transport {addr.transport} is not available yet")
        except OSError as exc:
            raise BindError(f"cannot listen on {addr}: {os_reason(exc)}") from None
        if self._idle_task is None:
            self._idle_task = self.loop.create_task(self._close_idle())
        event(log, "sip.listening", addr=str(addr))

    async def close(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._idle_task:
            self._idle_task.cancel()
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
        now = self.loop.time()
        try:
            msg = parse(data, stream=stream, max_size=self.max_message_bytes)
        except SipParseError as exc:
            self._refuse(exc, flow)
            return
        try:  # what the parser left lazy (lower Vias, list headers) may still be malformed
            if isinstance(msg, Request):
                self._stamp_via(msg, flow)
                dest = response_flow(msg, flow)
            else:
                dest = flow
            self.txns.receive(msg, dest, now, reliable=flow.reliable)
        except SipParseError as exc:
            exc.partial = msg
            self._refuse(exc, flow)
            return
        self._pump()

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
        """Deliver the layer's events to the TU, send what it queued, and re-arm the timer."""
        while True:
            for tx in self.txns.transmits():
                self._send(tx)
            ev = self.txns.next_event()
            if ev is None:
                break
            try:
                self.handler(self, ev)
            except SipParseError as exc:  # the TU read a malformed header: the request deserves a 400
                self._reject(ev, exc)
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
                    return
                conn.transport.write(data)
            self.counters["sent"] += 1
        except OSError as exc:  # no route (a documentation address, say): the peer's loss, not ours
            event(log, "sip.send_failed", level=logging.DEBUG, peer=flow.remote, reason=os_reason(exc))

    def _arm_timer(self) -> None:
        when = self.txns.get_timer()
        if when == self._timer_at:
            return
        if self._timer:
            self._timer.cancel()
        self._timer_at = when
        self._timer = None if when is None else self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.txns.handle_timer(self.loop.time())
        self._pump()

    # -- TCP connections -----------------------------------------------------------------------------
    def _register(self, conn: _Tcp) -> int:
        ident = self._next_connection
        self._next_connection += 1
        self._connections[ident] = conn
        return ident

    def _unregister(self, conn: _Tcp) -> None:
        if conn.flow is not None:
            self._connections.pop(conn.flow.connection, None)

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
        """A flow for a request we originate: UDP from our first UDP socket; TCP over a live connection to
        that address (one the peer opened, so NAT keeps working, RFC 5626 spirit), else None."""
        transport = transport.lower()
        if transport == "udp":
            local = next(iter(self._udp), None)
            return None if local is None else Flow("udp", (host, port), local)
        for conn in self._connections.values():
            flow = conn.flow
            live = flow is not None and not conn.transport.is_closing()
            if live and flow.transport == transport and flow.remote == (host, port):
                return flow
        return None

    def send_request(self, request: Request, flow: Flow) -> object:
        """Start a client transaction for `request` over `flow`; our top Via names the flow's local
        address and transport. Returns the transaction key (responses arrive as `ResponseReceived`)."""
        self._put_via(request, flow)
        key = self.txns.send_request(request, flow, self.loop.time(), reliable=flow.reliable)
        self._pump()
        return key

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
