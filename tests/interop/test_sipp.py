"""SIPp on both sides of the softswitch: a carrier's caller (UAC) and a trunk's callee (UAS), with the
switch between them, for each call flow a carrier expects; every result is read back from the call
record the switch wrote."""

from __future__ import annotations

import re
import socket
import time

import pytest
from interop.sipp import proxy_auth_problems, run_uac, sipp_binary, uas
from interop.switch import Softswitch

from softswitch.store import Binding, Store

assert sipp_binary(), "SIPp (sip-tester) is installed by .ci/run"

SWITCH = 14500
TARGET = f"127.0.0.1:{SWITCH}"
CALLER = {"port": 14010, "media_port": 14100, "control_port": 14012}
CALLEES = {
    name: {"port": 14020 + 10 * i, "media_port": 14200 + 100 * i, "control_port": 14022 + 10 * i}
    for i, name in enumerate(("a", "b", "c"))
}

CONFIG = f"""
[calls]
ring_timeout_s = 2
[[trunks]]
name = "a"
address = "127.0.0.1:{CALLEES["a"]["port"]}"
inbound_from = ["127.0.0.1/32"]
transit = true
username = "trunkuser"
password = "trunkpass"
ping_interval_s = 0
[[trunks]]
name = "b"
address = "127.0.0.1:{CALLEES["b"]["port"]}"
ping_interval_s = 0
[[trunks]]
name = "c"
address = "127.0.0.1:{CALLEES["c"]["port"]}"
ping_interval_s = 0
[[routes]]
match = "^1000$"
to = "trunk:a"
[[routes]]
match = "^2000$"
to = "trunk:a"
[[routes]]
match = "^2000$"
to = "trunk:b"
[[routes]]
match = "^3000$"
to = "trunk:c"
"""


@pytest.fixture
def switch(tmp_path):
    with Softswitch(tmp_path, sip_port=SWITCH, api_port=14501, rtp=(14600, 14699), body=CONFIG) as sw:
        yield sw
        assert sw.alive(), "the switch must survive every test"


def call(scenario: str, service: str = "1000", timeout_s: float = 20):
    return run_uac(scenario, TARGET, service=service, timeout_s=timeout_s, **CALLER)


def test_sipp_basic_call_with_rtp_anchored_through_the_switch(switch):
    with uas("uas_answer", calls=1, rtp_echo=True, **CALLEES["a"]) as callee:
        caller = call("uac_basic_rtp")
        done = callee.wait(10)
    assert caller.ok, caller.summary()
    assert done.successful == 1, done.summary()
    (rec,) = switch.wait_calls(1)
    assert rec["direction"] == "inbound" and rec["trunk"] == "a" and rec["status"] == "completed"
    assert rec["hangup_by"] == "caller" and rec["ended_at"] - rec["answered_at"] > 2.5
    inbound, outbound = rec["legs"]
    # 3 s of 20 ms packets from the caller, echoed by the callee: both legs carried them
    assert inbound["media"]["rx_packets"] >= 140 and outbound["media"]["tx_packets"] >= 140
    assert outbound["media"]["rx_packets"] >= 140 and inbound["media"]["tx_packets"] >= 140
    assert inbound["media"]["loss_pct"] < 1 and inbound["media"]["mos"] > 4
    assert inbound["sip_call_id"] != outbound["sip_call_id"]  # two dialogs, not one proxied
    events = [e["event"] for e in switch.events() if e["call"] == rec["id"]]
    assert events == ["call.initiated", "call.ringing", "call.answered", "call.completed"]


def test_sipp_caller_cancels_while_ringing(switch):
    with uas("uas_ring", calls=1, **CALLEES["a"]) as callee:
        caller = call("uac_cancel")
        done = callee.wait(10)
    assert caller.ok, caller.summary()
    assert done.successful == 1, done.summary()  # the CANCEL reached the callee
    (rec,) = switch.wait_calls(1)
    assert (rec["status"], rec["hangup_code"], rec["hangup_by"]) == ("canceled", 487, "caller")


