"""Transactions: every timer's schedule with a fake clock, matching, ACK/CANCEL building (RFC 3261 17, 6026)."""

from __future__ import annotations

import gc

import pytest

from softswitch.sip.dialog import Dialog, DialogState
from softswitch.sip.errors import SipParseError
from softswitch.sip.message import Request, Response, build_response, parse
from softswitch.sip.transaction import (
    MAGIC,
    TRANSITIONS,
    DiscardedResponse,
    Kind,
    RequestReceived,
    ResponseReceived,
    State,
    StrayResponse,
    Terminated,
    Timeout,
    TimerConfig,
    TransactionLayer,
    TransportError,
    client_key,
    server_key,
)

DEST = ("192.0.2.9", 5060)
SRC = ("192.0.2.7", 5062)


def request(method: str = "INVITE", branch: str = "z9hG4bKabc", cseq: int = 1, to_tag: str | None = None) -> Request:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    return Request(
        method,
        "sip:bob@example.com",
        [
            ("Via", f"SIP/2.0/UDP 192.0.2.7:5062;branch={branch}"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@example.com>;tag=a1"),
            ("To", to),
            ("Call-ID", "call-1@example.com"),
            ("CSeq", f"{cseq} {method}"),
        ],
    )


def wire(message):
    """Serialise and parse again, as the transport does."""
    return parse(message.serialize())


def response_to(req: Request, status: int, tag: str = "b1") -> Response:
    return wire(build_response(req, status, to_tag=tag))


def drain(layer: TransactionLayer) -> list:
    out = []
    while (ev := layer.next_event()) is not None:
        out.append(ev)
    return out


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, object]]:
    """Fire timers up to `end`; returns (time, transmit) for every retransmission."""
    sent = []
    while (t := layer.get_timer()) is not None and t <= end:
        layer.handle_timer(t)
        sent += [(round(t, 3), tx) for tx in layer.transmits()]
    return sent


# -- client non-INVITE ---------------------------------------------------------------------------
def test_transaction_timer_e_doubles_to_t2_then_f_times_out():
    layer = TransactionLayer(TimerConfig(t1=0.5, t2=4.0))
    key = layer.send_request(request("OPTIONS"), DEST, now=0.0)
    assert [tx.message.method for tx in layer.transmits()] == ["OPTIONS"]
    sent = run_until(layer, 40.0)
    times = [t for t, _ in sent]
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    intervals = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert intervals == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(tx.retransmission and tx.dest == DEST for _, tx in sent)
    events = drain(layer)
    assert [type(e) for e in events] == [Timeout, Terminated]
    assert events[0].timer == "F" and events[0].at == 32.0 and events[0].key == key
    assert len(layer) == 0


def test_transaction_timer_e_uses_t2_once_proceeding():
    layer = TransactionLayer(TimerConfig(t1=0.5, t2=4.0))
    req = request("REGISTER")
    layer.send_request(req, DEST, now=0.0)
    layer.transmits()
    run_until(layer, 1.0)  # one retransmission at 0.5, next due at 1.5
    layer.receive(response_to(req, 100), DEST, now=1.0)
    sent = run_until(layer, 14.0)
    assert [t for t, _ in sent] == [1.5, 5.5, 9.5, 13.5]
    assert [type(e) for e in drain(layer)] == [ResponseReceived]


def test_transaction_non_invite_final_then_timer_k():
    layer = TransactionLayer(TimerConfig(t1=0.5, t4=5.0))
    req = request("BYE")
    key = layer.send_request(req, DEST, now=0.0)
    layer.transmits()
    layer.receive(response_to(req, 200), DEST, now=0.2)
    events = drain(layer)
    assert [type(e) for e in events] == [ResponseReceived]
    assert events[0].response.status == 200 and events[0].request is req
    assert layer.get(key).state is State.COMPLETED
    layer.receive(response_to(req, 200), DEST, now=0.3)  # retransmission absorbed
    assert drain(layer) == []
    assert run_until(layer, 100.0) == []
    assert [(type(e), e.at) for e in drain(layer)] == [(Terminated, 5.2)]


