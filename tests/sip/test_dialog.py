"""Dialogs (RFC 3261 12-16, RFC 3311, RFC 6026) tested as a UAC/UAS pair over a fake wire.

Every message crosses the wire as bytes through `parse()`. The wire carries requests hop by hop: an
out-of-dialog request follows the configured chain of proxies to the UA its Request-URI names, an
in-dialog one goes where its Route and Request-URI say (RFC 3261 16.4, 16.6 steps 6-7, 16.12), so a wrong
route set shows up as a wrong path. Responses go back along the Vias.
"""

from __future__ import annotations

import secrets

import pytest

from softswitch.sip.dialog import (
    Dialog,
    DialogError,
    DialogId,
    DialogSet,
    DialogState,
    DialogTable,
    Role,
    dialog_id_of,
)
from softswitch.sip.dialog_timers import InviteOkRetransmitter
from softswitch.sip.errors import SipParseError
from softswitch.sip.headers import parse_address
from softswitch.sip.message import Request, Response, build_response, error_response, parse

ALICE = "alice.example.test"
BOB = "bob.example.test"
CAROL = "carol.example.test"
ALICE_CONTACT = f"<sip:alice@{ALICE}>"
BOB_CONTACT = f"<sip:bob@{BOB}>"
OFFER = b"v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=bob 2 2 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
SDP = "application/sdp"


# -- the fake wire ----------------------------------------------------------------------------------
def via(host: str) -> str:
    return f"SIP/2.0/UDP {host};branch=z9hG4bK{secrets.token_hex(6)}"


def route_host(value: str) -> str:
    return parse_address(value).sip_uri.host


class Proxy:
    """A record-routing proxy: loose (RFC 3261, `;lr`) or strict (RFC 2543), routing per 16.4 and 16.6."""

    def __init__(self, host: str, loose: bool = True):
        self.host = host
        self.loose = loose
        self.uri = f"sip:{host};lr" if loose else f"sip:{host}"

    def forward(self, msg: Request, initial: bool) -> Request:
        routes = msg.get_all("Route")
        if msg.uri.host == self.host:
            if self.loose:  # 16.4: a strict router sent it to us; the real target is the last Route
                msg.uri = parse_address(routes[-1]).uri
                routes = routes[:-1]
            else:  # RFC 2543 strict routing: the first Route becomes the Request-URI
                msg.uri = parse_address(routes[0]).uri
                routes = routes[1:]
        elif routes and route_host(routes[0]) == self.host:
            routes = routes[1:]  # 16.4: our own Route value
        if self.loose and routes and "lr" not in parse_address(routes[0]).sip_uri.params:
            first = routes[0]  # 16.6 step 6: the next hop is a strict router
            routes = [*routes[1:], f"<{msg.uri_text}>"]
            msg.uri = parse_address(first).uri
        msg.remove("Route")
        for value in routes:
            msg.add("Route", value)
        if initial and msg.method == "INVITE":
            msg.add("Record-Route", f"<{self.uri}>", first=True)
        msg.add("Via", via(self.host), first=True)
        return msg


class Wire:
    """Carries bytes between UAs through proxies; `path` holds the hosts the last message visited."""

    def __init__(self, *proxies: Proxy):
        self.proxies = {p.host: p for p in proxies}
        self.chain = [p.host for p in proxies]  # out-of-dialog requests visit every proxy in order
        self.path: list[str] = []

    def request(self, request: Request, sender: str) -> Request:
        """Send `request` from the UA at `sender` (adding its Via); the request as its UA receives it."""
        request.add("Via", via(sender), first=True)
        msg = parse(request.serialize())
        assert isinstance(msg, Request)
        initial = msg.to.tag is None
        chain = list(self.chain) if initial else []
        self.path = []
        for _ in range(10):
            host = chain.pop(0) if chain else self._next_hop(msg)
            self.path.append(host)
            proxy = self.proxies.get(host)
            if proxy is None:
                return msg
            forwarded = parse(proxy.forward(msg, initial).serialize())
            assert isinstance(forwarded, Request)
            msg = forwarded
        raise AssertionError(f"routing loop: {self.path}")

    def _next_hop(self, msg: Request) -> str:
        host = msg.uri.host
        if host in self.proxies:  # strict routing: the Request-URI names the router
            return host
        routes = msg.get_all("Route")
        return route_host(routes[0]) if routes else host

    def response(self, response: Response) -> Response:
        """Carry a response back along its Vias; the response as the UA at the last Via receives it."""
        msg = parse(response.serialize())
        self.path = []
        while True:
            assert isinstance(msg, Response)
            host = msg.via.host
            self.path.append(host)
            if host not in self.proxies:
                return msg
            msg.pop_first("Via")
            msg = parse(msg.serialize())


