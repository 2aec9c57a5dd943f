"""SIP digest authentication (RFC 3261 section 22, RFC 7616, RFC 8760): parse, challenge, verify, answer.

Theory of operation. A server answers an unauthenticated request with 401/407 carrying one
`WWW-Authenticate`/`Proxy-Authenticate` challenge per algorithm, SHA-256 first and MD5 after it
(RFC 8760 section 2.4); the client picks the strongest it supports and repeats the request with
`Authorization`/`Proxy-Authorization` credentials whose `response` is
KD(H(A1), nonce:nc:cnonce:qop:H(A2)) (RFC 7616 section 3.4.1; without qop, the RFC 2069 form
KD(H(A1), nonce:H(A2))). A1 is username:realm:password, so a store may keep H(A1) ("HA1") instead of
the password; -sess algorithms fold nonce and cnonce into it (section 3.4.2). A2 is method:uri, plus
H(body) for qop=auth-int (section 3.4.3).

Nonces are stateless: base64url(issue time in ms, 8 random bytes, HMAC-SHA256(secret, time, salt,
realm)), so a nonce we did not issue is refused without a table, and an expired one whose digest was
right gets `stale=TRUE` so the client retries without asking its user (RFC 7616 section 3.3). Replays
of a live nonce are refused by remembering the highest nonce-count (nc) accepted per nonce (section
3.4.5); records expire with their nonce, and if the table ever fills, the oldest records are dropped
and every untracked nonce issued before them is treated as stale, so memory stays bounded without
letting a replay through.

Credentials without qop (RFC 2069 form) carry no nc, so a replay looks like a reuse: they are refused
(`UNSUPPORTED`; accepting them when we offered qop would let a man in the middle strip it, a downgrade)
unless `allow_no_qop=True`, an opt-in for old phones under which each nonce answers one request. Its
record then holds `_SINGLE_USE`, above any nc, and a second use (with or without qop) gets `STALE_NONCE`,
not `REPLAY`: a client reusing its last nonce gets a fresh one and retries without asking its user, and a
replayer gains nothing (one-time nonces, RFC 2617 section 4.5).

An unknown user costs the same work as a wrong password (a digest over a dummy secret is computed and
compared) and `AuthResult.public_reason` folds the two into one answer, so a caller that shows only the
public reason cannot be used to enumerate accounts; `reason` keeps the difference for logs.

Sans-IO: no clock (`now` is passed in, seconds on any clock the caller keeps consistent; use wall-clock
time if nonces must survive a restart), no sockets, no logging.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "HA1",
    "Algorithm",
    "AuthParseError",
    "AuthReason",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestClient",
    "DigestServer",
    "compute_ha1",
    "digest_response",
    "select_challenge",
    "select_challenges",
]


class AuthParseError(ValueError):
    """A challenge or credentials header value that is not valid Digest syntax (the peer's fault: 400)."""

    status_hint = 400


class Algorithm(Enum):
    """Digest algorithms we compute (RFC 7616 section 3.2); names compare case-insensitively."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @classmethod
    def from_name(cls, name: str | None) -> Algorithm | None:
        """The algorithm a header names (absent means MD5), or None when we do not support it."""
        if name is None:
            return cls.MD5
        return _ALGORITHMS_BY_NAME.get(name.lower())

    @property
    def session(self) -> bool:
        return self in (Algorithm.MD5_SESS, Algorithm.SHA256_SESS)

    @property
    def base(self) -> Algorithm:
        """The plain algorithm with the same hash (its HA1 is the one a -sess variant starts from)."""
        return {Algorithm.MD5_SESS: Algorithm.MD5, Algorithm.SHA256_SESS: Algorithm.SHA256}.get(self, self)

    def hash_hex(self, data: bytes) -> str:
        if self in (Algorithm.SHA256, Algorithm.SHA256_SESS):
            return hashlib.sha256(data).hexdigest()
        return hashlib.md5(data, usedforsecurity=False).hexdigest()


_ALGORITHMS_BY_NAME = {a.value.lower(): a for a in Algorithm}
# Client preference when several challenges are offered: stronger hash first, plain before -sess.
_PREFERENCE = (Algorithm.SHA256, Algorithm.SHA256_SESS, Algorithm.MD5, Algorithm.MD5_SESS)
_QOPS = ("auth", "auth-int")


class AuthReason(Enum):
    """Why a verification succeeded or failed (internal detail: log it, do not show it to the peer)."""

    OK = "ok"
    NO_CREDENTIALS = "no_credentials"  # no Digest credentials at all: send a challenge
    MALFORMED = "malformed"  # credentials present but unparseable: 400
    REALM_MISMATCH = "realm_mismatch"  # credentials for another realm: challenge for ours
    UNSUPPORTED = "unsupported"  # algorithm or qop we did not offer
    URI_MISMATCH = "uri_mismatch"  # `uri` is not the request-URI
    OPAQUE_MISMATCH = "opaque_mismatch"  # `opaque` not echoed as issued
    BAD_NONCE = "bad_nonce"  # a nonce we did not issue (forged, other secret or realm)
    UNKNOWN_USER = "unknown_user"
    BAD_RESPONSE = "bad_response"  # wrong password (or tampered request)
    STALE_NONCE = "stale_nonce"  # right digest, expired nonce: re-challenge with stale=TRUE
    REPLAY = "replay"  # nonce-count not above the last one accepted for this nonce


_FAILURES = frozenset(
    (
        AuthReason.UNKNOWN_USER,
        AuthReason.BAD_RESPONSE,
        AuthReason.BAD_NONCE,
        AuthReason.REPLAY,
        AuthReason.URI_MISMATCH,
        AuthReason.OPAQUE_MISMATCH,
    )
)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of `DigestServer.verify`."""

    reason: AuthReason
    username: str | None = None
    stale: bool = False
    algorithm: Algorithm | None = None

    @property
    def ok(self) -> bool:
        return self.reason is AuthReason.OK

    @property
    def failed(self) -> bool:
        """Credentials for our realm that did not check out: what a password guesser produces (counted
        towards a ban), unlike no credentials, a stale nonce or another realm's, which honest phones send."""
        return self.reason in _FAILURES

    @property
    def public_reason(self) -> AuthReason:
        """The reason safe to reveal: an unknown user looks exactly like a wrong password."""
        if self.reason is AuthReason.UNKNOWN_USER:
            return AuthReason.BAD_RESPONSE
        return self.reason


@dataclass(frozen=True, slots=True)
class HA1:
    """A stored H(username:realm:password), lower-case hex, for the algorithm it was asked for."""

    hex: str


# lookup(username, algorithm) -> clear password, stored HA1 for that algorithm, or None if the user is unknown.
# The algorithm passed is always a plain one (MD5 or SHA-256): -sess variants start from the same HA1.
PasswordLookup = Callable[[str, Algorithm], "str | HA1 | None"]


# ---------------------------------------------------------------------------------------------------
# Header syntax (RFC 3261 section 25.1 / RFC 7616 section 3.3-3.4): scheme 1*LWS auth-param *(, auth-param)

_WS = " \t\r\n"
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_NC_RE = re.compile(r"[0-9a-fA-F]{8}")


def _is_ctl(c: str) -> bool:
    return (c < " " and c != "\t") or c == "\x7f"


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


def _read_token(s: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(s) and s[i] in _TOKEN_CHARS:
        i += 1
    return s[start:i], i


def _read_quoted(s: str, i: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; return (unescaped text, index after it)."""
    out: list[str] = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= len(s) or s[i + 1] in "\r\n":
                raise AuthParseError("bad escape in quoted string")
            c = s[i + 1]
            i += 1
        elif _is_ctl(c):
            raise AuthParseError("control character in quoted string")
        out.append(c)
        i += 1
    raise AuthParseError("unterminated quoted string")


def _parse_digest(value: str) -> dict[str, str]:
    """Split a Digest header value into lower-cased parameter names and unquoted values."""
    if not isinstance(value, str):
        raise AuthParseError("header value must be text")
    i = _skip_ws(value, 0)
    scheme, i = _read_token(value, i)
    if scheme.lower() != "digest":
        raise AuthParseError("not a Digest header")
    if i < len(value) and value[i] not in _WS:
        raise AuthParseError("no space after scheme")
    params: dict[str, str] = {}
    n = len(value)
    while True:
        while i < n and (value[i] in _WS or value[i] == ","):
            i += 1
        if i >= n:
            return params
        name, i = _read_token(value, i)
        if not name:
            raise AuthParseError(f"bad character {value[i]!r} where a parameter name belongs")
        i = _skip_ws(value, i)
        if i >= n or value[i] != "=":
            raise AuthParseError(f"parameter {name!r} has no value")
        i = _skip_ws(value, i + 1)
        if i < n and value[i] == '"':
            text, i = _read_quoted(value, i)
        else:
            start = i
            while i < n and value[i] not in _WS and value[i] not in ',"':
                if _is_ctl(value[i]):
                    raise AuthParseError("control character in value")
                i += 1
            text = value[start:i]
            if not text:
                raise AuthParseError(f"parameter {name!r} has an empty value")
        i = _skip_ws(value, i)
        if i < n and value[i] != ",":
            raise AuthParseError("parameters must be separated by commas")
        key = name.lower()
        if key in params:
            raise AuthParseError(f"parameter {key!r} repeated")
        params[key] = text


def _quote(text: str) -> str:
    if any(_is_ctl(c) for c in text):
        raise ValueError("control character in a quoted header value")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _token(text: str) -> str:
    if not text or any(c in _WS or c in ',"' or _is_ctl(c) for c in text):
        raise ValueError(f"{text!r} cannot be sent unquoted")
    return text


@dataclass(frozen=True, slots=True)
class Challenge:
    """A `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge."""

    realm: str
    nonce: str
    algorithm: str | None = None  # as sent; None means absent (MD5)
    qop: tuple[str, ...] = ()  # offered qop values, lower-case; empty for an RFC 2069 challenge
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None

    @property
    def supported_algorithm(self) -> Algorithm | None:
        return Algorithm.from_name(self.algorithm)

    @classmethod
    def parse(cls, value: str) -> Challenge:
        p = _parse_digest(value)
        if "realm" not in p or "nonce" not in p:
            raise AuthParseError("challenge lacks realm or nonce")
        qop = tuple(q.strip().lower() for q in p["qop"].split(",") if q.strip()) if "qop" in p else ()
        return cls(
            realm=p["realm"],
            nonce=p["nonce"],
            algorithm=p.get("algorithm"),
            qop=qop,
            opaque=p.get("opaque"),
            stale=p.get("stale", "").lower() == "true",
            domain=p.get("domain"),
        )

    def serialize(self) -> str:
        parts = [f"realm={_quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        parts.append(f"nonce={_quote(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=TRUE")
        if self.algorithm is not None:
            parts.append(f"algorithm={_token(self.algorithm)}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(_token(q) for q in self.qop))}")
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An `Authorization` / `Proxy-Authorization` Digest answer; values exactly as sent (they are hashed)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None  # 8 hex digits

    @classmethod
    def parse(cls, value: str) -> Credentials:
        p = _parse_digest(value)
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
        if missing:
            raise AuthParseError(f"credentials lack {', '.join(missing)}")
        if "qop" in p and ("cnonce" not in p or "nc" not in p):
            raise AuthParseError("qop without cnonce and nc")
        if "nc" in p and not _NC_RE.fullmatch(p["nc"]):
            raise AuthParseError("nc must be 8 hex digits")
        return cls(
            username=p["username"],
            realm=p["realm"],
            nonce=p["nonce"],
            uri=p["uri"],
            response=p["response"],
            algorithm=p.get("algorithm"),
            cnonce=p.get("cnonce"),
            opaque=p.get("opaque"),
            qop=p.get("qop"),
            nc=p.get("nc"),
        )

    def serialize(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
        ]
        if self.algorithm is not None:
            parts.append(f"algorithm={_token(self.algorithm)}")
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={_token(self.qop)}")
        if self.nc is not None:
            parts.append(f"nc={_token(self.nc)}")
        return "Digest " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------------
# The digest itself (RFC 7616 section 3.4)


def _enc(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def compute_ha1(username: str, realm: str, password: str, algorithm: Algorithm) -> str:
    """H(username:realm:password): what a store may keep instead of the password (same for -sess)."""
    return algorithm.hash_hex(_enc(f"{username}:{realm}:{password}"))


def digest_response(
    algorithm: Algorithm,
    ha1: str,
    *,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The `response` value for base HA1 `ha1` (RFC 7616 section 3.4.1; RFC 2069 form when qop is None)."""
    h = algorithm.hash_hex
    if algorithm.session:
        ha1 = h(_enc(f"{ha1}:{nonce}:{cnonce or ''}"))
    a2 = f"{method}:{uri}"
    if qop is not None and qop.lower() == "auth-int":
        a2 += ":" + h(body)
    ha2 = h(_enc(a2))
    if qop is None:
        return h(_enc(f"{ha1}:{nonce}:{ha2}"))
    return h(_enc(f"{ha1}:{nonce}:{nc or ''}:{cnonce or ''}:{qop}:{ha2}"))


# ---------------------------------------------------------------------------------------------------
# Server side

_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of 8 + 8 + 16 bytes, unpadded
_NONCE_TAG = b"softswitch digest nonce\x00"
_SINGLE_USE = 1 << 32  # the nc recorded for a nonce used without qop: above every 8-hex-digit nc


class DigestServer:
    """Issues challenges and verifies credentials for one realm; holds only the nonce-count table.

    `allow_no_qop` accepts RFC 2069 answers (no qop, so no nc), each nonce once; off by default, and
    required when `qop` is empty."""

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        nonce_lifetime: float = 300.0,
        algorithms: Sequence[Algorithm] = (Algorithm.SHA256, Algorithm.MD5),
        qop: Sequence[str] = ("auth",),
        allow_no_qop: bool = False,
        opaque: str | None = None,
        max_tracked_nonces: int = 65536,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        if not algorithms or not all(isinstance(a, Algorithm) for a in algorithms):
            raise ValueError("algorithms must be a non-empty sequence of Algorithm")
        if any(q not in _QOPS for q in qop):
            raise ValueError(f"qop values must be among {_QOPS}")
        if not qop and not allow_no_qop:
            raise ValueError("offering no qop requires allow_no_qop")
        if nonce_lifetime <= 0 or max_tracked_nonces < 1:
            raise ValueError("nonce_lifetime and max_tracked_nonces must be positive")
        self.realm = realm
        self.nonce_lifetime = float(nonce_lifetime)
        self.algorithms = tuple(algorithms)
        self.qop = tuple(qop)
        self.allow_no_qop = allow_no_qop
        self.opaque = opaque
        self.max_tracked_nonces = max_tracked_nonces
        self._secret = bytes(secret)
        self._random = random_bytes
        self._dummy_password = secrets.token_hex(16)
        self._nc: dict[str, tuple[int, float]] = {}  # nonce -> (highest nc accepted, issued at)
        self._evicted_upto = float("-inf")  # untracked nonces issued at or before this may have been seen

    @property
    def tracked_nonces(self) -> int:
        return len(self._nc)

    def _mac(self, stamp: bytes, salt: bytes) -> bytes:
        msg = _NONCE_TAG + stamp + salt + _enc(self.realm)
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:16]

    def new_nonce(self, now: float) -> str:
        stamp = struct.pack(">q", int(now * 1000))
        salt = self._random(8)
        return base64.urlsafe_b64encode(stamp + salt + self._mac(stamp, salt)).rstrip(b"=").decode("ascii")

    def _nonce_issued_at(self, nonce: str) -> float | None:
        """Issue time of a nonce we minted, or None when we did not mint it."""
        if not _NONCE_RE.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce + "=")
        stamp, salt, mac = raw[:8], raw[8:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(stamp, salt)):
            return None
        return struct.unpack(">q", stamp)[0] / 1000.0

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """Header values for a 401/407: one per algorithm, in the configured order, sharing one nonce."""
        nonce = self.new_nonce(now)
        return [
            Challenge(
                realm=self.realm, nonce=nonce, algorithm=a.value, qop=self.qop, opaque=self.opaque, stale=stale
            ).serialize()
            for a in self.algorithms
        ]

    def _pick(self, values: Sequence[str]) -> tuple[Credentials | None, AuthResult | None]:
        """Choose the credentials meant for our realm among the request's headers."""
        first_other: Credentials | None = None
        malformed = False
        for value in values:
            if value.lstrip(_WS)[:6].lower() != "digest":
                continue
            try:
                creds = Credentials.parse(value)
            except AuthParseError:
                malformed = True
                continue
            if creds.realm == self.realm:
                return creds, None
            first_other = first_other or creds
        if first_other is not None:
            return None, AuthResult(AuthReason.REALM_MISMATCH, first_other.username)
        return None, AuthResult(AuthReason.MALFORMED if malformed else AuthReason.NO_CREDENTIALS)

    def verify(
        self,
        method: str,
        credentials: str | Sequence[str] | None,
        request_uri: str,
        lookup: PasswordLookup,
        now: float,
        *,
        body: bytes = b"",
    ) -> AuthResult:
        """Check the request's Authorization value(s) against our realm; never raises on peer input."""
        values = [] if credentials is None else [credentials] if isinstance(credentials, str) else list(credentials)
        creds, failure = self._pick(values)
        if creds is None:
            assert failure is not None
            return failure
        user = creds.username
        algorithm = Algorithm.from_name(creds.algorithm)
        if algorithm is None or algorithm not in self.algorithms:
            return AuthResult(AuthReason.UNSUPPORTED, user)
        qop = creds.qop.lower() if creds.qop is not None else None
        if (qop is None and not self.allow_no_qop) or (qop is not None and qop not in self.qop):
            return AuthResult(AuthReason.UNSUPPORTED, user, algorithm=algorithm)
        if creds.uri.strip() != request_uri.strip():
            return AuthResult(AuthReason.URI_MISMATCH, user, algorithm=algorithm)
        if self.opaque is not None and creds.opaque != self.opaque:
            return AuthResult(AuthReason.OPAQUE_MISMATCH, user, algorithm=algorithm)
        issued_at = self._nonce_issued_at(creds.nonce)
        if issued_at is None:
            return AuthResult(AuthReason.BAD_NONCE, user, algorithm=algorithm)

        # Same work whether or not the user exists: a digest over a dummy secret for unknown users.
        secret = lookup(user, algorithm.base)
        known = secret is not None
        # An HA1 needs no hashing, a password or an unknown user one: hashed anyway, so every case costs the same
        ha1 = compute_ha1(user, self.realm, secret if isinstance(secret, str) else self._dummy_password, algorithm)
        if isinstance(secret, HA1):
            ha1 = secret.hex.lower()
        expected = digest_response(
            algorithm,
            ha1,
            nonce=creds.nonce,
            method=method,
            uri=creds.uri,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
            body=body,
        )
        matched = hmac.compare_digest(_enc(expected), _enc(creds.response.lower()))
        if not known:
            return AuthResult(AuthReason.UNKNOWN_USER, user, algorithm=algorithm)
        if not matched:
            return AuthResult(AuthReason.BAD_RESPONSE, user, algorithm=algorithm)

        stale = AuthResult(AuthReason.STALE_NONCE, user, stale=True, algorithm=algorithm)
        if abs(now - issued_at) > self.nonce_lifetime:
            return stale
        record = self._nc.get(creds.nonce)
        if record is None and issued_at <= self._evicted_upto:
            return stale
        if qop is None:
            if record is not None:
                return stale  # RFC 2069 form: one request per nonce, then a fresh one (module docstring)
            nc = _SINGLE_USE
        else:
            assert creds.nc is not None
            nc = int(creds.nc, 16)
            if nc <= (record[0] if record is not None else 0):
                return AuthResult(AuthReason.REPLAY, user, algorithm=algorithm)
        if record is None and len(self._nc) >= self.max_tracked_nonces:
            self._make_room(now)
        self._nc[creds.nonce] = (nc, issued_at)
        return AuthResult(AuthReason.OK, user, algorithm=algorithm)

    def prune(self, now: float) -> int:
        """Forget nonce-count records of nonces that have expired; return how many were dropped."""
        dead = [n for n, (_, issued) in self._nc.items() if abs(now - issued) > self.nonce_lifetime]
        for n in dead:
            del self._nc[n]
        return len(dead)

    def _make_room(self, now: float) -> None:
        self.prune(now)
        if len(self._nc) < self.max_tracked_nonces:
            return
        by_age = sorted(self._nc.items(), key=lambda item: item[1][1])
        evict = by_age[: max(1, len(by_age) // 4)]
        for n, _ in evict:
            del self._nc[n]
        self._evicted_upto = max(self._evicted_upto, evict[-1][1][1])


# ---------------------------------------------------------------------------------------------------
# Client side


def _qop_for(challenge: Challenge) -> str | None:
    if not challenge.qop:
        return None
    for q in _QOPS:
        if q in challenge.qop:
            return q
    raise ValueError(f"no supported qop among {challenge.qop}")


def _answerable(values: Iterable[str]) -> Iterable[tuple[int, Challenge]]:
    """(preference rank, challenge) for every Digest challenge among header values that we can answer."""
    for value in values:
        try:
            challenge = Challenge.parse(value)
        except AuthParseError:
            continue
        algorithm = challenge.supported_algorithm
        if algorithm is None or (challenge.qop and not any(q in _QOPS for q in challenge.qop)):
            continue
        yield _PREFERENCE.index(algorithm), challenge


def select_challenges(values: Iterable[str]) -> dict[str, Challenge]:
    """The best challenge we can answer for each realm among header values (SHA-256 over MD5), by realm.

    A 401/407 may challenge for several realms: a forking proxy gathers its branches' challenges, and two
    proxies on the path may each want credentials (RFC 3261 22.3). The retried request carries one
    Authorization / Proxy-Authorization per realm; realms we can answer none of are left out."""
    best: dict[str, tuple[int, Challenge]] = {}
    for rank, challenge in _answerable(values):
        held = best.get(challenge.realm)
        if held is None or rank < held[0]:
            best[challenge.realm] = (rank, challenge)
    return {realm: challenge for realm, (_, challenge) in best.items()}


def select_challenge(values: Iterable[str]) -> Challenge | None:
    """The best Digest challenge we can answer among header values (SHA-256 over MD5), or None.

    For a response that challenges for one realm (our registrar, one trunk). With challenges from several
    realms it still returns one (the best, earliest on a tie) and the request would fail at the others:
    answer each realm with `select_challenges`."""
    best = min(_answerable(values), key=lambda ranked: ranked[0], default=None)
    return None if best is None else best[1]


class DigestClient:
    """Answers challenges for one account, counting nc per (realm, nonce) across requests."""

    def __init__(
        self, username: str, password: str, *, random_bytes: Callable[[int], bytes] = secrets.token_bytes
    ) -> None:
        self.username = username
        self.password = password
        self._random = random_bytes
        self._nc: dict[tuple[str, str], int] = {}

    _MAX_NONCES = 16

    def authorize(self, challenge: Challenge | str, method: str, uri: str, body: bytes = b"") -> str:
        """The Authorization header value answering `challenge` for this request.

        qop=auth is chosen whenever offered; `body` matters only when the server insists on auth-int.
        Raises ValueError (or AuthParseError for unparseable text) for a challenge we cannot answer.
        """
        if isinstance(challenge, str):
            challenge = Challenge.parse(challenge)
        algorithm = challenge.supported_algorithm
        if algorithm is None:
            raise ValueError(f"unsupported digest algorithm {challenge.algorithm!r}")
        qop = _qop_for(challenge)
        nc: str | None = None
        cnonce: str | None = None
        if qop is not None or algorithm.session:
            cnonce = base64.urlsafe_b64encode(self._random(16)).rstrip(b"=").decode("ascii")
        if qop is not None:
            key = (challenge.realm, challenge.nonce)
            count = self._nc.pop(key, 0) + 1
            self._nc[key] = count  # re-inserted: most recently used last
            while len(self._nc) > self._MAX_NONCES:
                del self._nc[next(iter(self._nc))]
            nc = f"{count:08x}"
        ha1 = compute_ha1(self.username, challenge.realm, self.password, algorithm)
        response = digest_response(
            algorithm, ha1, nonce=challenge.nonce, method=method, uri=uri, qop=qop, nc=nc, cnonce=cnonce, body=body
        )
        return Credentials(
            username=self.username,
            realm=challenge.realm,
            nonce=challenge.nonce,
            uri=uri,
            response=response,
            algorithm=challenge.algorithm,
            cnonce=cnonce,
            opaque=challenge.opaque,
            qop=qop,
            nc=nc,
        ).serialize()


def answer_challenge(response, client: DigestClient, method: str, uri: str) -> tuple[str, str] | None:
    """The header answering a 401 (Authorization) or 407 (Proxy-Authorization) to our request, as
    (name, value), or None when none of its challenges can be answered (RFC 3261 22.2, 22.3)."""
    proxy = response.status == 407
    challenge = select_challenge(response.get_all("Proxy-Authenticate" if proxy else "WWW-Authenticate"))
    if challenge is None:
        return None
    return ("Proxy-Authorization" if proxy else "Authorization"), client.authorize(challenge, method, uri)
