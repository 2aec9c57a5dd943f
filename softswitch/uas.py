"""The answers every request gets before call control exists for it (RFC 3261 8.2 and 11).

This is the transaction user of `SipEndpoint` until the registrar, router and B2BUA take over their
methods: it runs the UAS checks of 8.2 in the RFC's order (method, Request-URI scheme, Require, content
type, Accept), answers OPTIONS with our capabilities (11.2) statelessly outside dialogs (8.2.7: keep-alives,
monitors and scanners cost no transaction), CANCEL by its INVITE (9.2), in-dialog
requests with 481 (no dialog exists yet), REGISTER through the registrar, and everything else that
passes the checks with 404 until the router exists.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from softswitch.logs import event

if TYPE_CHECKING:
    from softswitch.b2bua.switch import B2bua
from softswitch.registrar import Registrar
from softswitch.sip.errors import SipParseError
from softswitch.sip.message import Request, Response, build_response
from softswitch.sip.transaction import (
    RequestReceived,
    ResponseReceived,
    State,
    StrayResponse,
    Timeout,
    TransportError,
    server_key,
)
from softswitch.sip.uri import AbsoluteUri
from softswitch.transport.endpoint import Flow, SipEndpoint

log = logging.getLogger("softswitch.uas")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY, REGISTER"
ALLOWED = frozenset(m.strip() for m in ALLOW.split(","))
ACCEPT = "application/sdp"
SUPPORTED = "replaces, timer"
KNOWN_EXTENSIONS = frozenset(s.strip() for s in SUPPORTED.split(","))
SDP_METHODS = frozenset(("INVITE", "UPDATE", "PRACK", "OPTIONS"))
IN_DIALOG = frozenset(("BYE", "INFO", "UPDATE", "REFER", "NOTIFY", "PRACK"))


class BasicUas:
    """Answers requests with the checks of RFC 3261 8.2; `route` decides INVITE/REGISTER later."""

    def __init__(
        self,
        user_agent: str = "softswitch",
        registrar: Registrar | None = None,
        clock: Callable[[], float] = time.time,
        calls: B2bua | None = None,
    ):
        self.user_agent = user_agent
        self._tag_key = secrets.token_bytes(16)  # stateless To tags: stable per request, not guessable
        self.registrar = registrar
        self.clock = clock  # Unix time, for registrations (the transaction layer has its own)
        self.calls = calls

    def __call__(self, endpoint: SipEndpoint, ev: object) -> None:
        if isinstance(ev, RequestReceived):
            self.on_request(endpoint, ev)
        elif isinstance(ev, (ResponseReceived, Timeout, TransportError)):
            if self.calls is None or not self.calls.on_client_event(ev):
                event(log, "sip.unclaimed", level=logging.DEBUG, kind=type(ev).__name__)
        elif isinstance(ev, StrayResponse):
            event(log, "sip.stray_response", level=logging.DEBUG, status=ev.response.status)

    def answer_statelessly(self, request: Request, source: Flow) -> Response | None:
        """The answer to an out-of-dialog OPTIONS, sent without a transaction (RFC 3261 8.2.7): a
        retransmission is answered again the same way, with the same To tag (a hash of the request's
        transaction key), so nothing is kept per ping. None for anything else."""
        if request.method != "OPTIONS" or request.to.tag:
            return None
        status, extra = self._checked(request, source.transport)
        tag = hashlib.blake2s(repr(server_key(request)).encode(), digest_size=4, key=self._tag_key).hexdigest()
        return self._response(request, status, extra, to_tag=tag)

    def _checked(self, request: Request, transport: str) -> tuple[int, list[tuple[str, str]]]:
        status, extra = self.check(request)
        checked = status < 300 or status in (404, 481)  # the URI parsed: its scheme may be looked at
        if checked and getattr(request.uri, "secure", False) and transport != "tls":
            return 416, []  # a sips: request must arrive over TLS (RFC 3261 26.2, RFC 5630)
        return status, extra

    def on_request(self, endpoint: SipEndpoint, ev: RequestReceived) -> None:
        request = ev.request
        if request.method == "ACK" or ev.key is None:
            if self.calls is not None and request.method == "ACK":
                self.calls.on_in_dialog(ev)
            return  # otherwise an ACK is answered by nothing (17.1.1.3, 13.3.1.4)
        status, extra = self._checked(request, ev.source.transport)
        calls = self.calls
        if calls is not None and status in (404, 481) and request.to.tag and calls.on_in_dialog(ev):
            return
        if calls is not None and status == 404 and request.method == "INVITE" and not request.to.tag:
            calls.on_invite(ev)
            return
        if request.method == "REGISTER" and status == 404 and self.registrar is not None:
            flow = ev.source
            source = f"{flow.remote[0]}:{flow.remote[1]}"
            response = self.registrar.register(request, source, flow.transport, self.clock())
            response.add("Server", self.user_agent)
            endpoint.respond(ev.key, response)
            return
        if request.method == "CANCEL" and status == 200:
            invite_key = endpoint.txns.find_invite_for_cancel(request)
            if invite_key is None:
                status = 481
            elif calls is not None and calls.owns(invite_key):
                endpoint.respond(ev.key, self._response(request, 200))  # 9.2: the CANCEL's 200 first, then 487
                calls.on_cancel(invite_key)
                return
            else:
                endpoint.respond(ev.key, self._response(request, 200))
                invite = endpoint.txns.get(invite_key)
                if invite.state is State.PROCEEDING:  # 9.2: after a final response the CANCEL changes nothing
                    endpoint.respond(invite_key, self._response(invite.request, 487))
                return
        endpoint.respond(ev.key, self._response(request, status, extra))

    def check(self, request: Request) -> tuple[int, list[tuple[str, str]]]:
        """The status 8.2 gives this request, with the headers that status calls for."""
        if request.method not in ALLOWED:
            return 405, [("Allow", ALLOW)]  # 8.2.1
        try:
            uri = request.uri
        except SipParseError:
            return 400, []
        if isinstance(uri, AbsoluteUri):
            return 416, []  # 8.2.2.1
        unknown = [ext for ext in request.get_all("Require") if ext not in KNOWN_EXTENSIONS]
        if unknown and request.method not in ("CANCEL", "ACK"):
            return 420, [("Unsupported", ", ".join(unknown))]  # 8.2.2.3
        if request.method in SDP_METHODS and request.body and request.content_type not in (None, ACCEPT):
            return 415, [("Accept", ACCEPT)]  # 8.2.3: bodies we read; INFO, NOTIFY... pass through a call
        accept = request.get_all("Accept")
        if (
            request.method == "INVITE"
            and accept
            and not any(a.split(";")[0].strip() in (ACCEPT, "*/*", "application/*") for a in accept)
        ):
            return 406, []  # we would answer with SDP, which the caller says it cannot take
        if request.method == "OPTIONS":
            return 200, [("Allow", ALLOW), ("Accept", ACCEPT), ("Supported", SUPPORTED)]
        if request.method == "CANCEL":
            return 200, []
        if request.method in IN_DIALOG or (request.method == "INVITE" and request.to.tag):
            return 481, []  # no dialog exists yet (12.2.2)
        return 404, []  # nobody here by that name, until the registrar and router exist

    def _response(
        self, request: Request, status: int, headers: list[tuple[str, str]] = (), to_tag: str | None = None
    ) -> Response:
        response = build_response(request, status, to_tag=to_tag or secrets.token_hex(4), headers=headers)
        response.add("Server", self.user_agent)
        return response
