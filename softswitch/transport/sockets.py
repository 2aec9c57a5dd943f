"""Socket helpers shared by the transports: binding with a readable error."""

from __future__ import annotations

import os
import socket


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
