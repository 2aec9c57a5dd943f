"""SIP dialogs (RFC 3261 12-16, RFC 3311 UPDATE, RFC 6026 2xx handling), sans-IO.

Theory of operation. A dialog is the peer-to-peer relationship an INVITE sets up between two user agents
(RFC 3261 12). It is named by Call-ID, local tag and remote tag (`DialogId`) and holds what every later
request needs: the local and remote addresses (From/To), the local and remote CSeq, the remote target
(the peer's Contact URI), the route set and the secure flag (a sips Request-URI).

Creation. The UAC makes an early dialog from each tagged 1xx to its INVITE and a confirmed one from a 2xx,
with the route set taken from the response's Record-Route reversed (12.1.2). A forked INVITE yields one
dialog per To tag, which `DialogSet` keeps apart; once one is confirmed, the ones still early can be listed
and ended (13.2.2.4), and a 3xx-6xx ends them all (12.3). The UAS makes its dialog from the INVITE and the
tag it picks, with the Record-Route in request order (12.1.1); `Dialog.create_response` adds that tag, our
Contact and the Record-Route copy, and moves the state: early on 1xx, confirmed on 2xx, terminated on a
3xx-6xx. `_TRANSITIONS` is the single source of truth for the state machine; methods add side effects.

In-dialog requests (12.2.1.1) take Request-URI and Route from the remote target and route set: when the
first route has `lr` (loose routing), the Request-URI is the remote target and the Route headers are the
route set; otherwise (a strict, RFC 2543 router, 16.12) the first route becomes the Request-URI and the
remote target is appended as the last Route. CSeq goes up by one for every new request; ACK reuses its
INVITE's number. Target-refresh requests (INVITE, UPDATE, SUBSCRIBE, NOTIFY, REFER) carry our Contact.
No Via is added here: `TransactionLayer.send_request` (and `send_stateless` for the ACK of a 2xx, which is
outside the INVITE transaction and has a branch of its own, 17.1.1.3) puts the top Via with a new branch on
a request that has none; pass `via=` only to choose it yourself (its branch must start with z9hG4bK).

Received requests go through `receive_request`, which answers None (accept) or the response to send: 500
for a CSeq below the highest seen (12.2.2), 491 / 500 with Retry-After for an INVITE crossing another
(14.2), 481 once the dialog is over. A re-INVITE or UPDATE refreshes the remote target from its Contact,
whether it is received or is ours and its 2xx arrives (12.2.1.2, 12.2.2, RFC 3311 5.1), but never from a
message older than the one that last set it: each direction remembers the CSeq of its last refresh, so a
late retransmission of an earlier 2xx cannot roll the target back. Record-Route seen after creation never
changes the route set (12.2), except that the 2xx confirming an early dialog recomputes it (13.2.2.4).

2xx reliability (13.2.2.4, 13.3.1.4, RFC 6026): the INVITE transactions stop caring after a 2xx, so the
cores carry it. The UAS retransmits its 2xx at T1, then doubling intervals capped at T2, until the ACK
comes, over every transport (`dialog_timers.InviteOkRetransmitter`); after 64*T1 without one it reports
`AckTimeout`, and the caller ends the dialog with a BYE. The UAC answers every retransmission of a 2xx with
the same ACK (`Dialog.ack_for`).

Nothing here sends, reads a clock or logs: times are `now` arguments, messages are return values.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from enum import Enum

import msgspec

from softswitch.sip.errors import SipParseError
from softswitch.sip.headers import Address, CSeq, canonical, parse_address
from softswitch.sip.message import Request, Response, build_response
from softswitch.sip.uri import SipUri, Uri

__all__ = [
    "TARGET_REFRESH",
    "Dialog",
    "DialogError",
    "DialogId",
    "DialogSet",
    "DialogState",
    "DialogTable",
    "Role",
    "dialog_id_of",
    "new_tag",
]

# Requests that may change the remote target and so carry a Contact (RFC 3261 12.2, 3311, 6665, 3515).
TARGET_REFRESH = frozenset(("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"))
MAX_FORWARDS = "70"
_CREDENTIALS = ("Authorization", "Proxy-Authorization")
_REPLACEABLE = frozenset(("Max-Forwards", "Contact", "Content-Type"))
_KEPT_ACKS = 4  # ACKs remembered for 2xx retransmissions (the last few INVITEs' CSeq numbers)


class DialogError(RuntimeError):
    """A request this dialog must not send now (our own fault): RFC 3261 14.1, 15, 9.1."""


class DialogState(Enum):
    __hash__ = object.__hash__  # members are singletons: hashed in C (Enum's own __hash__ runs Python)

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Role(Enum):
    """The side that created the dialog: the INVITE's sender (UAC) or its recipient (UAS)."""

    UAC = "uac"
    UAS = "uas"


