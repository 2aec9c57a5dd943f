"""Configuration: TOML read into msgspec Structs, with errors that name file, line and field.

The Structs are the single source of truth for keys, types and defaults (an almost empty file runs).
Validation has two steps: msgspec checks shape and types, then `_check` applies the rules msgspec
cannot express (addresses, port ranges, regexes, cross references, unique names). Every error is
reported as `FILE:LINE: field.path: what is wrong`; the line comes from a light scan of the TOML text
(`_key_lines`), because tomllib keeps no positions.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from softswitch.transport.tls import TlsFileError, server_context, verifying_context

SIP_TRANSPORTS = ("udp", "tcp", "tls")
TRUNK_TRANSPORTS = ("udp", "tcp", "tls")
ROUTE_KINDS = ("user", "trunk", "app", "scenario")
SCENARIO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # also the API's rule for a scenario's name
AUTH_ALGORITHMS = ("SHA-256", "MD5", "SHA-256-SESS", "MD5-SESS")


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class SipConfig(_Section):
    listen: list[str] = msgspec.field(default_factory=lambda: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"])
    domain: str = "localhost"
    user_agent: str = "softswitch"
    t1_ms: int = 500
    t2_ms: int = 4000
    t4_ms: int = 5000
    max_message_bytes: int = 65535
    tls_cert: str = ""  # PEM certificate chain for tls: listeners (and offered to TLS peers we connect to)
    tls_key: str = ""  # its unencrypted PEM private key
    tls_client_ca: str = ""  # PEM CA bundle: TLS clients are asked for a certificate, verified against it
    auth_algorithms: list[str] = msgspec.field(default_factory=lambda: ["SHA-256", "MD5"])  # challenge order
    contact_ping_s: float = 0.0  # OPTIONS keep-alive to registered contacts (NAT bindings); 0 disables
    drop_scanners: bool = True  # requests from known SIP scanners (by User-Agent) dropped unanswered
    max_transactions: int = 100000  # live SIP transactions; requests past it are answered 503 (bounded memory)


class CallsConfig(_Section):
    ring_timeout_s: float = 60.0
    max_duration_s: float = 14400.0
    session_expires_s: int = 1800  # RFC 4028 session interval we ask for and grant (at least 90)
    inband_dtmf: str = "auto"  # hear key tones in the audio: auto (sides without telephone-event), always, never


class MediaConfig(_Section):
    rtp_ports: str = "20000-29999"
    recordings_dir: str = "var/recordings"
    audio_dir: str = "var/audio"  # audio files uploaded through the API (POST /v2/audio-files)


class ApiConfig(_Section):
    listen: str = "127.0.0.1:8080"
    rate_limit_per_s: float = 20.0  # requests per second each API key may make, sustained (token bucket rate)
    rate_limit_burst: int = 40  # requests a key may make at once after being idle (bucket size)
    metrics_listen: str = ""  # host:port serving GET /metrics without a key (for a scraper); "" for none
    tls_cert: str = ""  # PEM certificate chain: the API is served over HTTPS (metrics_listen stays plain)
    tls_key: str = ""  # its unencrypted PEM private key


class WebhooksConfig(_Section):
    allow_private: bool = False  # webhooks and media streams to loopback/private addresses (a LAN receiver; SSRF risk)
    timeout_s: float = 15.0  # per delivery attempt, connect to last byte
    concurrency: int = 4  # deliveries in flight at once to one endpoint
    ca_file: str = ""  # PEM CAs trusted for https:// and wss:// receivers (webhooks, call flows, streams) too


class SecurityConfig(_Section):
    """The SIP edge's defences (softswitch.guard, softswitch.b2bua.policy)."""

    rate_per_s: float = 30.0  # SIP messages one source address may send per second, sustained
    rate_burst: int = 120  # ... and at once after a quiet spell; over it, messages are dropped
    fail_limit: int = 10  # failed authentications from one address within fail_window_s ban it
    fail_window_s: float = 300.0
    ban_s: float = 3600.0  # how long a ban lasts
    ban_action: str = "drop"  # a banned address's requests: drop (silently) or 403
    trusted: list[str] = msgspec.field(default_factory=list)  # networks never limited nor banned (trunks' are)
    max_sources: int = 65536  # source addresses remembered per table (bounded memory under floods)
    deny_destinations: list[str] = msgspec.field(default_factory=list)  # regexes no call may reach via a trunk
    alerts_per_s: float = 20.0  # security.alert events published per second at most (the rest counted)


