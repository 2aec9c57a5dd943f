"""Socket helpers shared by the transports: binding with a readable error."""

from __future__ import annotations

import contextlib
import os
import socket


class BindError(Exception):
    """A listen address could not be bound; the message names it."""


def os_reason(exc: OSError) -> str:
    """The plain reason ("address already in use"), whichever event loop raised it."""
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc)


RECEIVE_BUFFER = 4 << 20  # a SIP socket takes bursts of thousands of datagrams while the loop is busy


def udp_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket (bound here so a failure carries its errno), with a receive buffer
    large enough for load bursts (the kernel caps it at net.core.rmem_max; the default drops at ~300 CPS)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):  # best effort: a smaller buffer still works
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
