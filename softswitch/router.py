"""The dialplan: which targets a call to a number or name goes to, and who may place calls at all.

`[[routes]]` are tried in file order against the user part of the Request-URI; every route that matches
is a candidate, so the B2BUA tries the first and fails over to the next on 408, 5xx or no answer (the
way a carrier's LCR list works). Trunks are recognised by source address (`inbound_from`): a request
from one of their networks is a carrier's inbound call and needs no credentials; anything else must
authenticate as a `[[users]]` entry.
"""

from __future__ import annotations

import ipaddress
import re

import msgspec

from softswitch.config import Config, Trunk, parse_hostport

_UNSEEN = object()
_SOURCES_KEPT = 4096  # source hosts whose trunk (or none) is remembered


class Target(msgspec.Struct, frozen=True):
    """Where a route sends a call: `kind` is user, trunk or app; `name` the user, trunk or URL."""

    kind: str
    name: str
    route: int  # the route's index in the config, for logs and CDRs
    machine_detection: str = ""  # AMD on this target's answer: "", "enable" or "detect_message_end"
    amd: dict[str, int | float] = {}  # its route's AMD parameters, what they change of the B2BUA's [amd]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


class Router:
    """First-match routing over the config's routes, plus the trunk lookups the B2BUA needs."""

    def __init__(self, cfg: Config):
        self._routes = [(re.compile(r.match), r.to, r.machine_detection, r.amd) for r in cfg.routes]
        self.trunks: dict[str, Trunk] = {t.name: t for t in cfg.trunks}
        self._inbound = [(ipaddress.ip_network(net, strict=False), t) for t in cfg.trunks for net in t.inbound_from]
        self._by_source: dict[str, Trunk | None] = {}
        self._trusted_nets = [ipaddress.ip_network(net, strict=False) for net in cfg.security.trusted]
        self._trusted: dict[str, bool] = {}

    def targets(self, user: str) -> list[Target]:
        """Every route matching `user` (re.fullmatch semantics are up to the pattern: search is used, so
        anchor patterns with ^...$ as the sample config does), in order."""
        out = []
        for i, (pattern, to, detection, amd) in enumerate(self._routes):
            if pattern.search(user):
                kind, _, name = to.partition(":")
                out.append(Target(kind, name, i, detection, amd))
        return out

    def trunk_for_source(self, host: str) -> Trunk | None:
        """The trunk whose `inbound_from` networks contain `host`, if any. Remembered per host: every INVITE
        asks, from the same few carrier addresses, and parsing the address cost more than the rest."""
        found = self._by_source.get(host, _UNSEEN)
        if found is _UNSEEN:
            if len(self._by_source) >= _SOURCES_KEPT:
                self._by_source.clear()  # many distinct callers (softphones): start over rather than grow
            found = self._by_source[host] = self._match_source(host)
        return found

    def trusted(self, host: str) -> bool:
        """Whether `host` is never rate-limited nor banned: a trunk's network, a `[security] trusted` one,
        or an address `trust` was told of. Remembered per host, like `trunk_for_source`."""
        found = self._trusted.get(host)
        if found is None:
            if len(self._trusted) >= _SOURCES_KEPT:
                self._trusted.clear()
            found = self._trusted[host] = self.trunk_for_source(host) is not None or self._in_trusted(host)
        return found

    def trust(self, host: str) -> None:
        """Trust one more address (the simulated far end's: its answers come from this process)."""
        self._trusted.pop(host, None)
        self._trusted_nets.append(ipaddress.ip_network(host.strip("[]")))

    def _in_trusted(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(addr in net for net in self._trusted_nets)

    def _match_source(self, host: str) -> Trunk | None:
        try:
            addr = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return None
        for net, trunk in self._inbound:
            if addr in net:
                return trunk
        return None

    def trunk_address(self, trunk: Trunk) -> tuple[str, int]:
        return parse_hostport(trunk.address)