class StoreConfig(_Section):
    path: str = "var/softswitch.db"


class LogConfig(_Section):
    level: str = "info"
    format: str = "plain"


class ProcessConfig(_Section):
    nice: int = 0  # scheduling niceness of every thread of `softswitch serve` (-20..19; below 0 needs privilege)


class User(_Section):
    """A softphone account. Its secret is `password`, or, to keep clear text out of the file, the digest HA1
    for our realm (`[sip] domain`): `ha1_md5` = MD5("name:realm:password"), `ha1_sha256` the same with SHA-256
    (each algorithm the user's phone may use needs its own)."""

    name: str
    password: str = ""
    ha1_md5: str = ""
    ha1_sha256: str = ""
    max_calls: int = 0  # calls at once (placed or received); 0 for no limit
    calls_per_minute: int = 0  # calls placed or received in any 60 s; 0 for no limit
    destinations: list[str] = msgspec.field(default_factory=list)  # regexes of numbers it may call via trunks
    srtp: bool = False  # calls to its TLS registrations offer SRTP (RTP/SAVP, SDES keys)


class Trunk(_Section):
    name: str
    address: str
    transport: str = "udp"
    inbound_from: list[str] = msgspec.field(default_factory=list)
    username: str = ""
    password: str = ""
    ping_interval_s: float = 30.0  # OPTIONS pings marking the trunk up/down; 0 disables them
    register: bool = False  # keep a registration at the trunk (username/password) for inbound calls
    register_expires_s: int = 3600
    max_calls: int = 0  # calls at once over this trunk, both directions; 0 for no limit
    calls_per_minute: int = 0  # calls in any 60 s over this trunk, both directions; 0 for no limit
    destinations: list[str] = msgspec.field(default_factory=list)  # regexes of numbers sent out over it
    transit: bool = False  # its inbound calls may be routed (or transferred) out to a trunk
    srtp: bool = False  # calls to it (transport tls) offer SRTP (RTP/SAVP, SDES keys)
    tls_client_cert: str = ""  # its requests must come over TLS with a certificate ([sip] tls_client_ca) naming this


class Route(_Section):
    match: str
    to: str
    machine_detection: str = ""  # "", "enable" or "detect_message_end": AMD on the answered outbound side
    amd: dict[str, int | float] = msgspec.field(default_factory=dict)  # this route's [amd] parameters over those