def test_transaction_reliable_has_no_retransmissions_and_zero_k():
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.send_request(req, DEST, now=0.0, reliable=True)
    layer.transmits()
    assert layer.get_timer() == 32.0  # only Timer F
    layer.receive(response_to(req, 404), DEST, now=1.0)
    assert [type(e) for e in drain(layer)] == [ResponseReceived, Terminated]
    assert len(layer) == 0 and layer.get_timer() is None


# -- client INVITE -------------------------------------------------------------------------------
def test_transaction_timer_a_doubles_without_cap_until_b():
    layer = TransactionLayer(TimerConfig(t1=0.5, t2=4.0))
    layer.send_request(request(), DEST, now=0.0)
    layer.transmits()
    sent = run_until(layer, 64.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    events = drain(layer)
    assert [type(e) for e in events] == [Timeout, Terminated]
    assert events[0].timer == "B" and events[0].at == 32.0


def test_transaction_timers_follow_configured_t1():
    layer = TransactionLayer(TimerConfig(t1=0.1, t2=0.4))
    layer.send_request(request("OPTIONS"), DEST, now=10.0)
    layer.transmits()
    sent = run_until(layer, 20.0)
    assert [round(t - 10, 3) for t, _ in sent][:6] == [0.1, 0.3, 0.7, 1.1, 1.5, 1.9]
    assert drain(layer)[0].at == pytest.approx(10.0 + 64 * 0.1)


def test_transaction_invite_provisional_stops_retransmission():
    layer = TransactionLayer()
    req = request()
    layer.send_request(req, DEST, now=0.0)
    layer.transmits()
    layer.receive(response_to(req, 180), DEST, now=0.1)
    assert run_until(layer, 100.0) == []
    assert [type(e) for e in drain(layer)] == [ResponseReceived]


def test_transaction_invite_error_builds_ack_and_absorbs_retransmissions():
    layer = TransactionLayer()
    req = request()
    req.add("Route", "<sip:proxy.example.com;lr>")
    key = layer.send_request(req, DEST, now=0.0)
    layer.transmits()
    busy = response_to(req, 486, tag="busy-tag")
    layer.receive(busy, DEST, now=0.4)
    (ack_tx,) = layer.transmits()
    ack = wire(ack_tx.message)
    assert ack.method == "ACK" and ack.uri_text == req.uri_text
    assert ack.via.branch == "z9hG4bKabc" and len(ack.vias) == 1
    assert ack.cseq.seq == 1 and ack.cseq.method == "ACK"
    assert ack.to.tag == "busy-tag" and ack.from_.tag == "a1" and ack.call_id == req.call_id
    assert ack.get("Route") == "<sip:proxy.example.com;lr>"
    assert [e.response.status for e in drain(layer)] == [486]
    layer.receive(busy, DEST, now=1.0)
    (again,) = layer.transmits()
    assert again.message is ack_tx.message and again.retransmission
    assert drain(layer) == []
    assert layer.get(key).state is State.COMPLETED
    run_until(layer, 100.0)
    assert [(type(e), e.at) for e in drain(layer)] == [(Terminated, 32.4)]


def test_transaction_invite_2xx_goes_to_accepted_and_passes_retransmissions_up():
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, DEST, now=0.0)
    layer.transmits()
    ok = response_to(req, 200)
    layer.receive(ok, DEST, now=1.0)
    assert layer.transmits() == []  # the ACK for a 2xx is the TU's job
    layer.receive(ok, DEST, now=1.5)
    assert [e.response.status for e in drain(layer)] == [200, 200]
    assert layer.get(key).state is State.ACCEPTED
    run_until(layer, 100.0)
    assert [(type(e), e.at) for e in drain(layer)] == [(Terminated, 33.0)]
    layer.receive(ok, DEST, now=40.0)
    assert [type(e) for e in drain(layer)] == [StrayResponse]


def test_transaction_timer_d_is_64_t1_when_that_is_longer():
    layer = TransactionLayer(TimerConfig(t1=1.0, t2=4.0))  # Table 4: Timer D > 32 s, and at least 64*T1
    req = request()
    layer.send_request(req, DEST, now=0.0)
    layer.receive(response_to(req, 486), DEST, now=0.4)
    run_until(layer, 200.0)
    assert [(type(e), e.at) for e in drain(layer)] == [(ResponseReceived, 0.4), (Terminated, 64.4)]


