"""OPTIONS keep-alive of registered contacts: answering contacts stay, silent ones are removed."""

from __future__ import annotations

from helpers import free_port

from softswitch.config import ListenAddress
from softswitch.keepalive import ContactKeepalive
from softswitch.sip.message import build_response
from softswitch.sip.transaction import RequestReceived, TimerConfig
from softswitch.store import Binding, Store
from softswitch.transport.endpoint import SipEndpoint

FAST = TimerConfig(0.01, 0.04, 0.05)


def phone(ep, ev) -> None:
    if isinstance(ev, RequestReceived) and ev.key is not None:
        ep.respond(ev.key, build_response(ev.request, 200, to_tag="p"))


async def test_keepalive_removes_the_contact_that_stops_answering(tmp_path):
    store = Store.open(tmp_path / "ka.db")
    ours = SipEndpoint(lambda ep, ev: None, timers=FAST)
    await ours.listen(ListenAddress("udp", "127.0.0.1", free_port(also_udp=True)))
    alive = SipEndpoint(phone, timers=FAST)
    alive_port = free_port(also_udp=True)
    await alive.listen(ListenAddress("udp", "127.0.0.1", alive_port))
    gone_port = free_port(also_udp=True)  # nothing listens there
    for user, port in (("alice", alive_port), ("bob", gone_port)):
        contact = f"sip:{user}@127.0.0.1:{port}"
        store.save_binding(Binding(user, contact, 2e9, f"127.0.0.1:{port}", "udp", "c", 1))
    keepalive = ContactKeepalive(ours, store, ["alice", "bob"], 30, clock=lambda: 1e9)
    try:
        assert await keepalive.ping_all() == 1
        assert [b.user for b in store.bindings("alice", 1e9)] == ["alice"]
        assert store.bindings("bob", 1e9) == []
        assert await keepalive.ping_all() == 0  # the answering one stays
    finally:
        await ours.close()
        await alive.close()
        store.close()
