"""The SIP endpoint over real sockets: UDP and TCP in, answers out by RFC 3261 18.2.2 / RFC 3581."""

from __future__ import annotations

import asyncio
import socket

import pytest
from helpers import free_port

from softswitch.config import ListenAddress
from softswitch.registrar import Registrar
from softswitch.sip.auth import Challenge, DigestClient
from softswitch.sip.message import parse
from softswitch.store import Store
from softswitch.transport.endpoint import Flow, SipEndpoint, response_flow
from softswitch.uas import BasicUas


def request(method: str, via: str, cseq: int = 1, extra: str = "", body: bytes = b"", uri: str = "sip:bob@127.0.0.1"):
    head = (
        f"{method} {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\n"
        f"To: <sip:bob@example.com>\r\nCall-ID: call-{cseq}@x\r\nCSeq: {cseq} {method}\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@pytest.fixture
async def endpoint():
    port = free_port(also_udp=True)
    ep = SipEndpoint(BasicUas(), tcp_idle_s=0.4, max_message_bytes=4000)
    await ep.listen(ListenAddress("udp", "127.0.0.1", port))
    await ep.listen(ListenAddress("tcp", "127.0.0.1", port))
    yield ep, port
    await ep.close()


async def udp_exchange(port: int, data: bytes, count: int = 1, bind_port: int = 0) -> list:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", bind_port))
    sock.setblocking(False)
    try:
        await loop.sock_sendto(sock, data, ("127.0.0.1", port))
        out = []
        for _ in range(count):
            out.append(parse(await asyncio.wait_for(loop.sock_recv(sock, 65535), 2)))
        return out
    finally:
        sock.close()


async def test_endpoint_options_over_udp_gets_200_with_received_and_rport(endpoint):
    ep, port = endpoint
    (resp,) = await udp_exchange(port, request("OPTIONS", "SIP/2.0/UDP client.invalid:5999;branch=z9hG4bKo1;rport"))
    assert resp.status == 200 and "INVITE" in resp.get("Allow") and resp.get("Accept") == "application/sdp"
    via = resp.via
    assert via.received == "127.0.0.1" and via.rport and via.rport != 5999  # answered to the source port
    assert resp.to.tag


async def test_endpoint_options_outside_dialogs_answered_without_a_transaction(endpoint):
    ep, port = endpoint
    data = request("OPTIONS", "SIP/2.0/UDP h.invalid;branch=z9hG4bKsl1;rport")
    first, again = await udp_exchange(port, data), await udp_exchange(port, data)  # a retransmission
    assert first[0].status == again[0].status == 200 and first[0].to.tag == again[0].to.tag  # 8.2.7
    (other,) = await udp_exchange(port, data.replace(b"z9hG4bKsl1", b"z9hG4bKsl2"))
    assert other.to.tag != first[0].to.tag  # another request, another tag
    (sips,) = await udp_exchange(
        port, request("OPTIONS", "SIP/2.0/UDP h.invalid;branch=z9hG4bKsl3;rport", uri="sips:bob@127.0.0.1")
    )
    assert sips.status == 416  # the same checks as with a transaction
    assert len(ep.txns) == 0 and ep.counters["sent"] == 4
    (sub,) = await udp_exchange(port, request("SUBSCRIBE", "SIP/2.0/UDP h.invalid;branch=z9hG4bKsl4;rport"))
    assert sub.status == 405 and len(ep.txns) == 1  # other requests keep their transaction (17.2)


def test_response_flow_is_the_source_flow_when_via_names_it_and_a_new_one_otherwise():
    source = Flow("udp", ("127.0.0.1", 5099), ("127.0.0.1", 5060))
    same = parse(request("OPTIONS", "SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKs;rport=5099"))
    assert response_flow(same, source) is source  # nothing new for a transaction to hold
    other = parse(request("OPTIONS", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKo"))
    assert response_flow(other, source) == Flow("udp", ("127.0.0.1", 5070), ("127.0.0.1", 5060))
    received = parse(request("OPTIONS", "SIP/2.0/UDP [::1]:5099;branch=z9hG4bKr"))
    assert response_flow(received, source).remote == ("::1", 5099)


async def test_endpoint_without_rport_answers_via_port(endpoint):
    ep, port = endpoint
    listener = free_port(also_udp=True)
    data = request("OPTIONS", f"SIP/2.0/UDP 127.0.0.1:{listener};branch=z9hG4bKo2")
    (resp,) = await udp_exchange(port, data, bind_port=listener)
    assert resp.status == 200 and resp.via.received is None


async def test_endpoint_malformed_request_gets_400_and_keeps_serving(endpoint):
    ep, port = endpoint
    bad = request("OPTIONS", "SIP/2.0/UDP h.invalid;branch=z9hG4bKo3;rport").replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 BYE")
    (resp,) = await udp_exchange(port, bad)
    assert resp.status == 400 and "does not match" in resp.reason
    await udp_exchange(port, b"\x00\x01garbage\r\n\r\n", count=0)  # nothing to answer: dropped
    (ok,) = await udp_exchange(port, request("OPTIONS", "SIP/2.0/UDP h.invalid;branch=z9hG4bKo4;rport"))
    assert ok.status == 200 and ep.counters["malformed"] == 2 and ep.counters["answered_400"] == 1


@pytest.mark.parametrize(
    ("method", "extra", "body", "status"),
    [
        ("MESSAGE", "", b"", 405),
        ("OPTIONS", "Require: nothingSupportsThis\r\n", b"", 420),
        ("INVITE", "Content-Type: application/unknownformat\r\n", b"<audio/>", 415),
        ("INVITE", "Accept: text/nobodyKnowsThis\r\n", b"", 406),
        ("BYE", "", b"", 481),
        ("INVITE", "", b"", 404),
    ],
)
async def test_endpoint_uas_checks(endpoint, method, extra, body, status):
    ep, port = endpoint
    count = 2 if method == "INVITE" else 1  # 100 Trying first
    resps = await udp_exchange(
        port, request(method, "SIP/2.0/UDP h.invalid;branch=z9hG4bK5;rport", extra=extra, body=body), count=count
    )
    assert resps[-1].status == status
    if status == 420:
        assert resps[-1].get("Unsupported") == "nothingSupportsThis"


async def test_endpoint_unknown_uri_scheme_is_416(endpoint):
    ep, port = endpoint
    data = request("OPTIONS", "SIP/2.0/UDP h.invalid;branch=z9hG4bK6;rport", uri="nobodyKnowsThisScheme:x")
    assert (await udp_exchange(port, data))[0].status == 416


async def test_endpoint_tcp_split_messages_and_keepalive(endpoint):
    ep, port = endpoint
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = (
        request("OPTIONS", "SIP/2.0/TCP h.invalid;branch=z9hG4bKt1", cseq=1)
        + b"\r\n\r\n"
        + request("OPTIONS", "SIP/2.0/TCP h.invalid;branch=z9hG4bKt2", cseq=2)
    )
    for i in range(0, len(data), 7):
        writer.write(data[i : i + 7])
        await writer.drain()
    first = parse(await asyncio.wait_for(read_message(reader), 2))
    pong = await asyncio.wait_for(reader.readexactly(2), 2)
    second = parse(await asyncio.wait_for(read_message(reader), 2))
    assert (first.status, first.cseq.seq, pong, second.cseq.seq) == (200, 1, b"\r\n", 2)
    writer.close()


async def read_message(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(parse(head + b"", stream=False).get("Content-Length") or 0)
    return head + (await reader.readexactly(length) if length else b"")


async def test_endpoint_tcp_oversize_closes_and_idle_closes(endpoint):
    ep, port = endpoint
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        request(
            "OPTIONS", "SIP/2.0/TCP h.invalid;branch=z9hG4bKt3", body=b"x" * 5000, extra="Content-Type: text/plain\r\n"
        )
    )
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed: the stream cannot be resynchronised
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.05)
    assert ep.connection_count == 1
    assert await asyncio.wait_for(reader.read(), 3) == b""  # idle for longer than tcp_idle_s
    assert ep.connection_count == 0


async def test_endpoint_cancel_ends_invite_with_487(endpoint):
    ep, port = endpoint
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    via = "SIP/2.0/UDP h.invalid;branch=z9hG4bKc1;rport"
    ep.handler = lambda endpoint, ev: None  # a TU that never answers the INVITE, so it can be cancelled
    await loop.sock_sendto(sock, request("INVITE", via), ("127.0.0.1", port))
    assert parse(await asyncio.wait_for(loop.sock_recv(sock, 65535), 2)).status == 100
    ep.handler = BasicUas()
    await loop.sock_sendto(sock, request("CANCEL", via), ("127.0.0.1", port))
    got = sorted(
        [parse(await asyncio.wait_for(loop.sock_recv(sock, 65535), 2)) for _ in range(2)], key=lambda r: r.cseq.method
    )
    assert [(r.cseq.method, r.status) for r in got] == [("CANCEL", 200), ("INVITE", 487)]
    sock.close()


async def test_endpoint_register_with_digest_over_udp(tmp_path):
    store = Store.open(tmp_path / "sw.db")
    port = free_port(also_udp=True)
    ep = SipEndpoint(BasicUas(registrar=Registrar(store, {"alice": "pw"}.get, "example.test")))
    await ep.listen(ListenAddress("udp", "127.0.0.1", port))
    try:
        via = "SIP/2.0/UDP 10.9.9.9:5062;branch=z9hG4bKr{};rport"
        reg = request(
            "REGISTER", via.format(1), extra="Contact: <sip:alice@10.9.9.9:5062>\r\n", uri="sip:example.test"
        ).replace(b"bob@example.com", b"alice@example.test")
        (challenge,) = await udp_exchange(port, reg)
        assert challenge.status == 401
        auth = DigestClient("alice", "pw").authorize(
            Challenge.parse(challenge.get("WWW-Authenticate")), "REGISTER", "sip:example.test"
        )
        again = reg.replace(b"z9hG4bKr1", b"z9hG4bKr2").replace(b"CSeq: 1", b"CSeq: 2")
        again = again.replace(b"Content-Length", f"Authorization: {auth}\r\nContent-Length".encode(), 1)
        (ok,) = await udp_exchange(port, again)
        assert ok.status == 200 and ok.get("Contact") == "<sip:alice@10.9.9.9:5062>;expires=3600"
        (binding,) = store.bindings("alice", 0)
        assert binding.source.startswith("127.0.0.1:") and binding.transport == "udp"  # the NAT'd source
    finally:
        await ep.close()
        store.close()


@pytest.mark.parametrize(
    "extra",
    [
        'Via: SIP/2.0/UDP "unbalanced.invalid;branch=z9hG4bKlow\r\n',  # a lower Via, parsed only when read
        'Require: "timer, b\r\n',  # a list header the UAS reads (unbalanced quote)
    ],
)
async def test_endpoint_lazily_parsed_garbage_still_gets_400(endpoint, extra):
    ep, port = endpoint
    (resp,) = await udp_exchange(port, request("OPTIONS", "SIP/2.0/UDP h.invalid;branch=z9hG4bKlz;rport", extra=extra))
    assert resp.status == 400
    (ok,) = await udp_exchange(port, request("OPTIONS", "SIP/2.0/UDP h.invalid;branch=z9hG4bKl2;rport"))
    assert ok.status == 200


async def test_endpoint_cancel_after_the_final_response_gets_200_and_changes_nothing(endpoint):
    ep, port = endpoint
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))
    via = "SIP/2.0/UDP 127.0.0.1:5998;branch=z9hG4bKlate1;rport"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        await loop.sock_sendto(
            sock, request("INVITE", via, extra="Contact: <sip:a@127.0.0.1>\r\n"), ("127.0.0.1", port)
        )
        statuses = []
        while not statuses or statuses[-1] < 200:
            statuses.append(parse(await asyncio.wait_for(loop.sock_recv(sock, 65535), 2)).status)
        assert statuses[-1] == 404  # no call control here: the INVITE is over
        await loop.sock_sendto(sock, request("CANCEL", via), ("127.0.0.1", port))
        cancel = parse(await asyncio.wait_for(loop.sock_recv(sock, 65535), 2))
        assert (cancel.status, cancel.cseq.method) == (200, "CANCEL")
        with pytest.raises(TimeoutError):  # no 487 follows the 404
            await asyncio.wait_for(loop.sock_recv(sock, 65535), 0.3)
    finally:
        sock.close()
        loop.set_exception_handler(None)
    assert errors == []


