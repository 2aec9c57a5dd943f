"""Toll-fraud rules: who may send a call to a trunk, where, and how many (sans-IO; time passed in).

A call's *origin* is who chose its destination: a `[[users]]` entry that authenticated, a trunk whose
network sent it, or the control API (and the call flows it runs, which the operator wrote). The rules:

- Transit: a call that came in from a trunk goes out to a trunk only when that trunk has `transit = true`.
  A carrier's inbound call (or a REFER from its party) hairpinned back out is the classic fraud route.
- Destinations: a user or trunk with `destinations` (regular expressions) may reach exactly the numbers
  that match one of them; one without may reach anything but `[security] deny_destinations` (premium
  and international prefixes, typically). A trunk's own `destinations` also bound what is sent out over
  it. The API and call flows obey `deny_destinations` too (a flow can be fed numbers by its callers).
- Limits: `max_calls` (concurrent) and `calls_per_minute` of the origin (a user's or the inbound trunk's),
  and of each trunk a call goes out on, counted in both directions.

A refusal is a `Refusal`: the SIP status and reason phrase the caller gets (403 and why), and a detail for
logs and the `security.alert` event.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

from softswitch.config import Config

Subject = tuple[str, str]  # ("user", name), ("trunk", name) or ("api", "")
API: Subject = ("api", "")


@dataclass(frozen=True, slots=True)
class Limits:
    max_calls: int = 0  # concurrent calls; 0 for no limit
    calls_per_minute: int = 0  # calls started in any 60 s; 0 for no limit
    destinations: tuple[re.Pattern[str], ...] = ()  # numbers it may reach; empty: all but the denied ones
    transit: bool = False  # trunks: its inbound calls may go out to a trunk


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: str  # transit, destination, max_calls, calls_per_minute
    status: int
    reason: str  # the response's reason phrase
    detail: str


@dataclass(slots=True)
class _Usage:
    active: int = 0
    started: deque[float] = field(default_factory=deque)


class CallPolicy:
    def __init__(self, limits: dict[Subject, Limits], deny_destinations: tuple[re.Pattern[str], ...] = ()):
        self.limits = limits
        self.deny = deny_destinations
        self._usage: dict[Subject, _Usage] = {}

    def admit(self, origin: Subject, now: float) -> Refusal | None:
        """Whether `origin` may start one more call (its own limits); the caller then `acquire`s."""
        return self._room(origin, now)

    def allow_trunk(
        self, origin: Subject, trunk: str, number: str, now: float, *, by_flow: bool = False
    ) -> Refusal | None:
        """Whether the call of `origin` may be sent to `trunk` for `number`. `by_flow`: the operator's call
        flow chose the number (no transit rule: forwarding an inbound call is what the flow is for)."""
        kind, name = origin
        own = self.limits.get(origin, _NONE)
        if kind == "trunk" and not by_flow and not own.transit:
            return Refusal("transit", 403, "Transit Not Allowed", f"trunk {name}'s calls may not go out to {trunk}")
        if own.destinations:
            if not _matches(own.destinations, number):
                return _destination(f"{number} is not in {kind} {name}'s destinations")
        elif _matches(self.deny, number):
            return _destination(f"{number} matches [security] deny_destinations")
        out = self.limits.get(("trunk", trunk), _NONE)
        if out.destinations and not _matches(out.destinations, number):
            return _destination(f"{number} is not in trunk {trunk}'s destinations")
        return None

    def trunk_room(self, trunk: str, now: float) -> Refusal | None:
        return self._room(("trunk", trunk), now)

    def _room(self, subject: Subject, now: float) -> Refusal | None:
        limits = self.limits.get(subject)
        usage = self._usage.get(subject)
        if limits is None or usage is None:
            return None
        kind, name = subject
        if limits.max_calls and usage.active >= limits.max_calls:
            detail = f"{kind} {name} has {usage.active} calls (max_calls)"
            return Refusal("max_calls", 403, "Call Limit Reached", detail)
        if limits.calls_per_minute:
            started = usage.started
            while started and started[0] <= now - 60.0:
                started.popleft()
            if len(started) >= limits.calls_per_minute:
                detail = f"{kind} {name} started {len(started)} calls in 60 s (calls_per_minute)"
                return Refusal("calls_per_minute", 403, "Call Rate Limit Reached", detail)
        return None

    def acquire(self, subject: Subject, now: float) -> None:
        """A call of (or over) `subject` started; `release` when it ends."""
        limits = self.limits.get(subject)
        if limits is None or not (limits.max_calls or limits.calls_per_minute):
            return
        usage = self._usage.get(subject)
        if usage is None:
            usage = self._usage[subject] = _Usage()
        usage.active += 1
        if limits.calls_per_minute:
            usage.started.append(now)
            if len(usage.started) > limits.calls_per_minute:
                usage.started.popleft()

    def release(self, subject: Subject) -> None:
        usage = self._usage.get(subject)
        if usage is not None and usage.active > 0:
            usage.active -= 1

    def active(self, subject: Subject) -> int:
        usage = self._usage.get(subject)
        return usage.active if usage is not None else 0


_NONE = Limits()


def _matches(patterns: tuple[re.Pattern[str], ...], number: str) -> bool:
    return any(p.search(number) for p in patterns)


def _destination(detail: str) -> Refusal:
    return Refusal("destination", 403, "Destination Not Allowed", detail)


def party_of(fork) -> Subject:
    """Who answered a fork (softswitch.b2bua.call.Fork): its trunk, or the user whose contact it rang."""
    if fork.trunk is not None:
        return ("trunk", fork.trunk.name)
    return ("user", fork.target.name) if fork.target.kind == "user" else API


def from_config(cfg: Config) -> CallPolicy:
    limits: dict[Subject, Limits] = {}
    for kind, items in (("user", cfg.users), ("trunk", cfg.trunks)):
        for item in items:
            limits[(kind, item.name)] = Limits(
                item.max_calls,
                item.calls_per_minute,
                tuple(re.compile(p) for p in item.destinations),
                getattr(item, "transit", False),
            )
    return CallPolicy(limits, tuple(re.compile(p) for p in cfg.security.deny_destinations))
