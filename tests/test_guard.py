"""The SIP edge's source table (softswitch.guard): rate buckets, failures to bans, bounded memory. Time is fed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.guard import GuardPolicy, SourceGuard, Verdict


def test_rate_bucket_lets_the_burst_through_then_the_sustained_rate():
    guard = SourceGuard(GuardPolicy(rate_per_s=10, burst=20))
    verdicts = [guard.admit("10.0.0.1", 100.0) for _ in range(25)]
    assert verdicts.count(Verdict.ADMIT) == 20 and verdicts[20:] == [Verdict.LIMITED] * 5
    assert guard.admit("10.0.0.2", 100.0) is Verdict.ADMIT  # another source has its own bucket
    # one second later: 10 more tokens, not more
    later = [guard.admit("10.0.0.1", 101.0) for _ in range(12)]
    assert later.count(Verdict.ADMIT) == 10
    # a source keeping to 10/s is never limited
    t = 200.0
    for _ in range(300):
        t += 0.1
        assert guard.admit("10.0.0.3", t) is Verdict.ADMIT


def test_limited_first_reports_once_per_episode():
    guard = SourceGuard(GuardPolicy(rate_per_s=1, burst=1))
    guard.admit("h", 0.0)
    assert guard.admit("h", 0.0) is Verdict.LIMITED
    assert guard.limited_first("h") and not guard.limited_first("h")
    guard.calm("h")
    assert guard.limited_first("h")


def test_failures_within_the_window_ban_then_the_ban_expires():
    guard = SourceGuard(GuardPolicy(fail_limit=3, fail_window_s=300, ban_s=600))
    assert guard.failed("a", 0.0) is None
    assert guard.failed("a", 200.0) is None
    assert guard.failed("a", 301.0) is None  # the first one left the window: 2 in the last 300 s
    ban = guard.failed("a", 400.0)
    assert ban is not None and ban.address == "a" and ban.until == 1000.0 and ban.failures == 3
    assert guard.admit("a", 999.0) is Verdict.BANNED
    assert guard.admit("b", 999.0) is Verdict.ADMIT  # other addresses are not affected
    assert [b.address for b in guard.bans(999.0)] == ["a"]
    assert guard.admit("a", 1000.0) is Verdict.ADMIT and guard.bans(1000.0) == []
    assert guard.failures("a") == 0  # a ban starts the count over


def test_lift_unbans_and_forgets_failures():
    guard = SourceGuard(GuardPolicy(fail_limit=2))
    guard.failed("a", 0.0)
    guard.failed("a", 1.0)
    assert guard.banned("a", 2.0)
    assert guard.lift("a") and not guard.lift("a")
    assert guard.admit("a", 2.0) is Verdict.ADMIT and guard.failures("a") == 0


def test_trusted_sources_are_never_limited_nor_banned():
    guard = SourceGuard(GuardPolicy(rate_per_s=1, burst=1, fail_limit=1), trusted=lambda host: host == "carrier")
    assert all(guard.admit("carrier", 0.0) is Verdict.ADMIT for _ in range(1000))
    assert guard.failed("carrier", 0.0) is None and not guard.banned("carrier", 0.0)


def test_a_flood_from_100000_sources_keeps_the_tables_bounded():
    guard = SourceGuard(GuardPolicy(fail_limit=10, max_sources=4096))
    for i in range(100_000):
        host = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        guard.admit(host, i / 1000)
        guard.failed(host, i / 1000)
    buckets, failures, bans = guard.tracked()
    assert buckets == 4096 and failures == 4096 and bans == 0
    # the most recent sources are the ones remembered
    assert guard.failures("10.1.134.159") == 1  # source 99,999
    assert guard.failures("10.0.0.1") == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.floats(0, 5)), max_size=300))
def test_admitted_never_exceeds_burst_plus_rate_times_elapsed(events):
    """Whatever the arrival pattern, a source gets at most burst + rate * elapsed messages through."""
    policy = GuardPolicy(rate_per_s=5, burst=8)
    guard = SourceGuard(policy)
    t = 0.0
    admitted: dict[str, int] = {}
    first: dict[str, float] = {}
    for host, gap in events:
        t += gap
        first.setdefault(host, t)
        if guard.admit(host, t) is Verdict.ADMIT:
            admitted[host] = admitted.get(host, 0) + 1
    for host, n in admitted.items():
        assert n <= policy.burst + policy.rate_per_s * (t - first[host]) + 1e-9
