"""Header names and the structured header values: parameters, name-addr, Via, CSeq (RFC 3261 20, 25).

Values stay text in a message; these parsers turn the ones the core needs into objects and back.
Every parser raises SipParseError (and nothing else) on malformed text. A SIP DIGIT is ASCII 0-9 and LWS is
ASCII white space (RFC 3261 25.1): the number patterns say [0-9] and use re.ASCII, because in a str pattern
the digit class also matches other scripts' digits (which int() then reads: Arabic-Indic one is 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import msgspec

from softswitch.sip.errors import SipParseError
from softswitch.sip.uri import SipUri, Uri, parse_uri

TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN = re.compile(f"[{TOKEN_CHARS}]+")
_QUOTED = r'"(?:[^"\\]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'
_PARAM = re.compile(rf"\s*;\s*([{TOKEN_CHARS}]*)(?:\s*=\s*({_QUOTED}|\[[0-9A-Fa-f:.]+\]|[{TOKEN_CHARS}:]+))?\s*", re.S)
_DISPLAY_TOKENS = re.compile(rf"[{TOKEN_CHARS}]+(?:\s+[{TOKEN_CHARS}]+)*")
_NAME_ADDR = re.compile(rf"\s*(?:({_QUOTED})\s*|([^\"<]*?)\s*)<\s*([^<>\s]*)\s*>\s*(.*)", re.S)
_VIA = re.compile(
    rf"\s*([{TOKEN_CHARS}]+)\s*/\s*([{TOKEN_CHARS}]+)\s*/\s*([{TOKEN_CHARS}]+)\s+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:\s*:\s*([0-9]{1,5}))?(.*)",
    re.S | re.ASCII,
)
_URI_START = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:\S")
_CSEQ = re.compile(rf"\s*([0-9]{{1,10}})\s+([{TOKEN_CHARS}]+)\s*", re.ASCII)
_ESCAPED = re.compile(r"\\(.)", re.S)  # a quoted-pair

# Canonical names; compact forms (RFC 3261 7.3.3 and later RFCs) map to their long names.
_NAMES = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "MIME-Version",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
]
_COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "f": "From",
    "t": "To",
    "v": "Via",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "o": "Event",
    "e": "Content-Encoding",
    "r": "Refer-To",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "b": "Referred-By",
    "y": "Identity",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "n": "Identity-Info",
}
CANONICAL: dict[str, str] = {}
for _name in _NAMES:
    CANONICAL[_name] = CANONICAL[_name.lower()] = _name
for _short, _name in _COMPACT.items():
    CANONICAL[_short] = CANONICAL[_short.upper()] = _name

# Headers whose grammar is a comma-separated list, so several values may share one line.
LIST_HEADERS = frozenset(
    [
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "In-Reply-To",
        "P-Asserted-Identity",
        "Path",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Require",
        "Route",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    ]
)


def canonical(name: str) -> str:
    """The canonical spelling of a header name (compact forms expanded); unknown names unchanged."""
    return CANONICAL.get(name) or CANONICAL.get(name.lower()) or name


def split_list(value: str) -> list[str]:
    """Split a list header's value at commas outside quotes and angle brackets."""
    if "," not in value:
        return [value.strip()]
    out, start, quoted, angle, i = [], 0, False, False, 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            angle = True
        elif c == ">":
            angle = False
        elif c == "," and not angle:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    if quoted:
        raise SipParseError("unbalanced quotes in header value")
    out.append(value[start:].strip())
    return out