class _Input(Enum):
    __hash__ = object.__hash__  # as DialogState's: every input looks up _TRANSITIONS by (state, input)

    PROVISIONAL = "1xx"  # a tagged 101-199 to the dialog-creating INVITE, sent or received
    ACCEPTED = "2xx"  # a 2xx to the dialog-creating INVITE
    REJECTED = "3xx+"  # a 3xx-6xx to the dialog-creating INVITE (12.3)
    BYE = "bye"  # a BYE sent, or received and accepted (15)
    END = "end"  # a 481/408 to an in-dialog request (12.2.1.2), or a local teardown


# The members as module constants: in 3.11 every attribute read on an Enum class goes through
# EnumType.__getattr__'s slow hook (about 80 ns more), and a B2BUA call reads these some 20 times.
EARLY, CONFIRMED, TERMINATED = DialogState.EARLY, DialogState.CONFIRMED, DialogState.TERMINATED
UAC, UAS = Role.UAC, Role.UAS
_PROVISIONAL, _ACCEPTED, _REJECTED = _Input.PROVISIONAL, _Input.ACCEPTED, _Input.REJECTED
_BYE, _END = _Input.BYE, _Input.END
# (state, input) -> next state. A pair missing from the table leaves the state unchanged (a late 1xx
# after the 2xx, anything after the end).
_TRANSITIONS: dict[tuple[DialogState, _Input], DialogState] = {
    (EARLY, _PROVISIONAL): EARLY,
    (EARLY, _ACCEPTED): CONFIRMED,
    (EARLY, _REJECTED): TERMINATED,
    (EARLY, _BYE): TERMINATED,
    (EARLY, _END): TERMINATED,
    (CONFIRMED, _ACCEPTED): CONFIRMED,
    (CONFIRMED, _BYE): TERMINATED,
    (CONFIRMED, _END): TERMINATED,
}


class DialogId(msgspec.Struct, frozen=True):
    """Call-ID, local tag, remote tag (12): the key of a dialog on this side."""

    call_id: str
    local_tag: str
    remote_tag: str


def new_tag() -> str:
    """A fresh From/To tag: 64 random bits (19.3 asks for at least 32)."""
    return secrets.token_hex(8)


def dialog_id_of(message: Request | Response) -> DialogId | None:
    """The id of the dialog a message *we received* belongs to: for a request the local tag is its To tag
    and the remote tag its From tag (12.2.2); for a response it is the other way round. None for a
    request without a To tag (it is outside any dialog) or a response without a From tag. A missing
    remote tag is "" (RFC 2543 peers, 12.1.1)."""
    if isinstance(message, Request):
        local, remote = message.to.tag, message.from_.tag
    else:
        local, remote = message.from_.tag, message.to.tag
    if not local:
        return None
    return DialogId(message.call_id, local, remote or "")