def make_invite(scheme: str = "sip", call_id: str = "call-1@alice") -> Request:
    headers = [
        ("Max-Forwards", "70"),
        ("From", f'"Alice" <{scheme}:alice@example.test>;tag=a1'),
        ("To", f"<{scheme}:bob@example.test>"),
        ("Call-ID", call_id),
        ("CSeq", "1 INVITE"),
        ("Contact", f"<{scheme}:alice@{ALICE}>"),
        ("Content-Type", SDP),
    ]
    return Request("INVITE", f"{scheme}:bob@{BOB}", headers, OFFER)


class Pair:
    """Alice (UAC) calls Bob (UAS) over a `Wire`; each side keeps its dialogs in a `DialogTable`."""

    def __init__(self, *proxies: Proxy, invite: Request | None = None, bob_contact: str = BOB_CONTACT):
        self.wire = Wire(*proxies)
        self.invite = invite or make_invite()
        self.uac_set = DialogSet(self.invite)
        self.alice_table = DialogTable()
        self.bob_table = DialogTable()
        self.invite_at_bob = self.wire.request(self.invite, ALICE)
        self.bob = Dialog.uas(self.invite_at_bob, bob_contact, local_tag="b1")
        self.bob_table.add(self.bob)
        self.alice: Dialog | None = None

    def bob_answers(self, status: int, **kwargs) -> Response:
        """Bob's response to the INVITE, as Alice receives it (and applies to her dialog set)."""
        response = self.bob.create_response(self.invite_at_bob, status, **kwargs)
        at_alice = self.wire.response(response)
        dialog = self.uac_set.receive_response(at_alice)
        if dialog is not None and self.alice is None:
            self.alice = dialog
            self.alice_table.add(dialog)
        return at_alice

    def establish(self) -> tuple[Dialog, Dialog]:
        """INVITE / 180 / 200 / ACK; returns (alice's dialog, bob's dialog)."""
        self.bob_answers(180)
        ok = self.bob_answers(200, body=ANSWER, content_type=SDP)
        alice = self.alice
        assert alice is not None
        ack = self.alice_sends_ack(ok)
        assert ack.cseq.seq == 1
        return alice, self.bob

    def alice_sends_ack(self, ok: Response) -> Request:
        assert self.alice is not None
        ack = self.alice.ack_for(ok) or self.alice.create_ack(ok.cseq.seq)
        at_bob = self.wire.request(ack, ALICE)
        assert self.bob_table.match(at_bob) is self.bob
        assert self.bob.receive_request(at_bob) is None
        return at_bob

    def alice_sends(self, method: str, **kwargs) -> Request:
        """An in-dialog request from Alice, as Bob receives it (not yet applied to Bob's dialog)."""
        assert self.alice is not None
        return self.wire.request(self.alice.create_request(method, **kwargs), ALICE)

    def bob_sends(self, method: str, **kwargs) -> Request:
        return self.wire.request(self.bob.create_request(method, **kwargs), BOB)

    def respond(self, dialog: Dialog, request: Request, status: int, **kwargs) -> Response:
        """`dialog`'s response to a request it received, carried back to the sender."""
        return self.wire.response(dialog.create_response(request, status, **kwargs))