def test_sipp_callee_busy_is_mapped_back(switch):
    with uas("uas_busy", calls=1, **CALLEES["a"]) as callee:
        caller = call("uac_expect_486")
        callee.wait(5)
    assert caller.ok, caller.summary()
    (rec,) = switch.wait_calls(1)
    assert (rec["status"], rec["hangup_code"]) == ("busy", 486)


def test_sipp_callee_never_answers_ring_timeout_cancels_and_caller_gets_480(switch):
    with uas("uas_ring", calls=1, **CALLEES["a"]) as callee:
        started = time.monotonic()
        caller = call("uac_expect_480")
        took = time.monotonic() - started
        done = callee.wait(10)
    assert caller.ok, caller.summary()
    assert done.successful == 1, done.summary()  # the switch CANCELled the ringing callee
    assert 1.8 < took < 6
    (rec,) = switch.wait_calls(1)
    assert (rec["status"], rec["hangup_code"], rec["hangup_by"]) == ("no-answer", 480, "system")


def test_sipp_reinvite_hold_and_unhold_pass_through_with_sdp_rewritten(switch):
    with uas("uas_hold", calls=1, **CALLEES["a"]) as callee:
        caller = call("uac_hold")
        done = callee.wait(10)
    assert caller.ok, caller.summary()  # sendonly answered recvonly, then sendrecv answered sendrecv
    assert done.successful == 1, done.summary()
    # the callee saw the switch's own address in every offer, never the caller's
    assert "c=IN IP4 127.0.0.1" in done.messages and f"m=audio {CALLER['media_port']}" not in done.messages


def test_sipp_bye_from_callee_ends_both_sides(switch):
    with uas("uas_bye", calls=1, **CALLEES["a"]) as callee:
        caller = call("uac_wait_bye")
        done = callee.wait(10)
    assert caller.ok, caller.summary()
    assert done.successful == 1, done.summary()
    (rec,) = switch.wait_calls(1)
    assert (rec["status"], rec["hangup_by"]) == ("completed", "callee")


def test_sipp_trunk_challenge_407_is_answered_with_trunk_credentials(switch):
    with uas("uas_407", calls=1, **CALLEES["a"]) as callee:
        caller = call("uac_basic_rtp")
        done = callee.wait(10)
    assert caller.ok, caller.summary()
    assert done.successful == 1, done.summary()
    assert proxy_auth_problems(done, username="trunkuser", password="trunkpass") == []


def test_sipp_trunk_503_fails_over_to_the_next_route(switch):
    with (
        uas("uas_503", calls=1, **CALLEES["a"]) as first,
        uas("uas_answer", calls=1, rtp_echo=True, **CALLEES["b"]) as second,
    ):
        caller = call("uac_basic_rtp", service="2000")
        first.stop()
        done = second.wait(10)
    assert caller.ok, caller.summary()
    assert done.successful == 1, done.summary()
    (rec,) = switch.wait_calls(1)
    assert rec["status"] == "completed"
    assert [(leg["role"], leg["status_code"]) for leg in rec["legs"]] == [
        ("inbound", 200),
        ("outbound", 503),
        ("outbound", 200),
    ]


def test_sipp_no_route_is_404(switch):
    caller = call("uac_expect_404", service="99")
    assert caller.ok, caller.summary()


def test_sipp_malformed_requests_get_400_and_the_switch_keeps_serving(switch):
    bad = call("uac_malformed")
    assert bad.ok, bad.summary()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # junk that cannot be answered: dropped
        s.sendto(b"\x00\xff garbage \r\n\r\n", ("127.0.0.1", SWITCH))
    with uas("uas_answer", calls=1, rtp_echo=True, **CALLEES["a"]) as callee:
        caller = call("uac_basic_rtp")
        callee.wait(10)
    assert caller.ok, caller.summary()


