"""SIP, SIPS and tel URIs (RFC 3261 19.1, RFC 3966), parsed, serialised and compared per 19.1.4.

A URI keeps the text it was parsed from for serialisation, so what we forward is byte-identical to what
we received unless we changed it. Comparison follows 19.1.4: user and password case-sensitive after
unescaping, host case-insensitive, an omitted port differs from an explicit default port, and the
user/ttl/method/maddr/transport parameters must agree when either side has them.
Unknown schemes parse into `AbsoluteUri`, which keeps its text and compares as a string.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from softswitch.sip.errors import SipParseError

# Characters a sip/sips URI may hold outside the host (RFC 3261 25.1, with '%' for escapes).
_URI_CHARS = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/:%\[\]@]*")
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?")
_HOSTNAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_ESCAPE_OK = re.compile(r"%(?![0-9A-Fa-f]{2})")
_MUST_MATCH = ("user", "ttl", "method", "maddr", "transport")


def _unescape(text: str) -> str:
    return unquote(text, errors="surrogateescape") if "%" in text else text


def _params(text: str, what: str) -> dict[str, str | None]:
    """`;a=b;c` (without the leading ';') -> {'a': 'b', 'c': None}; names lower-cased."""
    out: dict[str, str | None] = {}
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not name:
            raise SipParseError(f"empty parameter in {what}")
        out[name.lower()] = value if eq else None
    return out


@dataclass(slots=True, eq=False)
class SipUri:
    """`sip:` or `sips:` URI. `params` keep their order; names are lower-case, values as written."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def transport(self) -> str:
        """Transport the URI asks for (lower-case), defaulting as RFC 3263 does without DNS."""
        value = self.params.get("transport")
        if value:
            return value.lower()
        return "tls" if self.secure else "udp"

    @property
    def host_is_ipv6(self) -> bool:
        return self.host.startswith("[")

    def with_params(self, **params: str | None) -> SipUri:
        """A copy with parameters added or replaced."""
        return SipUri(
            self.scheme, self.user, self.password, self.host, self.port, {**self.params, **params}, dict(self.headers)
        )

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += [":", str(self.port)]
        for name, value in self.params.items():
            out += [";", name] if value is None else [";", name, "=", value]
        if self.headers:
            out += ["?", "&".join(f"{k}={v}" for k, v in self.headers.items())]
        return "".join(out)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipUri):
            return NotImplemented
        if (self.scheme, self.host.lower(), self.port) != (other.scheme, other.host.lower(), other.port):
            return False
        if _opt_unescape(self.user) != _opt_unescape(other.user):
            return False
        if _opt_unescape(self.password) != _opt_unescape(other.password):
            return False
        for name in _MUST_MATCH:
            a, b = self.params.get(name), other.params.get(name)
            if (name in self.params) != (name in other.params) or _pnorm(a) != _pnorm(b):
                return False
        for name in self.params.keys() & other.params.keys():
            if _pnorm(self.params[name]) != _pnorm(other.params[name]):
                return False
        return _hnorm(self.headers) == _hnorm(other.headers)

    def __hash__(self) -> int:
        return hash((self.scheme, self.host.lower(), self.port, _opt_unescape(self.user)))


def _opt_unescape(text: str | None) -> str | None:
    return None if text is None else _unescape(text)


def _pnorm(value: str | None) -> str | None:
    return None if value is None else _unescape(value).lower()


def _hnorm(headers: dict[str, str]) -> dict[str, str]:
    return {_unescape(k).lower(): _unescape(v) for k, v in headers.items()}


@dataclass(slots=True, eq=False)
class TelUri:
    """`tel:` URI (RFC 3966): a global (+E.164) or local number with parameters."""

    number: str
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    @property
    def digits(self) -> str:
        """The number without visual separators (RFC 3966 5.1.1)."""
        return re.sub(r"[\-.()]", "", self.number)

    def __str__(self) -> str:
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"tel:{self.number}{params}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelUri):
            return NotImplemented
        return self.digits == other.digits and _hnorm_p(self.params) == _hnorm_p(other.params)

    def __hash__(self) -> int:
        return hash(self.digits)


