"""SIP requests and responses: parse from bytes, validate, serialise (RFC 3261 7, 8.2, 18.3, 20).

Theory of operation: `parse()` reads one whole message (a datagram, or what `StreamFramer` cut from a
stream). Headers are kept as an ordered list of (canonical name, value text), tuples the garbage
collector does not track (`cext.sipscan.pair`: they were most of what its collections walked); the few the core needs on
every message (Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length) are parsed and checked at
once, because a message with a bad one must be answered 400 before anything else sees it (RFC 4475);
the rest stay text until asked for. Serialisation writes headers in their order with a correct
Content-Length. Anything malformed raises SipParseError with the status it deserves and, when the
request line and headers were readable, the partial message so a 400 can be built from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from cext.gctrack import untrack_leaf
from cext.sipscan import header_pairs as _header_pairs
from cext.sipscan import pair
from cext.sipscan import scan as _scan
from cext.sipscan import set_names as _set_names

from softswitch.sip.errors import SipParseError
from softswitch.sip.headers import (
    CANONICAL,
    LIST_HEADERS,
    TOKEN,
    Address,
    CSeq,
    Via,
    canonical,
    parse_address,
    parse_cseq,
    parse_via,
    split_list,
)
from softswitch.sip.uri import Uri, parse_uri

MAX_MESSAGE_BYTES = 65535
_FOLD = re.compile(r"[ \t]*\r?\n[ \t]+")
_HEADER = re.compile(r"([^:\r\n]+):[ \t]*([^\r\n]*)\r?\n")
_RURI = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>\"]+")
_STATUS = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?", re.S | re.I)  # [0-9]: ASCII digits only
_VERSION = re.compile(r"SIP/([0-9]+)\.([0-9]+)", re.I)
_SINGLE = frozenset(("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length"))
_CORE = _SINGLE | {"Via"}
_set_names(CANONICAL, _SINGLE)
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
_CANON = CANONICAL.get  # a known spelling in one lookup; `canonical` for the rest

REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


class Message:
    """What requests and responses share: ordered headers, a body, and the parsed core headers."""

    __slots__ = ("_parsed", "body", "headers")

    def __init__(self, headers: Iterable[tuple[str, str]] = (), body: bytes = b""):
        self.headers: list[tuple[str, str]] = _header_pairs(headers, CANONICAL, canonical)
        self.body = body
        self._parsed: dict[str, object] = {}

    # -- header access -------------------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header (the whole line for list headers)."""
        name = _CANON(name) or canonical(name)
        for n, v in self.headers:
            if n == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of a header in order, comma-joined list values split apart."""
        name = _CANON(name) or canonical(name)
        values = []  # loops, not comprehensions: in 3.11 each of those makes a function object, 50 a call
        for n, v in self.headers:
            if n == name:
                values.append(v)
        if name in LIST_HEADERS and not (name == "Contact" and values == ["*"]):
            items = []
            for v in values:
                for item in split_list(v):
                    if item:
                        items.append(item)
            return items
        return values

    def __contains__(self, name: str) -> bool:
        name = _CANON(name) or canonical(name)
        for n, _ in self.headers:  # noqa: SIM110 (any() over a generator: a function object per test)
            if n == name:
                return True
        return False

    def set(self, name: str, value: str) -> None:
        """Replace every occurrence of a header with one value, kept where the first one was."""
        name = canonical(name)
        self._parsed.pop(name, None)
        for i, (n, _) in enumerate(self.headers):
            if n == name:
                self.headers[i] = pair(name, value)
                self.headers[i + 1 :] = [h for h in self.headers[i + 1 :] if h[0] != name]
                return
        self.headers.append(pair(name, value))

    def add(self, name: str, value: str, first: bool = False) -> None:
        """Add one header value after the others of its name; with `first`, before them (at the top of
        the headers when there are none, where a new Via belongs)."""
        name = canonical(name)
        self._parsed.pop(name, None)
        if first:
            index = next((i for i, (n, _) in enumerate(self.headers) if n == name), 0)
            self.headers.insert(index, pair(name, value))
        else:
            self.headers.append(pair(name, value))

    def remove(self, name: str) -> None:
        name = canonical(name)
        self._parsed.pop(name, None)
        self.headers = [h for h in self.headers if h[0] != name]

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of a list header (e.g. the top Via or Route)."""
        name = canonical(name)
        self._parsed.pop(name, None)
        for i, (n, v) in enumerate(self.headers):
            if n == name:
                items = split_list(v) if name in LIST_HEADERS else [v]
                if len(items) > 1:
                    self.headers[i] = pair(n, ", ".join(items[1:]))
                else:
                    del self.headers[i]
                return items[0]
        return None

    # -- the core headers, parsed once (read dozens of times per message: no closure per read) --------
    @property
    def vias(self) -> list[Via]:
        value = self._parsed.get("Via")
        if value is None:
            value = self._parsed["Via"] = [parse_via(v) for v in self.get_all("Via")]
        return value

    @property
    def via(self) -> Via:
        """The top Via."""
        vias = self.vias
        if not vias:
            raise SipParseError("missing Via")
        return vias[0]

    @property
    def from_(self) -> Address:
        value = self._parsed.get("From")
        if value is None:
            value = self._parsed["From"] = parse_address(self._required("From"))
        return value

    @property
    def to(self) -> Address:
        value = self._parsed.get("To")
        if value is None:
            value = self._parsed["To"] = parse_address(self._required("To"))
        return value

    @property
    def cseq(self) -> CSeq:
        value = self._parsed.get("CSeq")
        if value is None:
            value = self._parsed["CSeq"] = parse_cseq(self._required("CSeq"))
        return value

    @property
    def call_id(self) -> str:
        value = self._parsed.get("Call-ID")
        if value is None:
            value = self._parsed["Call-ID"] = self._required("Call-ID")
        return value

    @property
    def contacts(self) -> list[Address]:
        value = self._parsed.get("Contact")
        if value is None:
            value = self._parsed["Contact"] = [parse_address(v) for v in self.get_all("Contact") if v != "*"]
        return value

    @property
    def max_forwards(self) -> int | None:
        value = self.get("Max-Forwards")
        return None if value is None else _bounded_int(value, "Max-Forwards", 255)

    @property
    def content_type(self) -> str | None:
        value = self.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value else None

    def _required(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise SipParseError(f"missing {name}")
        return value

    def keep_for_resend(self) -> None:
        """For a message kept only to be sent again (a lingering transaction's): drop the parsed core headers
        (read again from the text when asked for), then take the message and its header list out of the
        cyclic GC's walks. Nothing a message holds refers back to it, so it can never be in a cycle; a
        full collection at 250 CPS walked about five objects per lingering transaction, four of them these."""
        self._parsed = {}
        untrack_leaf(self.headers)  # (name, value) pairs of str, already untracked
        untrack_leaf(self)

    # -- serialisation --------------------------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """Bytes on the wire: start line, headers in order, a Content-Length that fits the body."""
        lines = [self.start_line()]
        length = str(len(self.body))
        wrote_length = False
        for name, value in self.headers:
            if name == "Content-Length":
                if wrote_length:
                    continue
                value, wrote_length = length, True
            lines.append(f"{name}: {value}")
        if not wrote_length:
            lines.append(f"Content-Length: {length}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    __bytes__ = serialize

    def iter_headers(self) -> Iterator[tuple[str, str]]:
        return iter(self.headers)


class Request(Message):
    __slots__ = ("method", "uri_text")

    def __init__(self, method: str, uri: str | Uri, headers: Iterable[tuple[str, str]] = (), body: bytes = b""):
        super().__init__(headers, body)
        self.method = method
        self.uri_text = str(uri)
        if not isinstance(uri, str):
            self._parsed["uri"] = uri

    @property
    def uri(self) -> Uri:
        value = self._parsed.get("uri")
        if value is None:
            value = self._parsed["uri"] = parse_uri(self.uri_text)
        return value

    @uri.setter
    def uri(self, value: Uri) -> None:
        self.uri_text = str(value)
        self._parsed["uri"] = value

    def start_line(self) -> str:
        return f"{self.method} {self.uri_text} SIP/2.0"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text}>"


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
    ):
        super().__init__(headers, body)
        self.status = status
        self.reason = REASONS.get(status, "Unknown") if reason is None else reason

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _bounded_int(text: str, name: str, limit: int) -> int:
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise SipParseError(f"bad {name} {text[:40]!r}")
    value = int(text)
    if value > limit:
        raise SipParseError(f"{name} {value} is above {limit}")
    return value


