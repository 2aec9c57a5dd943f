"""Client for rtpengine's ng control protocol, so bench/media_load.py can drive the reference relay.

The ng protocol is one UDP datagram per message: `COOKIE <space> bencoded-dict`, answered with the same
cookie and a bencoded dict (`result` is `ok`, `pong` or `error` with `error-reason`). Bencode is small
enough to carry here rather than add a dependency: integers `i42e`, byte strings `4:spam`, lists
`l...e`, dicts `d...e` with keys sorted.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
from collections.abc import Mapping, Sequence

Bencodable = int | bytes | str | Sequence["Bencodable"] | Mapping[str | bytes, "Bencodable"]


class NgError(Exception):
    """rtpengine answered `result: error`, or the answer could not be understood."""


def bencode(value: Bencodable) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Bencodable, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, bytearray, str)):
        data = value.encode() if isinstance(value, str) else bytes(value)
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, Mapping):
        items = sorted(((k.encode() if isinstance(k, str) else bytes(k)), v) for k, v in value.items())
        out.append(b"d")
        for key, item in items:
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, Sequence):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Bencodable:
    """Decodes one bencoded value; dict keys and strings stay bytes. Raises ValueError on bad input."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"trailing data at offset {end}")
    return value


def _decode(data: bytes, i: int) -> tuple[Bencodable, int]:
    if i >= len(data):
        raise ValueError("truncated bencode")
    c = data[i : i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if c == b"l":
        items: list[Bencodable] = []
        i += 1
        while data[i : i + 1] != b"e":
            item, i = _decode(data, i)
            items.append(item)
        return items, i + 1
    if c == b"d":
        result: dict[bytes, Bencodable] = {}
        i += 1
        while data[i : i + 1] != b"e":
            key, i = _decode(data, i)
            if not isinstance(key, bytes):
                raise ValueError("dict key is not a string")
            result[key], i = _decode(data, i)
        return result, i + 1
    if c.isdigit():
        colon = data.index(b":", i)
        length = int(data[i:colon])
        start = colon + 1
        if start + length > len(data):
            raise ValueError("truncated string")
        return data[start : start + length], start + length
    raise ValueError(f"bad bencode at offset {i}")


class NgClient:
    """Blocking ng client over UDP; one request in flight at a time, retried on time-out."""

    def __init__(self, host: str, port: int, timeout: float = 2.0, retries: int = 2) -> None:
        self.addr = (host, port)
        self.timeout = timeout
        self.retries = retries
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(self.addr)
        self._prefix = os.urandom(4).hex()
        self._serial = itertools.count()

    def close(self) -> None:
        self.sock.close()

    def request(self, command: str, **params: Bencodable) -> dict[bytes, Bencodable]:
        """Sends `command` with params (underscores in names become dashes) and returns the answer."""
        body = {"command": command, **{k.replace("_", "-"): v for k, v in params.items()}}
        cookie = f"{self._prefix}_{next(self._serial)}".encode()
        packet = cookie + b" " + bencode(body)
        self.sock.settimeout(self.timeout)
        for _ in range(self.retries + 1):
            self.sock.send(packet)
            try:
                while True:
                    reply = self.sock.recv(65535)
                    got_cookie, _, payload = reply.partition(b" ")
                    if got_cookie == cookie:
                        break
            except TimeoutError:
                continue
            answer = bdecode(payload)
            if not isinstance(answer, dict):
                raise NgError(f"{command}: answer is not a dict")
            if answer.get(b"result") == b"error":
                reason = answer.get(b"error-reason", b"?")
                raise NgError(f"{command}: {reason.decode(errors='replace') if isinstance(reason, bytes) else reason}")
            return answer
        raise NgError(f"{command}: no answer from rtpengine at {self.addr[0]}:{self.addr[1]}")

    def ping(self) -> bool:
        return self.request("ping").get(b"result") == b"pong"


def audio_sdp(host: str, port: int, session: int) -> str:
    """A minimal SDP offering PCMU on host:port (what a phone at that address would send)."""
    return (
        "v=0\r\n"
        f"o=- {session} 1 IN IP4 {host}\r\n"
        "s=media_load\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )


_MEDIA_PORT = re.compile(rb"^m=audio (\d+) ", re.MULTILINE)


def sdp_audio_port(sdp: bytes) -> int:
    """The port of the first m=audio line of an SDP."""
    m = _MEDIA_PORT.search(sdp)
    if not m:
        raise NgError("rtpengine's SDP has no m=audio line")
    return int(m.group(1))
