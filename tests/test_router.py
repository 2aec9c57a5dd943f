"""Routing: every matching route in order (for failover), and trunks recognised by source address."""

from __future__ import annotations

from softswitch.config import parse
from softswitch.router import Router, Target

CONFIG = """
[[users]]
name = "alice"
password = "pw"
[[trunks]]
name = "a"
address = "127.0.0.1:5070"
inbound_from = ["10.0.0.0/8", "192.0.2.7"]
[[trunks]]
name = "b"
address = "127.0.0.1:5080"
inbound_from = ["2001:db8::/32"]
[[routes]]
match = "^alice$"
to = "user:alice"
[[routes]]
match = "^\\\\+?[0-9]{6,15}$"
to = "trunk:a"
[[routes]]
match = "^\\\\+?[0-9]+$"
to = "trunk:b"
"""


def router() -> Router:
    return Router(parse(CONFIG))


def test_router_targets_in_config_order_for_failover():
    assert router().targets("+33123456789") == [Target("trunk", "a", 1), Target("trunk", "b", 2)]
    assert router().targets("123") == [Target("trunk", "b", 2)]
    assert router().targets("alice") == [Target("user", "alice", 0)]
    assert router().targets("bob") == []


def test_router_targets_carry_their_routes_amd_parameters():
    cfg = CONFIG.replace('to = "trunk:a"', 'to = "trunk:a"\namd = { greeting_ms = 3000, max_words = 6 }')
    r = Router(parse(cfg + "[amd]\ngreeting_ms = 4000\nafter_greeting_silence_ms = 800\n"))
    a, b = r.targets("+33123456789")
    # what the route changes; the call puts them over the B2BUA's [amd] (tests/b2bua/test_call.py)
    assert a.amd == {"greeting_ms": 3000, "max_words": 6}
    assert b.amd == {}  # the B2BUA's own [amd] then


def test_router_trunk_for_source_by_network():
    r = router()
    assert r.trunk_for_source("10.1.2.3").name == "a"
    assert r.trunk_for_source("192.0.2.7").name == "a"
    assert r.trunk_for_source("192.0.2.8") is None
    assert r.trunk_for_source("[2001:db8::1]").name == "b"
    assert r.trunk_for_source("not-an-ip") is None


def test_router_trunk_address():
    r = router()
    assert r.trunk_address(r.trunks["b"]) == ("127.0.0.1", 5080)


def test_router_trunk_for_source_answers_the_same_when_asked_again():
    r = router()
    for _ in range(2):  # the second answer comes from what the router remembered
        assert r.trunk_for_source("10.9.9.9").name == "a"
        assert r.trunk_for_source("192.0.2.8") is None
        assert r.trunk_for_source("not-an-ip") is None


def test_router_source_memory_is_bounded(monkeypatch):
    monkeypatch.setattr("softswitch.router._SOURCES_KEPT", 8)
    r = router()
    for i in range(20):
        assert r.trunk_for_source(f"10.0.0.{i}").name == "a"
        assert r.trunk_for_source(f"192.0.2.{100 + i}") is None
    assert len(r._by_source) <= 8