# -- the basic call ---------------------------------------------------------------------------------
def test_dialog_invite_ringing_ok_ack_bye_flow():
    pair = Pair()
    ringing = pair.bob_answers(180)
    alice = pair.alice
    assert alice is not None
    assert ringing.to.tag == "b1" and ringing.contacts[0].uri_text == f"sip:bob@{BOB}"
    assert alice.state is DialogState.EARLY and pair.bob.state is DialogState.EARLY
    assert alice.role is Role.UAC and pair.bob.role is Role.UAS

    ok = pair.bob_answers(200, body=ANSWER, content_type=SDP)
    assert pair.uac_set.receive_response(ok) is alice  # a retransmission finds the same dialog
    assert alice.state is DialogState.CONFIRMED and pair.bob.state is DialogState.CONFIRMED
    assert ok.body == ANSWER and ok.get("Content-Type") == SDP

    # both sides hold the same dialog, seen from opposite ends
    assert alice.id == DialogId("call-1@alice", "a1", "b1")
    assert pair.bob.id == DialogId("call-1@alice", "b1", "a1")
    assert alice.local_uri == pair.bob.remote_uri and alice.remote_uri == pair.bob.local_uri
    assert str(alice.remote_target) == f"sip:bob@{BOB}" and str(pair.bob.remote_target) == f"sip:alice@{ALICE}"
    assert alice.local_seq == 1 and alice.remote_seq is None
    assert pair.bob.remote_seq == 1 and pair.bob.local_seq is None
    assert alice.route_set == [] and pair.bob.route_set == []
    assert not alice.secure and not pair.bob.secure

    ack = pair.alice_sends_ack(ok)
    assert ack.method == "ACK" and str(ack.cseq) == "1 ACK"
    assert ack.uri_text == f"sip:bob@{BOB}" and "Route" not in ack and "Contact" not in ack
    assert ack.to.tag == "b1" and ack.from_.tag == "a1" and ack.from_.display == "Alice"

    bye = pair.alice_sends("BYE")
    assert alice.state is DialogState.TERMINATED
    assert pair.wire.path == [BOB]
    assert str(bye.cseq) == "2 BYE" and bye.max_forwards == 70 and "Contact" not in bye
    assert pair.bob_table.match(bye) is pair.bob
    assert pair.bob.receive_request(bye) is None
    assert pair.bob.state is DialogState.TERMINATED and pair.bob.remote_seq == 2
    ok_bye = pair.respond(pair.bob, bye, 200)
    assert pair.alice_table.match(ok_bye) is alice
    alice.receive_response(ok_bye)
    assert alice.state is DialogState.TERMINATED
    # a request after the end gets 481
    late = Request("INFO", f"sip:bob@{BOB}", bye.headers)
    late.set("CSeq", "3 INFO")
    refused = pair.bob.receive_request(late)
    assert refused is not None and refused.status == 481


def test_dialog_uas_responses_carry_tag_contact_and_record_route():
    pair = Pair(Proxy("p1.example.test"))
    trying = pair.bob.create_response(pair.invite_at_bob, 100)
    assert trying.to.tag is None and "Contact" not in trying and "Record-Route" not in trying
    ringing = pair.bob.create_response(pair.invite_at_bob, 180)
    assert ringing.to.tag == "b1" and ringing.contacts[0].uri_text == f"sip:bob@{BOB}"
    assert ringing.get_all("Record-Route") == ["<sip:p1.example.test;lr>"]
    busy = pair.bob.create_response(pair.invite_at_bob, 486)
    assert busy.to.tag == "b1" and "Contact" not in busy and "Record-Route" not in busy
    assert pair.bob.state is DialogState.TERMINATED


def test_dialog_ok_recomputes_route_set_of_early_dialog():
    invite = make_invite()
    invite.add("Via", via(ALICE), first=True)
    dialogs = DialogSet(invite)
    early = dialogs.receive_response(fork_response(invite, 180, "b1", BOB))
    assert early is not None and early.route_set == []
    ok = build_response(invite, 200, to_tag="b1", headers=[("Contact", f"<sip:bob@{BOB}>")])
    ok.add("Record-Route", "<sip:p2.example.test;lr>, <sip:p1.example.test;lr>")
    assert dialogs.receive_response(ok) is early
    assert [str(r) for r in early.route_set] == ["<sip:p1.example.test;lr>", "<sip:p2.example.test;lr>"]
    ok.set("Record-Route", "<sip:other.example.test;lr>")  # a retransmission cannot change it again
    dialogs.receive_response(ok)
    assert [str(r) for r in early.route_set] == ["<sip:p1.example.test;lr>", "<sip:p2.example.test;lr>"]


def test_dialog_requests_read_as_their_wire_form():
    """A dialog's requests carry their From/To/CSeq already parsed: the same as parsing their bytes."""
    pair = Pair()
    alice, bob = pair.establish()
    for dialog in (alice, bob):
        for method in ("INFO", "BYE"):
            req = dialog.create_request(method)
            req.add("Via", "SIP/2.0/UDP host.example.com;branch=z9hG4bKw", first=True)  # the transaction's
            wire = parse(req.serialize())
            assert (str(req.from_), str(req.to), req.cseq) == (str(wire.from_), str(wire.to), wire.cseq)
            assert req.cseq.method == method


def test_dialog_callee_must_not_bye_an_early_dialog():
    pair = Pair()
    pair.bob_answers(180)
    with pytest.raises(DialogError):
        pair.bob.create_request("BYE")
    assert pair.alice is not None
    assert pair.alice.create_request("BYE").method == "BYE"  # the caller may (15)
    assert pair.alice.state is DialogState.TERMINATED


