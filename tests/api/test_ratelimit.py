"""Per-key token bucket: headers on every authenticated response, 429 with Retry-After, refill over time."""

import pytest

from api.ratelimit import RateLimiter

SMALL = "[api]\nrate_limit_per_s = 0.5\nrate_limit_burst = 3\n"


async def test_ratelimit_headers_then_429_then_refill(start):
    api = await start(SMALL)
    key = api.key("calls:read")
    now = int(api.clock())
    remaining = []
    for _ in range(3):
        reply = await api.call("GET", "/v2/account", key=key)
        assert reply.status == 200
        assert reply.headers["X-RateLimit-Limit"] == "3"
        remaining.append(int(reply.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    assert int(reply.headers["X-RateLimit-Reset"]) == now + 6  # 3 tokens at 0.5/s
    refused = await api.call("GET", "/v2/account", key=key)
    assert refused.status == 429 and refused.error["code"] == "rate_limited"
    assert refused.headers["Retry-After"] == "2"
    assert refused.headers["X-RateLimit-Remaining"] == "0" and refused.headers["X-RateLimit-Limit"] == "3"
    other = await api.call("GET", "/v2/account", key=api.key("calls:read"))
    assert other.status == 200  # per key
    api.clock.advance(2)
    assert (await api.call("GET", "/v2/account", key=key)).status == 200
    assert (await api.call("GET", "/v2/account", key=key)).status == 429


async def test_ratelimit_headers_on_errors_of_authenticated_requests_too(start):
    api = await start(SMALL)
    reply = await api.call("GET", "/v2/keys", key=api.key("calls:read"))
    assert reply.status == 403 and reply.headers["X-RateLimit-Remaining"] == "2"
    reply = await api.call("POST", "/v2/test/things", key=api.admin, json={"nope": 1})
    assert reply.status == 422 and "X-RateLimit-Limit" in reply.headers
    assert "X-RateLimit-Limit" not in (await api.call("GET", "/health")).headers


def test_ratelimit_bucket_arithmetic():
    limiter = RateLimiter(rate_per_s=10, burst=2)
    assert [limiter.take("k", 100.0).allowed for _ in range(3)] == [True, True, False]
    refused = limiter.take("k", 100.0)
    assert refused.retry_after == 1 and refused.headers()["Retry-After"] == "1"
    assert limiter.take("k", 100.1).allowed  # one token back after 0.1 s
    assert limiter.peek("k", 1000.0).remaining == 2  # never more than the burst
    with pytest.raises(ValueError):
        RateLimiter(0, 1)