def _hnorm_p(params: dict[str, str | None]) -> dict[str, str | None]:
    return {k: _pnorm(v) for k, v in params.items()}


@dataclass(slots=True, frozen=True)
class AbsoluteUri:
    """A URI of a scheme we do not interpret (http:, urn:, isbn: ...), kept verbatim."""

    scheme: str
    text: str

    def __str__(self) -> str:
        return self.text


Uri = SipUri | TelUri | AbsoluteUri


# sip/sips URIs already read, as the immutable parts a SipUri is made from: a switch reads the same few
# URIs (its own, its trunks', its users') in every call, and checking one with its four regexes cost about
# 10,000 instructions, six times a call. Bounded: emptied when full (a flood of distinct URIs costs what
# it did before the cache).
_KNOWN: dict[str, tuple] = {}
_KNOWN_MAX = 4096


def parse_uri(text: str) -> Uri:
    """Parse any URI; sip/sips/tel are interpreted, other schemes kept opaque."""
    parts = _KNOWN.get(text)
    if parts is not None:
        scheme, user, password, host, port, params, headers = parts
        return SipUri(scheme, user, password, host, port, dict(params), dict(headers))
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme) or not rest:
        raise SipParseError(f"bad URI {text[:80]!r}")
    low = scheme.lower()
    if low in ("sip", "sips"):
        uri = _parse_sip(low, rest, text)
        if len(_KNOWN) >= _KNOWN_MAX:
            _KNOWN.clear()
        params, headers = tuple(uri.params.items()), tuple(uri.headers.items())
        _KNOWN[text] = (low, uri.user, uri.password, uri.host, uri.port, params, headers)
        return uri
    if low == "tel":
        return _parse_tel(rest, text)
    if any(c.isspace() for c in rest) or "<" in rest or ">" in rest:
        raise SipParseError(f"bad URI {text[:80]!r}")
    return AbsoluteUri(low, text)


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    if not _URI_CHARS.fullmatch(rest):
        raise SipParseError(f"bad character in URI {text[:80]!r}")
    if _ESCAPE_OK.search(rest):
        raise SipParseError(f"bad escape in URI {text[:80]!r}")
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not user:
            raise SipParseError(f"empty user in URI {text[:80]!r}")
    hostport, q, headers_text = rest.partition("?")
    hostport, semi, params_text = hostport.partition(";")
    m = _HOST.fullmatch(hostport)
    if not m:
        raise SipParseError(f"bad host in URI {text[:80]!r}")
    host, port_text = m.group(1), m.group(2)
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise SipParseError(f"bad IPv6 reference in URI {text[:80]!r}") from None
    elif not (_is_ipv4(host) or _HOSTNAME.fullmatch(host)):
        raise SipParseError(f"bad host in URI {text[:80]!r}")
    port = None
    if port_text is not None:
        port = int(port_text)
        if not 0 < port <= 65535:
            raise SipParseError(f"bad port in URI {text[:80]!r}")
    params = _params(params_text, "URI") if semi else {}
    headers: dict[str, str] = {}
    if q:
        for item in headers_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise SipParseError(f"bad header in URI {text[:80]!r}")
            headers[name] = value
    return SipUri(scheme, user, password, host, port, params, headers)


def _is_ipv4(host: str) -> bool:
    parts = host.split(".")
    if len(parts) != 4:
        return False
    for p in parts:  # noqa: SIM110 - a loop, not all(generator): this runs for every URI parsed
        if not p.isdigit() or len(p) > 3 or int(p) > 255:
            return False
    return True


def _parse_tel(rest: str, text: str) -> TelUri:
    number, semi, params_text = rest.partition(";")
    if not re.fullmatch(r"\+?[0-9A-Fa-f*#\-.()pw]+", number) or not re.search(r"[0-9A-Fa-f*#]", number):
        raise SipParseError(f"bad tel URI {text[:80]!r}")
    return TelUri(number, _params(params_text, "tel URI") if semi else {})
