"""One call through the B2BUA: the caller's dialog (side "a", where we are the UAS), the forks we send
out (side "b", where we are the UAC) and the media anchored between them.

Theory of operation (RFC 3261 13-15, RFC 3264, RFC 6026 2xx handling, RFC 7092 B2BUA taxonomy). Nothing
from one side's signalling crosses to the other verbatim: each side has its own Call-ID, tags, CSeq and
Contact, and every SDP is rewritten by `CallMedia` so both far ends send their RTP to us.

  routing -> (a fork rings) ringing -> (a fork answers) answered -> ended
         \\-> ended (all targets failed, the caller cancelled, ring timeout with no target left)

Routing tries the call's targets in order. A user target forks in parallel to every registered contact;
a trunk target sends one INVITE to the trunk and answers its 401/407 once with the trunk's credentials.
When every fork of a target failed with 408, 5xx or no answer (ring timeout), the next target is tried
(failover); any other failure, or the last target's, goes back to the caller: a 6xx at once, otherwise the
best final response (RFC 3261 16.7 step 6 rules, simplified: a 4xx before a 5xx). The first 2xx wins: the
other forks are cancelled, a late 2xx from one of them is acknowledged and ended with BYE (13.2.2.4).

Once answered, in-dialog requests cross over: BYE ends both sides; re-INVITE and UPDATE carry their SDP
through `CallMedia`; INFO (DTMF relay) and other requests pass with their bodies. Each 2xx we send to an
INVITE is retransmitted until its ACK (`InviteOkRetransmitter`); a missing ACK ends the call.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

from media.amd import AmdResult
from media.dtmf import tones as dtmf_tones
from softswitch.b2bua import transfer
from softswitch.b2bua.amd import CallAmd
from softswitch.b2bua.dtmf import DTMF_RELAY, DtmfMerger, parse_dtmf_relay
from softswitch.b2bua.flow import CallFlow
from softswitch.b2bua.media import OTHER, CallMedia, MediaRefused
from softswitch.b2bua.policy import API, Refusal, Subject, party_of
from softswitch.b2bua.recording import RecordingError
from softswitch.b2bua.session_timer import SessionTimer, as_uac, as_uas
from softswitch.b2bua.streams import StreamError
from softswitch.flows.scenarios import ScenarioError
from softswitch.logs import event
from softswitch.router import Target
from softswitch.sip.auth import DigestClient, answer_challenge
from softswitch.sip.dialog import Dialog, DialogError, DialogSet, DialogState, new_tag
from softswitch.sip.dialog_timers import AckTimeout, InviteOkRetransmitter
from softswitch.sip.message import Request, Response, build_response
from softswitch.store import CallRecord, LegRecord

log = logging.getLogger("softswitch.call")

SDP = "application/sdp"
FAILOVER = frozenset((408, 500, 502, 503, 504))
BUSY = frozenset((486, 600))
NO_ANSWER = frozenset((408, 480, 487))
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY"


@dataclass(eq=False)
class Fork:
    """One INVITE we sent for the call (one contact of a user, or one trunk)."""

    target: Target
    uri: str
    flow: object
    invite: Request
    key: object
    dialogs: DialogSet
    leg: LegRecord
    trunk: object | None = None
    auth_tried: bool = False
    status: int | None = None  # the final response (408 for a timeout or ring timeout)
    reason: str = ""
    provisional: bool = False  # a 1xx came, so a CANCEL can go now
    transfer: object | None = None  # the transfer this INVITE serves (None: the call's own routing)

    @property
    def done(self) -> bool:
        return self.status is not None


@dataclass(eq=False)
class Pending:
    """A request received on one side and forwarded on the other, waiting for its response."""

    side: str  # who sent the request
    request: Request
    server_key: object
    offer: bool  # it carried an SDP offer that we rewrote


@dataclass(eq=False)
class Side:
    """One confirmed (or, for a, early) dialog of the call with its flow and the 2xx we retransmit."""

    dialog: Dialog
    flow: object
    ok: InviteOkRetransmitter | None = None
    st: SessionTimer | None = None  # RFC 4028, once the dialog is confirmed
    allows_update: bool = False
    leg: LegRecord | None = None  # its part of the call record
    virtual: bool = False  # the API's end of a call it placed: a dialog of ours only, nothing on the wire
    party: Subject | None = None  # who is on this side, for the toll-fraud rules of its REFERs (b2bua.policy)


class Call:
    """A call's signalling state; `sw` is the B2BUA that owns the tables, the clock and the sockets."""

    def __init__(self, sw, record: CallRecord, invite: Request, key, flow, targets: list[Target], media: CallMedia):
        self.sw = sw
        self.id = record.id
        self.record = record
        self.invite = invite
        self.key = key
        self.targets = list(targets)
        self.media = media
        self.state = "routing"
        dialog = Dialog.uas(invite, sw.contact_for(flow, _user(invite), getattr(invite.uri, "secure", False)))
        self.a = Side(dialog, flow, leg=record.legs[0], virtual=key is None)
        self.b: Side | None = None
        self.forks: list[Fork] = []
        self.pending: dict[object, Pending] = {}
        self.late_offer = not invite.body
        self.b_offer: bytes | None = None
        self.ringing_sent = False
        self.timers: dict[str, object] = {}
        self.ring_timeout_s = sw.ring_timeout_s  # no answer within this: CANCEL, next target or 480
        self.transfer = None  # a blind transfer in progress (softswitch.b2bua.transfer)
        self.dialog_ids: list[object] = []  # every dialog of ours in the B2BUA's table, dropped at the end
        self.client_keys: list[object] = []  # in-dialog requests we sent, dropped from the tables at the end
        self.caller_user = _user_of_from(invite)
        self.called_user = _user(invite)
        self.dtmf: DtmfMerger | None = None  # made at the first digit: most calls never see one
        self.amd: CallAmd | None = None  # answering machine detection on the answered side, when asked for
        self.record_on_answer: str | None = None  # "mono" or "dual": a recording starts as the call is answered
        self.connect_to: str | None = None  # a call the API placed: who the answered party is connected to
        self.amd_changes: dict[str, int | float] = {}  # AMD parameters the API set for this call (over the route's)
        self.stream_on_answer: dict | None = None  # a media stream to start as the call is answered (its kwargs)
        self.flow_on_answer: dict | None = None  # a call flow to run once answered (CallFlow's kwargs)
        self.flow: CallFlow | None = None  # the call flow running on the call (softswitch.b2bua.flow)
        self.origin: Subject = API  # who chose the destination (b2bua.policy): the caller's user or trunk
        self.by_operator = False  # the targets come from the operator's call flow, not from the caller
        self.refusal: Refusal | None = None  # a target the toll-fraud rules refused (the answer if none is left)
        self.subjects: list[Subject] = []  # the users and trunks whose call counts this call holds

    # -- routing -------------------------------------------------------------------------------------
    def start(self) -> None:
        self.st_a, st_headers = as_uas(self.invite, self.sw.session_interval_s)
        if self.st_a is None:
            self.fail(422, "Session Interval Too Small", headers=st_headers)
            return
        self.st_headers_a = st_headers
        self.a.allows_update = _allows_update(self.invite)
        try:
            self.b_offer = (
                self.media.initial_offer("b") if self.late_offer else self.media.offer_from("a", self.invite.body)
            )
        except MediaRefused as exc:
            self.fail(488, "Not Acceptable Here", detail=exc.reason)
            return
        self.sw.timer(self, "ring", self.ring_timeout_s, self.on_ring_timeout)
        self.next_target()

    def next_target(self) -> None:
        """Fork to the next target; fail the call back to the caller when none is left."""
        self.sw.drop_failed_trunks(self)
        while self.targets:
            target = self.targets.pop(0)
            if target.kind == "app":  # the application decides: answer (or reject) and run its flow
                self.flow = CallFlow(self, "a", target.name, secret=self.sw.flows.route_secret, account="")
                self.flow.start_inbound()
                return
            if target.kind == "scenario":  # a stored scenario's inbound-call branch, run the same way
                try:
                    verbs = self.sw.flows.scenario(target.name, "inbound-call")
                except (LookupError, ScenarioError) as exc:
                    event(log, "call.scenario_missing", level=logging.WARNING, call=self.id, reason=str(exc))
                    self.fail(500, "Server Internal Error", detail=str(exc), hangup_by="system")
                    return
                self.flow = CallFlow(self, "a", "", secret=None, account="", verbs=verbs)
                self.flow.start_inbound()
                return
            forks = self.sw.fork(self, target)
            if forks is None or forks:  # sent (or waiting for a connection: the fork or next target follows)
                return
        best = self.best_failure()
        self.fail(*best)

    def best_failure(self) -> tuple[int, str]:
        failed = [f for f in self.forks if f.status and f.status >= 300]
        if not failed:
            if self.refusal is not None:
                return self.refusal.status, self.refusal.reason
            return 480, "Temporarily Unavailable"
        six = [f for f in failed if f.status >= 600]
        if six:
            return six[0].status, six[0].reason
        four = sorted((f for f in failed if f.status < 500), key=lambda f: f.status)
        if four:
            return four[0].status, four[0].reason
        return failed[-1].status, failed[-1].reason

    # -- responses to our INVITEs ----------------------------------------------------------------------
    def side(self, name: str) -> Side | None:
        return self.a if name == "a" else self.b

    def on_fork_response(self, fork: Fork, response: Response) -> None:
        if fork.transfer is not None and fork.transfer is self.transfer:
            transfer.on_fork_response(self, self.transfer, fork, response)
            return
        status = response.status
        if status < 200:
            self._fork_provisional(fork, response)
        elif status < 300:
            self._fork_answered(fork, response)
        else:
            self._fork_failed(fork, status, response.reason, response)

    def _fork_provisional(self, fork: Fork, response: Response) -> None:
        if response.status == 100:
            return
        fork.provisional = True
        fork.dialogs.receive_response(response)
        if self.state not in ("routing", "ringing"):
            return
        if fork.leg.remote_tag is None:
            fork.leg.remote_tag = response.to.tag
        body = response.body if response.content_type == SDP else b""
        if body and not self.late_offer and not self.media.answered:
            try:
                sdp = self.media.answer_from("b", body)
            except MediaRefused as exc:
                event(log, "call.early_media_refused", level=logging.INFO, call=self.id, reason=exc.reason)
            else:
                self._answer_a(183, "Session Progress", sdp)
                self._ringing()
                return
        if response.status == 180 and not self.ringing_sent:
            self.ringing_sent = True
            self._answer_a(180, "Ringing")
        self._ringing()

    def _ringing(self) -> None:
        if self.state == "routing":
            self.state = "ringing"
            self.record.status = "ringing"
            self.sw.publish(self, "call.ringing", {})

    def _fork_answered(self, fork: Fork, response: Response) -> None:
        dialog = fork.dialogs.receive_response(response)
        if dialog is None:
            return
        again = dialog.ack_for(response)
        if again is not None:  # a retransmitted 2xx: the same ACK again (13.2.2.4)
            self.sw.endpoint.send_stateless(again, fork.flow)
            return
        fork.status, fork.reason = response.status, response.reason
        fork.leg.status_code = response.status
        fork.leg.remote_tag = dialog.remote_tag
        body = response.body if response.content_type == SDP else b""
        if self.state not in ("routing", "ringing"):  # another fork won, or the call is over: end this one
            self.sw.endpoint.send_stateless(dialog.create_ack(), fork.flow)
            self._send_in_dialog(Side(dialog, fork.flow), "BYE")
            return
        try:
            if self.late_offer:
                self.media.answer_from("b", body)
                sdp_a = self.media.late_offer_for("a")
            elif self.media.answered:
                sdp_a = self.media.last_sent("a")
            else:
                sdp_a = self.media.answer_from("b", body)
        except MediaRefused as exc:
            self.sw.endpoint.send_stateless(dialog.create_ack(), fork.flow)
            self._send_in_dialog(Side(dialog, fork.flow), "BYE")
            fork.status = 488
            self.fail(488, "Not Acceptable Here", detail=exc.reason)
            return
        self.sw.endpoint.send_stateless(dialog.create_ack(), fork.flow)
        self.b = Side(dialog, fork.flow, st=as_uac(response, self.sw.session_interval_s), leg=fork.leg)
        self.b.party = party_of(fork)
        self.b.allows_update = _allows_update(response)
        self.sw.add_dialog(dialog, self, "b")
        fork.leg.answered_at = self.sw.wall()
        self.cancel_forks()  # this fork is done already: the others get CANCEL (13.2.2.4)
        self._answered(sdp_a)
        if self.record_on_answer:
            try:
                self.sw.recordings.start(self, self.record_on_answer)
            except (RecordingError, OSError) as exc:  # no bridge yet (late offer), or the disk refused
                event(log, "call.record_failed", level=logging.WARNING, call=self.id, reason=str(exc))
        if self.stream_on_answer:
            try:
                self.sw.streams.start(self, **self.stream_on_answer)
            except StreamError as exc:
                event(log, "call.stream_failed", level=logging.WARNING, call=self.id, reason=str(exc))
        if self.connect_to:  # the API's side hands over to the party to connect (a transfer, by us)
            transfer.connect(self, self.connect_to)
        if fork.target.machine_detection:  # call.answered (and the flow) wait for the verdict (on_amd)
            params = self.sw.amd_params.over({**fork.target.amd, **self.amd_changes})  # [amd] < route < call
            self.amd = CallAmd(self, "b", fork.target.machine_detection, params)
        else:
            self.sw.publish(self, "call.answered", {"answered_by": None})
            self._start_flow()

    def _start_flow(self) -> None:
        if self.flow_on_answer and self.flow is None and self.state == "answered":
            self.flow = CallFlow(self, "b", **self.flow_on_answer)
            self.flow.start()

    def answer_locally(self) -> None:
        """Answer the caller ourselves (a call flow's inbound call): side b is virtual, its media leg parked,
        so what the flow plays goes to the caller and the caller's keys reach the flow."""
        if self.state not in ("routing", "ringing"):
            return
        parked_b = parked(self.b_offer)
        if self.late_offer:
            self.media.answer_from("b", parked_b, parked=True)
            sdp_a = self.media.late_offer_for("a")
        else:
            sdp_a = self.media.answer_from("b", parked_b, parked=True)
        contact = self.sw.contact_for(self.a.flow, self.called_user, getattr(self.invite.uri, "secure", False))
        self.b = Side(Dialog.uas(self.invite, contact), self.a.flow, virtual=True)
        self._answered(sdp_a)
        self.sw.publish(self, "call.answered", {"answered_by": None})

    def _answered(self, sdp_a: bytes | None) -> None:
        """Side b is in place: the call is answered, the caller gets its 2xx, the timers start."""
        now = self.sw.wall()
        self.state = "answered"
        self.record.status = "answered"
        self.record.answered_at = now
        self.record.legs[0].answered_at = now
        self.sw.cancel_timer(self, "ring")
        self._answer_a(200, "OK", sdp_a, self.st_headers_a)
        self.a.st = self.st_a
        self._arm_session("a")
        self._arm_session("b")  # (nothing for a virtual side)
        self.sw.timer(self, "max_duration", self.sw.max_duration_s, self.on_max_duration)
        self.sw.save(self)

    def _fork_failed(self, fork: Fork, status: int, reason: str, response: Response | None) -> None:
        if fork.done:
            return
        if response is not None and status in (401, 407) and self._authenticate(fork, response):
            return
        fork.status, fork.reason = status, reason
        fork.leg.status_code = status
        fork.leg.ended_at = self.sw.wall()
        if self.state not in ("routing", "ringing"):
            return
        if status >= 600:
            self.cancel_forks()
            self.fail(status, reason)
            return
        if any(not f.done for f in self.forks):
            return
        if status in FAILOVER and self.targets:
            event(log, "call.failover", call=self.id, status=status, to=str(self.targets[0]))
            self.next_target()
            return
        self.fail(*self.best_failure())

    def _authenticate(self, fork: Fork, response: Response) -> bool:
        """Answer a trunk's challenge once (RFC 3261 22.2): the same INVITE again, CSeq + 1, credentials."""
        trunk = fork.trunk
        if trunk is None or fork.auth_tried or not trunk.username:
            return False
        invite = fork.invite
        client = DigestClient(trunk.username, trunk.password)
        credentials = answer_challenge(response, client, "INVITE", invite.uri_text)
        if credentials is None:
            return False
        again = Request(
            "INVITE", invite.uri_text, [(n, v) for n, v in invite.iter_headers() if n != "Via"], invite.body
        )
        again.set("CSeq", f"{invite.cseq.seq + 1} INVITE")
        again.add(*credentials)
        fork.auth_tried = True
        fork.invite = again
        fork.dialogs = DialogSet(again)
        self.sw.forget_fork(fork)
        fork.key = self.sw.endpoint.send_request(again, fork.flow)
        self.sw.track_fork(fork, self)
        return True

    def on_fork_timeout(self, fork: Fork) -> None:
        if fork.transfer is not None and fork.transfer is self.transfer:
            transfer.on_fork_timeout(self, self.transfer, fork)
            return
        self._fork_failed(fork, 408, "Request Timeout", None)

    def on_ring_timeout(self) -> None:
        """Nobody answered in time: cancel, and fail over to the next target or give the caller 480."""
        if self.state not in ("routing", "ringing"):
            return
        self.cancel_forks(status=408, reason="No Answer")
        if self.targets:
            self.sw.timer(self, "ring", self.ring_timeout_s, self.on_ring_timeout)
            self.next_target()
        else:
            self.fail(480, "Temporarily Unavailable", hangup_by="system", status_name="no-answer")

    def cancel_forks(self, status: int = 487, reason: str = "Request Terminated") -> None:
        """CANCEL every INVITE of the call still without a final response, recording `status` for it."""
        for fork in self.forks:
            if not fork.done:
                fork.status, fork.reason = status, reason
                fork.leg.status_code = status
                self.sw.endpoint.cancel(fork.key)

    # -- the caller -----------------------------------------------------------------------------------
    def _answer_a(self, status: int, reason: str, sdp: bytes | None = None, extra=()) -> None:
        if self.a.virtual:  # a call the API placed: nobody to answer; its media leg is parked once answered
            if 200 <= status < 300 and sdp:
                self.media.late_answer("a", parked(sdp))
            return
        headers = [("Allow", ALLOW), ("Supported", "replaces, timer")] if 200 <= status < 300 else []
        headers += list(extra)
        response = self.a.dialog.create_response(
            self.invite, status, reason, headers=headers, body=sdp or b"", content_type=SDP if sdp else None
        )
        self.sw.endpoint.respond(self.key, response)
        if 200 <= status < 300:
            self.sw.add_dialog(self.a.dialog, self, "a")
            self._retransmit(self.a, response)

    def on_cancel(self) -> None:
        """The caller gave up (9.2): 487 to its INVITE, CANCEL every fork."""
        if self.state not in ("routing", "ringing"):
            return
        self.cancel_forks()
        self.fail(487, "Request Terminated", hangup_by="caller", status_name="canceled")

    def fail(
        self, status: int, reason: str, *, detail: str = "", hangup_by: str = "callee", status_name=None, headers=()
    ) -> None:
        """End an unanswered call with a final response to the caller."""
        if self.state == "ended":
            return
        status_name = status_name or _status_name(status)
        self._answer_a(status, reason, extra=headers)
        self.end(status, reason + (f" ({detail})" if detail else ""), hangup_by, status_name)

    # -- in-dialog requests ------------------------------------------------------------------------------
    def on_request(self, side: str, key, request: Request) -> None:
        if side == "old":  # a transferor's dialog after the transfer: only its goodbye is expected
            self.sw.endpoint.respond(key, build_response(request, 200 if request.method == "BYE" else 481))
            return
        this = self.a if side == "a" else self.b
        problem = this.dialog.receive_request(request)
        if problem is not None:
            self.sw.endpoint.respond(key, problem)
            return
        method = request.method
        if method == "BYE" and self.flow is not None and self.flow.dialed == side:
            self.sw.endpoint.respond(key, this.dialog.create_response(request, 200))
            self.release_side(side)  # the party a flow dialled hung up: the caller stays, the flow goes on
            self.flow.on_dialed_hangup()
            return
        if method == "BYE":
            self.sw.endpoint.respond(key, this.dialog.create_response(request, 200))
            other = self.b if side == "a" else self.a
            if other is not None:
                self._send_in_dialog(other, "BYE")
            self.end(200, _bye_reason(request), "caller" if side == "a" else "callee", "completed")
            return
        other = self.b if side == "a" else self.a
        if other is None or self.state != "answered":
            self.sw.endpoint.respond(key, this.dialog.create_response(request, 491 if method == "INVITE" else 481))
            return
        if method == "INFO" and content_type_of(request) == DTMF_RELAY:
            digit = parse_dtmf_relay(request.body)
            if digit is not None:  # INFO has no start time: the press ended as it arrived
                self.on_dtmf(side, digit[0], "info", digit[1], time.monotonic_ns() - digit[1] * 1_000_000)
        if other.virtual:  # the API's call: what the far end asks is answered here
            self._answer_for_virtual(side, key, request)
            return
        if method == "REFER":
            transfer.on_refer(self, side, key, request)
            return
        body, content_type, offer = request.body, request.content_type, False
        if method in ("INVITE", "UPDATE"):
            self._arm_session(side)  # any re-INVITE or UPDATE from the peer refreshes its session (RFC 4028 10)
            sdp = body if content_type == SDP else b""
            if (method == "UPDATE" and not sdp) or (sdp and self.media.is_refresh(side, sdp)):
                self._answer_refresh(side, key, request)
                return
        if method in ("INVITE", "UPDATE") and body and content_type == SDP:
            try:
                body = self.media.offer_from(side, body)
            except MediaRefused:
                self.sw.endpoint.respond(key, this.dialog.create_response(request, 488))
                return
            offer = True
        elif method == "INVITE" and not body:
            # an offer-less re-INVITE asks for our offer (13.2.1); our last one stands
            self._answer_refresh(side, key, request)
            return
        headers = [(n, request.get(n)) for n in ("Event", "Subscription-State", "Reason") if request.get(n)]
        try:
            forwarded = other.dialog.create_request(method, headers=headers, body=body, content_type=content_type)
        except DialogError:
            self.sw.endpoint.respond(key, this.dialog.create_response(request, 491))
            return
        client_key = self.sw.endpoint.send_request(forwarded, other.flow)
        self.pending[client_key] = Pending(side, request, key, offer)
        self.sw.track_request(client_key, self, OTHER[side])

    def _answer_for_virtual(self, side: str, key, request: Request) -> None:
        """A request from the far end of a call the API placed: re-INVITEs and UPDATEs get our current
        session (the parked side takes whatever is offered), a transfer is declined, the rest is 200."""
        this = self.side(side)
        if request.method in ("INVITE", "UPDATE"):
            self._arm_session(side)
            self._answer_refresh(side, key, request)
        else:
            status = 603 if request.method == "REFER" else 200
            self.sw.endpoint.respond(key, this.dialog.create_response(request, status))

    def _answer_refresh(self, side: str, key, request: Request) -> None:
        """A session refresh (same SDP version, or none for UPDATE): answered here, not sent across."""
        this = self.a if side == "a" else self.b
        headers = [("Allow", ALLOW), ("Supported", "replaces, timer")]
        if this.st is not None:
            headers.append(("Session-Expires", this.st.header(we_are_uac=this.dialog.role.value == "uac")))
        sdp = self.media.last_sent(side) if request.body or request.method == "INVITE" else None
        response = this.dialog.create_response(
            request, 200, headers=headers, body=sdp or b"", content_type=SDP if sdp else None
        )
        self.sw.endpoint.respond(key, response)
        if request.method == "INVITE":
            self._retransmit(this, response)

    # -- session timers (RFC 4028) ----------------------------------------------------------------------
    def _arm_session(self, name: str) -> None:
        side = self.a if name == "a" else self.b
        if side is None or side.virtual or side.st is None or self.state != "answered":
            return
        self.sw.timer(self, f"st_{name}", side.st.due_in, lambda: self._session_due(name))

    def _session_due(self, name: str) -> None:
        side = self.a if name == "a" else self.b
        if side is None or side.st is None:
            return
        if not side.st.we_refresh:
            event(log, "call.session_expired", level=logging.INFO, call=self.id, side=name)
            self.hangup("system", 408, "session timer expired")
            return
        st_header = ("Session-Expires", side.st.header(we_are_uac=side.dialog.role.value == "uac"))
        try:
            if side.allows_update:
                request = side.dialog.create_request("UPDATE", headers=[st_header, ("Supported", "timer")])
            else:
                sdp = self.media.last_sent(name) or b""
                request = side.dialog.create_request(
                    "INVITE", headers=[st_header, ("Supported", "timer")], body=sdp, content_type=SDP
                )
        except DialogError:  # an INVITE of the peer's in progress: try again shortly
            self.sw.timer(self, f"st_{name}", 2.0, lambda: self._session_due(name))
            return
        key = self.sw.endpoint.send_request(request, side.flow)
        self.sw.track_request(key, self, f"refresh:{name}")

    def on_refresh_response(self, name: str, response: Response | None) -> None:
        """Our refresh came back: a 2xx re-arms; 491 retries soon; anything else ends the call (10)."""
        side = self.a if name == "a" else self.b
        if side is None or self.state != "answered":
            return
        status = 408 if response is None else response.status
        if response is not None:
            side.dialog.receive_response(response)
        if status < 200:
            return
        if status < 300:
            if response.cseq.method == "INVITE":
                again = side.dialog.ack_for(response) or side.dialog.create_ack()
                self.sw.endpoint.send_stateless(again, side.flow)
            self._arm_session(name)
        elif status == 491:
            self.sw.timer(self, f"st_{name}", 2.0, lambda: self._session_due(name))
        else:
            event(log, "call.refresh_failed", level=logging.INFO, call=self.id, side=name, status=status)
            self.hangup("system", status, "session refresh failed")

    def on_ack(self, side: str, ack: Request) -> None:
        this = self.a if side == "a" else self.b
        if this is None or this.ok is None:
            return
        if this.ok.receive_ack(ack, self.sw.now()):
            self.sw.cancel_timer(self, f"ok_{side}")
            if side == "a" and self.late_offer and ack.body and "a" not in self.media.negotiated:
                try:
                    self.media.late_answer("a", ack.body)
                except MediaRefused as exc:
                    event(log, "call.late_answer_refused", level=logging.INFO, call=self.id, reason=exc.reason)
                    self.hangup("system", 488, "late answer refused")

    def on_forwarded_response(self, client_key, side: str, response: Response) -> None:
        """A response from `side` to a request we forwarded there: the same answer to the requester."""
        there = self.a if side == "a" else self.b
        status = response.status
        if 200 <= status < 300 and response.cseq.method == "INVITE" and there is not None:
            again = there.dialog.ack_for(response)
            if again is not None:  # a retransmitted 2xx: the same ACK again
                self.sw.endpoint.send_stateless(again, there.flow)
                return
        pending = self.pending.get(client_key)
        if pending is None:
            return
        here = self.a if pending.side == "a" else self.b
        if there is not None:
            there.dialog.receive_response(response)
        if status < 200:
            return
        if status < 300 and response.cseq.method == "INVITE" and there is not None:
            self.sw.endpoint.send_stateless(there.dialog.create_ack(), there.flow)
        del self.pending[client_key]
        body, content_type = response.body, response.content_type
        if pending.offer and status < 300:
            try:
                body, content_type = self.media.answer_from(side, body) or b"", SDP
            except MediaRefused:
                status, body, content_type = 488, b"", None
        headers = [("Allow", ALLOW)] if status < 300 and pending.request.method == "INVITE" else []
        answer = here.dialog.create_response(
            pending.request,
            status,
            response.reason if status == response.status else None,
            headers=headers,
            body=body,
            content_type=content_type,
        )
        self.sw.endpoint.respond(pending.server_key, answer)
        if 200 <= status < 300 and pending.request.method == "INVITE":
            self._retransmit(here, answer)

    def on_forwarded_timeout(self, client_key) -> None:
        pending = self.pending.pop(client_key, None)
        if pending is None:
            return
        here = self.a if pending.side == "a" else self.b
        self.sw.endpoint.respond(pending.server_key, here.dialog.create_response(pending.request, 408))
        if pending.request.method == "INVITE":  # the other side is gone: a refresh that fails ends the call
            self.hangup("system", 408, "re-INVITE timed out")

    # -- ending -----------------------------------------------------------------------------------------
    def hangup(self, by: str, code: int, reason: str) -> None:
        """End an answered call from our side (max duration, ACK timeout, API): BYE both dialogs."""
        if self.state == "ended":
            return
        if self.state != "answered":
            self.cancel_forks()
            self.fail(code if code >= 300 else 480, reason, hangup_by=by)
            return
        for side in (self.a, self.b):
            if side is not None and side.dialog.state is not DialogState.TERMINATED:
                self._send_in_dialog(side, "BYE")
        self.end(code, reason, by, "completed")

    def on_max_duration(self) -> None:
        self.hangup("system", 200, "max call duration")

    def on_dtmf(self, side: str, digit: str, source: str, duration_ms: int, start_ns: int) -> None:
        """A key pressed on `side` (in-band or RFC 4733 from the engine, SIP INFO from signalling): one
        `call.dtmf` per press, however many ways the far end signalled it (b2bua/dtmf.py)."""
        if self.state == "ended":
            return
        if self.dtmf is None:
            self.dtmf = DtmfMerger()
        if not self.dtmf.accept(side, digit, source, start_ns, duration_ms):
            return
        party = "caller" if side == "a" else "callee"
        data = {"digit": digit, "source": source, "duration_ms": duration_ms, "from": party}
        self.sw.publish(self, "call.dtmf", data)
        self.sw.streams.on_dtmf(self, side, digit)
        if self.flow is not None:
            self.flow.on_digit(side, digit)

    def on_amd(self, amd: CallAmd, result: AmdResult, answered_by: str) -> None:
        """The detector's final word: the held-back `call.answered`, then `call.amd`."""
        self.record.data["answered_by"] = answered_by
        self.sw.save(self)
        self.sw.publish(self, "call.answered", {"answered_by": answered_by})
        self._start_flow()
        data = {
            "answered_by": answered_by,
            "result": result.result,
            "decision_ms": result.decision_ms,
            "beep_end_ms": result.beep_end_ms,
            "reason": result.reason,
            "from": "callee" if amd.side == "b" else "caller",
        }
        self.sw.publish(self, "call.amd", data)

    def send_dtmf(self, side: str, digits: str, *, duration_ms: int = 100, method: str = "auto") -> str:
        """Send keys to `side`'s far end: RFC 4733 events when that side negotiated telephone-event (or
        `method="rfc4733"`), in-band tones otherwise (or `method="inband"`, for carriers that want them).
        Returns the method used. ValueError for a character that is not a key."""
        leg = self.media.legs[side]
        agreed = self.media.negotiated.get(side)
        if method == "auto":
            method = "rfc4733" if agreed is not None and agreed.telephone_event is not None else "inband"
        if method == "rfc4733":
            self.sw.engine.send_dtmf(leg, digits, duration_ms)
        elif method == "inband":
            self.sw.engine.play(leg, dtmf_tones(digits, on_ms=duration_ms))
        else:
            raise ValueError(f"method must be auto, rfc4733 or inband, not {method!r}")
        return method

    def send_bye(self, dialog: Dialog, flow) -> None:
        self._send_in_dialog(Side(dialog, flow), "BYE")

    def replace_side(self, name: str, dialog: Dialog, flow, response: Response) -> None:
        """A transfer target answered: it takes `name`'s place; the transferor is sent away with a BYE."""
        old = self.side(name)
        self.sw.drop_dialog(old.dialog)
        if not old.virtual:  # the API's side had no dialog on the wire: nothing of it can still arrive
            self.sw.add_dialog(old.dialog, self, "old")
        self.sw.cancel_timer(self, f"ok_{name}")
        self.sw.cancel_timer(self, f"st_{name}")
        self._send_in_dialog(old, "BYE")
        if old.leg is not None:
            old.leg.ended_at = self.sw.wall()
            old.leg.media = self.media.leg_stats(name)
        new = Side(dialog, flow, st=as_uac(response, self.sw.session_interval_s), leg=self._fork_leg(dialog))
        new.allows_update = _allows_update(response)
        if name == "a":
            self.a = new
        else:
            self.b = new
        self.sw.add_dialog(dialog, self, name)
        self._arm_session(name)
        keep = OTHER[name]
        offer = self.media.unhold_offer(keep)
        if offer is not None:  # the transferor had put the other party on hold: take it off
            this = self.side(keep)
            try:
                request = this.dialog.create_request("INVITE", body=offer, content_type=SDP)
            except DialogError:
                return
            key = self.sw.endpoint.send_request(request, this.flow)
            self.sw.track_request(key, self, f"refresh:{keep}")

    def release_side(self, name: str) -> None:
        """`name`'s party left but the call goes on (a call flow's dial ended): the side is virtual again,
        its media leg out of the bridge (it sends nothing) until a next party takes it."""
        old = self.side(name)
        self.sw.drop_dialog(old.dialog)
        for timer in (f"ok_{name}", f"st_{name}"):
            self.sw.cancel_timer(self, timer)
        if old.leg is not None:
            old.leg.ended_at = self.sw.wall()
            old.leg.media = self.media.leg_stats(name)
        secure = getattr(self.invite.uri, "secure", False)
        virtual = Side(Dialog.uas(self.invite, self.sw.contact_for(self.a.flow, self.called_user, secure)), self.a.flow)
        virtual.virtual = True
        if name == "a":
            self.a = virtual
        else:
            self.b = virtual
        self.sw.engine.leave(self.media.legs[name])
        self.sw.save(self)

    def _fork_leg(self, dialog: Dialog) -> LegRecord | None:
        for fork in self.forks:
            if dialog in fork.dialogs:
                return fork.leg
        return None

    def _send_in_dialog(self, side: Side, method: str) -> None:
        if side.virtual:
            return
        try:
            request = side.dialog.create_request(method)
        except DialogError:
            return
        key = self.sw.endpoint.send_request(request, side.flow)
        self.sw.track_request(key, self, None)

    def _retransmit(self, side: Side, response: Response) -> None:
        side.ok = InviteOkRetransmitter(response, self.sw.now(), self.sw.endpoint.txns.config)
        self._arm_ok(side, "a" if side is self.a else "b")

    def _arm_ok(self, side: Side, name: str) -> None:
        when = side.ok.get_timer() if side.ok is not None else None
        if when is None:
            return
        self.sw.timer(self, f"ok_{name}", max(when - self.sw.now(), 0), lambda: self._ok_due(side, name))

    def _ok_due(self, side: Side, name: str) -> None:
        for response in side.ok.handle_timer(self.sw.now()):
            self.sw.endpoint.send_stateless(response, side.flow)
        while (ev := side.ok.next_event()) is not None:
            if isinstance(ev, AckTimeout):
                event(log, "call.ack_timeout", level=logging.WARNING, call=self.id, side=name)
                self.hangup("system", 408, "no ACK for our 2xx")
                return
        self._arm_ok(side, name)

    def end(self, code: int, reason: str, by: str, status: str) -> None:
        """Record the end, release the media and the tables, publish call.completed."""
        if self.state == "ended":
            return
        self.state = "ended"
        now = self.sw.wall()
        rec = self.record
        rec.status = status
        rec.ended_at = now
        rec.hangup_code, rec.hangup_reason, rec.hangup_by = code, reason, by
        if self.amd is not None:
            self.amd.abandon()  # an undecided detector says unknown before the call completes
        self.sw.streams.call_ended(self)  # each stream's stop (and stream.stopped) before call.completed
        if self.flow is not None:
            self.flow.stop()
        stats = self.media.close()
        for leg in rec.legs:
            leg.ended_at = leg.ended_at or now
        rec.legs[0].status_code = rec.legs[0].status_code or (200 if rec.answered_at else code)
        for name in ("a", "b"):
            side = self.side(name)
            if side is not None and side.leg is not None:
                side.leg.media = stats.get(name, {})
        self.sw.finish(self)
        self.sw.publish(
            self,
            "call.completed",
            {
                "status": status,
                "hangup_code": code,
                "hangup_reason": reason,
                "hangup_by": by,
                "duration_s": rec.duration_s,
            },
        )


