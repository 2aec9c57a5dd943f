"""SDP session descriptions (RFC 8866, which replaced RFC 4566): parse, serialise, read the media facts.

Why this module: every INVITE, re-INVITE and 200 OK carries an SDP body. Call control answers offers
(`offer_answer.py`) and the media engine needs addresses, ports, payload types and directions out of
them. Like the rest of `softswitch.sip` it is sans-IO: text in, frozen msgspec structs out, text back.

Parsing is strict about structure and lenient about content:
- a malformed line raises `SdpError` (a `ValueError`) naming the line and the reason, and carrying
  `status` (400), the SIP response a caller should send; no other exception escapes `parse()`;
- the attributes we read (rtpmap, fmtp, ptime, maxptime, rtcp, crypto) are checked while parsing, so
  the accessors on a parsed description cannot fail later;
- unknown attributes are kept verbatim and in order; LF-only line ends are accepted, trailing spaces
  and blank lines ignored; serialisation always writes CRLF in the RFC 8866 line order.

Media-level facts that depend on the session level (connection, direction, RTCP address) are methods of
`SessionDescription` taking the media section: a media section inherits c= and the direction attribute
from the session, and `c=IN IP4 0.0.0.0` is read as hold (RFC 2543 style, RFC 3264 section 8.4).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import Enum

import msgspec


class SdpError(ValueError):
    """A malformed session description: the peer's fault, answered with `status` (400 Bad Request)."""

    def __init__(self, reason: str, *, line: int | None = None, status: int = 400) -> None:
        self.reason = reason
        self.line = line
        self.status = status
        super().__init__(f"SDP line {line}: {reason}" if line is not None else f"SDP: {reason}")


class Direction(Enum):
    """Media direction attribute, from the point of view of the description's author (RFC 3264 5.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self is SENDRECV or self is SENDONLY

    @property
    def receives(self) -> bool:
        return self is SENDRECV or self is RECVONLY

    @classmethod
    def from_flags(cls, sends: bool, receives: bool) -> Direction:
        return direction_from_flags(sends, receives)

    def reversed(self) -> Direction:
        """The same stream seen from the other end (sendonly <-> recvonly)."""
        return direction_from_flags(self.receives, self.sends)


# The members as module constants: in 3.11 every attribute read on an Enum class goes through
# EnumType.__getattr__'s slow hook (about 80 ns more), and a call reads directions some 30 times.
SENDRECV = Direction.SENDRECV
SENDONLY = Direction.SENDONLY
RECVONLY = Direction.RECVONLY
INACTIVE = Direction.INACTIVE


def direction_from_flags(sends: bool, receives: bool) -> Direction:
    if sends:
        return SENDRECV if receives else SENDONLY
    return RECVONLY if receives else INACTIVE


DIRECTIONS = frozenset(d.value for d in Direction)
_DIRECTION_NAMED = {d.value: d for d in Direction}  # Direction(name) runs Enum's lookup in Python

# RFC 3551 table 4 and 5: payload type -> (encoding name, clock rate, channels). G722's RTP clock is
# 8000 although it samples at 16 kHz (an erratum kept for compatibility, RFC 3551 4.5.2).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})

_SPACES = re.compile(r"[ \t]+")
_RTPMAP = re.compile(r"([0-9]{1,3})[ \t]+([^ \t/]+)/([0-9]{1,10})(?:/([0-9]{1,3}))?")
_FMTP = re.compile(r"([^ \t]+)(?:[ \t]+(.*))?")
_PTIME = re.compile(r"([0-9]{1,6})(?:\.([0-9]{1,6}))?")
_LINE_TYPES = frozenset("vosiuepcbtrzkam")
_FORBIDDEN = ("\r", "\n", "\x00")


def _int(text: str, what: str, *, limit: int | None = None) -> int:
    """A non-negative decimal integer of ASCII digits (int() would take '+1', '1_0' and other scripts)."""
    if not (text.isdigit() and text.isascii() and len(text) <= 20):  # the ASCII ones are 0-9 only
        raise SdpError(f"{what}: expected a number, got {text!r}")
    value = int(text)
    if limit is not None and value > limit:
        raise SdpError(f"{what}: {value} is out of range (max {limit})")
    return value


def _fields(text: str) -> list[str]:
    """Fields separated by runs of spaces and tabs (single spaces, the usual case, take the fast path)."""
    parts = text.split(" ")
    if "" in parts or "\t" in text:
        text = text.strip(" \t")
        return _SPACES.split(text) if text else []
    return parts


class Origin(msgspec.Struct, frozen=True):
    """o= line: identifies the session; `sess_version` grows with each change (RFC 3264 section 8)."""

    username: str
    sess_id: int
    sess_version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return f"{self.username} {self.sess_id} {self.sess_version} {self.nettype} {self.addrtype} {self.address}"


class Connection(msgspec.Struct, frozen=True):
    """c= line. `ttl` (IP4 multicast) and `count` (multicast address range) come from /suffixes."""

    nettype: str
    addrtype: str
    address: str
    ttl: int | None = None
    count: int | None = None

    @classmethod
    def ip(cls, address: str) -> Connection:
        """`IN IP6` for an address with a colon, else `IN IP4`."""
        return cls("IN", "IP6" if ":" in address else "IP4", address)

    @property
    def is_hold(self) -> bool:
        """The RFC 2543 hold address (0.0.0.0, or :: for IPv6)."""
        return self.address in HOLD_ADDRESSES

    def __str__(self) -> str:
        text = f"{self.nettype} {self.addrtype} {self.address}"
        if self.ttl is not None:
            text += f"/{self.ttl}"
        if self.count is not None:
            text += f"/{self.count}"
        return text


class Bandwidth(msgspec.Struct, frozen=True):
    """b=<bwtype>:<bandwidth> (kbit/s for CT and AS)."""

    bwtype: str
    bandwidth: int


class Timing(msgspec.Struct, frozen=True):
    """t=<start> <stop> and its r= repeat lines (kept as text)."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()