def unquote(text: str) -> str:
    """`"a \\"b\\""` -> `a "b"`; text that is not quoted is returned as it is."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        return _ESCAPED.sub(r"\1", inner) if "\\" in inner else inner
    return text


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text: str) -> dict[str, str | None]:
    """`;a=b ; c ;d="x y"` -> ordered {name (lower-case): value as written or None}."""
    params: dict[str, str | None] = {}
    pos, n = 0, len(text)
    while pos < n:
        m = _PARAM.match(text, pos)
        if not m or m.end() == pos:
            raise SipParseError(f"bad parameters {text[:80]!r}")
        if not m.group(1):
            raise SipParseError(f"empty parameter in {text[:80]!r}")
        params[m.group(1).lower()] = m.group(2)
        pos = m.end()
    return params


def format_params(params: dict[str, str | None]) -> str:
    out = ""
    for k, v in params.items():
        out += f";{k}" if v is None else f";{k}={v}"
    return out


class Address:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route, Refer-To...

    The URI is parsed on first use: most messages pass through without anyone reading From's URI.
    """

    __slots__ = ("_uri", "angle", "display", "params", "uri_text")

    def __init__(
        self,
        uri: Uri | str,
        display: str | None = None,
        params: dict[str, str | None] | None = None,
        angle: bool = True,
    ):
        self.uri_text = uri if isinstance(uri, str) else str(uri)
        self._uri = None if isinstance(uri, str) else uri
        self.display = display
        self.params = {} if params is None else params
        self.angle = angle

    @property
    def uri(self) -> Uri:
        if self._uri is None:
            self._uri = parse_uri(self.uri_text)
        return self._uri

    @uri.setter
    def uri(self, value: Uri) -> None:
        self._uri, self.uri_text = value, str(value)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> Address:
        return Address(self._uri or self.uri_text, self.display, {**self.params, "tag": tag}, self.angle)

    @property
    def sip_uri(self) -> SipUri:
        uri = self.uri
        if not isinstance(uri, SipUri):
            raise SipParseError(f"expected a sip or sips URI, got {uri}")
        return uri

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Address):
            return NotImplemented
        return (self.uri, self.display, self.params) == (other.uri, other.display, other.params)

    def __repr__(self) -> str:
        return f"Address({str(self)!r})"

    def __str__(self) -> str:
        uri = self.uri_text
        if self.display is not None:
            head = f"{quote(self.display)} <{uri}>"
        elif self.angle or ";" in uri or "?" in uri or "," in uri:
            head = f"<{uri}>"
        else:
            head = uri
        return head + format_params(self.params)


def parse_address(text: str) -> Address:
    """Parse a name-addr (`"Bob" <sip:b@h>;tag=1`) or addr-spec (`sip:b@h;tag=1`).

    The URI's scheme is checked here; the rest of the URI when `.uri` is first read."""
    m = _NAME_ADDR.fullmatch(text)
    if m:
        quoted, bare, uri_text, rest = m.groups()
        if quoted is not None:
            display: str | None = unquote(quoted)
        elif bare:
            if not _DISPLAY_TOKENS.fullmatch(bare):
                raise SipParseError(f"bad display name {bare[:80]!r}")
            display = bare
        else:
            display = None
        if not _URI_START.match(uri_text):
            raise SipParseError(f"bad URI {uri_text[:80]!r}")
        return Address(uri_text, display, parse_params(rest) if rest else {}, True)
    # addr-spec: the URI ends at the first ";" (what follows are the header's parameters, RFC 3261 20.10,
    # whose values may be quoted strings: `sip:a@h;x="1 2"`)
    uri_text, semi, rest = text.strip().partition(";")
    uri_text = uri_text.rstrip()
    if not uri_text or '"' in uri_text or "<" in uri_text or ">" in uri_text:
        raise SipParseError(f"bad address {text[:80]!r}")
    if not _URI_START.match(uri_text):
        raise SipParseError(f"bad URI {uri_text[:80]!r}")
    return Address(uri_text, None, parse_params(semi + rest) if semi else {}, False)


@dataclass(slots=True)
class Via:
    """One Via entry (RFC 3261 20.42, rport from RFC 3581)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value else None

    @property
    def wants_rport(self) -> bool:
        return "rport" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    m = _VIA.fullmatch(text)
    if not m:
        raise SipParseError(f"bad Via {text[:80]!r}")
    name, version, transport, host, port_text, rest = m.groups()
    port = int(port_text) if port_text else None
    if port is not None and not 0 < port <= 65535:
        raise SipParseError(f"bad port in Via {text[:80]!r}")
    params = parse_params(rest) if rest.strip() else {}
    rport = params.get("rport")
    if rport is not None and not (rport.isdigit() and 0 < int(rport) <= 65535):
        raise SipParseError(f"bad rport in Via {text[:80]!r}")
    return Via(transport.upper(), host, port, params, f"{name.upper()}/{version}")


class CSeq(msgspec.Struct, frozen=True):
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(text: str) -> CSeq:
    m = _CSEQ.fullmatch(text)
    if not m:
        raise SipParseError(f"bad CSeq {text[:80]!r}")
    seq = int(m.group(1))
    if seq >= 2**31:
        raise SipParseError(f"CSeq number {seq} is not below 2**31")
    return CSeq(seq, m.group(2))