def _header_block(data: bytes) -> tuple[bytes, int]:
    """The start line and headers, each line still ending in its newline, and where the body starts."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[: end + 2], end + 4
    end = data.find(b"\n\n")
    if end >= 0:
        return data[: end + 1], end + 2
    if data.endswith(b"\n"):
        return data, len(data)
    raise SipParseError("no blank line after the headers")


def parse(data: bytes, *, stream: bool = False, max_size: int = MAX_MESSAGE_BYTES) -> Request | Response:
    """Parse one whole SIP message. With `stream`, Content-Length is required (RFC 3261 18.3).

    Plain well-formed messages take the compiled fast path (cext/sipscan.pyx); everything else, and
    every error, goes through `parse_reference`, which defines the behaviour."""
    if len(data) > max_size:
        raise SipParseError(f"message of {len(data)} bytes exceeds {max_size}", 513)
    fast = _scan(data)
    if fast is not None:
        return _from_scan(data, fast)
    return parse_reference(data, stream=stream, max_size=max_size)


def _from_scan(data: bytes, fast: tuple) -> Request | Response:
    start_a, start_b, headers, body_at, length, seq, method, frm, to, via = fast
    msg: Request | Response
    if start_a.__class__ is int:
        msg = Response.__new__(Response)
        msg.status, msg.reason = start_a, start_b
    else:
        msg = Request.__new__(Request)
        msg.method, msg.uri_text = start_a, start_b
    msg.headers = headers
    msg.body = data[body_at : body_at + length] if length < len(data) - body_at else data[body_at:]
    parsed = msg._parsed = {
        "CSeq": CSeq(seq, method),
        "From": Address(frm[1], frm[0], frm[3], frm[2]),
        "To": Address(to[1], to[0], to[3], to[2]),
    }
    if via is not None:
        parsed["Via"] = [Via(via[1], via[2], via[3], via[4], via[0])]
    return msg


def parse_reference(data: bytes, *, stream: bool = False, max_size: int = MAX_MESSAGE_BYTES) -> Request | Response:
    """The complete parser in Python: the definition the compiled fast path is tested against."""
    if len(data) > max_size:
        raise SipParseError(f"message of {len(data)} bytes exceeds {max_size}", 513)
    if data[:2] == b"\r\n":
        data = data.lstrip(b"\r\n")  # CRLFs before a message are ignored (RFC 3261 7.5)
    head, body_at = _header_block(data)
    text = head.decode("utf-8", "surrogateescape")
    if "\n " in text or "\n\t" in text:
        text = _FOLD.sub(" ", text)
    first_end = text.find("\n")
    msg, pending = _start_line(text[:first_end].rstrip("\r"))
    core: dict[str, str] = {}
    try:
        pairs = _HEADER.findall(text, first_end + 1)
        try:
            headers = msg.headers = [(CANONICAL.get(n) or _canonical_slow(n), v.rstrip()) for n, v in pairs]
        except SipParseError:
            msg.headers = _salvage(pairs)
            raise
        if len(pairs) != text.count("\n") - 1:
            _raise_bad_header_line(text[first_end + 1 :])
        for key, value in headers:
            if key in _CORE:
                if key not in core:
                    core[key] = value
                elif key in _SINGLE:
                    raise SipParseError(f"more than one {key}")
        if pending is not None:
            raise pending
        _check(msg, core, data, body_at, stream)
    except SipParseError as exc:
        exc.partial = msg
        raise
    return msg


def _canonical_slow(name: str) -> str:
    name = name.rstrip(" \t")
    if not TOKEN.fullmatch(name):
        raise SipParseError(f"bad header name {name[:80]!r}")
    return CANONICAL.get(name.lower(), name)


def _salvage(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The well-formed header lines of a message that has a bad one, to answer it with a 400."""
    out = []
    for name, value in pairs:
        name = name.rstrip(" \t")
        if TOKEN.fullmatch(name):
            out.append((CANONICAL.get(name.lower(), name), value.rstrip()))
    return out