def parked(sdp: bytes) -> bytes:
    """The answer a call the API placed gives our own offer for its side: the same session, its address
    unspecified (0.0.0.0, RFC 3264's "do not send"), so the engine leg stays in the bridge (recording,
    detection, players) and sends nothing."""
    lines = []
    for line in sdp.decode().split("\r\n"):
        if line.startswith("c=IN IP4 ") or line.startswith("c=IN IP6 "):
            line = "c=IN IP4 0.0.0.0"
        elif line.startswith("m=audio "):
            fields = line.split(" ")
            line = " ".join([fields[0], "9", *fields[2:]])
        lines.append(line)
    return "\r\n".join(lines).encode()


def new_call_id() -> str:
    return secrets.token_hex(12)


def _user(request: Request) -> str:
    uri = request.uri
    return getattr(uri, "user", None) or ""


def _user_of_from(request: Request) -> str:
    return getattr(request.from_.uri, "user", None) or "anonymous"


def _status_name(code: int) -> str:
    if code in BUSY:
        return "busy"
    if code == 487:
        return "canceled"
    if code in NO_ANSWER:
        return "no-answer"
    return "failed"


def content_type_of(message) -> str:
    return (message.content_type or "").split(";")[0].strip().lower()


def _allows_update(message) -> bool:
    return any("UPDATE" in v.upper().replace(" ", "").split(",") for v in message.get_all("Allow"))


def _bye_reason(request: Request) -> str:
    reason = request.get("Reason")
    return f"BYE ({reason})" if reason else "BYE"


__all__ = ["Call", "Fork", "new_call_id", "new_tag"]