class Attribute(msgspec.Struct, frozen=True):
    """a=<name> (a flag, `value` None) or a=<name>:<value> (value kept verbatim)."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


class Codec(msgspec.Struct, frozen=True):
    """An RTP payload format resolved from rtpmap, or from the static table when rtpmap is absent."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def rtpmap(self) -> str:
        """The rtpmap attribute value for this codec (channels written when not 1)."""
        text = f"{self.payload_type} {self.name}/{self.clock_rate}"
        return text if self.channels == 1 else f"{text}/{self.channels}"


class Rtcp(msgspec.Struct, frozen=True):
    """a=rtcp:<port> [<nettype> <addrtype> <address>] (RFC 3605)."""

    port: int
    connection: Connection | None = None


class Crypto(msgspec.Struct, frozen=True):
    """a=crypto:<tag> <suite> <key-params> [<session-params>...] (SDES, RFC 4568), kept for SRTP."""

    tag: int
    suite: str
    key_params: str
    session_params: tuple[str, ...] = ()


def written_fmtp(codec: Codec) -> str:
    """The parameters an fmtp line for `codec` carries ('' for none: no line is written), as they read back."""
    return (codec.fmtp or "").strip(" \t")


def _parse_rtpmap(value: str) -> Codec:
    match = _RTPMAP.fullmatch(value)
    if match is None:
        raise SdpError(f"rtpmap: expected '<pt> <name>/<rate>[/<channels>]', got {value!r}")
    pt = _int(match[1], "rtpmap payload type", limit=127)
    channels = _int(match[4], "rtpmap channels") if match[4] else 1
    if channels == 0:
        raise SdpError("rtpmap: zero channels")
    return Codec(pt, match[2], _int(match[3], "rtpmap clock rate"), channels)