def _raise_bad_header_line(text: str) -> None:
    for line in text.split("\n"):
        if not _HEADER.fullmatch(line + "\n"):
            raise SipParseError(f"bad header line {line.rstrip()[:80]!r}")
    raise SipParseError("bad header block")


def _start_line(line: str) -> tuple[Request | Response, SipParseError | None]:
    """The message the start line begins, and the error to raise once its headers are read (so the
    error can carry them for the response), or an immediate error when nothing can be answered."""
    if line[:4].upper() == "SIP/":
        m = _STATUS.fullmatch(line)
        if not m:
            raise SipParseError(f"bad status line {line[:80]!r}")
        return Response(int(m.group(1)), m.group(2) or ""), None
    parts = line.split()
    if len(parts) < 3 or not TOKEN.fullmatch(parts[0]):
        raise SipParseError(f"bad request line {line[:80]!r}")
    method, version = parts[0], parts[-1]
    if version.upper() != "SIP/2.0":
        if not _VERSION.fullmatch(version):
            raise SipParseError(f"bad request line {line[:80]!r}")
        return Request(method, parts[1]), SipParseError(f"SIP version {version} not supported", 505)
    if len(parts) != 3:
        return Request(method, "sip:invalid"), SipParseError(f"bad request line {line[:80]!r}")
    if not _RURI.fullmatch(parts[1]):
        return Request(method, "sip:invalid"), SipParseError(f"bad Request-URI {parts[1][:80]!r}")
    return Request(method, parts[1]), None


