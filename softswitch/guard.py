"""The SIP edge's memory of source addresses: request rate, failed authentications, bans (sans-IO).

Every message is asked about (`admit`) before it is parsed, so a flood costs a dict lookup per packet and
nothing more. Memory is bounded whatever the sources: the rate buckets and the failure histories are LRU
tables of at most `max_sources` entries each, so a flood from 100,000 spoofed addresses evicts the oldest
entries instead of growing (an evicted source starts again with a full bucket and no failures, which is
what a source seen once deserves). Bans are few (each costs ten failed authentications) and kept apart,
in full. Trusted sources (trunks' `inbound_from` networks, `[security] trusted`) are never limited nor
banned: a carrier's traffic is high-volume by nature, and banning it would be a denial of service.

Time is passed in (`now`, seconds on any monotonic-enough clock; bans use the same clock as `now`, so the
server passes Unix time to keep bans meaningful across restarts).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    ADMIT = "admit"
    BANNED = "banned"
    LIMITED = "limited"  # over its request rate: this message is dropped


# Read once per datagram: a module constant, not an Enum class attribute (in 3.11 those take
# EnumType.__getattr__'s slow hook, about 80 ns more).
ADMIT = Verdict.ADMIT


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    rate_per_s: float = 30.0  # requests a source may send per second, sustained
    burst: int = 120  # requests a source may send at once after being quiet
    fail_limit: int = 10  # failed authentications from one source ...
    fail_window_s: float = 300.0  # ... within this many seconds ban it
    ban_s: float = 3600.0
    max_sources: int = 65536  # entries per table (rate buckets, failure histories)


@dataclass(frozen=True, slots=True)
class Ban:
    address: str
    since: float
    until: float
    reason: str
    failures: int = 0


class SourceGuard:
    """Per-source rate limits, failure counting and bans; `trusted(host)` exempts a source."""

    def __init__(self, policy: GuardPolicy, trusted: Callable[[str], bool] = lambda host: False):
        self.policy = policy
        self.trusted = trusted
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # host -> [tokens, at, over (0/1)]
        self._failures: OrderedDict[str, list[float]] = OrderedDict()  # host -> failure times, newest last
        self._bans: dict[str, Ban] = {}

    def admit(self, host: str, now: float) -> Verdict:
        """Whether a message from `host` goes on; each admitted one spends a token of its bucket."""
        if self._bans:
            ban = self._bans.get(host)
            if ban is not None:
                if now < ban.until:
                    return Verdict.BANNED
                del self._bans[host]
        if self.trusted(host):
            return ADMIT
        policy, buckets = self.policy, self._buckets
        bucket = buckets.get(host)
        if bucket is None:
            if len(buckets) >= policy.max_sources:
                buckets.popitem(last=False)
            bucket = buckets[host] = [float(policy.burst), now, 0.0]
        else:
            buckets.move_to_end(host)
            bucket[0] = min(float(policy.burst), bucket[0] + (now - bucket[1]) * policy.rate_per_s)
            bucket[1] = now
            if bucket[2] and bucket[0] >= policy.burst - 1:
                bucket[2] = 0.0  # kept to its rate long enough to refill: a new flood is a new episode
        if bucket[0] < 1.0:
            return Verdict.LIMITED
        bucket[0] -= 1.0
        return ADMIT

    def quiet_until(self, host: str) -> float:
        """When `host` next gets a message through: its next token, or the end of its ban (its clock).
        Until then every message of it would be refused, so the caller may drop them without asking."""
        ban = self._bans.get(host)
        if ban is not None:
            return ban.until
        bucket = self._buckets.get(host)
        if bucket is None or bucket[0] >= 1.0:
            return 0.0
        return bucket[1] + (1.0 - bucket[0]) / self.policy.rate_per_s

    def banned(self, host: str, now: float) -> bool:
        ban = self._bans.get(host)
        return ban is not None and now < ban.until

    def limited_first(self, host: str) -> bool:
        """True the first time `host` is limited since it last kept to its rate: one alert per episode."""
        bucket = self._buckets.get(host)
        if bucket is None or bucket[2]:
            return False
        bucket[2] = 1.0
        return True

    def calm(self, host: str) -> None:
        bucket = self._buckets.get(host)
        if bucket is not None:
            bucket[2] = 0.0

    def failed(self, host: str, now: float, reason: str = "failed authentications") -> Ban | None:
        """Count a failed authentication from `host`; the ban it earns, when this one is the last straw."""
        if self.trusted(host) or host in self._bans:
            return None
        policy, table = self.policy, self._failures
        times = table.get(host)
        if times is None:
            if len(table) >= policy.max_sources:
                table.popitem(last=False)
            times = table[host] = []
        else:
            table.move_to_end(host)
        times.append(now)
        cutoff = now - policy.fail_window_s
        while times and times[0] <= cutoff:
            times.pop(0)
        if len(times) < policy.fail_limit:
            return None
        del table[host]
        return self.ban(host, now, f"{len(times)} {reason} in {policy.fail_window_s:g} s", failures=len(times))

    def failures(self, host: str) -> int:
        return len(self._failures.get(host, ()))

    def ban(self, host: str, now: float, reason: str, *, failures: int = 0, until: float | None = None) -> Ban:
        ban = Ban(host, now, now + self.policy.ban_s if until is None else until, reason, failures)
        self._bans[host] = ban
        return ban

    def lift(self, host: str) -> bool:
        self._failures.pop(host, None)
        return self._bans.pop(host, None) is not None

    def bans(self, now: float) -> list[Ban]:
        """The bans in force, oldest first."""
        return sorted((b for b in self._bans.values() if b.until > now), key=lambda b: (b.since, b.address))

    def replace_bans(self, bans: Iterable[Ban]) -> None:
        """The bans as the store has them (another process may have lifted or added some)."""
        self._bans = {b.address: b for b in bans}

    def tracked(self) -> tuple[int, int, int]:
        """(rate buckets, failure histories, bans): what memory the guard holds."""
        return len(self._buckets), len(self._failures), len(self._bans)
