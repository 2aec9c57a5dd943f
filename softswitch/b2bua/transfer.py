"""Blind transfer (RFC 3515 REFER, RFC 5589 call-transfer best practice) inside the B2BUA.

Party X (either side of an answered call) sends REFER with `Refer-To: <sip:C@...>`. We accept it (202),
keep the implicit subscription (RFC 3515 2.4.4) by sending NOTIFYs with `message/sipfrag` bodies
("SIP/2.0 100 Trying", then the final status), and place the new call to C ourselves, through the router,
exactly as a call from the remaining party Y would be routed. The engine leg that served X is reused for
C, offered only Y's codec so the relay stays a relay. When C answers, C takes X's place in the call (same
side label, same media leg), X gets the final NOTIFY and our BYE, and Y, usually put on hold by X before
the REFER, is taken off hold with a re-INVITE. When C cannot be reached, X hears the failure in the NOTIFY
and the original call goes on (X may take Y off hold).

A REFER with `Replaces` in its Refer-To (attended transfer) is not handled yet: 501.

The same machinery connects a call the API placed (`connect`): once the called party answers, the API's own
side (which nothing on the wire holds, so no NOTIFY goes to it) is transferred to the party to connect; if
that party cannot be reached, the call is hung up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from softswitch.b2bua.media import OTHER, MediaRefused
from softswitch.b2bua.policy import party_of
from softswitch.logs import event
from softswitch.sip.dialog import DialogError
from softswitch.sip.errors import SipParseError
from softswitch.sip.headers import parse_address
from softswitch.sip.message import Request, Response

log = logging.getLogger("softswitch.transfer")

SIPFRAG = "message/sipfrag;version=2.0"


@dataclass(eq=False)
class Transfer:
    """A transfer in progress: X (`side`) asked us to connect its peer to `target_uri`."""

    side: str
    target_uri: str
    targets: list = field(default_factory=list)
    forks: list = field(default_factory=list)
    done: bool = False
    notify: bool = True  # a REFER's transferor hears how it goes (RFC 3515); the API's transfers do not
    caller: str | None = None  # the caller id the target sees (a call flow's dial callerId); else the peer's
    origin: tuple[str, str] = ("api", "")  # who chose the target, for the toll-fraud rules (b2bua.policy)


def on_refer(call, side: str, key, request: Request) -> None:
    """REFER from `side` of an answered call: 202 and the new call, or a final refusal."""
    this = call.side(side)
    try:
        refer_to = parse_address(request.get("Refer-To") or "")
        user = getattr(refer_to.uri, "user", None) or ""
    except SipParseError:
        call.sw.endpoint.respond(key, this.dialog.create_response(request, 400, "Bad Refer-To"))
        return
    if "replaces" in str(refer_to.uri).lower():
        call.sw.endpoint.respond(key, this.dialog.create_response(request, 501, "Attended Transfer Not Supported"))
        return
    targets = call.sw.router.targets(user)
    if not targets or call.transfer is not None:
        status = 603 if not targets else 491
        call.sw.endpoint.respond(key, this.dialog.create_response(request, status))
        return
    call.sw.endpoint.respond(key, this.dialog.create_response(request, 202))
    transfer = Transfer(side, str(refer_to.uri), list(targets), origin=this.party or call.origin)
    call.transfer = transfer
    call.refusal = None
    _notify(call, transfer, "SIP/2.0 100 Trying", terminated=False)
    event(log, "call.transfer", call=call.id, by=side, to=transfer.target_uri)
    call.record.data.setdefault("transfers", []).append({"by": side, "to": transfer.target_uri})
    _next_target(call, transfer)


def start(call, side: str, target: str, targets: list | None = None, caller: str | None = None) -> bool:
    """The API (or a call flow's dial) moves `side` of an answered call to `target` (a number or user, routed;
    or `targets` when given): a blind transfer decided here instead of by a REFER, so nobody is notified.
    False when a transfer is already going on."""
    if call.transfer is not None:
        return False
    routed = list(call.sw.router.targets(target)) if targets is None else list(targets)
    transfer = Transfer(side, f"sip:{target}@{call.sw.domain}", routed, notify=False, caller=caller)
    call.transfer = transfer
    call.refusal = None
    event(log, "call.transfer", call=call.id, by="api", side=side, to=target)
    call.record.data.setdefault("transfers", []).append({"by": "api", "side": side, "to": target})
    _next_target(call, transfer)
    return True


def connect(call, target: str) -> None:
    """A call the API placed was answered: bring in `target` (a number or user, routed) in the API's place."""
    call.record.data["connect"] = target
    start(call, "a", target)