async def test_endpoint_drops_known_scanners_unanswered_when_asked():
    port = free_port(also_udp=True)
    ep = SipEndpoint(BasicUas(), drop_scanners=True)
    await ep.listen(ListenAddress("udp", "127.0.0.1", port))
    try:
        for agent in ("friendly-scanner", "sipvicious 0.3.4", "SIPCLI/v1.8"):
            probe = request("OPTIONS", "SIP/2.0/UDP h.invalid;branch=z9hG4bKs1;rport", extra=f"User-Agent: {agent}\r\n")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(udp_exchange(port, probe), 0.5)  # not even a 400: nothing
        phone = request("OPTIONS", "SIP/2.0/UDP h.invalid;branch=z9hG4bKs2;rport", extra="User-Agent: baresip\r\n")
        (ok,) = await udp_exchange(port, phone)
        assert ok.status == 200 and ep.counters["scanners_dropped"] == 3
    finally:
        await ep.close()


async def test_endpoint_banned_source_dropped_or_answered_403_and_over_rate_dropped(tmp_path):
    """The endpoint asks `Security` about every datagram: a banned source hears nothing (ban_action drop) or a
    403 (ban_action 403), a source over its rate is dropped, and everyone else is served."""
    from softswitch.events import EventBus
    from softswitch.guard import GuardPolicy, SourceGuard
    from softswitch.security import Security

    results = {}
    for action in ("drop", "403"):
        port = free_port(also_udp=True)
        security = Security(
            SourceGuard(GuardPolicy(rate_per_s=1, burst=3)), Store.open(tmp_path / f"{action}.db"), EventBus(),
            ban_action=action,
        )  # fmt: skip
        ep = SipEndpoint(BasicUas(), security=security)
        await ep.listen(ListenAddress("udp", "127.0.0.1", port))
        try:
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.bind(("127.0.0.1", 0))
            security.ban("127.0.0.1", "test", seconds=60)
            banned = request("OPTIONS", "SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKb1;rport")
            results[action] = await _answer_or_none(port, client, banned)
            security.lift("127.0.0.1")
            statuses = []
            for i in range(5):  # a burst of 3, then the rate of 1/s: the last two are dropped
                via = f"SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKr{i};rport"
                statuses.append(await _answer_or_none(port, client, request("OPTIONS", via, cseq=10 + i)))
            assert statuses == [200, 200, 200, None, None], statuses
            client.close()
        finally:
            await ep.close()
    assert results == {"drop": None, "403": 403}


async def _answer_or_none(port: int, sock: socket.socket, data: bytes) -> int | None:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    await loop.sock_sendto(sock, data, ("127.0.0.1", port))
    try:
        return parse(await asyncio.wait_for(loop.sock_recv(sock, 65535), 0.3)).status
    except TimeoutError:
        return None