def test_sipp_blind_transfer_by_refer_connects_the_caller_to_the_target(switch):
    with (
        uas("uas_refer", calls=1, **CALLEES["a"]) as transferor,
        uas("uas_answer", calls=1, rtp_echo=True, **CALLEES["c"]) as target,
    ):
        caller = call("uac_basic_rtp")
        moved = transferor.wait(10)
        done = target.wait(10)
    assert caller.ok, caller.summary()
    assert moved.successful == 1, moved.summary()  # 202, NOTIFYs up to "200 OK", then our BYE
    assert done.successful == 1, done.summary()  # the target was called, then hung up by the caller's BYE
    (rec,) = switch.wait_calls(1)
    assert rec["status"] == "completed"
    roles = [(leg["role"], leg["status_code"]) for leg in rec["legs"]]
    assert roles == [("inbound", 200), ("outbound", 200), ("outbound", 200)]
    assert rec["legs"][2]["media"]["rx_packets"] > 50  # the caller's tone reached the target and came back


def test_sipp_info_dtmf_is_relayed_to_the_other_dialog(switch):
    with uas("uas_info", calls=1, **CALLEES["a"]) as callee:
        caller = call("uac_info")
        done = callee.wait(10)
    assert caller.ok, caller.summary()
    assert done.successful == 1, done.summary()  # it got the INFO with Signal=5 and its Content-Type
    dtmf = [e for e in switch.events() if e["event"] == "call.dtmf"]
    assert [(e["digit"], e["source"], e["duration_ms"], e["from"]) for e in dtmf] == [("5", "info", 160, "caller")]


def test_sipp_early_media_183_with_sdp_reaches_the_caller_before_the_answer(switch):
    with uas("uas_early", calls=1, rtp_echo=True, **CALLEES["a"]) as callee:
        caller = call("uac_basic_rtp")
        callee.wait(10)
    assert caller.ok, caller.summary()
    early = caller.messages.split("SIP/2.0 183 Session Progress", 1)[1].split("-----", 1)[0]
    port = re.search(r"m=audio (\d+) ", early)
    assert port and 14600 <= int(port.group(1)) <= 14699  # our engine's port, not the callee's
    assert "c=IN IP4 127.0.0.1" in early and "a=sendrecv" in early


def test_sipp_caller_over_tcp_callee_over_udp(switch):
    with uas("uas_answer", calls=1, rtp_echo=True, **CALLEES["a"]) as callee:
        caller = run_uac("uac_basic_rtp", TARGET, service="1000", timeout_s=20, extra=["-t", "t1"], **CALLER)
        done = callee.wait(10)
    assert caller.ok, caller.summary()
    assert done.successful == 1, done.summary()
    (rec,) = switch.wait_calls(1)
    assert rec["legs"][0]["media"]["rx_packets"] >= 140


def test_sipp_max_duration_ends_both_sides(tmp_path):
    body = CONFIG.replace("ring_timeout_s = 2", "ring_timeout_s = 2\nmax_duration_s = 1")
    with (
        Softswitch(tmp_path, sip_port=SWITCH, api_port=14501, rtp=(14600, 14699), body=body) as sw,
        uas("uas_answer", calls=1, **CALLEES["a"]) as callee,
    ):
        started = time.monotonic()
        caller = call("uac_wait_bye")
        done = callee.wait(10)
        (rec,) = sw.wait_calls(1)
    assert caller.ok, caller.summary()  # the caller got our BYE
    assert done.successful == 1, done.summary()  # and so did the callee
    assert time.monotonic() - started < 5
    assert (rec["status"], rec["hangup_by"], rec["hangup_reason"]) == ("completed", "system", "max call duration")