def test_dialog_early_failure_terminates_both_sides():
    pair = Pair()
    pair.bob_answers(183)
    alice = pair.alice
    assert alice is not None and alice.state is DialogState.EARLY
    assert pair.bob_answers(486) is not None
    assert alice.state is DialogState.TERMINATED and pair.bob.state is DialogState.TERMINATED
    with pytest.raises(DialogError):
        alice.create_request("BYE")


# -- route sets ---------------------------------------------------------------------------------------
def test_dialog_route_set_two_loose_proxies():
    pair = Pair(Proxy("p1.example.test"), Proxy("p2.example.test"))
    assert pair.wire.path == ["p1.example.test", "p2.example.test", BOB]
    alice, bob = pair.establish()
    # the UAS keeps the request's order, the UAC reverses the response's (12.1.1, 12.1.2)
    assert [str(r) for r in bob.route_set] == ["<sip:p2.example.test;lr>", "<sip:p1.example.test;lr>"]
    assert [str(r) for r in alice.route_set] == ["<sip:p1.example.test;lr>", "<sip:p2.example.test;lr>"]

    info = alice.create_request("INFO")
    assert info.uri_text == f"sip:bob@{BOB}"
    assert info.get_all("Route") == ["<sip:p1.example.test;lr>", "<sip:p2.example.test;lr>"]
    at_bob = pair.wire.request(info, ALICE)
    assert pair.wire.path == ["p1.example.test", "p2.example.test", BOB]
    assert "Route" not in at_bob and at_bob.uri_text == f"sip:bob@{BOB}"
    assert bob.receive_request(at_bob) is None
    back = pair.respond(bob, at_bob, 200)
    assert pair.wire.path == ["p2.example.test", "p1.example.test", ALICE]
    assert back.status == 200

    bye = bob.create_request("BYE")
    assert bye.uri_text == f"sip:alice@{ALICE}"
    assert bye.get_all("Route") == ["<sip:p2.example.test;lr>", "<sip:p1.example.test;lr>"]
    at_alice = pair.wire.request(bye, BOB)
    assert pair.wire.path == ["p2.example.test", "p1.example.test", ALICE]
    assert pair.alice_table.match(at_alice) is alice
    assert alice.receive_request(at_alice) is None
    assert alice.state is DialogState.TERMINATED and alice.remote_seq == bye.cseq.seq


def test_dialog_ack_follows_the_route_set():
    pair = Pair(Proxy("p1.example.test"), Proxy("p2.example.test"))
    pair.bob_answers(180)
    ok = pair.bob_answers(200, body=ANSWER, content_type=SDP)
    assert pair.alice is not None
    ack = pair.alice.create_ack(ok.cseq.seq)
    assert ack.get_all("Route") == ["<sip:p1.example.test;lr>", "<sip:p2.example.test;lr>"]
    pair.wire.request(ack, ALICE)
    assert pair.wire.path == ["p1.example.test", "p2.example.test", BOB]


def test_dialog_strict_router():
    pair = Pair(Proxy("strict.example.test", loose=False))
    alice, bob = pair.establish()
    assert [str(r) for r in alice.route_set] == ["<sip:strict.example.test>"]
    assert [str(r) for r in bob.route_set] == ["<sip:strict.example.test>"]

    # 12.2.1.1: the first route is the Request-URI, the remote target the last Route
    info = alice.create_request("INFO")
    assert info.uri_text == "sip:strict.example.test"
    assert info.get_all("Route") == [f"<sip:bob@{BOB}>"]
    at_bob = pair.wire.request(info, ALICE)
    assert pair.wire.path == ["strict.example.test", BOB]
    assert at_bob.uri_text == f"sip:bob@{BOB}" and "Route" not in at_bob

    bye = bob.create_request("BYE")
    assert bye.uri_text == "sip:strict.example.test" and bye.get_all("Route") == [f"<sip:alice@{ALICE}>"]
    pair.wire.request(bye, BOB)
    assert pair.wire.path == ["strict.example.test", ALICE]


def test_dialog_loose_then_strict_router():
    pair = Pair(Proxy("p1.example.test"), Proxy("p2.example.test", loose=False))
    alice, bob = pair.establish()
    # Alice's first route is loose: Request-URI = remote target, Route = the whole route set
    info = alice.create_request("INFO")
    assert info.uri_text == f"sip:bob@{BOB}"
    assert info.get_all("Route") == ["<sip:p1.example.test;lr>", "<sip:p2.example.test>"]
    at_bob = pair.wire.request(info, ALICE)
    assert pair.wire.path == ["p1.example.test", "p2.example.test", BOB]
    assert at_bob.uri_text == f"sip:bob@{BOB}"
    # Bob's first route is strict: Request-URI = it, then the rest and the remote target
    bye = bob.create_request("BYE")
    assert bye.uri_text == "sip:p2.example.test"
    assert bye.get_all("Route") == ["<sip:p1.example.test;lr>", f"<sip:alice@{ALICE}>"]
    at_alice = pair.wire.request(bye, BOB)
    assert pair.wire.path == ["p2.example.test", "p1.example.test", ALICE]
    assert at_alice.uri_text == f"sip:alice@{ALICE}"


