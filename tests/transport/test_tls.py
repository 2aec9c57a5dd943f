"""TLS listeners and the connections we open (`connect`), over real sockets with a real certificate:
reuse (RFC 3261 18.1.1, RFC 5923), responses back over the same connection, TransportError (17.1.4)."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl

import pytest
from helpers import make_cert

from softswitch.config import ListenAddress
from softswitch.sip.message import Request, build_response, parse
from softswitch.sip.transaction import RequestReceived, ResponseReceived, Terminated, TransportError
from softswitch.transport.endpoint import Flow, SipEndpoint
from softswitch.transport.sockets import BindError
from softswitch.uas import BasicUas

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory) -> tuple[str, str]:
    return make_cert(tmp_path_factory.mktemp("tls"))


def port() -> int:
    """A free TCP port in 17000-17999, the range these tests may use."""
    for candidate in random.sample(range(17000, 18000), 1000):
        with socket.socket() as s:
            try:
                s.bind((HOST, candidate))
            except OSError:
                continue
            return candidate
    raise RuntimeError("no free port in 17000-17999")


class Recorder:
    """A transaction user that keeps every event and answers nothing (the side that originates)."""

    def __init__(self):
        self.events: list[object] = []

    def __call__(self, endpoint: SipEndpoint, ev: object) -> None:
        self.events.append(ev)

    async def next(self, kind: type, key: object = None, timeout: float = 3.0):
        async with asyncio.timeout(timeout):
            while True:
                for ev in self.events:
                    if isinstance(ev, kind) and (key is None or ev.key == key):
                        return ev
                await asyncio.sleep(0.005)


class Uas(BasicUas):
    """The usual answers, plus a record of every event (to see each request's flow)."""

    def __init__(self):
        super().__init__()
        self.events: list[object] = []

    def __call__(self, endpoint: SipEndpoint, ev: object) -> None:
        self.events.append(ev)
        super().__call__(endpoint, ev)

    def answer_statelessly(self, request: Request, source: Flow):
        answer = super().answer_statelessly(request, source)
        if answer is not None:  # an OPTIONS: answered without a transaction, recorded all the same
            self.events.append(RequestReceived(0.0, None, request, source))
        return answer


async def until(predicate, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def options(n: int) -> Request:
    """An OPTIONS we originate: no Via (the endpoint adds ours for the flow)."""
    return Request(
        "OPTIONS",
        "sip:bob@127.0.0.1",
        [
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@example.com>;tag=a1"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", f"out-{n}@x"),
            ("CSeq", f"{n} OPTIONS"),
        ],
    )


def wire(method: str, via: str, cseq: int = 1) -> bytes:
    return (
        f"{method} sip:bob@127.0.0.1 SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:a@x>;tag=a1\r\n"
        f"To: <sip:b@x>\r\nCall-ID: wire-{cseq}@x\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def read_message(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(parse(head).get("Content-Length") or 0)
    return head + (await reader.readexactly(length) if length else b"")


def no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture
async def server(cert_pair):
    """A softswitch endpoint listening on TCP and TLS (same port number, different sockets)."""
    cert, key = cert_pair
    uas = Uas()
    ep = SipEndpoint(uas, tcp_idle_s=0.4, max_message_bytes=4000, tls_cert=cert, tls_key=key)
    tcp, tls = port(), port()
    await ep.listen(ListenAddress("tcp", HOST, tcp))
    await ep.listen(ListenAddress("tls", HOST, tls))
    yield ep, uas, {"tcp": tcp, "tls": tls}
    await ep.close()


@pytest.fixture
async def client():
    """An endpoint with no listener at all: whatever reaches it came over a connection it opened."""
    recorder = Recorder()
    ep = SipEndpoint(recorder)
    yield ep, recorder
    await ep.close()


async def test_tls_listener_answers_pongs_refuses_and_idle_closes(server):
    ep, uas, ports = server
    reader, writer = await asyncio.open_connection(HOST, ports["tls"], ssl=no_verify())
    good = wire("OPTIONS", "SIP/2.0/TLS h.invalid;branch=z9hG4bKs1")
    bad = wire("OPTIONS", "SIP/2.0/TLS h.invalid;branch=z9hG4bKs2", cseq=2).replace(b"2 OPTIONS", b"2 BYE")
    data = good + b"\r\n\r\n" + bad
    for i in range(0, len(data), 9):  # split anywhere: the framer must not care
        writer.write(data[i : i + 9])
    ok = parse(await asyncio.wait_for(read_message(reader), 3))
    pong = await asyncio.wait_for(reader.readexactly(2), 3)
    refused = parse(await asyncio.wait_for(read_message(reader), 3))
    assert (ok.status, pong, refused.status) == (200, b"\r\n", 400)
    assert "INVITE" in ok.get("Allow") and ok.via.transport == "TLS"
    (received,) = [ev for ev in uas.events if isinstance(ev, RequestReceived)]
    assert received.source.transport == "tls" and received.source.local == (HOST, ports["tls"])
    assert ep.connection_count == 1
    assert await asyncio.wait_for(reader.read(), 3) == b""  # idle for longer than tcp_idle_s
    writer.close()
    await until(lambda: ep.connection_count == 0)


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_connect_reuses_one_connection_both_ways(server, client, transport):
    b, uas, ports = server
    a, recorder = client
    flows = await asyncio.gather(*(a.connect(transport, HOST, ports[transport]) for _ in range(3)))
    flow = flows[0]
    assert flows == [flow] * 3 and a.connection_count == 1  # concurrent callers share the one attempt
    assert (flow.transport, flow.remote, flow.reliable) == (transport, (HOST, ports[transport]), True)

    key = a.send_request(options(1), flow)
    response = (await recorder.next(ResponseReceived, key)).response
    assert response.status == 200 and response.via.transport == transport.upper()
    (request,) = [ev for ev in uas.events if isinstance(ev, RequestReceived)]
    assert request.source.transport == transport and request.source.remote == flow.local  # a's socket, no listener

    assert await a.connect(transport, HOST, ports[transport]) == flow  # reused
    assert a.flow_to(transport, HOST, ports[transport]) == flow
    assert (a.connection_count, b.connection_count) == (1, 1)

    # the connection a opened carries b's requests to a too (b finds it by a's address)
    back = b.flow_to(transport, *request.source.remote)
    assert back == request.source
    b.send_request(options(2), back)
    incoming = await recorder.next(RequestReceived)
    assert incoming.source == flow and incoming.request.cseq.seq == 2
    assert (a.connection_count, b.connection_count) == (1, 1)


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_request_over_a_connection_the_peer_closed_is_a_transport_error(server, client, transport):
    b, uas, ports = server
    a, recorder = client
    flow = await a.connect(transport, HOST, ports[transport])
    await b.close()  # the peer goes away: its connections close, its listeners with them
    await until(lambda: a.connection_count == 0)
    key = a.send_request(options(1), flow)
    assert a.txns.get(key) is not None  # reported on the next loop turn, once the caller holds the key
    assert (await recorder.next(TransportError, key)).request.cseq.seq == 1
    await recorder.next(Terminated, key)
    assert a.txns.get(key) is None
    with pytest.raises(ConnectionError, match=f"cannot connect to {transport}:127.0.0.1:{ports[transport]}: "):
        await a.connect(transport, HOST, ports[transport])


async def test_response_over_a_closed_connection_is_a_transport_error():
    """The caller hangs up its connection while we ring: our final response cannot go (17.2.4). An INVITE,
    since a non-INVITE server transaction over TCP ends as soon as its final response is handed over."""
    recorder = Recorder()
    ep = SipEndpoint(recorder)
    tcp = port()
    await ep.listen(ListenAddress("tcp", HOST, tcp))
    try:
        reader, writer = await asyncio.open_connection(HOST, tcp)
        writer.write(wire("INVITE", "SIP/2.0/TCP h.invalid;branch=z9hG4bKgone"))
        assert parse(await asyncio.wait_for(read_message(reader), 3)).status == 100
        request = await recorder.next(RequestReceived)
        writer.close()
        await until(lambda: ep.connection_count == 0)
        ep.respond(request.key, build_response(request.request, 486, to_tag="t1"))
        assert (await recorder.next(TransportError, request.key)).request.method == "INVITE"
        assert ep.txns.get(request.key) is None
    finally:
        await ep.close()


async def test_connect_failures_say_why(server, client, cert_pair):
    b, uas, ports = server
    a, recorder = client
    closed = port()
    with pytest.raises(ConnectionError, match=f"cannot connect to tcp:127.0.0.1:{closed}: connection refused"):
        await a.connect("tcp", HOST, closed)
    with pytest.raises(ConnectionError, match=r"no answer within 0.3 s"):
        await a.connect("tls", HOST, ports["tcp"], timeout=0.3)  # a TCP listener never finishes a handshake
    verifying = SipEndpoint(Recorder(), tls_verify=True)
    try:
        with pytest.raises(ConnectionError, match="self-signed certificate"):
            await verifying.connect("tls", HOST, ports["tls"])
    finally:
        await verifying.close()
    with pytest.raises(ConnectionError, match="no UDP listener"):
        await a.connect("udp", HOST, 17999)
    with pytest.raises(ValueError, match="sctp"):
        await a.connect("sctp", HOST, ports["tcp"])
    assert a.connection_count == 0


async def test_connect_udp_is_flow_to():
    ep = SipEndpoint(Recorder())
    udp = port()
    try:
        await ep.listen(ListenAddress("udp", HOST, udp))
        assert await ep.connect("UDP", HOST, 17001) == ep.flow_to("udp", HOST, 17001)
    finally:
        await ep.close()


async def test_tls_listen_needs_a_loadable_certificate(tmp_path, cert_pair):
    cert, key = cert_pair
    tls = ListenAddress("tls", HOST, port())
    for kwargs, reason in [
        ({}, "no TLS certificate and key configured"),
        ({"tls_cert": str(tmp_path / "nope.pem"), "tls_key": key}, "does not exist"),
        ({"tls_cert": key, "tls_key": key}, "no PEM certificate found"),
    ]:
        ep = SipEndpoint(Recorder(), **kwargs)
        with pytest.raises(BindError, match=f"cannot listen on {tls}: .*{reason}"):
            await ep.listen(tls)
        await ep.close()
