"""Kamailio as a carrier's stateful proxy in front of the softswitch: calls come in through it and go out
through it (Record-Route on both dialogs), with media anchored by the switch."""

from __future__ import annotations

from interop.kamailio import Kamailio, available
from interop.sipp import run_uac, uas
from interop.switch import Softswitch

assert available(), "kamailio is installed by .ci/run"

SWITCH, PROXY = 14500, 14700
CALLER = {"port": 14010, "media_port": 14100, "control_port": 14012}
CALLEE = {"port": 14020, "media_port": 14200, "control_port": 14022}

CONFIG = f"""
[[trunks]]
name = "carrier"
address = "127.0.0.1:{PROXY}"
inbound_from = ["127.0.0.1/32"]
transit = true
ping_interval_s = 0
[[routes]]
match = "^1000$"
to = "trunk:carrier"
"""


def test_kamailio_carrier_proxy_inbound_and_outbound_through_the_switch(tmp_path):
    sw = Softswitch(tmp_path, sip_port=SWITCH, api_port=14501, rtp=(14600, 14699), body=CONFIG)
    proxy = Kamailio(tmp_path, port=PROXY, switch_port=SWITCH, far_port=CALLEE["port"])
    with sw, proxy, uas("uas_answer", calls=1, rtp_echo=True, **CALLEE) as callee:
        caller = run_uac("uac_basic_rtp", f"127.0.0.1:{PROXY}", service="1000", timeout_s=20, **CALLER)
        done = callee.wait(10)
        (rec,) = sw.wait_calls(1)
        relayed = proxy.relayed()
    assert caller.ok, caller.summary()
    assert done.successful == 1, done.summary()
    # the proxy carried the caller's INVITE to the switch, and the switch's INVITE to the callee
    assert any(f"relay INVITE sip:1000@127.0.0.1:{PROXY} from 127.0.0.1:{CALLER['port']}" in r for r in relayed)
    assert any(f"from 127.0.0.1:{SWITCH} to sip:127.0.0.1:{CALLEE['port']}" in r for r in relayed)
    # the BYE crossed the proxy on both dialogs (loose routing), so the callee's scenario ended cleanly
    assert rec["status"] == "completed" and rec["direction"] == "inbound" and rec["trunk"] == "carrier"
    inbound, outbound = rec["legs"]
    assert inbound["remote_addr"] == f"127.0.0.1:{PROXY}" and outbound["remote_addr"] == f"127.0.0.1:{PROXY}"
    assert inbound["media"]["rx_packets"] >= 140 and outbound["media"]["rx_packets"] >= 140
