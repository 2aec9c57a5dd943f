"""The UAS core's 2xx retransmission and ACK wait (RFC 3261 13.3.1.4, RFC 6026), on an explicit clock."""

from __future__ import annotations

import itertools

import pytest

from softswitch.sip.dialog_timers import AckReceived, AckTimeout, InviteOkRetransmitter, OkState, acknowledges
from softswitch.sip.message import Request, Response, build_response
from softswitch.sip.transaction import TimerConfig

T0 = 1000.0


def invite() -> Request:
    return Request(
        "INVITE",
        "sip:bob@bob.example.test",
        [
            ("Via", "SIP/2.0/UDP alice.example.test;branch=z9hG4bK1"),
            ("From", "<sip:alice@example.test>;tag=a1"),
            ("To", "<sip:bob@example.test>"),
            ("Call-ID", "call-1"),
            ("CSeq", "7 INVITE"),
            ("Contact", "<sip:alice@alice.example.test>"),
        ],
    )


def ok() -> Response:
    return build_response(invite(), 200, to_tag="b1", headers=[("Contact", "<sip:bob@bob.example.test>")])


def ack(seq: int = 7, to_tag: str = "b1") -> Request:
    return Request(
        "ACK",
        "sip:bob@bob.example.test",
        [
            ("Via", "SIP/2.0/UDP alice.example.test;branch=z9hG4bK2"),
            ("From", "<sip:alice@example.test>;tag=a1"),
            ("To", f"<sip:bob@example.test>;tag={to_tag}"),
            ("Call-ID", "call-1"),
            ("CSeq", f"{seq} ACK"),
        ],
    )


def run(machine: InviteOkRetransmitter, until: float) -> list[float]:
    """Fire every timer up to `until` on the fake clock; the times the 2xx went out again."""
    sent = []
    while (deadline := machine.get_timer()) is not None and deadline <= until:
        out = machine.handle_timer(deadline)
        assert out in ([], [machine.response])
        sent += [deadline] * len(out)
    return sent


def test_dialog_timers_schedule_doubles_to_t2_and_times_out_at_64_t1():
    response = ok()
    machine = InviteOkRetransmitter(response, T0)
    assert machine.get_timer() == T0 + 0.5
    assert machine.handle_timer(T0 + 0.4) == []  # early call: nothing
    sent = run(machine, T0 + 100)
    offsets = [round(t - T0, 6) for t in sent]
    assert offsets == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [b - a for a, b in itertools.pairwise(offsets)] == [1, 2, 4, 4, 4, 4, 4, 4, 4]
    assert machine.state is OkState.TIMED_OUT and machine.done and machine.get_timer() is None
    event = machine.next_event()
    assert event == AckTimeout(T0 + 32.0, response) and machine.next_event() is None
    assert machine.handle_timer(T0 + 40) == []


def test_dialog_timers_ack_stops_retransmission():
    machine = InviteOkRetransmitter(ok(), T0)
    assert run(machine, T0 + 2.0) == [T0 + 0.5, T0 + 1.5]
    assert not machine.receive_ack(ack(seq=6), T0 + 2.0)  # an older INVITE's ACK
    assert not machine.receive_ack(ack(to_tag="other"), T0 + 2.0)  # another fork's
    assert machine.get_timer() == T0 + 3.5
    good = ack()
    assert machine.receive_ack(good, T0 + 2.5)
    assert machine.state is OkState.ACKED and machine.get_timer() is None
    assert machine.next_event() == AckReceived(T0 + 2.5, good) and machine.next_event() is None
    assert machine.receive_ack(good, T0 + 3.0)  # a repeated ACK is recognised, nothing more
    assert machine.next_event() is None
    assert machine.handle_timer(T0 + 3.5) == [] and machine.handle_timer(T0 + 40) == []


def test_dialog_timers_retransmits_over_reliable_transports_too():
    # 13.3.1.4: the UAS core retransmits the 2xx whatever the transport (a later hop may be UDP); the old
    # `reliable=True` only waited for the ACK, so there is no such switch any more.
    with pytest.raises(TypeError):
        InviteOkRetransmitter(ok(), T0, reliable=True)
    machine = InviteOkRetransmitter(ok(), T0, TimerConfig())
    assert machine.get_timer() == T0 + 0.5
    offsets = [round(t - T0, 6) for t in run(machine, T0 + 100)]
    assert offsets == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert machine.next_event() == AckTimeout(T0 + 32.0, machine.response)


def test_dialog_timers_configurable_t1_t2():
    machine = InviteOkRetransmitter(ok(), 0.0, TimerConfig(t1=0.1, t2=0.25))
    sent = run(machine, 10.0)
    assert [round(t, 6) for t in sent[:5]] == [0.1, 0.3, 0.55, 0.8, 1.05]
    assert machine.next_event() == AckTimeout(6.4, machine.response)  # 64 * T1


def test_dialog_timers_late_handle_timer_sends_once():
    machine = InviteOkRetransmitter(ok(), T0)
    assert machine.handle_timer(T0 + 5.0) == [machine.response]  # 0.5, 1.5 and 3.5 all missed
    assert machine.get_timer() == T0 + 7.5
    assert machine.handle_timer(T0 + 5.0) == []


def test_dialog_timers_only_2xx_to_invite():
    request = invite()
    with pytest.raises(ValueError):
        InviteOkRetransmitter(build_response(request, 180, to_tag="b1"), T0)
    options = Request("OPTIONS", "sip:bob@bob.example.test", request.headers)
    options.set("CSeq", "8 OPTIONS")
    with pytest.raises(ValueError):
        InviteOkRetransmitter(build_response(options, 200, to_tag="b1"), T0)
    assert acknowledges(ack(), ok()) and not acknowledges(invite(), ok())
