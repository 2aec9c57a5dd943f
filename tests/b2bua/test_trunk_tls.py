"""A trunk that must present a client certificate (`tls_client_cert`, checked with `[sip] tls_client_ca`):
its calls are recognised over TLS with a certificate naming it, refused 403 without one, and a certificate
from another CA fails the handshake. Real TLS on 127.0.0.1 against an in-process softswitch."""

from __future__ import annotations

import asyncio
import re
import ssl

import pytest
from helpers import HOST, free_port, make_cert

from softswitch.config import parse
from softswitch.server import Services
from softswitch.sip.auth import DigestClient, answer_challenge
from softswitch.sip.message import Request, build_response
from softswitch.sip.message import parse as parse_sip


@pytest.fixture
async def switch(tmp_path):
    ca_cert, ca_key = make_cert(tmp_path, "carrier")  # self-signed: the carrier's certificate is its own CA
    server_cert, server_key = make_cert(tmp_path, "server")
    other_cert, other_key = make_cert(tmp_path, "other")
    tls_port, tcp_port, api = free_port(), free_port(), free_port()
    cfg = parse(
        f"""
[sip]
listen = ["tls:{HOST}:{tls_port}", "tcp:{HOST}:{tcp_port}"]
tls_cert = "{server_cert}"
tls_key = "{server_key}"
tls_client_ca = "{ca_cert}"
[api]
listen = "{HOST}:{api}"
[store]
path = "{tmp_path / "sw.db"}"
[media]
rtp_ports = "17800-17899"
[[trunks]]
name = "carrier"
address = "{HOST}:5999"
transport = "tls"
inbound_from = ["{HOST}/32"]
tls_client_cert = "softswitch-test"
ping_interval_s = 0
[[users]]
name = "alice"
password = "alice-pw"
[[routes]]
match = "^alice$"
to = "user:alice"
"""
    )
    svc = Services(cfg)
    await svc.start()
    try:
        svc.tcp_port = tcp_port
        yield svc, tls_port, {"carrier": (ca_cert, ca_key), "other": (other_cert, other_key)}
    finally:
        await svc.close()


class Peer:
    """A SIP peer on one TLS (or TCP) connection to the switch: a carrier with a certificate, or a phone."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.local = writer.get_extra_info("sockname")
        self.n = 0

    @classmethod
    async def connect(cls, port: int, identity: tuple[str, str] | None = None, *, tls: bool = True) -> Peer:
        context = None
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if identity is not None:
                context.load_cert_chain(*identity)
        return cls(*await asyncio.open_connection(HOST, port, ssl=context))

    def send(self, text: str) -> None:
        self.writer.write(text.encode())

    async def receive(self):
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        found = re.search(rb"^(?:Content-Length|l)\s*:\s*(\d+)", head, re.M | re.I)
        length = int(found.group(1)) if found else 0
        return parse_sip(head + (await self.reader.readexactly(length) if length else b""), stream=True)

    def request(self, method: str, uri: str, user: str, extra: str = "", cseq: int = 1, call_id: str = "") -> str:
        self.n += 1
        call_id = call_id or f"peer-{id(self)}-{self.n}"
        proto = "TLS" if self.writer.get_extra_info("sslcontext") else "TCP"
        scheme = "sips" if proto == "TLS" else "sip"
        to = f"{scheme}:{user}@{HOST}" if method == "REGISTER" else uri  # a REGISTER's To is the address of record
        where = f"{self.local[0]}:{self.local[1]}"
        self.send(
            f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{proto} {where};branch=z9hG4bK{call_id}{cseq}\r\n"
            f"From: <sip:{user}@{HOST}>;tag=f{self.n}\r\nTo: <{to}>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <{scheme}:{user}@{where}>\r\nMax-Forwards: 70\r\n{extra}"
            "Content-Length: 0\r\n\r\n"
        )
        return call_id

    async def final(self):
        while (response := await self.receive()).status < 200:
            pass
        return response

    def close(self) -> None:
        self.writer.close()


async def invite_over_tls(port: int, identity: tuple[str, str] | None, uri: str = "", *, tls: bool = True) -> str:
    """An INVITE (to a number no route knows, unless `uri`), its final status line."""
    peer = await Peer.connect(port, identity, tls=tls)
    try:
        peer.request("INVITE", uri or f"sip:5551234@{HOST}:{port}", "carrier")
        response = await peer.final()
        return f"SIP/2.0 {response.status} {response.reason}"
    finally:
        peer.close()


async def test_trunk_recognised_by_its_client_certificate_only(switch):
    svc, port, identities = switch
    # with the certificate: the carrier's call, admitted without a challenge (no route: 404)
    assert await invite_over_tls(port, identities["carrier"]) == "SIP/2.0 404 No Route"
    # from the same address without a certificate: not the carrier
    assert await invite_over_tls(port, None) == "SIP/2.0 403 Client Certificate Required"
    assert svc.security.counters["refused_client_certificate"] == 1
    # a certificate the CA did not sign: no TLS session at all
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await invite_over_tls(port, identities["other"])


async def test_sips_over_tls_only_and_on_to_a_phone_registered_over_tls(switch):
    svc, port, identities = switch
    # a sips: Request-URI over TCP is refused
    assert await invite_over_tls(svc.tcp_port, None, f"sips:alice@{HOST}:{port}", tls=False) == (
        "SIP/2.0 416 Unsupported URI Scheme"
    )
    # alice registers over TLS with a sips: contact (digest)
    phone = await Peer.connect(port)
    uri = f"sips:{HOST}:{port}"
    call_id = phone.request("REGISTER", uri, "alice")
    challenge = await phone.final()
    assert challenge.status == 401
    name, value = answer_challenge(challenge, DigestClient("alice", "alice-pw"), "REGISTER", uri)
    phone.request("REGISTER", uri, "alice", f"{name}: {value}\r\n", cseq=2, call_id=call_id)
    assert (await phone.final()).status == 200
    # the carrier calls sips:alice: the INVITE reaches her over her TLS connection, all SIPS
    carrier = await Peer.connect(port, identities["carrier"])
    carrier.request("INVITE", f"sips:alice@{HOST}:{port}", "carrier")
    invite = await phone.receive()
    assert isinstance(invite, Request) and invite.method == "INVITE"
    assert invite.uri_text.startswith("sips:alice@") and "SIP/2.0/TLS" in invite.get("Via")
    assert invite.get("Contact").startswith("<sips:")
    phone.send(build_response(invite, 486, to_tag="busy1").serialize().decode())
    assert (await carrier.final()).status == 486
    ack = await phone.receive()
    assert ack.method == "ACK"
    phone.close()
    carrier.close()