def _next_target(call, transfer: Transfer) -> None:
    keep = OTHER[transfer.side]
    try:
        offer = call.media.transfer_offer(transfer.side)
    except (KeyError, MediaRefused):
        _failed(call, transfer, 488, "Not Acceptable Here")
        return
    caller = transfer.caller or getattr(call.side(keep).dialog.remote_uri, "user", None) or "anonymous"
    while transfer.targets:
        target = transfer.targets.pop(0)
        forks = call.sw.fork(call, target, body=offer, caller=caller, called=_user_of(transfer.target_uri))
        if forks is None or forks:  # sent (they joined transfer.forks), or waiting for a connection
            return
    refused = call.refusal  # every target refused by the toll-fraud rules: say which rule (403 ...)
    _failed(call, transfer, *((refused.status, refused.reason) if refused else (480, "Temporarily Unavailable")))


def on_unreachable(call, transfer: Transfer | None) -> None:
    """The connection a transfer target needed could not be made: the next target, or failure."""
    if transfer is not None and not transfer.done:
        _next_target(call, transfer)


def on_fork_response(call, transfer: Transfer, fork, response: Response) -> None:
    status = response.status
    if status < 200:
        fork.dialogs.receive_response(response)
        if status in (180, 183) and not fork.provisional:
            fork.provisional = True
            _notify(call, transfer, f"SIP/2.0 {status} {response.reason}", terminated=False)
        return
    if status >= 300:
        fork.status, fork.reason = status, response.reason
        fork.leg.status_code = status
        if all(f.done for f in transfer.forks):
            if transfer.targets and status in (408, 500, 502, 503, 504):
                _next_target(call, transfer)
            else:
                _failed(call, transfer, status, response.reason)
        return
    dialog = fork.dialogs.receive_response(response)
    if dialog is None:
        return
    again = dialog.ack_for(response)
    if again is not None:
        call.sw.endpoint.send_stateless(again, fork.flow)
        return
    fork.status, fork.reason = status, response.reason
    fork.leg.status_code = status
    fork.leg.answered_at = call.sw.wall()
    call.sw.endpoint.send_stateless(dialog.create_ack(), fork.flow)
    if transfer.done or call.state != "answered":
        call.send_bye(dialog, fork.flow)
        return
    try:
        call.media.answer_from(transfer.side, response.body)
    except MediaRefused:
        call.send_bye(dialog, fork.flow)
        _failed(call, transfer, 488, "Not Acceptable Here")
        return
    call.cancel_forks()  # this fork is done already: only the transfer's other forks are still open
    transfer.done = True
    _notify(call, transfer, "SIP/2.0 200 OK", terminated=True)
    call.replace_side(transfer.side, dialog, fork.flow, response)
    call.side(transfer.side).party = party_of(fork)
    call.transfer = None
    event(log, "call.transferred", call=call.id, side=transfer.side, to=transfer.target_uri)
    if call.flow is not None:
        call.flow.on_dial_result(200)


def on_fork_timeout(call, transfer: Transfer, fork) -> None:
    fork.status, fork.reason = 408, "Request Timeout"
    if all(f.done for f in transfer.forks):
        if transfer.targets:
            _next_target(call, transfer)
        else:
            _failed(call, transfer, 408, "Request Timeout")


def _failed(call, transfer: Transfer, status: int, reason: str) -> None:
    transfer.done = True
    call.transfer = None
    _notify(call, transfer, f"SIP/2.0 {status} {reason}", terminated=True)
    event(log, "call.transfer_failed", level=logging.INFO, call=call.id, status=status)
    side = call.side(transfer.side)
    if call.flow is not None:  # a call flow's dial: the flow goes on (its action hears why)
        call.flow.on_dial_result(status)
    elif side is not None and side.virtual:  # the API's call could not connect its party: it ends
        call.hangup("system", status, f"connect failed: {status} {reason}")


def _notify(call, transfer: Transfer, frag: str, *, terminated: bool) -> None:
    """NOTIFY the transferor of the new call's progress (RFC 3515 2.4.5)."""
    this = call.side(transfer.side)
    if this is None or this.virtual or not transfer.notify:
        return
    state = "terminated;reason=noresource" if terminated else "active;expires=60"
    try:
        notify = this.dialog.create_request(
            "NOTIFY",
            headers=[("Event", "refer"), ("Subscription-State", state)],
            body=(frag + "\r\n").encode(),
            content_type=SIPFRAG,
        )
    except DialogError:
        return
    key = call.sw.endpoint.send_request(notify, this.flow)
    call.sw.track_request(key, call, None)


def _user_of(uri: str) -> str:
    user = uri.split(":", 1)[-1].split("@", 1)[0] if "@" in uri else ""
    return user.split(";", 1)[0]