def test_dialog_request_uri_drops_parameters_it_may_not_carry():
    pair = Pair(bob_contact=f"<sip:bob@{BOB};transport=tcp;method=INVITE?Subject=hi>")
    pair.bob_answers(200)
    alice = pair.alice
    assert alice is not None
    assert alice.create_request("INFO").uri_text == f"sip:bob@{BOB};transport=tcp"


# -- target refresh -----------------------------------------------------------------------------------
def test_dialog_reinvite_updates_remote_target_not_route_set():
    pair = Pair(Proxy("p1.example.test"))
    alice, bob = pair.establish()
    route_set = [str(r) for r in alice.route_set]

    alice.local_contact = parse_address("<sip:alice@alice2.example.test>")
    reinvite = pair.alice_sends("INVITE", body=OFFER, content_type=SDP)
    assert str(reinvite.cseq) == "2 INVITE" and reinvite.contacts[0].uri_text == "sip:alice@alice2.example.test"
    reinvite.add("Record-Route", "<sip:other.example.test;lr>", first=True)  # never changes the route set
    assert bob.receive_request(reinvite) is None
    assert str(bob.remote_target) == "sip:alice@alice2.example.test"
    assert [str(r) for r in bob.route_set] == ["<sip:p1.example.test;lr>"]

    bob.local_contact = parse_address("<sip:bob@bob2.example.test>")
    ok = pair.respond(bob, reinvite, 200, body=ANSWER, content_type=SDP, headers=[("Record-Route", "<sip:x;lr>")])
    assert ok.contacts[0].uri_text == "sip:bob@bob2.example.test"
    alice.receive_response(ok)
    assert str(alice.remote_target) == "sip:bob@bob2.example.test"
    assert [str(r) for r in alice.route_set] == route_set
    assert alice.state is DialogState.CONFIRMED

    ack = alice.create_ack()
    assert str(ack.cseq) == "2 ACK" and ack.uri_text == "sip:bob@bob2.example.test"
    bye = pair.alice_sends("BYE")
    assert pair.wire.path == ["p1.example.test", "bob2.example.test"]
    assert str(bye.cseq) == "3 BYE"


def test_dialog_late_older_2xx_does_not_roll_the_target_back():
    pair = Pair()
    alice, bob = pair.establish()
    late_ok = bob.create_response(pair.invite_at_bob, 200)  # a retransmission of the first 2xx, delayed
    bob.local_contact = parse_address("<sip:bob@bob2.example.test>")
    reinvite = pair.alice_sends("INVITE", body=OFFER, content_type=SDP)
    assert bob.receive_request(reinvite) is None
    new_ok = pair.respond(bob, reinvite, 200, body=ANSWER, content_type=SDP)
    alice.receive_response(new_ok)
    assert str(alice.remote_target) == "sip:bob@bob2.example.test"
    at_alice = pair.wire.response(late_ok)
    assert at_alice.cseq.seq == 1 and at_alice.contacts[0].uri_text == f"sip:bob@{BOB}"
    alice.receive_response(at_alice)
    assert str(alice.remote_target) == "sip:bob@bob2.example.test"  # was rolled back to the CSeq 1 Contact
    assert alice.ack_for(at_alice) is not None and alice.state is DialogState.CONFIRMED
    alice.receive_response(new_ok)  # the same CSeq again still applies (a retransmission of the newest)
    assert str(alice.remote_target) == "sip:bob@bob2.example.test"

    # received requests: an older target refresh never lands (12.2.2 refuses it with a 500 first)
    alice.local_contact = parse_address("<sip:alice@alice2.example.test>")
    older = alice.create_request("UPDATE")
    alice.local_contact = parse_address("<sip:alice@alice3.example.test>")
    newer = alice.create_request("UPDATE")
    assert bob.receive_request(pair.wire.request(newer, ALICE)) is None
    refused = bob.receive_request(pair.wire.request(older, ALICE))
    assert refused is not None and refused.status == 500
    assert str(bob.remote_target) == "sip:alice@alice3.example.test"