def _parse_fmtp(value: str) -> tuple[str, str]:
    match = _FMTP.fullmatch(value)
    if match is None:
        raise SdpError(f"fmtp: expected '<format> <parameters>', got {value!r}")
    return match[1], match[2] or ""


def _parse_ptime(value: str) -> int:
    match = _PTIME.fullmatch(value)
    if match is None:
        raise SdpError(f"ptime: expected milliseconds, got {value!r}")
    return round(float(value))


def _parse_rtcp(value: str) -> Rtcp:
    parts = _fields(value)
    if len(parts) not in (1, 4):
        raise SdpError(f"rtcp: expected '<port> [IN IP4 <address>]', got {value!r}")
    port = _int(parts[0], "rtcp port", limit=65535)
    return Rtcp(port, Connection(*parts[1:]) if len(parts) == 4 else None)


def _parse_crypto(value: str) -> Crypto:
    parts = _fields(value)
    if len(parts) < 3:
        raise SdpError(f"crypto: expected '<tag> <suite> <key-params>', got {value!r}")
    return Crypto(_int(parts[0], "crypto tag", limit=999_999_999), parts[1], parts[2], tuple(parts[3:]))


_RTPMAP_OK = re.compile(r"(?:1[01][0-9]|12[0-7]|0?[0-9]{1,2})[ \t]+[^ \t/]+/[0-9]{1,10}(?:/(?!0*\Z)[0-9]{1,3})?")
_ATTRIBUTE_CHECKS = {  # checked while parsing: a value the pattern matches passes, any other goes through the check
    "rtpmap": (_RTPMAP_OK, _parse_rtpmap),  # the pattern has payload type <= 127 and channels > 0 built in
    "fmtp": (_FMTP, _parse_fmtp),
    "ptime": (_PTIME, _parse_ptime),
    "maxptime": (_PTIME, _parse_ptime),
    "rtcp": (None, _parse_rtcp),
    "crypto": (None, _parse_crypto),
}


def _direction_of(attributes: tuple[Attribute, ...]) -> Direction | None:
    for attr in attributes:
        if attr.value is None and (direction := _DIRECTION_NAMED.get(attr.name)) is not None:
            return direction
    return None