def _check(msg: Request | Response, core: dict[str, str], data: bytes, body_at: int, stream: bool) -> None:
    """The checks every message must pass before it reaches a transaction (RFC 4475 cases)."""
    for name in _REQUIRED:
        if name not in core:
            raise SipParseError(f"missing {name}")
    parsed = msg._parsed
    cseq = parsed["CSeq"] = parse_cseq(core["CSeq"])
    parsed["From"] = parse_address(core["From"])
    parsed["To"] = parse_address(core["To"])
    top = core["Via"]
    parse_via(split_list(top)[0] if "," in top else top)
    call_id = core["Call-ID"]
    if not call_id or len(call_id.split()) != 1:
        raise SipParseError("bad Call-ID")
    if isinstance(msg, Request):
        if cseq.method != msg.method:
            raise SipParseError(f"CSeq method {cseq.method} does not match {msg.method}")
        if "Max-Forwards" in core:
            _bounded_int(core["Max-Forwards"], "Max-Forwards", 255)
    length_text = core.get("Content-Length")
    if length_text is None:
        if stream:
            raise SipParseError("missing Content-Length on a stream transport")
        msg.body = data[body_at:]
        return
    length = _bounded_int(length_text, "Content-Length", MAX_MESSAGE_BYTES)
    available = len(data) - body_at
    if length > available:
        raise SipParseError(f"Content-Length {length} exceeds the {available} bytes received")
    msg.body = data[body_at : body_at + length] if length < available else data[body_at:]


_ECHOED = ("From", "To", "Call-ID", "CSeq")  # what a response copies from its request after the Vias, in order


def build_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to `request` per RFC 3261 8.2.6: Via, From, To (tagged), Call-ID, CSeq copied."""
    copied: list[tuple[str, str]] = []
    echoed: dict[str, tuple[str, str]] = {}  # the first From, To, Call-ID and CSeq, found in the same pass
    for header in request.headers:
        name = header[0]
        if name == "Via":
            copied.append(header)
        elif name in _ECHOED and name not in echoed:
            echoed[name] = header
    copied += [echoed[name] for name in _ECHOED if name in echoed]
    response = Response(status, reason, copied, body)
    parsed, known = response._parsed, request._parsed
    for name in ("From", "To", "CSeq"):  # copied verbatim, so their parsed forms hold (Address is not mutated)
        if name in known:
            parsed[name] = known[name]
    if to_tag and status > 100:
        to = request.to
        if to.tag is None:
            tagged = to.with_tag(to_tag)
            response.set("To", str(tagged))
            parsed["To"] = tagged
    if status == 100 and "Timestamp" in request:
        response.add("Timestamp", request.get("Timestamp") or "")
    for name, value in headers:
        response.add(name, value)
    return response


def error_response(exc: SipParseError) -> Response | None:
    """The response a malformed request deserves, or None when it cannot be answered: a response, an
    ACK, or a request without the Via, Call-ID and CSeq a response must echo. Header values are copied
    as received, so a malformed From or CSeq still reaches the sender it came from."""
    request = exc.partial
    if not isinstance(request, Request) or request.method == "ACK":
        return None
    if any(request.get(name) is None for name in ("Via", "Call-ID", "CSeq")):
        return None
    reason = REASONS.get(exc.status, "Bad Request")
    detail = "".join(c if c.isprintable() and c.isascii() else "?" for c in exc.reason)[:120]
    return build_response(request, exc.status, f"{reason} ({detail})" if exc.status == 400 else reason)
