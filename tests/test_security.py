"""Security events (softswitch.security): security.alert on the bus, capped; bans kept in the store and re-read."""

from __future__ import annotations

import asyncio

from softswitch import security as security_module
from softswitch.b2bua.policy import Refusal
from softswitch.events import EventBus
from softswitch.guard import GuardPolicy, SourceGuard, Verdict
from softswitch.security import Security
from softswitch.store import Store


def make(tmp_path, *, alerts_per_s: float = 1000.0, clock: list[float] | None = None, **policy) -> Security:
    clock = clock if clock is not None else [1000.0]
    bus = EventBus()
    sec = Security(
        SourceGuard(GuardPolicy(**policy)),
        Store.open(tmp_path / "s.db"),
        bus,
        alerts_per_s=alerts_per_s,
        wall=lambda: clock[0],
    )
    sec.alerts = []
    bus.subscribe(lambda ev: sec.alerts.append(ev), types=["security.alert"])
    return sec


def test_failures_alert_then_ban_persisted_and_alerted(tmp_path):
    sec = make(tmp_path, fail_limit=3)
    for _ in range(3):
        sec.auth_failed("198.51.100.7", "alice", "REGISTER", "bad_response")
    kinds = [(a.data["kind"], a.data["source"]) for a in sec.alerts]
    assert kinds == [("auth_failed", "198.51.100.7")] * 3 + [("banned", "198.51.100.7")]
    assert sec.alerts[0].data["user"] == "alice" and sec.alerts[0].data["detail"] == "REGISTER: bad_response"
    assert sec.counters["auth_failures"] == 3 and sec.counters["bans"] == 1
    [ban] = sec.store.bans(1000.0)
    assert ban.address == "198.51.100.7" and ban.failures == 3 and ban.until == 1000.0 + 3600
    assert sec.admit("198.51.100.7") is Verdict.BANNED and sec.counters["banned_dropped"] == 1
    # a restart reads the ban back
    again = Security(SourceGuard(GuardPolicy()), Store.open(tmp_path / "s.db"), EventBus(), wall=lambda: 1000.0)
    assert again.admit("198.51.100.7") is Verdict.BANNED


def test_rate_limited_alerts_once_per_episode(tmp_path):
    sec = make(tmp_path, rate_per_s=1, burst=2)
    verdicts = [sec.admit("203.0.113.5") for _ in range(10)]
    assert verdicts.count(Verdict.LIMITED) == 8 and sec.counters["rate_limited"] == 8
    assert [a.data["kind"] for a in sec.alerts] == ["rate_limited"]


def test_refused_calls_alert_with_the_rule(tmp_path):
    sec = make(tmp_path)
    refusal = Refusal("destination", 403, "Destination Not Allowed", "0044 matches [security] deny_destinations")
    sec.refused(refusal, source="192.0.2.1", origin=("user", "bob"), number="0044", call_id="")
    [alert] = sec.alerts
    assert alert.data == {
        "kind": "call_refused",
        "source": "192.0.2.1",
        "detail": "0044 matches [security] deny_destinations",
        "rule": "destination",
        "origin": "user:bob",
        "number": "0044",
        "call_id": "",
    }
    assert sec.counters["refused_destination"] == 1


def test_alerts_are_capped_and_the_rest_counted(tmp_path):
    sec = make(tmp_path, alerts_per_s=5, fail_limit=1000)
    for i in range(50):
        sec.auth_failed(f"10.0.0.{i}", None, "INVITE", "unknown_user")
    assert len(sec.alerts) == 5 and sec.counters["alerts_suppressed"] == 45
    assert sec.counters["auth_failures"] == 50  # every failure still counted


async def test_a_lift_by_another_process_is_seen_at_the_next_sync(tmp_path, monkeypatch):
    monkeypatch.setattr(security_module, "SYNC_S", 0.05)
    sec = make(tmp_path, fail_limit=1)
    sec.auth_failed("198.51.100.9", "x", "REGISTER", "bad_response")
    assert sec.banned("198.51.100.9")
    sec.start()
    try:
        other = Store.open(tmp_path / "s.db")  # what `softswitch bans lift` does
        assert other.delete_ban("198.51.100.9")
        other.close()
        for _ in range(40):
            await asyncio.sleep(0.05)
            if not sec.banned("198.51.100.9"):
                break
        assert not sec.banned("198.51.100.9")
    finally:
        await sec.close()