def test_sipp_trunk_marked_down_by_pings_is_skipped_at_once(tmp_path):
    body = CONFIG + (
        '[[trunks]]\nname = "dead"\naddress = "127.0.0.1:14090"\nping_interval_s = 0.3\n'
        '[[routes]]\nmatch = "^4000$"\nto = "trunk:dead"\n[[routes]]\nmatch = "^4000$"\nto = "trunk:b"\n'
    )
    with Softswitch(tmp_path, sip_port=SWITCH, api_port=14501, rtp=(14600, 14699), body=body, t1_ms=10) as sw:
        down = sw.wait_log("trunk.down", timeout=5)  # nothing answers at 14090: Timer F after 0.64 s
        assert down["trunk"] == "dead"
        with uas("uas_answer", calls=1, rtp_echo=True, **CALLEES["b"]) as callee:
            started = time.monotonic()
            caller = call("uac_basic_rtp", service="4000")
            took = time.monotonic() - started
            callee.wait(10)
        (rec,) = sw.wait_calls(1)
    assert caller.ok, caller.summary()
    assert took < 4.5  # 3 s of media, no wait for the dead trunk
    assert [leg["remote_addr"] for leg in rec["legs"][1:]] == [f"127.0.0.1:{CALLEES['b']['port']}"]


def test_sipp_update_hold_passes_through_with_sdp_rewritten(switch):
    with uas("uas_update", calls=1, **CALLEES["a"]) as callee:
        caller = call("uac_update")
        done = callee.wait(10)
    assert caller.ok, caller.summary()  # sendonly answered recvonly
    assert done.successful == 1, done.summary()  # the callee got the UPDATE with sendonly


def test_sipp_caller_outside_every_trunk_with_a_wrong_password_gets_403(tmp_path):
    body = (
        CONFIG.replace('inbound_from = ["127.0.0.1/32"]', 'inbound_from = ["10.0.0.0/8"]')
        + '[[users]]\nname = "alice"\npassword = "right"\n'
    )
    md5 = 'auth_algorithms = ["MD5"]'  # SIPp answers only MD5 challenges, and only the first one it gets
    with Softswitch(tmp_path, sip_port=SWITCH, api_port=14501, rtp=(14600, 14699), body=body, sip_extra=md5) as sw:
        auth = ["-au", "alice", "-ap", "wrong", "-auth_uri", f"1000@127.0.0.1:{SWITCH}"]
        caller = run_uac("uac_auth_403", TARGET, service="1000", timeout_s=20, extra=auth, **CALLER)
        assert sw.calls() == []  # refused before any call existed
    assert caller.ok, caller.summary()  # 407, then 403 for the wrong answer


def test_sipp_user_with_two_contacts_rings_both_and_the_first_answer_wins(tmp_path):
    store = Store.open(tmp_path / "sw.db")
    for name in ("a", "b"):
        port = CALLEES[name]["port"]
        store.save_binding(Binding("bob", f"sip:bob@127.0.0.1:{port}", 4e9, f"127.0.0.1:{port}", "udp", "r", 1))
    store.close()
    body = CONFIG + '[[users]]\nname = "bob"\npassword = "pw"\n[[routes]]\nmatch = "^bob$"\nto = "user:bob"\n'
    with (
        Softswitch(tmp_path, sip_port=SWITCH, api_port=14501, rtp=(14600, 14699), body=body) as sw,
        uas("uas_ring", calls=1, **CALLEES["a"]) as ringing,
        uas("uas_answer", calls=1, rtp_echo=True, **CALLEES["b"]) as answering,
    ):
        caller = call("uac_basic_rtp", service="bob")
        cancelled = ringing.wait(10)
        answered = answering.wait(10)
        (rec,) = sw.wait_calls(1)
    assert caller.ok, caller.summary()
    assert cancelled.successful == 1, cancelled.summary()  # it rang, then got our CANCEL
    assert answered.successful == 1, answered.summary()
    legs = sorted((leg["remote_addr"], leg["status_code"]) for leg in rec["legs"][1:])
    assert legs == [(f"127.0.0.1:{CALLEES['a']['port']}", 487), (f"127.0.0.1:{CALLEES['b']['port']}", 200)]
    assert rec["direction"] == "inbound" and rec["status"] == "completed"
