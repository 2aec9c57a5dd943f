"""The SIP edge against the tools attackers use: a real `softswitch serve`, Debian's sipvicious (svwar, svcrack)
and SIPp as carrier, user and attacker from their own loopback addresses, each scenario run by
tests/security_driver.py inside a private network namespace (`unshare -n`): nothing can leave the box.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def run(scenario: str, var: Path) -> dict:
    driver = HERE / "security_driver.py"
    cmd = ["unshare", "-n", sys.executable, str(driver), scenario, str(var)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=HERE.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def events(metrics: dict, kind: str) -> float:
    return metrics[f'softswitch_security_events_total{{kind="{kind}"}}']


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Every scenario once (they take about a minute together), for the tests below to read."""
    return {name: run(name, tmp_path_factory.mktemp(name)) for name in ("enumeration", "scanners", "bruteforce")}


def test_svwar_finds_no_extension_with_register_invite_or_options(results):
    svwar = results["enumeration"]["svwar"]
    for method in ("REGISTER", "INVITE", "OPTIONS"):
        assert svwar[method]["found"] == [], svwar[method]["output"]
        assert "found nothing" in svwar[method]["output"]


def test_known_and_unknown_users_get_the_same_answers_in_the_same_time(results):
    """REGISTER and INVITE with a wrong password, OPTIONS and SUBSCRIBE: code, reason, headers and challenge
    alike for user 103 (exists) and 999 (does not), 40 times each; median times within 20 % or 0.2 ms."""
    shapes, timing = results["enumeration"]["shapes"], results["enumeration"]["timing_ms"]
    expected = {"REGISTER": "401", "INVITE": "403", "OPTIONS": "200", "SUBSCRIBE": "405"}
    for method, status in expected.items():
        assert shapes[method]["all_same"], shapes[method]
        assert shapes[method]["known"]["status"].split()[1] == status
        known, unknown = timing[method]["known"], timing[method]["unknown"]
        assert abs(known - unknown) <= max(0.2, 0.2 * known), (method, known, unknown)
    assert shapes["REGISTER"]["known"]["challenges"] == [
        'WWW-Authenticate: Digest realm="sec.test", nonce="-", algorithm=MD5, qop="auth"'
    ]


def test_scanners_are_dropped_unanswered_by_default(results):
    scan = results["scanners"]
    assert scan["found"] == [] and "timed out" in scan["output"]
    assert scan["svmap_found"] == [], scan["svmap_output"]
    # the control: with the filter off, svmap does see a SIP device there (the tool works here)
    [(device, agent, *_)] = results["enumeration"]["svmap_with_filter_off"]
    assert device.startswith("127.0.0.10:5060") and "softswitch" in agent
    assert events(scan["metrics"], "scanners_dropped") >= 1


def test_svcrack_never_finds_a_password_past_the_ban_and_the_cli_lifts_it(results):
    bf = results["bruteforce"]
    assert bf["control"] == [["107", "pw-107-x9"]]  # the tool works here: a password before the limit is found
    assert bf["crack"]["found"] == [], bf["crack"]["output"]  # the real one was 31st in its list
    m = bf["metrics"]
    # 2 failures of the control run, then 8 of this one: the 10th in 5 minutes bans the address
    assert events(m, "auth_failures") == 10 and events(m, "bans") == 1 and m["softswitch_security_bans"] == 1
    assert events(m, "banned_dropped") > 0
    lines = bf["bans_list"].splitlines()
    assert lines[0].split("\t") == ["ADDRESS", "SINCE", "UNTIL", "FAILURES", "REASON"]
    assert re.fullmatch(r"127\.0\.0\.2\t\S+Z\t\S+Z\t10\t10 failed authentications in 300 s", lines[1]), lines
    assert bf["banned_answer"] is None  # dropped: the attacker hears nothing
    assert bf["other_phone"] == 1  # a phone on another address registers meanwhile
    assert bf["lift"][0] == 0 and bf["lift"][1] == "lifted 127.0.0.2" and bf["lift_again"] == 1
    assert bf["answer_after_lift"] == "SIP/2.0 401 Unauthorized"  # the running server saw the lift
    assert bf["events"].count("security.auth_failed") == 10 and bf["events"][-1] == "security.banned"


def test_fraud_rules_with_sipp_as_stranger_carrier_and_users(tmp_path):
    r = run("fraud", tmp_path)
    assert r["stranger_forged"] == ["403 Forbidden"]  # forged P-Asserted-Identity and Route change nothing
    assert r["stranger_no_credentials"] == ["403 Forbidden"]
    assert r["carrier_hairpin"] == ["403 Transit Not Allowed"]
    assert r["deny_list"] == ["403 Destination Not Allowed"]
    assert r["premium"] == ["403 Destination Not Allowed"]
    assert r["outside_destinations"] == ["403 Destination Not Allowed"]
    assert r["inside_destinations"] == ["200 OK"]
    assert r["max_calls"] == ["200 OK", "403 Call Limit Reached"]
    assert r["calls_per_minute"] == ["200 OK", "200 OK", "403 Call Rate Limit Reached"]
    assert r["callee_calls"] == 4  # only the allowed calls reached the carrier
    assert r["trunk_max_calls"] == ["200 OK", "403 Call Limit Reached"]  # the trunk's max_calls = 1
    assert r["trunk_destinations"] == ["403 Destination Not Allowed"]  # the trunk's destinations
    assert r["small_calls"] == 1
    # the carrier's party of an allowed call REFERs it abroad: 202, then the NOTIFY says the rule; the call goes on
    assert r["refer_call"] == ["200 OK"]
    assert r["refer_callee"] == [1, ["SIP/2.0 100 Trying", "SIP/2.0 403 Transit Not Allowed"]]
    m = r["metrics"]
    refused = [events(m, f"refused_{k}") for k in ("transit", "destination", "max_calls", "calls_per_minute")]
    assert refused == [2, 4, 2, 1]
    rules = sorted(e["rule"] for e in r["events"])
    assert rules == ["calls_per_minute", *["destination"] * 4, "max_calls", "max_calls", "transit", "transit"]
    assert all(e["level"] == "warning" and e["number"] for e in r["events"])


def test_legitimate_calls_complete_under_a_sipp_flood_and_memory_stays_bounded(tmp_path):
    r = run("flood", tmp_path)
    sent, seconds = r["flood_sent"]
    assert sent / seconds > 20_000, r["flood_sent"]  # junk INVITEs from one address, SIPp's highest rate
    assert r["legit_answered"] >= 149 and r["callee_calls"] >= 149, r["legit_summary"]  # >= 99 % of 150
    assert events(r["metrics_after_flood"], "rate_limited") > 0.9 * sent
    spoof = r["metrics_after_spoof"]
    assert spoof['softswitch_security_sources_tracked{table="rate"}'] == 4096  # [security] max_sources
    assert spoof["softswitch_sip_transactions"] <= 8000  # [sip] max_transactions
    assert events(spoof, "transactions_full") > 0
    before, after = r["rss_kb"]
    assert after - before < 120_000, r["rss_kb"]
