"""Trunk health (OPTIONS pings) and registration to a carrier, against a carrier played by a second SIP
endpoint over real UDP sockets; timers are shortened (T1 = 10 ms, so Timer F is 0.64 s)."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from helpers import free_port

from softswitch.config import ListenAddress, Trunk
from softswitch.sip.auth import Algorithm, DigestServer
from softswitch.sip.message import build_response
from softswitch.sip.transaction import RequestReceived, TimerConfig
from softswitch.transport.endpoint import SipEndpoint
from softswitch.trunks import Trunks

FAST = TimerConfig(0.01, 0.04, 0.05)


class Carrier:
    """Answers OPTIONS 200 and REGISTER with a digest challenge, then 200 for the right credentials."""

    def __init__(self):
        self.digest = DigestServer("carrier.test", secrets.token_bytes(16), algorithms=(Algorithm.MD5,))
        self.seen: list[str] = []
        self.verified: list[bool] = []

    def __call__(self, endpoint: SipEndpoint, ev) -> None:
        if not isinstance(ev, RequestReceived) or ev.key is None:
            return
        request = ev.request
        self.seen.append(request.method)
        if request.method == "REGISTER":
            result = self.digest.verify(
                "REGISTER", request.get_all("Authorization"), request.uri_text, lambda u, a: "s3cret", 0.0
            )
            if not request.get_all("Authorization"):
                headers = [("WWW-Authenticate", c) for c in self.digest.challenges(0.0)]
                endpoint.respond(ev.key, build_response(request, 401, to_tag="c1", headers=headers))
                return
            self.verified.append(result.ok and result.username == "acct")
            contact = request.get("Contact")
            headers = [("Contact", f"{contact};expires=120")]
            endpoint.respond(ev.key, build_response(request, 200 if result.ok else 403, to_tag="c1", headers=headers))
        else:
            endpoint.respond(ev.key, build_response(request, 200, to_tag="c1"))


async def endpoint(handler) -> tuple[SipEndpoint, int]:
    port = free_port(also_udp=True)
    ep = SipEndpoint(handler, timers=FAST)
    await ep.listen(ListenAddress("udp", "127.0.0.1", port))
    return ep, port


@pytest.fixture
async def pair():
    carrier = Carrier()
    far, far_port = await endpoint(carrier)
    ours, _ = await endpoint(lambda ep, ev: None)
    yield ours, far, far_port, carrier
    await ours.close()
    await far.close()


async def test_trunks_ping_marks_a_trunk_down_when_it_stops_answering_and_up_again(pair):
    ours, far, far_port, carrier = pair
    trunk = Trunk(name="c", address=f"127.0.0.1:{far_port}", ping_interval_s=0)
    trunks = Trunks(ours, [trunk], domain="example.test")
    state = trunks.states["c"]
    assert await trunks.ping(state) and trunks.is_up("c") and carrier.seen == ["OPTIONS"]
    await far.close()
    assert not await asyncio.wait_for(trunks.ping(state), 3)  # Timer F: no answer
    assert not trunks.is_up("c")
    back = SipEndpoint(carrier, timers=FAST)
    await back.listen(ListenAddress("udp", "127.0.0.1", far_port))
    try:
        assert await trunks.ping(state) and trunks.is_up("c")
    finally:
        await back.close()


async def test_trunks_ping_503_counts_as_down(pair):
    ours, far, far_port, _ = pair
    far.handler = lambda ep, ev: ep.respond(ev.key, build_response(ev.request, 503, to_tag="x"))
    trunks = Trunks(ours, [Trunk(name="c", address=f"127.0.0.1:{far_port}")], domain="example.test")
    assert not await trunks.ping(trunks.states["c"])


async def test_trunks_register_answers_the_challenge_and_keeps_the_granted_expiry(pair):
    ours, _, far_port, carrier = pair
    trunk = Trunk(
        name="c", address=f"127.0.0.1:{far_port}", username="acct", password="s3cret", register=True, ping_interval_s=0
    )
    trunks = Trunks(ours, [trunk], domain="example.test")
    state = trunks.states["c"]
    granted = await trunks.register(state, "reg-call", "tag1", 1)
    assert granted == 120 and state.registered
    assert carrier.seen == ["REGISTER", "REGISTER"] and carrier.verified == [True]


async def test_trunks_register_with_a_wrong_password_fails(pair):
    ours, _, far_port, carrier = pair
    trunk = Trunk(name="c", address=f"127.0.0.1:{far_port}", username="acct", password="nope", register=True)
    trunks = Trunks(ours, [trunk], domain="example.test")
    assert await trunks.register(trunks.states["c"], "reg-call", "tag1", 1) is None
    assert not trunks.states["c"].registered and carrier.verified == [False]


async def test_trunks_start_runs_pings_in_the_background_and_close_stops_them(pair):
    ours, _, far_port, carrier = pair
    trunks = Trunks(ours, [Trunk(name="c", address=f"127.0.0.1:{far_port}", ping_interval_s=0.05)], domain="x")
    trunks.start()
    await asyncio.sleep(0.3)
    await trunks.close()
    count = trunks.states["c"].pings
    assert count >= 3
    await asyncio.sleep(0.15)
    assert trunks.states["c"].pings == count