class MediaDescription(msgspec.Struct, frozen=True, dict=True):
    """One m= section: m=<media> <port>[/<port_count>] <proto> <format>... and its i/c/b/k/a lines."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    title: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    # `codecs` once resolved is kept in the instance's __dict__ (`dict=True`), outside the fields: a cache that
    # equality, hashing, repr and `msgspec.structs.replace` never see (offer/answer reads it several times)

    @property
    def is_rejected(self) -> bool:
        """Port 0: a rejected or disabled stream (RFC 3264 section 6)."""
        return self.port == 0

    @property
    def connection(self) -> Connection | None:
        """This section's own first c= line (see SessionDescription.effective_connection)."""
        return self.connections[0] if self.connections else None

    def attribute(self, name: str) -> str | None:
        """Value of the first attribute with this name ('' for a flag), or None when absent."""
        for attr in self.attributes:
            if attr.name == name:
                return "" if attr.value is None else attr.value
        return None

    def attribute_values(self, name: str) -> tuple[str, ...]:
        return tuple(a.value for a in self.attributes if a.name == name and a.value is not None)

    @property
    def direction(self) -> Direction | None:
        """The section's own direction attribute, None when it has none."""
        return _direction_of(self.attributes)

    @property
    def payload_types(self) -> tuple[int, ...]:
        """The numeric formats (RTP payload types), in m= line order."""
        out = []
        for f in self.formats:
            if f.isdigit() and f.isascii() and len(f) <= 20 and int(f) <= 127:  # ASCII digits, at most 20
                out.append(int(f))
        return tuple(out)

    def fmtp(self, fmt: int | str) -> str | None:
        """The fmtp parameters for one format, None when it has none."""
        wanted = str(fmt)
        for value in self.attribute_values("fmtp"):
            name, params = _parse_fmtp(value)
            if name == wanted:
                return params
        return None

    @property
    def codecs(self) -> tuple[Codec, ...]:
        """Payload formats in m= order, from rtpmap or the static table; unresolvable ones are skipped."""
        try:
            return self._codecs
        except AttributeError:
            codecs = self.__dict__["_codecs"] = self._resolve_codecs()
            return codecs

    def knowing_codecs(self, codecs: Sequence[Codec]) -> MediaDescription:
        """This section with `codecs` taken as its resolved codecs: for a section written from them (its formats,
        rtpmap lines and `written_fmtp` fmtp lines made from `codecs`), which then never has its own lines read
        back. The fmtp is taken as written: blanks trimmed, and None when nothing is left."""
        known = []
        for codec in codecs:
            fmtp = written_fmtp(codec) or None
            known.append(codec if codec.fmtp == fmtp else msgspec.structs.replace(codec, fmtp=fmtp))
        self.__dict__["_codecs"] = tuple(known)
        return self

    def _resolve_codecs(self) -> tuple[Codec, ...]:
        mapped = {c.payload_type: c for c in map(_parse_rtpmap, self.attribute_values("rtpmap"))}
        fmtps: dict[str, str] = {}
        for value in self.attribute_values("fmtp"):
            name, params = _parse_fmtp(value)
            fmtps.setdefault(name, params)
        result = []
        for pt in self.payload_types:
            codec = mapped.get(pt)
            if codec is None and pt in STATIC_PAYLOAD_TYPES:
                codec = Codec(pt, *STATIC_PAYLOAD_TYPES[pt])
            if codec is not None:
                fmtp = fmtps.get(str(pt))
                result.append(codec if fmtp == codec.fmtp else msgspec.structs.replace(codec, fmtp=fmtp))
        return tuple(result)

    def codec(self, payload_type: int) -> Codec | None:
        return next((c for c in self.codecs if c.payload_type == payload_type), None)

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        return None if value is None else _parse_ptime(value)

    @property
    def maxptime(self) -> int | None:
        value = self.attribute("maxptime")
        return None if value is None else _parse_ptime(value)

    @property
    def rtcp(self) -> Rtcp | None:
        value = self.attribute("rtcp")
        return None if value is None else _parse_rtcp(value)

    @property
    def rtcp_mux(self) -> bool:
        return any(a.name == "rtcp-mux" for a in self.attributes)

    @property
    def crypto(self) -> tuple[Crypto, ...]:
        return tuple(map(_parse_crypto, self.attribute_values("crypto")))

    def with_direction(self, direction: Direction | None) -> MediaDescription:
        """A copy with its direction attributes replaced by `direction` (removed for None)."""
        kept = tuple(a for a in self.attributes if not (a.value is None and a.name in DIRECTIONS))
        return msgspec.structs.replace(
            self, attributes=kept if direction is None else (*kept, Attribute(direction.value))
        )

    def lines(self) -> list[str]:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        out = [f"m={' '.join((self.media, port, self.proto, *self.formats))}"]
        if self.title is not None:
            out.append(f"i={self.title}")
        out += [f"c={c}" for c in self.connections]
        out += [f"b={b.bwtype}:{b.bandwidth}" for b in self.bandwidths]
        if self.key is not None:
            out.append(f"k={self.key}")
        out += [f"a={a}" for a in self.attributes]
        return out