def test_dialog_update_in_early_dialog():
    pair = Pair()
    pair.bob_answers(183)
    alice, bob = pair.alice, pair.bob
    assert alice is not None and alice.state is DialogState.EARLY

    alice.local_contact = parse_address("<sip:alice@alice2.example.test>")
    update = pair.alice_sends("UPDATE", body=OFFER, content_type=SDP)
    assert str(update.cseq) == "2 UPDATE" and update.to.tag == "b1"
    assert update.contacts[0].uri_text == "sip:alice@alice2.example.test"
    assert pair.bob_table.match(update) is bob
    assert bob.receive_request(update) is None
    assert str(bob.remote_target) == "sip:alice@alice2.example.test" and bob.remote_seq == 2

    bob.local_contact = parse_address("<sip:bob@bob2.example.test>")
    ok = pair.respond(bob, update, 200, body=ANSWER, content_type=SDP)
    alice.receive_response(ok)
    assert str(alice.remote_target) == "sip:bob@bob2.example.test"
    assert alice.state is DialogState.EARLY and bob.state is DialogState.EARLY

    # the INVITE is answered afterwards; its 200 reaches the new target's dialog, ACK keeps CSeq 1
    ok_invite = pair.bob_answers(200)
    assert alice.state is DialogState.CONFIRMED and bob.state is DialogState.CONFIRMED
    assert ok_invite.contacts[0].uri_text == "sip:bob@bob2.example.test"
    ack = alice.create_ack(ok_invite.cseq.seq)
    assert str(ack.cseq) == "1 ACK" and ack.uri_text == "sip:bob@bob2.example.test"
    assert str(alice.create_request("BYE").cseq) == "3 BYE"


# -- CSeq ---------------------------------------------------------------------------------------------
def test_dialog_cseq_increments():
    pair = Pair()
    alice, bob = pair.establish()
    for expected, method in enumerate(["OPTIONS", "INFO", "MESSAGE", "REFER", "NOTIFY"], start=2):
        request = pair.alice_sends(method)
        assert request.cseq.seq == expected and request.cseq.method == method
        assert bob.receive_request(request) is None and bob.remote_seq == expected
        assert ("Contact" in request) == (method in ("REFER", "NOTIFY"))
    reinvite = alice.create_request("INVITE", body=OFFER, content_type=SDP)
    assert reinvite.cseq.seq == 7 and alice.invite_seq == 7
    assert alice.create_ack().cseq.seq == 7 and alice.local_seq == 7  # ACK reuses the INVITE's number
    with pytest.raises(DialogError):
        alice.create_request("CANCEL")

    first = bob.create_request("INFO")  # the UAS picks its first number, then counts up
    second = bob.create_request("INFO")
    assert 0 < first.cseq.seq < 2**31 and second.cseq.seq == first.cseq.seq + 1
    at_alice = pair.wire.request(first, BOB)
    assert alice.receive_request(at_alice) is None and alice.remote_seq == first.cseq.seq


def test_dialog_lower_cseq_gets_500():
    pair = Pair()
    alice, bob = pair.establish()
    first, second = alice.create_request("INFO"), alice.create_request("INFO")
    at_bob_second = pair.wire.request(second, ALICE)
    at_bob_first = pair.wire.request(first, ALICE)
    assert bob.receive_request(at_bob_second) is None and bob.remote_seq == 3
    refused = bob.receive_request(at_bob_first)
    assert refused is not None and refused.status == 500
    assert str(refused.cseq) == "2 INFO" and refused.get("Call-ID") == "call-1@alice"
    assert bob.remote_seq == 3
    ack = pair.wire.request(alice.create_ack(1), ALICE)  # ACK carries its INVITE's older number
    assert bob.receive_request(ack) is None


def test_dialog_reinvite_glare():
    pair = Pair()
    alice, bob = pair.establish()
    ours = pair.alice_sends("INVITE", body=OFFER, content_type=SDP)
    theirs = pair.bob_sends("INVITE", body=ANSWER, content_type=SDP)
    with pytest.raises(DialogError):
        alice.create_request("INVITE")  # 14.1: ours is still in progress
    # the INVITEs cross: each side answers the other's with 491 (14.2) and may try again later
    crossed_at_bob, crossed_at_alice = alice.receive_request(theirs), bob.receive_request(ours)
    assert crossed_at_bob is not None and crossed_at_bob.status == 491
    assert crossed_at_alice is not None and crossed_at_alice.status == 491
    alice.receive_response(pair.wire.response(crossed_at_alice))
    bob.receive_response(pair.wire.response(crossed_at_bob))
    assert alice.state is DialogState.CONFIRMED and bob.state is DialogState.CONFIRMED

    retry = pair.alice_sends("INVITE", body=OFFER, content_type=SDP)
    assert retry.cseq.seq == 3 and bob.receive_request(retry) is None
    with pytest.raises(DialogError):
        bob.create_request("INVITE")  # 14.1: Alice's INVITE is not answered yet
    second = Request("INVITE", retry.uri_text, retry.headers, retry.body)
    second.set("CSeq", "4 INVITE")
    busy = bob.receive_request(second)  # 14.2: a second INVITE before the first is answered
    assert busy is not None and busy.status == 500 and 0 <= int(busy.get("Retry-After") or "-1") <= 10
    alice.receive_response(pair.respond(bob, retry, 200, body=ANSWER, content_type=SDP))
    assert bob.create_request("INVITE").method == "INVITE"  # answered: a new one may start
    assert alice.create_ack().cseq.seq == 3