def test_transaction_reliable_invite_error_terminates_at_once():
    layer = TransactionLayer()
    req = request()
    layer.send_request(req, DEST, now=0.0, reliable=True)
    layer.receive(response_to(req, 603), DEST, now=0.5)
    assert [type(e) for e in drain(layer)] == [ResponseReceived, Terminated]


def top_via_only(req: Request) -> Request:
    """`req` as its responses see it: a response reaching a UA carries only the UA's own Via (8.1.3.3)."""
    copy = Request(req.method, req.uri_text, [(n, v) for n, v in req.headers if n != "Via"])
    copy.add("Via", req.get_all("Via")[0], first=True)
    return copy


def test_transaction_cancel_request_mirrors_invite():
    layer = TransactionLayer()
    req = request()
    req.add("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKproxy")
    req.add("Route", "<sip:proxy.example.com;lr>")
    key = layer.send_request(req, DEST, now=0.0)
    layer.receive(response_to(top_via_only(req), 180), DEST, now=0.1)
    cancel = wire(layer.cancel_request(key))
    assert cancel.method == "CANCEL" and cancel.uri_text == req.uri_text
    assert len(cancel.vias) == 1 and cancel.via.branch == "z9hG4bKabc"
    assert (cancel.cseq.seq, cancel.cseq.method) == (1, "CANCEL")
    assert cancel.get("Route") == "<sip:proxy.example.com;lr>" and cancel.to.tag is None
    layer.send_request(cancel, DEST, now=0.2)  # its own transaction: same branch, other method
    assert layer.cancel_request(key) is None  # a CANCEL is already under way
    layer.receive(response_to(cancel, 200), DEST, now=0.3)
    layer.receive(response_to(top_via_only(req), 487), DEST, now=0.3)
    statuses = [(e.request.method, e.response.status) for e in drain(layer) if isinstance(e, ResponseReceived)]
    assert statuses == [("INVITE", 180), ("CANCEL", 200), ("INVITE", 487)]


def test_transaction_cancel_in_calling_waits_for_a_provisional():
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, DEST, now=0.0)
    layer.transmits()
    assert layer.cancel_request(key) is None  # 9.1: no CANCEL before a provisional response
    assert layer.transmits() == [] and drain(layer) == [] and layer.get(key).cancel_pending
    assert layer.cancel_request(key) is None  # asked twice: still one CANCEL later
    layer.receive(response_to(req, 100), DEST, now=0.3)
    (sent,) = layer.transmits()  # the layer sends it itself, in its own transaction
    cancel = wire(sent.message)
    assert cancel.method == "CANCEL" and not sent.retransmission and sent.dest == DEST
    assert cancel.via.branch == req.via.branch and (cancel.cseq.seq, cancel.cseq.method) == (1, "CANCEL")
    assert [e.response.status for e in drain(layer)] == [100]
    assert layer.get(client_key(cancel)).state is State.TRYING and layer.cancel_request(key) is None
    layer.receive(response_to(req, 180), DEST, now=0.4)
    assert layer.transmits() == []  # one CANCEL only
    assert [tx.message.method for _, tx in run_until(layer, 0.8)] == ["CANCEL"]  # Timer E at 0.3 + T1
    layer.receive(response_to(cancel, 200), DEST, now=0.9)
    layer.receive(response_to(req, 487), DEST, now=1.0)
    assert [tx.message.method for tx in layer.transmits()] == ["ACK"]
    statuses = [(e.request.method, e.response.status) for e in drain(layer) if isinstance(e, ResponseReceived)]
    assert statuses == [("INVITE", 180), ("CANCEL", 200), ("INVITE", 487)]


@pytest.mark.parametrize("status", [200, 486])
def test_transaction_cancel_in_calling_dropped_by_a_final_response(status):
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, DEST, now=0.0)
    layer.transmits()
    assert layer.cancel_request(key) is None
    layer.receive(response_to(req, status), DEST, now=0.3)
    assert [tx.message.method for tx in layer.transmits()] == ([] if status == 200 else ["ACK"])
    layer.receive(response_to(req, 180), DEST, now=0.4)  # a late provisional changes nothing
    assert layer.transmits() == [] and layer.cancel_request(key) is None
    assert [e.response.status for e in drain(layer) if isinstance(e, ResponseReceived)] == [status]


