"""Cut a byte stream (TCP, TLS, WebSocket) into whole SIP messages (RFC 3261 18.3, RFC 5626 4.4.1).

Chunks may split a message anywhere or hold several. Messages are delimited by the blank line after the
headers plus Content-Length bytes of body, which a stream message must carry. CRLF keep-alives between
messages are reported as `Ping` (a double CRLF, which wants a single CRLF `pong` back) or skipped (a lone
CRLF, which is a pong). A message larger than `max_size` is an error: the stream cannot be
resynchronised, so the caller closes the connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from softswitch.sip.errors import SipParseError
from softswitch.sip.message import MAX_MESSAGE_BYTES

_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$")


@dataclass(frozen=True, slots=True)
class Ping:
    """A double-CRLF keep-alive from the peer; answer with a single CRLF."""


PING = Ping()


class StreamFramer:
    """Feed bytes in, take whole messages (bytes) and pings out."""

    def __init__(self, max_size: int = MAX_MESSAGE_BYTES):
        self.max_size = max_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes | Ping]:
        """Add received bytes; returns every message (and ping) now complete, in order."""
        self._buf += data
        out: list[bytes | Ping] = []
        while self._buf:
            if self._buf[:1] in (b"\r", b"\n"):
                if not self._skip_keepalive(out):
                    break
                continue
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > self.max_size:
                    raise SipParseError(f"headers exceed {self.max_size} bytes", 513)
                break
            head_end = end + 4
            m = _LENGTH.search(self._buf, 0, end + 2)
            if m is None:
                raise SipParseError("missing Content-Length on a stream transport")
            total = head_end + int(m.group(1))
            if total > self.max_size:
                raise SipParseError(f"message of {total} bytes exceeds {self.max_size}", 513)
            if len(self._buf) < total:
                break
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]
        return out

    def _skip_keepalive(self, out: list[bytes | Ping]) -> bool:
        """Consume leading CRLFs; False when we must wait to see whether a ping is complete."""
        if self._buf.startswith(b"\r\n\r\n"):
            del self._buf[:4]
            out.append(PING)
            return True
        if self._buf in (b"\r", b"\r\n", b"\r\n\r"):
            return False
        if self._buf.startswith(b"\r\n"):
            del self._buf[:2]
        else:
            del self._buf[:1]
        return True

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a message."""
        return len(self._buf)