def test_dialog_408_and_481_end_the_dialog():
    for status in (408, 481):
        pair = Pair()
        alice, bob = pair.establish()
        info = pair.alice_sends("INFO")
        alice.receive_response(pair.respond(bob, info, status))
        assert alice.state is DialogState.TERMINATED


# -- forking ------------------------------------------------------------------------------------------
def fork_response(invite: Request, status: int, tag: str, host: str) -> Response:
    response = build_response(invite, status, to_tag=tag, headers=[("Contact", f"<sip:{tag}@{host}>")])
    out = parse(response.serialize())
    assert isinstance(out, Response)
    return out


def test_dialog_forking_two_early_dialogs_one_ok():
    invite = make_invite()
    invite.add("Via", via(ALICE), first=True)
    dialogs = DialogSet(invite)
    assert dialogs.receive_response(fork_response(invite, 100, "", BOB)) is None
    bob = dialogs.receive_response(fork_response(invite, 180, "b1", BOB))
    carol = dialogs.receive_response(fork_response(invite, 183, "c1", CAROL))
    assert bob is not None and carol is not None and bob is not carol
    assert dialogs.receive_response(fork_response(invite, 180, "b1", BOB)) is bob
    assert len(dialogs) == 2 and {d.remote_tag for d in dialogs.early()} == {"b1", "c1"}
    assert bob.id.local_tag == carol.id.local_tag == "a1"
    assert str(bob.remote_target) == f"sip:b1@{BOB}" and str(carol.remote_target) == f"sip:c1@{CAROL}"

    won = dialogs.receive_response(fork_response(invite, 200, "c1", CAROL))
    assert won is carol and carol.state is DialogState.CONFIRMED
    assert dialogs.confirmed() == [carol] and dialogs.early() == [bob]
    assert dialogs.terminate_early() == [bob]
    assert bob.state is DialogState.TERMINATED and carol.state is DialogState.CONFIRMED
    # a 2xx from a fork never seen before still makes (and must be ACKed on) its own dialog
    late = dialogs.receive_response(fork_response(invite, 200, "d1", "dave.example.test"))
    assert late is not None and late.state is DialogState.CONFIRMED and len(dialogs) == 3
    assert str(late.create_ack().cseq) == "1 ACK"


def test_dialog_forking_failure_ends_early_dialogs():
    invite = make_invite()
    invite.add("Via", via(ALICE), first=True)
    dialogs = DialogSet(invite)
    first = dialogs.receive_response(fork_response(invite, 180, "b1", BOB))
    second = dialogs.receive_response(fork_response(invite, 180, "c1", CAROL))
    assert dialogs.receive_response(fork_response(invite, 480, "c1", CAROL)) is None
    assert first is not None and second is not None
    assert first.state is DialogState.TERMINATED and second.state is DialogState.TERMINATED


# -- 2xx reliability ----------------------------------------------------------------------------------
def test_dialog_ok_retransmitted_until_ack_over_the_wire():
    pair = Pair(Proxy("p1.example.test"))
    pair.bob_answers(180)
    ok = pair.bob.create_response(pair.invite_at_bob, 200, body=ANSWER, content_type=SDP)
    retransmitter = InviteOkRetransmitter(ok, now=100.0)
    first = pair.wire.response(ok)
    alice = pair.uac_set.receive_response(first)
    assert alice is not None and alice.ack_for(first) is None
    ack = alice.create_ack(first.cseq.seq)
    # the ACK is lost; Bob retransmits at T1 and Alice answers with the very same ACK
    assert retransmitter.get_timer() == 100.5
    (again,) = retransmitter.handle_timer(100.5)
    at_alice = pair.wire.response(again)
    assert pair.uac_set.receive_response(at_alice) is alice
    repeated = alice.ack_for(at_alice)
    assert repeated is ack and repeated.serialize() == ack.serialize()
    at_bob = pair.wire.request(repeated, ALICE)
    assert pair.wire.path == ["p1.example.test", BOB]
    assert retransmitter.receive_ack(at_bob, 100.7)
    assert retransmitter.done and retransmitter.get_timer() is None
    assert retransmitter.handle_timer(101.5) == []