def test_transaction_response_with_two_vias_is_discarded():
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, DEST, now=0.0)
    layer.transmits()
    ringing = build_response(req, 180, to_tag="b1")
    ringing.add("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKproxy")
    layer.receive(wire(ringing), DEST, now=0.1)
    (event,) = drain(layer)
    assert isinstance(event, DiscardedResponse) and event.source == DEST and "Via" in event.reason
    assert layer.get(key).state is State.CALLING  # not matched: Timer A keeps retransmitting
    assert [t for t, _ in run_until(layer, 1.0)] == [0.5]
    ok = build_response(req, 200, to_tag="b1", headers=[("Via", "SIP/2.0/UDP p.example.com;branch=z9hG4bKp")])
    layer.receive(wire(ok), DEST, now=1.0)
    assert [type(e) for e in drain(layer)] == [DiscardedResponse]  # never StrayResponse: no re-ACK


def test_transaction_response_with_unknown_branch_is_stray():
    layer = TransactionLayer()
    layer.send_request(request(branch="z9hG4bKone"), DEST, now=0.0)
    layer.receive(response_to(request(branch="z9hG4bKtwo"), 200), DEST, now=0.1)
    (event,) = drain(layer)
    assert isinstance(event, StrayResponse) and event.source == DEST


def test_transaction_transport_error_is_reported():
    layer = TransactionLayer()
    key = layer.send_request(request("OPTIONS"), DEST, now=0.0)
    layer.transport_error(key, now=0.1)
    assert [type(e) for e in drain(layer)] == [TransportError, Terminated]
    assert layer.get_timer() is None
    layer.transport_error(key, now=0.2)  # already gone: nothing
    assert drain(layer) == []


def test_transaction_transport_error_ends_every_live_state_through_the_table():
    live = {(kind, state) for kind, state, _ in TRANSITIONS if state is not State.TERMINATED}
    assert {(k, s) for k, s, symbol in TRANSITIONS if symbol == "transport_error"} == live
    assert all(TRANSITIONS[(k, s, "transport_error")] is State.TERMINATED for k, s in live)
    assert (Kind.IST, State.CONFIRMED) in live and (Kind.ICT, State.ACCEPTED) in live
    layer = TransactionLayer()
    inv = wire(request())
    layer.receive(inv, SRC, now=0.0)
    key = drain(layer)[0].key
    layer.send_response(key, build_response(inv, 486, to_tag="t9"), now=0.1)
    layer.transport_error(key, now=0.2)  # in Completed, while Timer G retransmits
    assert [(type(e), e.at) for e in drain(layer)] == [(TransportError, 0.2), (Terminated, 0.2)]


# -- Via ownership (8.1.1.7, 18.1.1) ----------------------------------------------------------------
def without_via(method: str = "OPTIONS") -> Request:
    req = request(method)
    req.remove("Via")
    return req


def test_transaction_send_request_adds_the_top_via():
    layer = TransactionLayer(via_sent_by="192.0.2.1:5060")
    req = without_via()
    key = layer.send_request(req, DEST, now=0.0)
    (sent,) = layer.transmits()
    out = wire(sent.message)
    (via,) = out.vias
    assert (via.protocol, via.transport, via.host, via.port) == ("SIP/2.0", "UDP", "192.0.2.1", 5060)
    assert via.branch.startswith(MAGIC) and len(via.branch) > len(MAGIC) + 8 and via.wants_rport
    assert out.headers[0][0] == "Via" and key == client_key(out) and req.via.branch == via.branch
    layer.receive(response_to(out, 200), DEST, now=0.1)
    assert [type(e) for e in drain(layer)] == [ResponseReceived]
    other = without_via("INFO")
    layer.send_request(other, DEST, now=0.2, transport="tcp", reliable=True)
    assert other.via.transport == "TCP" and other.via.branch != via.branch
    kept = request("MESSAGE", branch="z9hG4bKmine")  # a request with its own Via keeps it
    layer.send_request(kept, DEST, now=0.3)
    assert [v.branch for v in kept.vias] == ["z9hG4bKmine"]


