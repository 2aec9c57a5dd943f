"""Transactions: every timer's schedule with a fake clock, matching, ACK/CANCEL building (RFC 3261 17, 6026)."""

from __future__ import annotations

import pytest

from softswitch.sip.message import Request, Response, build_response, parse
from softswitch.sip.transaction import (
    RequestReceived,
    ResponseReceived,
    State,
    StrayResponse,
    Terminated,
    Timeout,
    TimerConfig,
    TransactionLayer,
    TransportError,
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


def test_transaction_reliable_invite_error_terminates_at_once():
    layer = TransactionLayer()
    req = request()
    layer.send_request(req, DEST, now=0.0, reliable=True)
    layer.receive(response_to(req, 603), DEST, now=0.5)
    assert [type(e) for e in drain(layer)] == [ResponseReceived, Terminated]


def test_transaction_cancel_request_mirrors_invite():
    layer = TransactionLayer()
    req = request()
    req.add("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKproxy")
    req.add("Route", "<sip:proxy.example.com;lr>")
    key = layer.send_request(req, DEST, now=0.0)
    layer.receive(response_to(req, 180), DEST, now=0.1)
    cancel = wire(layer.cancel_request(key))
    assert cancel.method == "CANCEL" and cancel.uri_text == req.uri_text
    assert len(cancel.vias) == 1 and cancel.via.branch == "z9hG4bKabc"
    assert (cancel.cseq.seq, cancel.cseq.method) == (1, "CANCEL")
    assert cancel.get("Route") == "<sip:proxy.example.com;lr>" and cancel.to.tag is None
    layer.send_request(cancel, DEST, now=0.2)  # its own transaction: same branch, other method
    layer.receive(response_to(cancel, 200), DEST, now=0.3)
    layer.receive(response_to(req, 487), DEST, now=0.3)
    statuses = [(e.request.method, e.response.status) for e in drain(layer) if isinstance(e, ResponseReceived)]
    assert statuses == [("INVITE", 180), ("CANCEL", 200), ("INVITE", 487)]


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
