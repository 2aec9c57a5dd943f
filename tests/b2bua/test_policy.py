"""Toll-fraud rules (softswitch.b2bua.policy): transit, destinations, max_calls, calls_per_minute. Time is fed."""

from __future__ import annotations

import re

from softswitch.b2bua.policy import API, CallPolicy, Limits, from_config
from softswitch.config import load

INTERNATIONAL = (re.compile(r"^(00|011)"), re.compile(r"^\+?88[123]"))


def policy(**limits: Limits) -> CallPolicy:
    table = {(kind, name): lim for key, lim in limits.items() for kind, name in [key.split("_", 1)]}
    return CallPolicy(table, INTERNATIONAL)


def test_transit_from_a_trunk_to_a_trunk_only_when_allowed():
    p = policy(trunk_carrier=Limits(), trunk_wholesale=Limits(transit=True))
    refused = p.allow_trunk(("trunk", "carrier"), "out", "15551234567", 0.0)
    assert refused is not None and (refused.kind, refused.status, refused.reason) == (
        "transit",
        403,
        "Transit Not Allowed",
    )
    assert p.allow_trunk(("trunk", "wholesale"), "out", "15551234567", 0.0) is None
    # the operator's call flow forwarding an inbound call is not transit
    assert p.allow_trunk(("trunk", "carrier"), "out", "15551234567", 0.0, by_flow=True) is None
    # the deny list still applies to a trunk that may transit
    assert p.allow_trunk(("trunk", "wholesale"), "out", "0044123", 0.0).kind == "destination"


def test_destinations_of_the_caller_and_the_trunk_and_the_deny_list():
    local = (re.compile(r"^1[0-9]{3}$"),)
    p = policy(user_alice=Limits(), user_bob=Limits(destinations=(re.compile(r"^00"),)))
    assert p.allow_trunk(("user", "alice"), "out", "15551234567", 0.0) is None
    for number in ("0044207946", "011442079", "+8821234", "8831234"):
        refused = p.allow_trunk(("user", "alice"), "out", number, 0.0)
        assert refused is not None and refused.reason == "Destination Not Allowed", number
    # bob's own destinations replace the deny list: he may call abroad, and only abroad
    assert p.allow_trunk(("user", "bob"), "out", "0044207946", 0.0) is None
    assert p.allow_trunk(("user", "bob"), "out", "15551234567", 0.0).kind == "destination"
    # a trunk's destinations bound what goes out over it, whoever calls
    p = CallPolicy({("trunk", "local"): Limits(destinations=local)})
    assert p.allow_trunk(("user", "alice"), "local", "1234", 0.0) is None
    assert p.allow_trunk(("user", "alice"), "local", "12345", 0.0).kind == "destination"
    # the API (and its call flows) obey the deny list too
    assert policy().allow_trunk(API, "out", "0044207946", 0.0).kind == "destination"


def test_max_calls_counts_live_calls_until_released():
    p = policy(user_alice=Limits(max_calls=2))
    alice = ("user", "alice")
    for _ in range(2):
        assert p.admit(alice, 0.0) is None
        p.acquire(alice, 0.0)
    refused = p.admit(alice, 0.0)
    assert refused is not None and (refused.kind, refused.reason) == ("max_calls", "Call Limit Reached")
    assert p.admit(("user", "bob"), 0.0) is None  # others are not affected
    p.release(alice)
    assert p.admit(alice, 0.0) is None and p.active(alice) == 1
    p.release(alice)
    p.release(alice)
    p.release(alice)  # more releases than calls never go negative
    assert p.active(alice) == 0


def test_calls_per_minute_is_a_sliding_60_s_window():
    p = policy(trunk_carrier=Limits(calls_per_minute=3))
    carrier = ("trunk", "carrier")
    for t in (0.0, 10.0, 20.0):
        assert p.trunk_room("carrier", t) is None
        p.acquire(carrier, t)
        p.release(carrier)  # short calls: the rate counts starts, not live calls
    refused = p.trunk_room("carrier", 59.0)
    assert refused is not None and refused.kind == "calls_per_minute" and refused.reason == "Call Rate Limit Reached"
    assert p.trunk_room("carrier", 60.5) is None  # the call at 0 s left the window


def test_from_config_reads_users_trunks_and_the_deny_list(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(
        """
[security]
deny_destinations = ["^00"]
[[users]]
name = "alice"
password = "x"
max_calls = 2
calls_per_minute = 5
destinations = ["^1"]
[[trunks]]
name = "carrier"
address = "127.0.0.1:5070"
transit = true
max_calls = 30
"""
    )
    p = from_config(load(path))
    assert p.limits[("user", "alice")].max_calls == 2 and p.limits[("user", "alice")].calls_per_minute == 5
    assert p.limits[("trunk", "carrier")].transit and p.limits[("trunk", "carrier")].max_calls == 30
    assert p.allow_trunk(("user", "alice"), "carrier", "2000", 0.0).kind == "destination"
    assert p.allow_trunk(("user", "nobody"), "carrier", "0033", 0.0).kind == "destination"
