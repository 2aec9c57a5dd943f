"""Two baresip softphones REGISTER with digest and call each other through the softswitch; the tone each
sends must be what the other hears, so the media really went through the engine both ways."""

from __future__ import annotations

import time

import pytest
from helpers import make_cert
from interop.baresip import Baresip, account_line, available, dominant_hz, tone_power_ratio
from interop.switch import Softswitch

assert available(), "baresip is installed by .ci/run"

SIP = 15500
USERS = '[[users]]\nname = "alice"\npassword = "alice-pw"\n[[users]]\nname = "bob"\npassword = "bob-pw"\n'
ROUTES = '[[routes]]\nmatch = "^alice$"\nto = "user:alice"\n[[routes]]\nmatch = "^bob$"\nto = "user:bob"\n'


def _phone(name: str, tmp_path, index: int, tone: int, transport: str) -> Baresip:
    account = account_line(name, "example.test", proxy_port=SIP, auth_pass=f"{name}-pw", regint=60, transport=transport)
    base = 15600 + 100 * index
    return Baresip(
        name,
        tmp_path,
        sip_port=base,
        ctrl_port=base + 10,
        rtp_ports=(base + 20, base + 59),
        account=account,
        tone_hz=tone,
        record_wav=tmp_path / f"{name}.wav",
    )


def _talk(sw: Softswitch, alice: Baresip, bob: Baresip) -> dict:
    """Both register; alice calls bob, they talk 3 s, alice hangs up: the call's record."""
    alice.wait_registered(10)
    bob.wait_registered(10)
    alice.dial("sip:bob@example.test")
    alice.wait_event("CALL_ESTABLISHED", 10)
    bob.wait_event("CALL_ESTABLISHED", 10)
    time.sleep(3)
    alice.hangup()
    alice.wait_event("CALL_CLOSED", 5)
    bob.wait_event("CALL_CLOSED", 5)
    (call,) = sw.wait_calls(1)
    return call


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_register_and_call_each_other_with_audio_through_the_switch(tmp_path, transport):
    """Over TCP the call to bob must reuse the connection his REGISTER came on (he listens on no TCP port
    the switch could know: the registered flow is the only way back, as behind a NAT)."""
    sw = Softswitch(
        tmp_path,
        sip_port=SIP,
        api_port=15501,
        rtp=(15510, 15598),
        body=USERS + ROUTES,
        sip_extra='auth_algorithms = ["MD5"]',  # libre 1.1 gives up on a SHA-256 challenge instead of using MD5
    )
    alice, bob = _phone("alice", tmp_path, 1, 440, transport), _phone("bob", tmp_path, 2, 1000, transport)
    with sw, alice, bob:
        call = _talk(sw, alice, bob)
        events = [e["event"] for e in sw.events() if e["call"] == call["id"]]
    # what each phone heard is the other's tone
    assert dominant_hz(tmp_path / "bob.wav") == pytest.approx(440, abs=5)
    assert dominant_hz(tmp_path / "alice.wav") == pytest.approx(1000, abs=5)
    assert tone_power_ratio(tmp_path / "bob.wav", 440) > 0.9
    # the call record: alice authenticated, internal call, answered, ended by the caller
    assert call["direction"] == "internal" and call["user"] == "alice"
    assert call["status"] == "completed" and call["hangup_by"] == "caller"
    assert call["answered_at"] and call["ended_at"] - call["answered_at"] > 2.5
    inbound, outbound = call["legs"]
    assert inbound["role"] == "inbound" and outbound["role"] == "outbound"
    for leg in (inbound, outbound):
        assert leg["media"]["rx_packets"] > 100 and leg["media"]["codec"] in ("PCMU", "PCMA")
    assert events == ["call.initiated", "call.ringing", "call.answered", "call.completed"]
    if transport == "tcp":  # bob was reached over his own connection: its source port is not his SIP port
        assert outbound["remote_addr"] != "127.0.0.1:15800"


def _secure_phone(name: str, tmp_path, tls_port: int, cert: str, tone: int) -> Baresip:
    """A phone registered over TLS that insists on SRTP (SDES keys, baresip's srtp-mand)."""
    account = account_line(
        name,
        "example.test",
        proxy_port=tls_port,
        auth_pass=f"{name}-pw",
        regint=60,
        transport="tls",
        mediaenc="srtp-mand",
    )
    return Baresip(
        name,
        tmp_path,
        sip_port=15900,  # apart from _phone's (15700 and 15800 and up)
        ctrl_port=15910,
        rtp_ports=(15920, 15959),
        account=account,
        tone_hz=tone,
        record_wav=tmp_path / f"{name}.wav",
        extra_config={"sip_cafile": cert},
        extra_modules=("srtp.so",),
        sip_trace=True,
    )


@pytest.mark.parametrize("secure", ["caller", "callee"])
def test_baresip_over_tls_with_srtp_and_a_plain_phone_audio_both_ways(tmp_path, secure):
    """One phone registers over TLS with SRTP mandatory, the other is a plain UDP phone; alice calls bob.
    Secure caller: the switch answers her RTP/SAVP offer with its own key. Secure callee (bob has `srtp =
    true`): the switch offers him RTP/SAVP with its key and keys his leg from his answer. Either way the
    engine leg decrypts and encrypts for the plain side: each hears the other's tone."""
    cert, key = make_cert(tmp_path)
    tls_port = SIP + 2
    users = USERS.replace('name = "bob"\npassword = "bob-pw"\n', 'name = "bob"\npassword = "bob-pw"\nsrtp = true\n')
    sw = Softswitch(
        tmp_path,
        sip_port=SIP,
        api_port=15501,
        rtp=(15510, 15598),
        body=users + ROUTES,
        sip_extra='auth_algorithms = ["MD5"]',
        tls=(tls_port, cert, key),
    )
    if secure == "caller":
        alice, bob = _secure_phone("alice", tmp_path, tls_port, cert, 440), _phone("bob", tmp_path, 2, 1000, "udp")
    else:
        alice, bob = _phone("alice", tmp_path, 1, 440, "udp"), _secure_phone("bob", tmp_path, tls_port, cert, 1000)
    with sw, alice, bob:
        call = _talk(sw, alice, bob)
    trace = (alice if secure == "caller" else bob).log_tail(200_000)
    assert "RTP/SAVP" in trace and "a=crypto:" in trace
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in trace
    assert dominant_hz(tmp_path / "bob.wav") == pytest.approx(440, abs=5)
    assert dominant_hz(tmp_path / "alice.wav") == pytest.approx(1000, abs=5)
    inbound, outbound = call["legs"]
    assert inbound["media"]["rx_packets"] > 100 and outbound["media"]["rx_packets"] > 100