class Dialog:
    """One dialog's state (12.1) and the rules that read and change it.

    Build one with `Dialog.uac` (from our INVITE and a response to it) or `Dialog.uas` (from a received
    INVITE); a forking UAC uses `DialogSet`. Attributes are public to read; change them through methods.
    """

    __slots__ = (
        "_acks",
        "_initial_seq",
        "_local_invite",
        "_local_refresh_seq",
        "_remote_invite",
        "_remote_refresh_seq",
        "_sent_invite",
        "call_id",
        "invite_seq",
        "local_address",
        "local_contact",
        "local_seq",
        "remote_address",
        "remote_seq",
        "remote_target",
        "role",
        "route_set",
        "secure",
        "state",
    )

    def __init__(
        self,
        role: Role,
        call_id: str,
        local_address: Address,
        remote_address: Address,
        remote_target: Uri,
        local_contact: Address,
        *,
        route_set: Iterable[Address] = (),
        local_seq: int | None = None,
        remote_seq: int | None = None,
        secure: bool = False,
        state: DialogState = EARLY,
    ):
        if not local_address.tag:
            raise ValueError("the local address needs our tag")
        self.role = role
        self.call_id = call_id
        self.local_address = local_address  # From of our requests, with our tag
        self.remote_address = remote_address  # To of our requests, with the peer's tag (if it sent one)
        self.remote_target = remote_target
        self.local_contact = local_contact
        self.route_set: list[Address] = list(route_set)
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure
        self.state = state
        self.invite_seq: int | None = local_seq if role is UAC else None  # our last INVITE's CSeq
        self._initial_seq = local_seq if role is UAC else remote_seq  # the dialog-creating INVITE's
        self._local_invite: int | None = None  # CSeq of our INVITE still without a final response
        self._remote_invite: int | None = None  # CSeq of the peer's INVITE we have not answered finally
        self._sent_invite: Request | None = None
        self._acks: dict[int, Request] = {}
        # CSeq of the message that last set the remote target, per direction (CSeq spaces differ): a response
        # to our request (local numbers) or a request of the peer (remote numbers, the UAS's INVITE first)
        self._local_refresh_seq: int | None = None
        self._remote_refresh_seq: int | None = remote_seq

    # -- creation ---------------------------------------------------------------------------------
    @classmethod
    def uac(cls, invite: Request, response: Response, *, local_contact: Address | str | None = None) -> Dialog:
        """The UAC's dialog from the INVITE we sent and a 101-299 response to it (12.1.2): early for a 1xx
        (which must carry a To tag), confirmed for a 2xx. Our Contact is the INVITE's unless given.
        Raises SipParseError when the response's Contact or Record-Route is malformed."""
        if not 100 < response.status < 300:
            raise ValueError(f"a {response.status} response creates no dialog")
        if response.status < 200 and not response.to.tag:
            raise ValueError("a provisional response without a To tag creates no dialog")
        contact = _address(local_contact) if local_contact is not None else _first_contact(invite)
        if contact is None:
            raise DialogError("the INVITE has no Contact and none was given")
        seq = invite.cseq.seq
        dialog = cls(
            UAC,
            invite.call_id,
            invite.from_,
            response.to,
            _contact_uri(response) or invite.uri,
            contact,
            route_set=reversed(_record_route(response)),
            local_seq=seq,
            secure=_is_sips(invite),
        )
        dialog._sent_invite = invite
        dialog._local_invite = seq
        dialog.receive_response(response)
        return dialog

    @classmethod
    def uas(cls, invite: Request, local_contact: Address | str, *, local_tag: str | None = None) -> Dialog:
        """The UAS's dialog for a received INVITE (12.1.1), early until `create_response` sends the 2xx.
        `local_tag` is the To tag we answer with (a new one by default). An INVITE without a usable
        Contact or with a malformed Record-Route raises SipParseError carrying the request, so
        `message.error_response(exc)` is the 400 to send."""
        if invite.to.tag:
            raise ValueError("a request with a To tag belongs to an existing dialog")
        try:
            target = _contact_uri(invite)
            routes = _record_route(invite)
            if target is None:
                raise SipParseError("missing Contact")
        except SipParseError as exc:
            exc.partial = invite
            raise
        seq = invite.cseq.seq
        dialog = cls(
            UAS,
            invite.call_id,
            invite.to.with_tag(local_tag or new_tag()),
            invite.from_,
            target,
            _address(local_contact),
            route_set=routes,
            remote_seq=seq,
            secure=_is_sips(invite),
        )
        dialog._remote_invite = seq
        return dialog

    # -- identity ---------------------------------------------------------------------------------
    @property
    def local_tag(self) -> str:
        return self.local_address.tag or ""

    @property
    def remote_tag(self) -> str:
        return self.remote_address.tag or ""

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @property
    def local_uri(self) -> Uri:
        return self.local_address.uri

    @property
    def remote_uri(self) -> Uri:
        return self.remote_address.uri

    def __repr__(self) -> str:
        return f"<Dialog {self.role.value} {self.state.value} {self.call_id} {self.local_tag}/{self.remote_tag}>"

    # -- requests we send -------------------------------------------------------------------------
    def next_hop(self) -> tuple[str, list[str]]:
        """The Request-URI and the Route header values for our next request (12.2.1.1, 16.12)."""
        target = _request_uri(self.remote_target)
        if not self.route_set:
            return target, []
        first = self.route_set[0]
        if _is_loose(first):
            return target, [str(route) for route in self.route_set]
        return _request_uri(first.uri), [str(route) for route in self.route_set[1:]] + [f"<{self.remote_target}>"]

    def create_request(
        self,
        method: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        *,
        via: str | None = None,
    ) -> Request:
        """A new request within the dialog (12.2.1.1): Request-URI and Route from `next_hop`, From/To with
        tags, Call-ID, CSeq one above the last, Max-Forwards 70, our Contact for target refreshes, then
        `headers` (a Max-Forwards, Contact or Content-Type among them replaces ours). Without `via` there is
        no Via: `TransactionLayer.send_request` adds the top one with a new branch. ACK is `create_ack`;
        CANCEL is built from the request it cancels (9.1) by the transaction layer
        (`TransactionLayer.cancel_request`). A BYE ends the dialog (15.1.1); the callee sends
        one only once confirmed and, per 15, after the ACK for its 2xx came or `AckTimeout` was reported.
        DialogError for an INVITE while another is in progress either way (14.1), a callee's BYE on an
        early dialog (15), and any request after the end."""
        if method == "ACK":
            return self.create_ack(headers=headers, body=body, content_type=content_type, via=via)
        if method == "CANCEL":
            raise DialogError("a CANCEL copies the request it cancels (9.1): use TransactionLayer.cancel_request")
        if self.state is TERMINATED:
            raise DialogError(f"cannot send {method}: the dialog is terminated")
        if method == "INVITE" and (self._local_invite is not None or self._remote_invite is not None):
            raise DialogError("an INVITE transaction is already in progress on this dialog (14.1)")
        if method == "BYE" and self.role is UAS and self.state is EARLY:
            raise DialogError("the callee must not send BYE on an early dialog (15): reject the INVITE")
        seq = self._next_seq()
        request = self._build(method, seq, headers, body, content_type, via, contact=method in TARGET_REFRESH)
        if method == "INVITE":
            self.invite_seq = self._local_invite = seq
            self._sent_invite = request
        elif method == "BYE":
            self._move(_BYE)
        return request

    def create_ack(
        self,
        cseq: int | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        via: str | None = None,
    ) -> Request:
        """The ACK for a 2xx to our INVITE (13.2.2.4): built like any in-dialog request but with the INVITE's
        CSeq number (our last INVITE's unless `cseq` is given) and its credentials; `body` is the answer
        when the 2xx held the offer. It is remembered so `ack_for` repeats it for 2xx retransmissions. Without
        `via` it has no Via: `TransactionLayer.send_stateless` adds one with a new branch (the ACK for a 2xx
        is outside the INVITE transaction, 17.1.1.3) into this same object, so the repeats keep it."""
        seq = self.invite_seq if cseq is None else cseq
        if seq is None:
            raise DialogError("no INVITE of ours to acknowledge")
        ack = self._build("ACK", seq, headers, body, content_type, via, contact=False)
        invite = self._sent_invite
        if invite is not None and invite.cseq.seq == seq:
            for name in _CREDENTIALS:
                for value in invite.get_all(name):
                    ack.add(name, value)
        self._acks[seq] = ack
        while len(self._acks) > _KEPT_ACKS:
            del self._acks[min(self._acks)]
        return ack

    def ack_for(self, response: Response) -> Request | None:
        """The ACK we already sent for this 2xx, to send again for its retransmission (13.2.2.4), or None
        if it is not a 2xx to an INVITE we have acknowledged (then build one with `create_ack`)."""
        if not 200 <= response.status < 300 or response.cseq.method != "INVITE":
            return None
        return self._acks.get(response.cseq.seq)

    def _next_seq(self) -> int:
        if self.local_seq is None:  # a UAS sending its first request (12.2.1.1, 8.1.1.5)
            self.local_seq = secrets.randbelow(2**16) + 1
        else:
            self.local_seq += 1
        return self.local_seq

    def _build(
        self,
        method: str,
        seq: int,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
        via: str | None,
        *,
        contact: bool,
    ) -> Request:
        uri, routes = self.next_hop()
        lines = [("Via", via)] if via else []
        lines += [("Route", route) for route in routes]
        lines += [
            ("Max-Forwards", MAX_FORWARDS),
            ("From", str(self.local_address)),
            ("To", str(self.remote_address)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{seq} {method}"),
        ]
        if contact:
            lines.append(("Contact", str(self.local_contact)))
        request = Request(method, uri, lines, body)
        # what the transaction and dialog layers read back, known already (Address is never mutated)
        request._parsed.update(From=self.local_address, To=self.remote_address, CSeq=CSeq(seq, method))
        _add_extras(request, headers, content_type)
        return request

    # -- responses to our requests ----------------------------------------------------------------
    def receive_response(self, response: Response) -> None:
        """Apply a response to a request we sent in this dialog (the UAC's INVITE included): tagged 1xx and
        2xx to the dialog-creating INVITE update the early dialog and confirm it, recomputing the route set
        (13.2.2.4); a 3xx-6xx to it ends the early dialog (12.3); a 2xx to a target refresh replaces the
        remote target (12.2.1.2) unless a response to a later request of ours already did (a retransmitted
        older 2xx); a 481 or 408 ends the dialog (12.2.1.2). A response whose Contact or Record-Route is
        needed but malformed raises SipParseError and changes nothing."""
        status, cseq = response.status, response.cseq
        if status < 101:
            return
        initial = self.role is UAC and cseq.method == "INVITE" and cseq.seq == self._initial_seq and self.state is EARLY
        success = 200 <= status < 300
        refreshes = (initial and status < 300) or (success and cseq.method in TARGET_REFRESH)
        if self._local_refresh_seq is not None and cseq.seq < self._local_refresh_seq:
            refreshes = False  # older than the response that set the target: a late retransmission
        target = _contact_uri(response) if refreshes else None
        routes = _record_route(response)[::-1] if initial and success else None
        if cseq.method == "INVITE" and status >= 200 and cseq.seq == self._local_invite:
            self._local_invite = None
        if initial:
            self._move(_PROVISIONAL if status < 200 else _ACCEPTED if success else _REJECTED)
        elif status in (408, 481):
            self._move(_END)
        if routes is not None:
            self.route_set = routes
        if target is not None:
            self.remote_target = target
            self._local_refresh_seq = cseq.seq

    # -- requests we receive ----------------------------------------------------------------------
    def receive_request(self, request: Request) -> Response | None:
        """Check and apply a request received within this dialog (12.2.2). None means accepted: the remote
        CSeq is raised to it, a target refresh replaces the remote target from its Contact (never from a
        request older than the one that last did), a BYE ends the dialog. Otherwise the response to send:
        481 after the end, 500 for a CSeq below the highest seen, 500 with Retry-After for an INVITE while
        the peer's previous one is unanswered, 491 for an INVITE crossing ours (14.2), 400 for a malformed
        Contact. ACK and CANCEL are always accepted (they carry
        their INVITE's CSeq; the transaction layer handles CANCEL)."""
        method = request.method
        if method in ("ACK", "CANCEL"):
            return None
        if self.state is TERMINATED:
            return build_response(request, 481)
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            return build_response(request, 500, "Server Internal Error (CSeq out of order)")
        try:
            target = _contact_uri(request) if method in TARGET_REFRESH else None
        except SipParseError as exc:
            return build_response(request, 400, f"Bad Request ({exc.reason[:80]})")
        self.remote_seq = seq
        if method == "INVITE":
            if self._remote_invite is not None:
                return build_response(request, 500, headers=[("Retry-After", str(secrets.randbelow(11)))])
            if self._local_invite is not None:
                return build_response(request, 491)
            self._remote_invite = seq
        if target is not None and (self._remote_refresh_seq is None or seq >= self._remote_refresh_seq):
            self.remote_target = target
            self._remote_refresh_seq = seq
        if method == "BYE":
            self._move(_BYE)
        return None

    def create_response(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """Our response to a request of this dialog (8.2.6): our To tag; for 101-299 the request's
        Record-Route copied in order (12.1.1) and our Contact when the request creates the dialog or
        refreshes its target; then `headers`, `content_type`, `body`. A final response to the
        dialog-creating INVITE confirms (2xx) or ends (3xx-6xx) the dialog. For a 2xx to an INVITE, start
        a `dialog_timers.InviteOkRetransmitter` with it (13.3.1.4)."""
        response = build_response(request, status, reason, to_tag=self.local_tag, body=body)
        method, seq = request.method, request.cseq.seq
        initial = self.role is UAS and method == "INVITE" and seq == self._initial_seq
        initial = initial and self.state is EARLY
        if 100 < status < 300:
            for value in request.get_all("Record-Route"):
                response.add("Record-Route", value)
            if (initial or status >= 200) and method in TARGET_REFRESH:
                response.add("Contact", str(self.local_contact))
        _add_extras(response, headers, content_type)
        if method == "INVITE" and status >= 200 and seq == self._remote_invite:
            self._remote_invite = None
        if initial and status > 100:
            self._move(_PROVISIONAL if status < 200 else _ACCEPTED if status < 300 else _REJECTED)
        return response

    # -- ending -----------------------------------------------------------------------------------
    def terminate(self) -> None:
        """End the dialog locally (an ACK timeout after the BYE was sent, a forked early dialog given up)."""
        self._move(_END)

    def _move(self, symbol: _Input) -> None:
        self.state = _TRANSITIONS.get((self.state, symbol), self.state)


class DialogSet:
    """The UAC's dialogs from one INVITE, one per To tag (forking: 12.1.2, 13.2.2.4)."""

    __slots__ = ("dialogs", "invite", "local_contact")

    def __init__(self, invite: Request, local_contact: Address | str | None = None):
        self.invite = invite
        self.local_contact = local_contact
        self.dialogs: dict[str, Dialog] = {}  # by remote (To) tag

    def receive_response(self, response: Response) -> Dialog | None:
        """The dialog a response to our INVITE creates or updates (tagged 1xx: early; 2xx: confirmed, one
        per answering fork), or None: a 100, an untagged 1xx, or a 3xx-6xx, which ends every dialog of
        the set still early (12.3)."""
        status = response.status
        if status >= 300:
            for dialog in self.early():
                dialog.receive_response(response)
            return None
        tag = response.to.tag
        if status < 200 and not tag:
            return None
        dialog = self.dialogs.get(tag or "")
        if dialog is None:
            dialog = Dialog.uac(self.invite, response, local_contact=self.local_contact)
            self.dialogs[dialog.remote_tag] = dialog
        else:
            dialog.receive_response(response)
        return dialog

    def early(self) -> list[Dialog]:
        """The dialogs still early: once one is confirmed, the forks that will not answer."""
        return [d for d in self.dialogs.values() if d.state is EARLY]

    def confirmed(self) -> list[Dialog]:
        return [d for d in self.dialogs.values() if d.state is CONFIRMED]

    def terminate_early(self) -> list[Dialog]:
        """End the dialogs still early and return them (for the caller to drop from its table), e.g. when
        the INVITE transaction is over after a 2xx from another fork (13.2.2.4)."""
        ended = self.early()
        for dialog in ended:
            dialog.terminate()
        return ended

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self.dialogs.values()))

    def __len__(self) -> int:
        return len(self.dialogs)


