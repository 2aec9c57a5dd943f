"""SIP listeners bound from `[sip] listen`.

Until the SIP core drives them (the call path issue) they accept traffic and count it, so the
process binds, reports and releases its ports exactly as it will in production.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field

from softswitch.config import ListenAddress
from softswitch.logs import event

log = logging.getLogger("softswitch.transport")


class BindError(Exception):
    """A listen address could not be bound; the message names it."""


def os_reason(exc: OSError) -> str:
    """The plain reason ("address already in use"), whichever event loop raised it."""
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc)


def udp_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket (bound here so a failure carries its errno)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


@dataclass
class Counters:
    datagrams: int = 0
    connections: int = 0
    bytes_in: int = 0


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, counters: Counters):
        self.counters = counters

    def datagram_received(self, data: bytes, addr) -> None:
        self.counters.datagrams += 1
        self.counters.bytes_in += len(data)


class _Tcp(asyncio.Protocol):
    def __init__(self, counters: Counters):
        self.counters = counters

    def connection_made(self, transport) -> None:
        self.counters.connections += 1

    def data_received(self, data: bytes) -> None:
        self.counters.bytes_in += len(data)


@dataclass
class Listeners:
    """The bound SIP sockets; `close()` releases them all."""

    counters: Counters = field(default_factory=Counters)
    _closers: list = field(default_factory=list)
    _servers: list = field(default_factory=list)

    async def bind(self, addr: ListenAddress) -> None:
        loop = asyncio.get_running_loop()
        try:
            if addr.transport == "udp":
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self.counters), sock=udp_socket(addr.host, addr.port)
                )
                self._closers.append(transport.close)
            elif addr.transport == "tcp":
                server = await loop.create_server(lambda: _Tcp(self.counters), addr.host, addr.port)
                self._servers.append(server)
            else:
                raise BindError(f"cannot listen on {addr}: transport {addr.transport} is not available yet")
        except OSError as exc:
            raise BindError(f"cannot listen on {addr}: {os_reason(exc)}") from None
        event(log, "sip.listening", addr=str(addr))

    async def close(self) -> None:
        for close in self._closers:
            close()
        for server in self._servers:
            server.close()
        await asyncio.gather(*(s.wait_closed() for s in self._servers), return_exceptions=True)
        self._closers.clear()
        self._servers.clear()