class Config(_Section):
    sip: SipConfig = msgspec.field(default_factory=SipConfig)
    media: MediaConfig = msgspec.field(default_factory=MediaConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    calls: CallsConfig = msgspec.field(default_factory=CallsConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    process: ProcessConfig = msgspec.field(default_factory=ProcessConfig)
    webhooks: WebhooksConfig = msgspec.field(default_factory=WebhooksConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    users: list[User] = msgspec.field(default_factory=list)
    trunks: list[Trunk] = msgspec.field(default_factory=list)
    routes: list[Route] = msgspec.field(default_factory=list)
    amd: dict[str, int | float] = msgspec.field(default_factory=dict)  # media.amd.AmdParams fields over its defaults

    def rtp_port_range(self) -> tuple[int, int]:
        return parse_port_range(self.media.rtp_ports)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config file, positioned for the user."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class ConfigError(Exception):
    """A config file that must not be run; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ListenAddress:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@functools.lru_cache(maxsize=1024)  # read per call for a trunk's address: a handful of distinct texts
def parse_hostport(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); raises ValueError with a readable reason."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if not m:
        raise ValueError(f"expected host:port or [ipv6]:port, got {text!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    if m.group(1):
        ipaddress.IPv6Address(host)
    elif not re.fullmatch(r"[A-Za-z0-9.-]+", host):
        raise ValueError(f"bad host {host!r}")
    return host, port


def parse_listen(text: str, transports: tuple[str, ...] = SIP_TRANSPORTS) -> ListenAddress:
    """`udp:127.0.0.1:5060` -> ListenAddress; the host must be an IP literal (we bind it)."""
    transport, sep, rest = text.partition(":")
    if not sep or transport not in transports:
        raise ValueError(f"expected TRANSPORT:HOST:PORT with TRANSPORT one of {', '.join(transports)}")
    host, port = parse_hostport(rest)
    ipaddress.ip_address(host)
    return ListenAddress(transport, host, port)


def parse_port_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"expected LOW-HIGH, got {text!r}")
    low, high = int(m.group(1)), int(m.group(2))
    if not (1024 <= low < high <= 65535):
        raise ValueError(f"need 1024 <= LOW < HIGH <= 65535, got {low}-{high}")
    if low % 2:
        raise ValueError(f"LOW must be even (RTP on even ports, RTCP on the next), got {low}")
    return low, high


def _check(cfg: Config) -> Iterator[tuple[tuple, str]]:
    """Rules beyond types: yields (path, message) for each problem."""
    for i, item in enumerate(cfg.sip.listen):
        try:
            parse_listen(item)
        except ValueError as exc:
            yield ("sip", "listen", i), f"bad listen address {item!r}: {exc}"
    for key in ("t1_ms", "t2_ms", "t4_ms", "max_message_bytes", "max_transactions"):
        if getattr(cfg.sip, key) <= 0:
            yield ("sip", key), "must be positive"
    for i, name in enumerate(cfg.sip.auth_algorithms):
        if name.upper() not in AUTH_ALGORITHMS:
            yield ("sip", "auth_algorithms", i), f"unknown digest algorithm {name!r}: use {', '.join(AUTH_ALGORITHMS)}"
    if cfg.sip.contact_ping_s < 0:
        yield ("sip", "contact_ping_s"), "must be 0 (off) or positive"
    if not cfg.sip.auth_algorithms:
        yield ("sip", "auth_algorithms"), "must name at least one algorithm"
    for key in ("ring_timeout_s", "max_duration_s"):
        if getattr(cfg.calls, key) <= 0:
            yield ("calls", key), "must be positive"
    if cfg.calls.inband_dtmf not in ("auto", "always", "never"):
        yield ("calls", "inband_dtmf"), f"must be auto, always or never, not {cfg.calls.inband_dtmf!r}"
    if cfg.calls.session_expires_s < 90:
        yield ("calls", "session_expires_s"), "must be at least 90 (RFC 4028 Min-SE)"
    if cfg.sip.t2_ms < cfg.sip.t1_ms:
        yield ("sip", "t2_ms"), "must not be smaller than t1_ms"
    yield from _check_tls(cfg.sip)
    yield from _check_identity("api", cfg.api.tls_cert, cfg.api.tls_key, needed=False)
    yield from _check_amd(cfg.amd)
    try:
        parse_port_range(cfg.media.rtp_ports)
    except ValueError as exc:
        yield ("media", "rtp_ports"), f"bad port range: {exc}"
    yield from _check_address(("api", "listen"), cfg.api.listen)
    if cfg.api.metrics_listen:
        yield from _check_address(("api", "metrics_listen"), cfg.api.metrics_listen)
        if cfg.api.metrics_listen == cfg.api.listen:
            yield ("api", "metrics_listen"), "must differ from api.listen (it serves /metrics without a key)"
    if not cfg.api.rate_limit_per_s > 0:
        yield ("api", "rate_limit_per_s"), "must be positive"
    if cfg.api.rate_limit_burst < 1:
        yield ("api", "rate_limit_burst"), "must be at least 1"
    if not 0 < cfg.webhooks.timeout_s <= 60:
        yield ("webhooks", "timeout_s"), "must be positive and at most 60"
    if not 1 <= cfg.webhooks.concurrency <= 64:
        yield ("webhooks", "concurrency"), "must be 1-64"
    if cfg.webhooks.ca_file:
        try:
            verifying_context(cfg.webhooks.ca_file)
        except TlsFileError as exc:
            yield ("webhooks", "ca_file"), str(exc)
    if cfg.log.level not in ("debug", "info", "warning", "error"):
        yield ("log", "level"), "must be one of debug, info, warning, error"
    if cfg.log.format not in ("plain", "json"):
        yield ("log", "format"), "must be plain or json"
    if not -20 <= cfg.process.nice <= 19:
        yield ("process", "nice"), "must be -20..19"
    yield from _check_security(cfg.security)
    yield from _check_names("users", cfg.users)
    for i, user in enumerate(cfg.users):
        if not (user.password or user.ha1_md5 or user.ha1_sha256):
            yield ("users", i, "password"), "needs a password, or ha1_md5 / ha1_sha256"
        for field, size in (("ha1_md5", 32), ("ha1_sha256", 64)):
            value = getattr(user, field)
            if value and not re.fullmatch(f"[0-9a-fA-F]{{{size}}}", value):
                yield ("users", i, field), f"must be {size} hex digits (the HA1 of name:realm:password)"
        yield from _check_limits(("users", i), user)
    yield from _check_names("trunks", cfg.trunks)
    for i, trunk in enumerate(cfg.trunks):
        try:
            parse_hostport(trunk.address)
        except ValueError as exc:
            yield ("trunks", i, "address"), f"bad address {trunk.address!r}: {exc}"
        if trunk.transport not in TRUNK_TRANSPORTS:
            yield ("trunks", i, "transport"), f"must be one of {', '.join(TRUNK_TRANSPORTS)}"
        if trunk.ping_interval_s < 0:
            yield ("trunks", i, "ping_interval_s"), "must be 0 (off) or positive"
        if trunk.register and not trunk.username:
            yield ("trunks", i, "register"), "registering needs username (and password)"
        if trunk.register_expires_s < 60:
            yield ("trunks", i, "register_expires_s"), "must be at least 60"
        for j, net in enumerate(trunk.inbound_from):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                yield ("trunks", i, "inbound_from", j), f"bad network {net!r}"
        yield from _check_limits(("trunks", i), trunk)
        if trunk.tls_client_cert and not cfg.sip.tls_client_ca:
            yield (
                ("trunks", i, "tls_client_cert"),
                "needs sip.tls_client_ca (the CAs of client certificates)",
            )
    users = {u.name for u in cfg.users}
    trunks = {t.name for t in cfg.trunks}
    for i, route in enumerate(cfg.routes):
        try:
            re.compile(route.match)
        except re.error as exc:
            yield ("routes", i, "match"), f"bad regular expression {route.match!r}: {exc}"
        kind, sep, target = route.to.partition(":")
        if not sep or kind not in ROUTE_KINDS or not target:
            yield ("routes", i, "to"), f"expected user:NAME, trunk:NAME, app:URL or scenario:NAME, got {route.to!r}"
        elif kind == "user" and target not in users:
            yield ("routes", i, "to"), f"unknown user {target!r}"
        elif kind == "trunk" and target not in trunks:
            yield ("routes", i, "to"), f"unknown trunk {target!r}"
        elif kind == "app" and (urlsplit(target).scheme not in ("http", "https") or not urlsplit(target).netloc):
            yield ("routes", i, "to"), f"app target must be an http(s) URL, got {target!r}"
        elif kind == "scenario" and not SCENARIO_NAME.fullmatch(target):
            yield ("routes", i, "to"), f"scenario target must be a scenario's name, got {target!r}"
        if route.machine_detection not in ("", "enable", "detect_message_end"):
            yield (
                ("routes", i, "machine_detection"),
                f"must be enable or detect_message_end (or absent), not {route.machine_detection!r}",
            )
        yield from _check_amd(route.amd, ("routes", i, "amd"))


def _check_security(sec: SecurityConfig) -> Iterator[tuple[tuple, str]]:
    for key in ("rate_per_s", "fail_window_s", "ban_s", "alerts_per_s"):
        if not getattr(sec, key) > 0:
            yield ("security", key), "must be positive"
    for key in ("rate_burst", "fail_limit"):
        if getattr(sec, key) < 1:
            yield ("security", key), "must be at least 1"
    if sec.max_sources < 1024:
        yield ("security", "max_sources"), "must be at least 1024"
    if sec.ban_action not in ("drop", "403"):
        yield ("security", "ban_action"), f"must be drop or 403, not {sec.ban_action!r}"
    for j, net in enumerate(sec.trusted):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            yield ("security", "trusted", j), f"bad network {net!r}"
    yield from _check_patterns(("security", "deny_destinations"), sec.deny_destinations)


def _check_limits(path: tuple, item: User | Trunk) -> Iterator[tuple[tuple, str]]:
    for key in ("max_calls", "calls_per_minute"):
        if getattr(item, key) < 0:
            yield (*path, key), "must be 0 (no limit) or positive"
    yield from _check_patterns((*path, "destinations"), item.destinations)


def _check_patterns(path: tuple, patterns: list[str]) -> Iterator[tuple[tuple, str]]:
    for j, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            yield (*path, j), f"bad regular expression {pattern!r}: {exc}"


def _check_address(path: tuple, text: str) -> Iterator[tuple[tuple, str]]:
    """An HTTP listen address: `IP:PORT` (an IP literal: we bind it)."""
    try:
        host, _ = parse_hostport(text)
        ipaddress.ip_address(host)
    except ValueError as exc:
        yield path, f"bad listen address {text!r}: {exc}"


def _check_amd(table: dict[str, int | float], path: tuple = ("amd",)) -> Iterator[tuple[tuple, str]]:
    """[amd] (and a route's `amd`) holds answering machine detection's parameters (media.amd.AmdParams),
    checked by it."""
    from media.amd import SPECS, AmdParamError, AmdParams

    for key in table:
        if key not in SPECS:
            yield (*path, key), f"unknown key (known: {', '.join(sorted(SPECS))})"
    try:
        AmdParams().over({k: v for k, v in table.items() if k in SPECS})
    except AmdParamError as exc:
        yield (*path, exc.name), exc.reason


def _check_tls(sip: SipConfig) -> Iterator[tuple[tuple, str]]:
    """A tls: listener needs a certificate and key that load; a half-given or broken pair is refused even
    without one, since it would only fail later, at the first TLS connection we open."""
    serves_tls = any(item.partition(":")[0] == "tls" for item in sip.listen)
    yield from _check_identity("sip", sip.tls_cert, sip.tls_key, needed=serves_tls)
    if sip.tls_client_ca:
        if not serves_tls:
            yield ("sip", "tls_client_ca"), "needs a tls: listen address"
        elif sip.tls_cert and sip.tls_key:
            try:
                server_context(sip.tls_cert, sip.tls_key, sip.tls_client_ca)
            except TlsFileError as exc:
                yield ("sip", f"tls_client_{exc.field}" if exc.field == "ca" else f"tls_{exc.field}"), str(exc)


def _check_identity(section: str, cert: str, key: str, *, needed: bool) -> Iterator[tuple[tuple, str]]:
    """`tls_cert` and `tls_key` of a section: both or neither (both when `needed`), and loadable."""
    if not (needed or cert or key):
        return
    missing = False
    for field, other, value in (("tls_cert", "tls_key", cert), ("tls_key", "tls_cert", key)):
        if not value:
            missing = True
            yield (
                (section, field),
                "required with a tls: listen address" if needed else f"required with {section}.{other}",
            )
    if not missing:
        try:
            server_context(cert, key)
        except TlsFileError as exc:
            yield (section, f"tls_{exc.field}"), str(exc)


def _check_names(section: str, items: list) -> Iterator[tuple[tuple, str]]:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if not item.name:
            yield (section, i, "name"), "must not be empty"
        elif item.name in seen:
            yield (section, i, "name"), f"duplicate name {item.name!r} (first at {section}[{seen[item.name]}])"
        else:
            seen[item.name] = i


_TABLE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r'^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\'))*)\s*=')


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', text)
    return tuple(a or b or c for a, b, c in parts)


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each table and key path (array-of-tables entries indexed) to its 1-based line."""
    lines: dict[tuple, int] = {}
    counters: dict[tuple, int] = {}
    table: tuple = ()
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if line.count(in_multiline) % 2:
                in_multiline = None
            continue
        m = _TABLE.match(line)
        if m and not _KEY.match(line):
            names = _split_key(m.group(2))
            if m.group(1) == "[[":
                counters[names] = counters.get(names, -1) + 1
                table = (*names, counters[names])
            else:
                table = names
                # a sub-table of the newest array entry, e.g. [users.extra] after [[users]]
                for length in range(len(names) - 1, 0, -1):
                    if names[:length] in counters:
                        table = (*names[:length], counters[names[:length]], *names[length:])
                        break
            lines.setdefault(table, number)
            continue
        m = _KEY.match(line)
        if m:
            lines.setdefault((*table, *_split_key(m.group(1))), number)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2:
                    in_multiline = quote
    return lines


def _locate(lines: dict[tuple, int], path: tuple) -> int:
    for length in range(len(path), 0, -1):
        if path[:length] in lines:
            return lines[path[:length]]
    return 1


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _msgspec_path(message: str) -> tuple[str, tuple]:
    """Split msgspec's 'reason - at `$.a[0].b`' into reason and a path tuple."""
    reason, sep, where = message.rpartition(" - at `")
    if not sep:
        reason, where = message, "$"
    path: list = []
    for name, index in re.findall(r"\.([^.\[`]+)|\[(\d+)\]", where.rstrip("`")[1:]):
        path.append(int(index) if index else name)
    field = re.search(r"field `([^`]+)`", reason)
    if field and ("unknown field" in reason or "missing required field" in reason):
        path.append(field.group(1))
    return reason, tuple(path)


def parse(text: str, file: str = "<config>") -> Config:
    """Parse and validate config text; raises ConfigError naming file, line and field."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(m.group(1)) if m else 1
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        raise ConfigError([Problem(file, line, "(syntax)", f"invalid TOML: {reason}")]) from None
    lines = _key_lines(text)
    try:
        cfg = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        reason, path = _msgspec_path(str(exc))
        reason = reason.replace("Object contains unknown field", "unknown key").replace(
            "Object missing required field", "missing required key"
        )
        raise ConfigError([Problem(file, _locate(lines, path), _dotted(path), reason)]) from None
    problems = [Problem(file, _locate(lines, path), _dotted(path), msg) for path, msg in _check(cfg)]
    if problems:
        raise ConfigError(problems)
    return cfg


def load(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError (also for an unreadable file)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), 0, "(file)", f"cannot read: {exc}")]) from None
    return parse(text, str(path))


def exposure_warnings(cfg: Config, path: str) -> list[str]:
    """What `check-config` warns about: a file other users can read that holds clear-text passwords."""
    try:
        readable = bool(os.stat(path).st_mode & 0o004)
    except OSError:
        return []
    clear = [f"users.{u.name}" for u in cfg.users if u.password]
    clear += [f"trunks.{t.name}" for t in cfg.trunks if t.password]
    if not readable or not clear:
        return []
    return [
        f"warning: {path} is readable by other users and holds clear-text passwords ({', '.join(clear)}): "
        "chmod 600 it, and give users' secrets as ha1_md5 / ha1_sha256 instead of password"
    ]


def summary(cfg: Config) -> list[str]:
    """What a config will do, one line per item, for `check-config`."""
    out = [f"sip listen: {', '.join(str(parse_listen(x)) for x in cfg.sip.listen)} (domain {cfg.sip.domain})"]
    low, high = cfg.rtp_port_range()
    out.append(
        f"media: rtp ports {low}-{high} ({(high - low + 1) // 2} legs), recordings in {cfg.media.recordings_dir}"
    )
    out.append(
        f"api listen: {cfg.api.listen} (rate limit {cfg.api.rate_limit_per_s:g}/s per key, "
        f"burst {cfg.api.rate_limit_burst})"
    )
    if cfg.api.metrics_listen:
        out.append(f"metrics listen: {cfg.api.metrics_listen} (GET /metrics, no key)")
    out.append(f"store: {cfg.store.path}")
    out.append(f"users: {len(cfg.users)}, trunks: {len(cfg.trunks)}, routes: {len(cfg.routes)}")
    out.extend(f"route {i}: /{r.match}/ -> {r.to}" for i, r in enumerate(cfg.routes))
    return out
