"""Per-key rate limit: a token bucket per API key, in memory.

Each key has a bucket of `burst` tokens refilled at `rate_per_s`; a request takes one token or is refused
(429 `rate_limited`, `Retry-After` in whole seconds until a token is back). The state lives in this process
only: a restart gives every key a full bucket, and several softswitch nodes each limit on their own. That is
the trade for a check that costs no I/O on every request.

Headers on every authenticated response: `X-RateLimit-Limit` (the bucket size), `X-RateLimit-Remaining`
(whole tokens left), `X-RateLimit-Reset` (Unix time, in whole seconds, when the bucket is full again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateState:
    """A key's bucket after a request: whether it was allowed, and what the headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset: int
    retry_after: int = 0

    def headers(self) -> dict[str, str]:
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


class RateLimiter:
    """Token buckets by key id; `now` is the caller's clock (Unix seconds), so tests control time."""

    def __init__(self, rate_per_s: float, burst: int):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        self.rate_per_s, self.burst = rate_per_s, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + max(0.0, now - at) * self.rate_per_s)

    def _state(self, tokens: float, now: float, allowed: bool) -> RateState:
        reset = math.ceil(now + (self.burst - tokens) / self.rate_per_s)
        retry = 0 if allowed else max(1, math.ceil((1.0 - tokens) / self.rate_per_s))
        return RateState(allowed, self.burst, max(0, math.floor(tokens + 1e-9)), reset, retry)

    def take(self, key: str, now: float) -> RateState:
        """Spend one token of `key`'s bucket if there is one."""
        tokens = self._tokens(key, now)
        allowed = tokens >= 1.0 - 1e-9  # float refill: 0.1 s at 10/s is one token, not 0.999...
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        return self._state(tokens, now, allowed)

    def peek(self, key: str, now: float) -> RateState:
        """The bucket as it stands, spending nothing."""
        return self._state(self._tokens(key, now), now, True)