def test_transaction_send_request_refuses_a_missing_or_old_via():
    for call in (
        lambda: TransactionLayer().send_request(without_via(), DEST, now=0.0),
        lambda: TransactionLayer().send_stateless(without_via("ACK"), DEST),
        lambda: TransactionLayer(via_sent_by="h").send_request(request(branch="old2543"), DEST, now=0.0),
        lambda: TransactionLayer(via_sent_by="h").send_stateless(request("ACK", branch="1234"), DEST),
        lambda: TransactionLayer(via_sent_by="h").send_request(Request("OPTIONS", "sip:b@h", [("Via", "x")]), DEST, 0),
        lambda: TransactionLayer(via_sent_by="bad host:port"),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert not isinstance(info.value, SipParseError)  # our own fault, not the peer's


def test_transaction_send_stateless_gives_a_request_a_new_branch_once():
    layer = TransactionLayer(via_sent_by="192.0.2.1", transport="tls")
    ack = without_via("ACK")
    layer.send_stateless(ack, DEST)
    layer.send_stateless(ack, DEST)  # sent again (for a retransmitted 2xx): the same ACK, same branch
    first, again = (wire(tx.message) for tx in layer.transmits())
    assert first.via.transport == "TLS" and first.via.port is None and first.via.branch.startswith(MAGIC)
    assert again.serialize() == first.serialize() and len(again.vias) == 1
    ok = build_response(request(), 200, to_tag="t1")
    layer.send_stateless(ok, SRC)  # a response is sent as it is
    assert [tx.message for tx in layer.transmits()] == [ok] and ok.get_all("Via") == request().get_all("Via")


# -- server INVITE -------------------------------------------------------------------------------
def test_transaction_server_invite_sends_trying_and_absorbs_retransmissions():
    layer = TransactionLayer()
    inv = wire(request())
    layer.receive(inv, SRC, now=0.0)
    (event,) = drain(layer)
    assert isinstance(event, RequestReceived) and event.request.method == "INVITE" and event.source == SRC
    (trying,) = layer.transmits()
    assert trying.message.status == 100 and trying.dest == SRC
    layer.receive(wire(request()), SRC, now=0.5)
    assert drain(layer) == []
    assert [tx.message.status for tx in layer.transmits()] == [100]
    layer.send_response(event.key, build_response(inv, 180, to_tag="t9"), now=0.6)
    layer.transmits()
    layer.receive(wire(request()), SRC, now=1.0)
    assert [tx.message.status for tx in layer.transmits()] == [180]


def test_transaction_timer_g_and_h_without_ack():
    layer = TransactionLayer(TimerConfig(t1=0.5, t2=4.0))
    inv = wire(request())
    layer.receive(inv, SRC, now=0.0)
    (event,) = drain(layer)
    layer.transmits()
    layer.send_response(event.key, build_response(inv, 486, to_tag="t9"), now=1.0)
    assert [tx.message.status for tx in layer.transmits()] == [486]
    sent = run_until(layer, 100.0)
    assert [round(t - 1.0, 3) for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(tx.message.status == 486 for _, tx in sent)
    events = drain(layer)
    assert [type(e) for e in events] == [Timeout, Terminated]
    assert events[0].timer == "H" and events[0].at == 33.0


def test_transaction_ack_confirms_then_timer_i():
    layer = TransactionLayer(TimerConfig(t1=0.5, t4=5.0))
    inv = wire(request())
    layer.receive(inv, SRC, now=0.0)
    key = drain(layer)[0].key
    layer.send_response(key, build_response(inv, 404, to_tag="t9"), now=0.1)
    layer.transmits()
    layer.receive(wire(request("ACK", to_tag="t9")), SRC, now=0.3)
    assert drain(layer) == []  # the ACK for a non-2xx stays in the transaction
    assert layer.get(key).state is State.CONFIRMED
    assert run_until(layer, 100.0) == []  # Timer G stopped
    assert [(type(e), e.at) for e in drain(layer)] == [(Terminated, 5.3)]


def test_transaction_server_invite_2xx_accepted_absorbs_invites_and_passes_ack():
    layer = TransactionLayer()
    inv = wire(request())
    layer.receive(inv, SRC, now=0.0)
    key = drain(layer)[0].key
    ok = build_response(inv, 200, to_tag="t9")
    layer.send_response(key, ok, now=0.1)
    layer.transmits()
    layer.receive(wire(request()), SRC, now=0.5)
    assert layer.transmits() == [] and drain(layer) == []
    layer.send_response(key, ok, now=0.6)  # the TU's own 2xx retransmission
    assert [tx.retransmission for tx in layer.transmits()] == [True]
    ack = wire(request("ACK", branch="z9hG4bKnew", to_tag="t9"))
    layer.receive(ack, SRC, now=0.7)
    (event,) = drain(layer)
    assert isinstance(event, RequestReceived) and event.key is None and event.request.method == "ACK"
    run_until(layer, 100.0)
    assert [(type(e), e.at) for e in drain(layer)] == [(Terminated, 32.1)]


def test_transaction_rfc2543_matching_without_magic_cookie():
    layer = TransactionLayer()
    inv = wire(request(branch="old2543"))
    layer.receive(inv, SRC, now=0.0)
    key = drain(layer)[0].key
    layer.transmits()
    layer.receive(wire(request(branch="old2543")), SRC, now=0.5)
    assert [tx.message.status for tx in layer.transmits()] == [100]
    layer.send_response(key, build_response(inv, 480, to_tag="t9"), now=0.6)
    layer.receive(wire(request("ACK", branch="old2543", to_tag="other")), SRC, now=0.7)
    assert [e.request.method for e in drain(layer)] == ["ACK"]  # wrong To tag: not ours
    layer.receive(wire(request("ACK", branch="old2543", to_tag="t9")), SRC, now=0.8)
    assert drain(layer) == [] and layer.get(key).state is State.CONFIRMED


def test_transaction_find_invite_for_cancel():
    layer = TransactionLayer()
    inv = wire(request())
    layer.receive(inv, SRC, now=0.0)
    key = drain(layer)[0].key
    cancel = wire(request("CANCEL"))
    assert layer.find_invite_for_cancel(cancel) == key
    assert layer.find_invite_for_cancel(wire(request("CANCEL", branch="z9hG4bKother"))) is None
    layer.receive(cancel, SRC, now=0.1)
    (event,) = drain(layer)
    assert event.request.method == "CANCEL" and event.key != key


# -- server non-INVITE ---------------------------------------------------------------------------
def test_transaction_server_non_invite_absorbs_then_repeats_final():
    layer = TransactionLayer()
    req = wire(request("OPTIONS"))
    layer.receive(req, SRC, now=0.0)
    key = drain(layer)[0].key
    assert layer.transmits() == []  # no automatic 100 for non-INVITE
    layer.receive(wire(request("OPTIONS")), SRC, now=0.5)
    assert drain(layer) == [] and layer.transmits() == []  # Trying: retransmission discarded
    layer.send_response(key, build_response(req, 200, to_tag="t1"), now=0.6)
    layer.transmits()
    layer.receive(wire(request("OPTIONS")), SRC, now=1.0)
    assert [tx.message.status for tx in layer.transmits()] == [200]
    run_until(layer, 100.0)
    assert [(type(e), e.at) for e in drain(layer)] == [(Terminated, 32.6)]


def test_transaction_lingering_keeps_its_messages_text_not_their_parsed_headers():
    """Once a transaction only absorbs retransmissions, its request and response drop their parsed headers at
    the layer's next input (the TU has read them by then), and they and their header lists leave the GC's
    walks: objects a full collection would walk for 32 s. What they say is unchanged: a retransmission gets
    the same bytes, and the headers read back the same."""
    layer = TransactionLayer()
    req = wire(request("BYE"))
    layer.receive(req, SRC, now=0.0)
    key = drain(layer)[0].key
    ok = build_response(req, 200, to_tag="t1")
    layer.send_response(key, ok, now=0.1)
    sent = [tx.message.serialize() for tx in layer.transmits()]
    assert req.from_.tag == "a1" and ok.to.tag == "t1"  # the TU may still read them in this turn
    layer.receive(wire(request("BYE")), SRC, now=1.0)  # the next input: a retransmission
    assert [tx.message.serialize() for tx in layer.transmits()] == sent
    assert ok._parsed == {}
    assert not any(gc.is_tracked(o) for o in (ok, ok.headers))
    assert (ok.to.tag, ok.cseq.seq, ok.via.branch) == ("t1", 1, "z9hG4bKabc")
    live = layer.get(key)
    assert live is not None and live.state is State.COMPLETED
    assert live.request is None and live.last_response is ok  # it only resends its response now
    assert not gc.is_tracked(live)  # refers to nothing tracked but its state's and kind's enum members
    run_until(layer, 100.0)
    assert layer.get(key) is None and [type(e) for e in drain(layer)][-1] is Terminated


def test_transaction_lingering_lets_go_at_once_of_what_its_state_no_longer_needs():
    """Over UDP, at the next input: an accepted server INVITE keeps neither message (retransmitted INVITEs are
    absorbed, the TU resends its 2xx); an accepted client INVITE keeps its request (a retransmitted 2xx goes up
    with it); over TCP everything stays (a failed send reports the request)."""
    layer = TransactionLayer()
    invite = wire(request("INVITE"))
    layer.receive(invite, SRC, now=0.0)
    server = drain(layer)[0].key
    layer.send_response(server, build_response(invite, 200, to_tag="t1"), now=0.1)
    ours = request("INVITE", branch="z9hG4bKours")
    client = layer.send_request(ours, DEST, now=0.2)
    layer.transmits()
    ok = response_to(ours, 200)
    layer.receive(ok, DEST, now=0.3)
    drain(layer)
    layer.receive(wire(request("INVITE")), SRC, now=0.4)  # the next input: the caller's INVITE again
    assert layer.transmits() == [] and drain(layer) == []  # absorbed, as before
    accepted = layer.get(server)
    assert accepted.state is State.ACCEPTED and accepted.request is None and accepted.last_response is None
    assert layer.get(client).state is State.ACCEPTED and layer.get(client).request is ours
    layer.receive(response_to(ours, 200), DEST, now=0.5)  # a retransmitted 2xx still comes with our INVITE
    (event,) = drain(layer)
    assert isinstance(event, ResponseReceived) and event.request is ours and ours.cseq.method == "INVITE"

    reliable = TransactionLayer()
    invite = wire(request("INVITE"))
    reliable.receive(invite, SRC, now=0.0, reliable=True)
    key = drain(reliable)[0].key
    answer = build_response(invite, 200, to_tag="t1")
    reliable.send_response(key, answer, now=0.1)
    reliable.receive(wire(request("OPTIONS", branch="z9hG4bKnext")), SRC, now=0.2, reliable=True)
    kept = reliable.get(key)
    assert kept.state is State.ACCEPTED and kept.request is invite and kept.last_response is answer


def test_transaction_server_non_invite_reliable_timer_j_zero():
    layer = TransactionLayer()
    req = wire(request("BYE"))
    layer.receive(req, SRC, now=0.0, reliable=True)
    key = drain(layer)[0].key
    layer.send_response(key, build_response(req, 200), now=0.1)
    assert [type(e) for e in drain(layer)] == [Terminated]


def test_transaction_send_response_in_wrong_state_raises():
    layer = TransactionLayer()
    req = wire(request("OPTIONS"))
    layer.receive(req, SRC, now=0.0)
    key = drain(layer)[0].key
    layer.send_response(key, build_response(req, 200), now=0.1)
    with pytest.raises(ValueError):
        layer.send_response(key, build_response(req, 180), now=0.2)
    with pytest.raises(KeyError):
        layer.send_response(("s", "nope"), build_response(req, 200), now=0.2)


# -- a dialog's requests through the layer (Via ownership end to end) ----------------------------
def test_transaction_dialog_requests_get_their_via_from_the_layer():
    alice_layer = TransactionLayer(via_sent_by="192.0.2.7:5062")
    bob_layer = TransactionLayer(via_sent_by="192.0.2.9:5060")

    def carried(layer: TransactionLayer) -> list:
        return [wire(tx.message) for tx in layer.transmits()]

    invite = without_via("INVITE")
    invite.add("Contact", "<sip:alice@192.0.2.7:5062>")
    invite_key = alice_layer.send_request(invite, DEST, now=0.0)
    (invite_at_bob,) = carried(alice_layer)
    bob_layer.receive(invite_at_bob, SRC, now=0.0)
    (new_invite,) = drain(bob_layer)
    bob = Dialog.uas(invite_at_bob, "<sip:bob@192.0.2.9>", local_tag="b1")
    carried(bob_layer)  # 100 Trying
    bob_layer.send_response(new_invite.key, bob.create_response(invite_at_bob, 200), now=0.1)
    (ok,) = carried(bob_layer)
    alice_layer.receive(ok, DEST, now=0.1)
    (answered,) = drain(alice_layer)
    assert isinstance(answered, ResponseReceived) and answered.key == invite_key
    alice = Dialog.uac(invite, ok)

    # the ACK for the 2xx: no Via from the dialog, a new branch from the layer (not the INVITE's)
    alice_layer.send_stateless(alice.create_ack(), DEST)
    (ack_at_bob,) = carried(alice_layer)
    branches = {invite_at_bob.via.branch, ack_at_bob.via.branch}
    assert len(ack_at_bob.vias) == 1 and len(branches) == 2 and all(b.startswith(MAGIC) for b in branches)
    bob_layer.receive(ack_at_bob, SRC, now=0.2)
    (ack_event,) = drain(bob_layer)
    assert isinstance(ack_event, RequestReceived) and ack_event.key is None  # to the TU (17.2.1)
    repeated = alice.ack_for(ok)  # for a retransmitted 2xx: the same ACK, the same branch
    assert repeated is not None
    alice_layer.send_stateless(repeated, DEST)
    (again,) = carried(alice_layer)
    assert again.serialize() == ack_at_bob.serialize()

    # BYE: Dialog.create_request straight into send_request
    bye = alice.create_request("BYE")
    assert "Via" not in bye
    bye_key = alice_layer.send_request(bye, DEST, now=1.0)
    (bye_at_bob,) = carried(alice_layer)
    assert (bye_at_bob.via.host, bye_at_bob.via.port, bye_at_bob.via.wants_rport) == ("192.0.2.7", 5062, True)
    assert bye_at_bob.via.branch not in branches and bye_at_bob.via.branch.startswith(MAGIC)
    bob_layer.receive(bye_at_bob, SRC, now=1.0)
    (bye_event,) = drain(bob_layer)
    assert bob.receive_request(bye_at_bob) is None and bob.state is DialogState.TERMINATED
    bob_layer.send_response(bye_event.key, bob.create_response(bye_at_bob, 200), now=1.1)
    (bye_ok,) = carried(bob_layer)
    alice_layer.receive(bye_ok, DEST, now=1.1)
    assert [(type(e), e.key, e.response.status) for e in drain(alice_layer)] == [(ResponseReceived, bye_key, 200)]
    assert alice.state is DialogState.TERMINATED


def test_transaction_max_transactions_answers_503_statelessly_past_the_cap():
    layer = TransactionLayer(max_transactions=2, auto_trying=False)
    for i in range(2):
        layer.receive(wire(request("OPTIONS", branch=f"z9hG4bKcap{i}")), SRC, now=0.0)
    assert len(layer) == 2 and len([e for e in drain(layer) if isinstance(e, RequestReceived)]) == 2
    layer.receive(wire(request("OPTIONS", branch="z9hG4bKcap2")), SRC, now=0.0)
    assert len(layer) == 2 and drain(layer) == []  # no transaction, nothing for the TU
    [tx] = layer.transmits()
    assert tx.message.status == 503 and tx.message.get("Retry-After") == "5" and tx.message.to.tag
    assert tx.dest == SRC and layer.refused_full == 1
    # a retransmission of a request that has its transaction is still absorbed by it, cap or not
    layer.receive(wire(request("OPTIONS", branch="z9hG4bKcap0")), SRC, now=0.1)
    assert layer.transmits() == [] and layer.refused_full == 1
    # once transactions end, new ones are taken again
    first = wire(request("OPTIONS", branch="z9hG4bKcap0"))
    layer.send_response(server_key(first), build_response(first, 200, to_tag="x"), 0.2)
    layer.transmits()
    run_until(layer, 60.0)  # Timer J ends it
    layer.receive(wire(request("OPTIONS", branch="z9hG4bKcap3")), SRC, now=60.0)
    assert len(layer) == 2 and [type(e) for e in drain(layer)] == [Terminated, RequestReceived]


def test_transaction_end_is_an_event_only_when_asked_for():
    for report in (True, False):
        layer = TransactionLayer(report_terminated=report)
        req = wire(request("BYE"))
        layer.receive(req, SRC, now=0.0)
        key = drain(layer)[0].key
        layer.send_response(key, build_response(req, 200, to_tag="t1"), now=0.1)
        run_until(layer, 100.0)
        assert layer.get(key) is None and len(layer) == 0
        assert [type(e) for e in drain(layer)] == ([Terminated] if report else [])