def test_dialog_uac_repeats_its_ack_per_cseq():
    pair = Pair()
    alice, bob = pair.establish()
    first_ack = alice.ack_for(pair.wire.response(bob.create_response(pair.invite_at_bob, 200)))
    assert first_ack is not None and first_ack.cseq.seq == 1
    reinvite = pair.alice_sends("INVITE")
    assert bob.receive_request(reinvite) is None
    ok = pair.respond(bob, reinvite, 200, body=ANSWER, content_type=SDP)
    alice.receive_response(ok)
    assert alice.ack_for(ok) is None
    second_ack = alice.create_ack(body=OFFER, content_type=SDP)
    assert second_ack.cseq.seq == 2 and second_ack.body == OFFER and second_ack.get("Content-Type") == SDP
    assert alice.ack_for(ok) is second_ack
    assert alice.ack_for(pair.wire.response(bob.create_response(pair.invite_at_bob, 200))) is first_ack
    assert alice.ack_for(pair.respond(bob, reinvite, 486)) is None  # not a 2xx


def test_dialog_ack_copies_invite_credentials():
    invite = make_invite()
    invite.add("Proxy-Authorization", 'Digest username="alice", realm="example.test", response="x"')
    pair = Pair(invite=invite)
    ok = pair.bob_answers(200)
    alice = pair.alice
    assert alice is not None
    ack = alice.create_ack(ok.cseq.seq)
    assert ack.get("Proxy-Authorization") == 'Digest username="alice", realm="example.test", response="x"'
    assert alice.create_request("BYE").get("Proxy-Authorization") is None


# -- matching -----------------------------------------------------------------------------------------
def test_dialog_bye_matching():
    pair = Pair()
    alice, bob = pair.establish()
    other = Pair(invite=make_invite(call_id="call-2@alice"))
    other_alice, other_bob = other.establish()
    pair.bob_table.add(other_bob)
    bye = pair.bob_sends("BYE")
    assert dialog_id_of(bye) == alice.id
    assert pair.alice_table.match(bye) is alice
    other_bye = other.alice_sends("BYE")
    assert dialog_id_of(other_bye) == DialogId("call-2@alice", "b1", other_alice.local_tag)
    assert pair.bob_table.match(other_bye) is other_bob and pair.bob_table.match(other_bye) is not bob

    stray = Request("BYE", bye.uri_text, bye.headers)
    stray.set("To", str(stray.to.with_tag("nope")))
    assert pair.alice_table.match(stray) is None
    assert dialog_id_of(pair.invite_at_bob) is None  # no To tag: not in a dialog

    ok = pair.respond(alice, bye, 200)  # the response reaches Bob: local tag from From
    assert dialog_id_of(ok) == bob.id and pair.bob_table.match(ok) is bob
    pair.bob_table.remove(bob)
    assert pair.bob_table.match(ok) is None and len(pair.bob_table) == 1
    assert list(pair.bob_table) == [other_bob] and pair.bob_table.get(other_bob.id) is other_bob


# -- secure, errors -----------------------------------------------------------------------------------
def test_dialog_sips_secure_flag():
    pair = Pair(invite=make_invite("sips"), bob_contact=f"<sips:bob@{BOB}>")
    alice, bob = pair.establish()
    assert alice.secure and bob.secure
    bye = alice.create_request("BYE")
    assert bye.uri_text == f"sips:bob@{BOB}" and bye.to.uri_text == "sips:bob@example.test"
    plain = Pair()
    assert not plain.bob.secure


def test_dialog_uas_refuses_invite_without_contact():
    invite = make_invite()
    invite.remove("Contact")
    invite.add("Via", via(ALICE), first=True)
    received = parse(invite.serialize())
    assert isinstance(received, Request)
    with pytest.raises(SipParseError) as info:
        Dialog.uas(received, BOB_CONTACT)
    answer = error_response(info.value)
    assert answer is not None and answer.status == 400


def test_dialog_malformed_contact_in_refresh_gets_400():
    pair = Pair()
    _, bob = pair.establish()
    update = pair.alice_sends("UPDATE")
    update.set("Contact", "<no-scheme>")
    refused = bob.receive_request(update)
    assert refused is not None and refused.status == 400
    assert str(bob.remote_target) == f"sip:alice@{ALICE}"