class SessionDescription(msgspec.Struct, frozen=True):
    """A whole SDP body. Build one directly, or `SessionDescription.parse(body)`."""

    origin: Origin
    name: str = "-"
    version: int = 0
    info: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    timings: tuple[Timing, ...] = (Timing(),)
    zone: str | None = None
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()

    def with_origin(self, origin: Origin) -> SessionDescription:
        """A copy with another o= line: what every description we send gets."""
        return msgspec.structs.replace(self, origin=origin)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview | str) -> SessionDescription:
        """Parse a body (bytes are decoded as UTF-8). Raises SdpError and nothing else for bad input."""
        lines = _split_lines(data)
        try:
            return _parse(lines)
        except SdpError as exc:
            error = exc
        _check_lines(lines)  # a malformed line anywhere outranks the first other error
        raise error

    def serialize(self) -> bytes:
        return self.to_text().encode("utf-8")

    def to_text(self) -> str:
        """The body as text, CRLF line ends. A field holding CR, LF or NUL is our bug: ValueError."""
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.name or ' '}"]
        out += [f"{k}={v}" for k, v in (("i", self.info), ("u", self.uri)) if v is not None]
        out += [f"e={e}" for e in self.emails] + [f"p={p}" for p in self.phones]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={b.bwtype}:{b.bandwidth}" for b in self.bandwidths]
        for timing in self.timings:
            out.append(f"t={timing.start} {timing.stop}")
            out += [f"r={r}" for r in timing.repeats]
        out += [f"{k}={v}" for k, v in (("z", self.zone), ("k", self.key)) if v is not None]
        out += [f"a={a}" for a in self.attributes]
        for media in self.media:
            out += media.lines()
        text = "\r\n".join(out)
        if "\x00" in text or text.count("\n") != len(out) - 1 or text.count("\r") != len(out) - 1:
            line = next(line for line in out if any(c in line for c in _FORBIDDEN))
            raise ValueError(f"SDP field holds CR, LF or NUL: {line!r}")
        return text + "\r\n"

    @property
    def direction(self) -> Direction | None:
        """The session-level direction attribute, None when it has none."""
        return _direction_of(self.attributes)

    def effective_connection(self, media: MediaDescription) -> Connection | None:
        """The media section's c= line, else the session's."""
        return media.connection or self.connection

    def effective_direction(self, media: MediaDescription) -> Direction:
        """Media attribute, else session attribute, else sendrecv; c=0.0.0.0 takes away receiving
        (RFC 2543 hold), and a rejected stream (port 0) is inactive."""
        if media.is_rejected:
            return INACTIVE
        direction = media.direction or self.direction or SENDRECV
        connection = self.effective_connection(media)
        if connection is not None and connection.is_hold:
            direction = direction_from_flags(direction.sends, False)
        return direction

    def rtp_address(self, media: MediaDescription) -> tuple[str, int] | None:
        """Where this description's author receives RTP; None when rejected or without c=."""
        connection = self.effective_connection(media)
        if media.is_rejected or connection is None:
            return None
        return connection.address, media.port

    def rtcp_address(self, media: MediaDescription) -> tuple[str, int] | None:
        """Where the author receives RTCP: a=rtcp (RFC 3605), else the RTP port under rtcp-mux
        (RFC 5761; only valid once both ends offered it), else the RTP port + 1."""
        rtp = self.rtp_address(media)
        if rtp is None:
            return None
        rtcp = media.rtcp
        if rtcp is not None:
            return (rtcp.connection.address if rtcp.connection else rtp[0]), rtcp.port
        if media.rtcp_mux:
            return rtp
        return rtp[0], rtp[1] + 1


_UNTIMED = Timing()  # t=0 0, shared like the default of SessionDescription.timings