class DialogTable:
    """Dialogs by id, to match what arrives to the dialog it belongs to (`dialog_id_of`)."""

    __slots__ = ("_dialogs",)

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def add(self, dialog: Dialog) -> None:
        self._dialogs[dialog.id] = dialog

    def remove(self, dialog: Dialog | DialogId) -> None:
        self._dialogs.pop(dialog.id if isinstance(dialog, Dialog) else dialog, None)

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def match(self, message: Request | Response) -> Dialog | None:
        """The dialog a received request or response belongs to, or None (a request for none: 481)."""
        dialog_id = dialog_id_of(message)
        return None if dialog_id is None else self._dialogs.get(dialog_id)

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))


# -- helpers --------------------------------------------------------------------------------------------
def _address(value: Address | str) -> Address:
    return value if isinstance(value, Address) else parse_address(value)


def _first_contact(message: Request | Response) -> Address | None:
    contacts = message.contacts
    return contacts[0] if contacts else None


def _contact_uri(message: Request | Response) -> Uri | None:
    """The URI of the first Contact, or None without one; SipParseError when it is malformed."""
    contact = _first_contact(message)
    return None if contact is None else contact.uri


def _record_route(message: Request | Response) -> list[Address]:
    """The Record-Route values in message order, URIs checked (SipParseError if malformed)."""
    routes = [parse_address(value) for value in message.get_all("Record-Route")]
    for route in routes:
        _ = route.uri
    return routes


def _is_loose(route: Address) -> bool:
    uri = route.uri
    return isinstance(uri, SipUri) and "lr" in uri.params


def _is_sips(request: Request) -> bool:
    return request.uri_text[:5].lower() == "sips:"


def _request_uri(uri: Uri) -> str:
    """The URI as a Request-URI: without the method parameter and headers it may not carry (19.1.1)."""
    if isinstance(uri, SipUri) and ("method" in uri.params or uri.headers):
        params = {k: v for k, v in uri.params.items() if k != "method"}
        return str(SipUri(uri.scheme, uri.user, uri.password, uri.host, uri.port, params, {}))
    return str(uri)


def _add_extras(message: Request | Response, headers: Iterable[tuple[str, str]], content_type: str | None) -> None:
    if content_type:
        message.set("Content-Type", content_type)
    for name, value in headers:
        if canonical(name) in _REPLACEABLE:
            message.set(name, value)
        else:
            message.add(name, value)