def _split_lines(data: bytes | bytearray | memoryview | str) -> list[str]:
    """The body's lines (index + 1 is the line number): split at CRLF if all lines end so, else at LF, leaving CRs
    for _parse to strip with trailing spaces; that is right for a CR ending a line only, so any other raises here."""
    if isinstance(data, (bytes, bytearray, memoryview)):  # a tuple: a union is built again on each call
        try:
            text = (data if isinstance(data, bytes) else bytes(data)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    elif not isinstance(data, str):
        raise TypeError(f"SDP body must be bytes or str, not {type(data).__name__}")
    else:
        text = data
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise SdpError("body holds unpaired surrogates") from None
    lines = text.split("\r\n")
    if not (crlf := text.count("\n") == len(lines) - 1 == text.count("\r")):  # not CRLF throughout
        lines = text.split("\n")
    if "\x00" in text or (not crlf and text.count("\r") != text.count("\r\n") + text.endswith("\r")):
        _check_lines(lines)  # a NUL, or a CR not ending its line, is inside some line: raises
    return lines


def _check_lines(lines: list[str]) -> None:
    """Raise for the first structurally malformed line: that error outranks any other."""
    for number, raw in enumerate(lines, 1):
        line = (raw[:-1] if raw.endswith("\r") else raw).rstrip(" \t")
        if line and ("\r" in line or "\x00" in line):
            raise SdpError("stray CR or NUL inside a line", line=number)
        if line and (len(line) < 2 or line[1] != "="):
            raise SdpError(f"expected '<type>=<value>', got {line[:40]!r}", line=number)
        if line and line[0] not in _LINE_TYPES:
            raise SdpError(f"unknown line type {line[0]!r}", line=number)


def _parse_connection(value: str) -> Connection:
    parts = _fields(value)
    if len(parts) != 3:
        raise SdpError(f"c=: expected '<nettype> <addrtype> <address>', got {value!r}")
    nettype, addrtype, address = parts
    if addrtype not in ("IP4", "IP6") or "/" not in address:
        return Connection(nettype, addrtype, address)
    host, *suffixes = address.split("/")
    numbers = [_int(s, "c= address suffix") for s in suffixes]
    if not host or len(numbers) > (2 if addrtype == "IP4" else 1):
        raise SdpError(f"c=: bad address {address!r}")
    if addrtype == "IP6":
        return Connection(nettype, addrtype, host, count=numbers[0])
    return Connection(nettype, addrtype, host, numbers[0], numbers[1] if len(numbers) == 2 else None)


def _parse_origin(value: str) -> Origin:
    parts = _fields(value)
    if len(parts) != 6:
        raise SdpError(f"o=: expected 6 fields, got {len(parts)}")
    username, sess_id, version, nettype, addrtype, address = parts
    session, sess_version = _int(sess_id, "o= sess-id"), _int(version, "o= sess-version")
    return Origin(username, session, sess_version, nettype, addrtype, address)


def _parse_bandwidth(value: str) -> Bandwidth:
    bwtype, colon, amount = value.partition(":")
    if not colon or not bwtype or _SPACES.search(bwtype):
        raise SdpError(f"b=: expected '<bwtype>:<bandwidth>', got {value!r}")
    return Bandwidth(bwtype, _int(amount, "b= bandwidth"))


def _parse_timing(value: str) -> Timing:
    parts = _fields(value)
    if len(parts) != 2:
        raise SdpError(f"t=: expected '<start> <stop>', got {value!r}")
    return Timing(_int(parts[0], "t= start"), _int(parts[1], "t= stop"))


def _parse_media_line(value: str) -> tuple[str, int, str, tuple[str, ...], int | None]:
    """The m= line as MediaDescription's first five fields."""
    parts = _fields(value)
    if len(parts) < 3:
        raise SdpError(f"m=: expected '<media> <port> <proto> <fmt>...', got {value!r}")
    media, port_text, proto, *formats = parts
    port_text, slash, count_text = port_text.partition("/")
    port = _int(port_text, "m= port", limit=65535)
    count = _int(count_text, "m= port count", limit=65535) if slash else None
    if count == 0:
        raise SdpError("m=: port count must be positive")
    return media, port, proto, tuple(formats), count


def _parse(lines: list[str]) -> SessionDescription:
    """One pass over the lines from _split_lines. Where this raises, the caller checks the structure of all lines."""
    numbered = enumerate(lines, 1)
    for number, line in numbered:  # noqa: B007 (the first non-blank line's number)
        if line := line.rstrip(" \t\r"):
            break
    else:
        raise SdpError("empty session description")
    if line[:2] != "v=":
        raise SdpError("a session description starts with v=", line=number)
    texts: dict[str, str] = {}  # s i u z k
    origin = connection = head = title = key = None  # head: the current m= line (None at session level)
    emails, phones, timings, media = [], [], [], []  # of str, str, Timing, MediaDescription
    connections, bandwidths, attributes = [], [], []  # the current level's, for the last two
    session_bandwidths, session_attributes = bandwidths, attributes
    checks = _ATTRIBUTE_CHECKS
    try:
        if line != "v=0" and _int(line[2:], "v=") != 0:
            raise SdpError(f"unsupported SDP version {line[2:]!r}")
        for number, line in numbered:  # noqa: B007 (the number of the line that raised)
            if not (line := line.rstrip(" \t\r")):
                continue
            kind, eq, value = line.partition("=")
            if kind == "a":
                name, colon, rest = value.partition(":")
                if name in checks:
                    if not colon:
                        raise SdpError(f"a={name} needs a value")
                    pattern, check = checks[name]
                    if pattern is None or pattern.fullmatch(rest) is None:
                        check(rest)  # raises unless the value is fine after all
                elif not name:
                    raise SdpError(f"a=: missing attribute name in {value!r}")
                attributes.append(Attribute(name, rest if colon else None))
            elif kind == "b":
                bandwidths.append(_parse_bandwidth(value))
            elif kind == "m":
                if head is not None:
                    section = (title, tuple(connections), tuple(bandwidths), key, tuple(attributes))
                    media.append(MediaDescription(*head, *section))
                head, title, key = _parse_media_line(value), None, None
                connections, bandwidths, attributes = [], [], []
            elif not eq or kind not in _LINE_TYPES:  # "a", "b" and "m" without "=" raised above too
                raise SdpError("malformed line")  # never seen: the caller's _check_lines raises the precise error
            elif kind == "v":
                raise SdpError("v= may only be the first line")
            elif head is not None:
                if kind == "c":
                    connections.append(_parse_connection(value))
                elif kind == "i" and title is None:
                    title = value
                elif kind == "k" and key is None:
                    key = value
                elif kind in "ik":
                    raise SdpError(f"duplicate {kind}= line in a media section")
                else:
                    raise SdpError(f"{kind}= is not allowed in a media section")
            elif kind == "o":
                if origin is not None:
                    raise SdpError("duplicate o= line")
                origin = _parse_origin(value)
            elif kind == "c":
                if connection is not None:
                    raise SdpError("duplicate session-level c= line")
                connection = _parse_connection(value)
            elif kind == "t":
                timings.append(_UNTIMED if value == "0 0" else _parse_timing(value))
            elif kind == "r":
                if not timings:
                    raise SdpError("r= without a preceding t=")
                last = timings[-1]
                timings[-1] = Timing(last.start, last.stop, (*last.repeats, value))
            elif kind in "ep":
                (emails if kind == "e" else phones).append(value)
            elif kind in texts:  # s i u z k
                raise SdpError(f"duplicate {kind}= line")
            else:
                texts[kind] = value
    except SdpError as exc:
        raise SdpError(exc.reason, line=number) from None
    if head is not None:
        media.append(MediaDescription(*head, title, tuple(connections), tuple(bandwidths), key, tuple(attributes)))
    if origin is None or "s" not in texts:
        raise SdpError("missing o= or s= line")
    get = texts.get
    described = (origin, texts["s"], 0, get("i"), get("u"), tuple(emails), tuple(phones), connection)
    content = (tuple(session_bandwidths), tuple(timings), get("z"), get("k"), tuple(session_attributes), tuple(media))
    return SessionDescription(*described, *content)
