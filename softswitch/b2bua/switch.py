"""The B2BUA as the transaction user for calls: admission, routing to forks, and the tables that map
every transaction and dialog back to its `Call`.

Admission (who may call): a request from a trunk's `inbound_from` network is that carrier's inbound call;
anything else must answer a digest challenge (407, RFC 3261 22.3) as one of `[[users]]`, or gets 403.
Routing gives the ordered targets (`Router.targets`); `fork` turns one target into INVITEs: one per
registered contact of a user (sent back over the flow the REGISTER came on, for NAT), or one to a trunk.

This layer owns the clock for calls (`loop.time()` for timers, Unix time for records), the per-call
timers (ring timeout, max duration, 2xx retransmission), the call records (saved when the call starts,
is answered and ends, so a crash leaves a record of every live call) and the `call.*` events.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from media.amd import AmdParams
from media.engine import MediaEngine, MediaEvent
from softswitch.b2bua import transfer
from softswitch.b2bua.call import ALLOW, SDP, Call, Fork, new_call_id
from softswitch.b2bua.flow import Flows
from softswitch.b2bua.media import CallMedia
from softswitch.b2bua.policy import CallPolicy, Refusal
from softswitch.b2bua.recording import Recordings
from softswitch.b2bua.session_timer import DEFAULT_INTERVAL, request_headers
from softswitch.b2bua.streams import CallStreams
from softswitch.events import EventBus, new_id
from softswitch.logs import event
from softswitch.registrar import Registrar
from softswitch.router import Router, Target
from softswitch.sip.dialog import Dialog, DialogSet, dialog_id_of, new_tag
from softswitch.sip.errors import SipParseError
from softswitch.sip.message import Request, build_response
from softswitch.sip.message import parse as parse_message
from softswitch.sip.transaction import RequestReceived, ResponseReceived, Timeout, TransportError
from softswitch.sip.uri import SipUri, parse_uri
from softswitch.store import CallRecord, LegRecord, Store

if TYPE_CHECKING:
    from softswitch.security import Security

log = logging.getLogger("softswitch.b2bua")

FLUSH_S = 0.05  # call records are written in one transaction at most this long after they change


class B2bua:
    """Every call of the process; `endpoint` is set by the server once the SIP endpoint exists."""

    def __init__(
        self,
        *,
        engine: MediaEngine,
        store: Store,
        bus: EventBus,
        router: Router,
        registrar: Registrar,
        domain: str,
        user_agent: str = "softswitch",
        ring_timeout_s: float = 60.0,
        max_duration_s: float = 4 * 3600.0,
        session_interval_s: int = DEFAULT_INTERVAL,
        inband_dtmf: str = "auto",
        amd: AmdParams | None = None,
        recordings_dir: str = "var/recordings",
        wall: Callable[[], float] = time.time,
        policy: CallPolicy | None = None,
    ):
        self.engine = engine
        self.store = store
        self.bus = bus
        self.router = router
        self.registrar = registrar
        self.domain = domain
        self.user_agent = user_agent
        self.ring_timeout_s = ring_timeout_s
        self.max_duration_s = max_duration_s
        self.session_interval_s = session_interval_s
        self.inband_dtmf = inband_dtmf
        self.amd_params = amd or AmdParams()
        self.recordings = Recordings(self, recordings_dir)
        self.streams = CallStreams(self)
        self.flows = Flows(self)
        self.wall = wall
        self.endpoint = None
        self.trunks = None  # softswitch.trunks.Trunks once started: which trunks answer their pings
        self.policy = policy or CallPolicy({})
        self.srtp_parties: set[tuple[str, str]] = set()  # ("user"|"trunk", name) offered SRTP over TLS
        self.security: Security | None = None  # set by the server: alerts, counters, auth failures' bans
        self.loop = asyncio.get_running_loop()
        self.calls: dict[str, Call] = {}
        self._invites: dict[object, Call] = {}  # the caller's INVITE server transaction
        self._forks: dict[object, tuple[Call, Fork]] = {}  # our INVITE client transactions
        self._requests: dict[object, tuple[Call, str | None]] = {}  # forwarded in-dialog requests
        self._dialogs: dict[object, tuple[Call, str]] = {}
        self._media_legs: dict[int, tuple[Call, str]] = {}  # engine leg id -> its call and side
        self._dirty: dict[str, CallRecord] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self.counters = {"calls": 0, "answered": 0, "failed": 0, "rejected": 0}
        engine.attach(self.loop, self.on_media_events, self.streams.on_frames)

    def now(self) -> float:
        return self.loop.time()

    # -- admission -------------------------------------------------------------------------------------
    def on_invite(self, ev: RequestReceived) -> None:
        """A new INVITE (no To tag) that passed the 8.2 checks."""
        request, flow = ev.request, ev.source
        endpoint = self.endpoint
        mf = request.max_forwards
        if mf is not None and mf <= 0:
            endpoint.respond(ev.key, self._reply(request, 483))
            return
        host = flow.remote[0]
        trunk = self.router.trunk_for_source(host)
        if trunk is not None and trunk.tls_client_cert and trunk.tls_client_cert not in self.endpoint.peer_names(flow):
            # from the trunk's network, but without the certificate it must present: not that trunk
            refusal = Refusal("client_certificate", 403, "Client Certificate Required", f"trunk {trunk.name} over "
                              f"{flow.transport} without a certificate naming {trunk.tls_client_cert}")  # fmt: skip
            self._refuse(ev, refusal, ("trunk", trunk.name), getattr(request.uri, "user", None) or "", "")
            return
        user = None
        if trunk is None:
            result = self.registrar.verify(request, "Proxy-Authorization", self.wall())
            if not result.ok:
                if result.stale or not request.get_all("Proxy-Authorization"):
                    headers = self.registrar.challenge_headers("Proxy-Authenticate", self.wall(), result.stale)
                    endpoint.respond(ev.key, self._reply(request, 407, headers=headers))
                else:
                    self.counters["rejected"] += 1
                    if result.failed and self.security is not None:
                        self.security.auth_failed(host, result.username, "INVITE", result.reason.value)
                    endpoint.respond(ev.key, self._reply(request, 403))
                return
            user = result.username
        origin = ("trunk", trunk.name) if trunk is not None else ("user", user)
        called = getattr(request.uri, "user", None) or ""
        refusal = self.policy.admit(origin, self.wall())
        if refusal is not None:
            self._refuse(ev, refusal, origin, called, "")
            return
        targets = self.router.targets(called)
        if not targets:
            self.counters["rejected"] += 1
            endpoint.respond(ev.key, self._reply(request, 404, "No Route"))
            return
        allowed = [t for t in targets if t.kind != "trunk" or self._trunk_refusal(origin, t.name, called) is None]
        if not allowed:  # every route leads out through a trunk this caller may not use for this number
            self._refuse(ev, self._trunk_refusal(origin, targets[0].name, called), origin, called, "")
            return
        direction = "inbound" if trunk else ("outbound" if allowed[0].kind == "trunk" else "internal")
        try:
            call = self._new_call(request, ev.key, flow, allowed, direction=direction, trunk=trunk, user=user)
        except OSError as exc:
            event(log, "call.no_media", level=logging.WARNING, reason=str(exc))
            endpoint.respond(ev.key, self._reply(request, 503, headers=[("Retry-After", "5")]))
            return
        call.origin = origin
        self.hold(call, origin)
        self._invites[ev.key] = call
        call.start()

    def _trunk_refusal(self, origin, trunk: str, number: str, *, by_operator: bool = False):
        """What the toll-fraud rules say to sending `origin`'s call for `number` out over `trunk` (capacity
        aside: a full trunk is skipped for the next route, a forbidden number is refused outright)."""
        return self.policy.allow_trunk(origin, trunk, number, self.wall(), by_flow=by_operator)

    def _refuse(self, ev: RequestReceived, refusal, origin, number: str, call_id: str) -> None:
        """403 with the rule's reason (and a Reason header, RFC 3326), logged, counted, alerted."""
        self.counters["rejected"] += 1
        if self.security is not None:
            self.security.refused(refusal, source=ev.source.remote[0], origin=origin, number=number, call_id=call_id)
        reason = ("Reason", f'SIP;cause={refusal.status};text="{refusal.reason}"')
        self.endpoint.respond(ev.key, self._reply(ev.request, refusal.status, refusal.reason, headers=[reason]))

    def hold(self, call: Call, subject) -> None:
        """The call counts towards `subject`'s max_calls and calls_per_minute until it ends."""
        if subject not in call.subjects:
            call.subjects.append(subject)
            self.policy.acquire(subject, self.wall())

    def drop_failed_trunks(self, call: Call) -> None:
        """Failover: a trunk whose every fork of the call has failed stops counting it (its `max_calls`), so a
        call that went on to the next route holds one trunk's slot, not every trunk it tried. Its
        `calls_per_minute` keeps the attempt."""
        live = {("trunk", f.trunk.name) for f in call.forks if f.trunk is not None and not f.done}
        for subject in [s for s in call.subjects if s[0] == "trunk" and s != call.origin and s not in live]:
            call.subjects.remove(subject)
            self.policy.release(subject)

    def originate(
        self,
        to: str,
        from_: str,
        *,
        connect: str | None = None,
        ring_timeout_s: float | None = None,
        machine_detection: str = "",
        amd_changes: dict[str, int | float] | None = None,
        test: bool = False,
    ) -> Call:
        """A call the API places: an INVITE to `to` (a number or user, routed like any call), from
        `from_` (a number or name, our From user). Its other side is the API's own, kept by no SIP peer
        (softswitch.b2bua.call: Side.virtual): once answered, the far end is bridged to a parked media leg,
        so the call can be recorded, played to, listened to for digits and answering machines, and hung
        up. With `connect`, the answered party is connected to that one (a number or user) in the API's
        place. `amd_changes` go over the route's AMD parameters for this call's `machine_detection`. A `test` call
        never leaves the box: it goes to the simulated far end (softswitch.testmode), whatever the routes
        say. LookupError when no route matches `to` (or `connect`), OSError when no media port is free."""
        if test:
            if self.router.trunks.get(TEST_TRUNK) is None:
                raise OSError("the test far end is not running")
            targets = [Target("trunk", TEST_TRUNK, -1)]
            connect = None  # a second party would be a live one
        else:
            targets = self.router.targets(to)
        if not targets:
            raise LookupError(f"no route to {to!r}")
        if connect is not None and not self.router.targets(connect):
            raise LookupError(f"no route to {connect!r}")
        if machine_detection:
            targets = [Target(t.kind, t.name, t.route, machine_detection, t.amd) for t in targets]
        for name, value in (("to", to), ("from", from_), ("connect", connect or "x")):
            if not _API_PARTY.fullmatch(value):
                raise ValueError(f"{name}: a number or user name (letters, digits, + . _ -), not {value!r}")
        flow = self.endpoint.flow_to("udp", "api", 0)
        if flow is None:
            raise OSError("no UDP listener to place calls from")
        invite = _api_invite(to, from_, self.domain, flow.local)
        direction = "outbound" if targets[0].kind == "trunk" else "internal"
        trunk = self.router.trunks.get(targets[0].name) if targets[0].kind == "trunk" else None
        call = self._new_call(
            invite, None, flow, targets, direction=direction, trunk=trunk, user=None, role="api", status="queued"
        )
        if ring_timeout_s is not None:
            call.ring_timeout_s = ring_timeout_s
        call.record.test = test
        call.connect_to = connect
        if amd_changes:
            call.amd_changes = dict(amd_changes)
        self.loop.call_soon(self._dial, call)  # the API answers first (status queued), then the INVITE leaves
        return call

    def _dial(self, call: Call) -> None:
        if call.state != "routing" or call.record.status != "queued":
            return  # hung up while queued
        call.record.status = "initiated"
        self.save(call)
        self.publish(call, "call.initiated", {})
        call.start()

    def _new_call(
        self, request: Request, key, flow, targets, *, direction, trunk, user, role="inbound", status="initiated"
    ) -> Call:
        """A call for `request` (its media, record and tables), not yet started. OSError: no media port."""
        media = CallMedia(self.engine, inband_dtmf=self.inband_dtmf)
        if flow.transport == "tls":
            media.secure.add("a")  # the caller's SDES keys came over TLS
        now = self.wall()
        record = CallRecord(
            id=new_id("call"),
            direction=direction,
            from_uri=str(request.from_.uri),
            to_uri=str(request.uri),
            status=status,
            created_at=now,
            trunk=trunk.name if trunk else (targets[0].name if targets[0].kind == "trunk" else None),
            user=user,
        )
        record.legs.append(
            LegRecord(
                idx=0,
                role=role,
                sip_call_id=request.call_id,
                remote_uri=str(request.from_.uri),
                created_at=now,
                remote_tag=request.from_.tag,
                remote_addr=f"{flow.remote[0]}:{flow.remote[1]}",
            )
        )
        try:
            call = Call(self, record, request, key, flow, targets, media)
        except SipParseError:  # no usable Contact: the endpoint answers 400
            media.close()
            raise
        record.legs[0].local_tag = call.a.dialog.local_tag
        self.calls[call.id] = call
        for side, leg in media.legs.items():
            self._media_legs[leg.id] = (call, side)
        self.counters["calls"] += 1
        self.save(call)
        if status == "initiated":
            self.publish(call, "call.initiated", {})
        return call

    def _reply(self, request: Request, status: int, reason: str | None = None, headers=()):
        response = build_response(request, status, reason, to_tag=new_tag(), headers=headers)
        response.add("Server", self.user_agent)
        return response

    # -- forks ---------------------------------------------------------------------------------------------
    def fork(
        self, call: Call, target: Target, *, body: bytes | None = None, caller: str | None = None, called=None
    ) -> list[Fork] | None:
        """Send the call's INVITE(s) for one target; [] when it has nowhere to go (not registered, trunk
        down...); None when a TCP/TLS trunk needs a connection first (the fork follows, or the next
        target is tried if the connection fails)."""
        destinations: list[tuple[str, object, object]] = []  # (request uri, flow, trunk)
        secure = getattr(call.invite.uri, "secure", False)  # a sips: call goes on over TLS only (RFC 5630)
        if target.kind == "user":
            for binding in self.registrar.contacts(target.name, self.wall()):
                if secure and binding.transport != "tls":
                    continue
                host, _, port = binding.source.rpartition(":")
                flow = self.endpoint.flow_to(binding.transport, host.strip("[]"), int(port))
                if flow is not None:
                    destinations.append((binding.contact, flow, None))
        elif target.kind == "trunk":
            trunk = self.router.trunks[target.name]
            if secure and trunk.transport != "tls":
                event(log, "call.trunk_not_tls", level=logging.INFO, call=call.id, trunk=trunk.name)
                return []
            if self.trunks is not None and not self.trunks.is_up(trunk.name):
                event(log, "call.trunk_down", level=logging.INFO, call=call.id, trunk=trunk.name)
                return []
            if trunk.name != TEST_TRUNK and not self._may_use_trunk(call, trunk.name, called or call.called_user, body):
                return []
            host, port = self.router.trunk_address(trunk)
            uri = f"{'sips' if secure else 'sip'}:{called or call.called_user}@{host}:{port}"
            flow = self.endpoint.flow_to(trunk.transport, host, port)
            if flow is None and trunk.transport != "udp":
                self.loop.create_task(self._connect_then_fork(call, target, trunk, uri, host, port, body, caller))
                return None
            if flow is not None:
                destinations.append((uri, flow, trunk))
        elif target.kind == "sip":  # a call flow's <Dial><Sip>: that URI itself, over UDP (no DNS here)
            try:
                uri = parse_uri(target.name)
            except SipParseError:
                uri = None
            if isinstance(uri, SipUri) and uri.transport == "udp" and uri.host:
                flow = self.endpoint.flow_to("udp", uri.host.strip("[]"), uri.port or 5060)
                if flow is not None:
                    destinations.append((target.name, flow, None))
        else:
            event(log, "call.target_unsupported", call=call.id, target=str(target))
        forks = [self._send_fork(call, target, uri, flow, trunk, body, caller) for uri, flow, trunk in destinations]
        if not destinations:
            event(log, "call.target_unreachable", level=logging.INFO, call=call.id, target=str(target))
        return forks

    def _may_use_trunk(self, call: Call, trunk: str, number: str, transfer_offer) -> bool:
        """The toll-fraud rules at the last moment before an INVITE leaves for a trunk, whoever asked for it
        (a route, a transfer, a call flow); a refusal is kept as the call's answer if nothing else works."""
        transfer = call.transfer if transfer_offer is not None else None
        origin = transfer.origin if transfer is not None else call.origin
        by_operator = (not transfer.notify) if transfer is not None else call.by_operator
        refusal = self._trunk_refusal(origin, trunk, number, by_operator=by_operator) or self.policy.trunk_room(
            trunk, self.wall()
        )
        if refusal is not None:
            call.refusal = refusal
            if self.security is not None:
                source = call.a.flow.remote[0] if not call.a.virtual else "api"
                self.security.refused(refusal, source=source, origin=origin, number=number, call_id=call.id)
            return False
        self.hold(call, ("trunk", trunk))
        return True

    def _srtp_offer(self, call: Call, target: Target, flow, body: bytes | None) -> bytes | None:
        """For a callee that wants SRTP (`srtp = true`) reached over TLS: our offer as RTP/SAVP with a key
        (None: the call's own offer). Transfers (which bring their own `body`) stay plain."""
        if body is not None or flow.transport != "tls" or (target.kind, target.name) not in self.srtp_parties:
            return None
        call.media.secure.add("b")
        return call.media.secured_offer("b")

    async def _connect_then_fork(self, call: Call, target: Target, trunk, uri, host, port, body, caller) -> None:
        try:
            flow = await self.endpoint.connect(trunk.transport, host, port)
        except (ConnectionError, OSError) as exc:
            event(log, "call.trunk_unreachable", level=logging.INFO, call=call.id, trunk=trunk.name, reason=str(exc))
            flow = None
        transferring = body is not None
        if call.state not in (("answered",) if transferring else ("routing", "ringing")):
            return
        if flow is None:
            if transferring:
                transfer.on_unreachable(call, call.transfer)
            else:
                call.next_target()
            return
        self._send_fork(call, target, uri, flow, trunk, body, caller)

    def _send_fork(self, call: Call, target: Target, uri: str, flow, trunk, body=None, caller=None) -> Fork:
        """One INVITE of the call (or of its transfer, when `body` is the transfer's offer)."""
        call_id, tag = new_call_id(), new_tag()
        transferring = body is not None  # only a transfer brings its own offer
        name = call.invite.from_.display if caller is None else None
        display = f'"{name}" ' if name else ""
        body = (self._srtp_offer(call, target, flow, body) or call.b_offer) if body is None else body
        mf = call.invite.max_forwards
        headers = [
            ("Max-Forwards", str(69 if mf is None else min(mf - 1, 69))),
            ("From", f"{display}<sip:{caller or call.caller_user}@{self.domain}>;tag={tag}"),
            ("To", f"<{uri}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", self.contact_for(flow, "softswitch", uri.startswith("sips:"))),
            ("Allow", ALLOW),
            ("Supported", "replaces, timer"),
            ("User-Agent", self.user_agent),
            *request_headers(self.session_interval_s),
        ]
        if body:
            headers.append(("Content-Type", SDP))
        invite = Request("INVITE", uri, headers, body or b"")
        now = self.wall()
        leg = LegRecord(
            idx=len(call.record.legs),
            role="outbound",
            sip_call_id=call_id,
            remote_uri=uri,
            created_at=now,
            local_tag=tag,
            remote_addr=f"{flow.remote[0]}:{flow.remote[1]}",
        )
        call.record.legs.append(leg)
        fork = Fork(target, uri, flow, invite, None, DialogSet(invite), leg, trunk)
        if transferring and call.transfer is not None:
            fork.transfer = call.transfer
            call.transfer.forks.append(fork)
        call.forks.append(fork)
        fork.key = self.endpoint.send_request(invite, flow)
        self.track_fork(fork, call)
        return fork

    def track_fork(self, fork: Fork, call: Call) -> None:
        self._forks[fork.key] = (call, fork)

    def forget_fork(self, fork: Fork) -> None:
        self._forks.pop(fork.key, None)

    def track_request(self, key, call: Call, purpose: str | None) -> None:
        """Route the responses of an in-dialog request we sent: `purpose` is the side a forwarded request
        went to ("a"/"b"), "refresh:a"/"refresh:b" for our session refreshes, None for our BYEs."""
        self._requests[key] = (call, purpose)
        call.client_keys.append(key)

    def add_dialog(self, dialog: Dialog, call: Call, side: str) -> None:
        self._dialogs[dialog.id] = (call, side)
        call.dialog_ids.append(dialog.id)

    def drop_dialog(self, dialog: Dialog) -> None:
        self._dialogs.pop(dialog.id, None)

    def contact_for(self, flow, user: str, secure: bool = False) -> str:
        """Our Contact on `flow`. `secure`: the dialog is a SIPS one (its Request-URI was sips:), so the
        Contact must be SIPS too (RFC 5630 4.1); otherwise TLS is named by transport=tls, which every TLS
        phone reads (libre 1.1, baresip's stack, cannot route to a sips: Contact at all)."""
        host, port = flow.local
        host = f"[{host}]" if ":" in host else host
        if secure and flow.transport == "tls":
            return f"<sips:{user or 'softswitch'}@{host}:{port}>"
        params = "" if flow.transport == "udp" else f";transport={flow.transport}"
        return f"<sip:{user or 'softswitch'}@{host}:{port}{params}>"

    # -- events from the transaction layer ---------------------------------------------------------------
    def on_client_event(self, ev) -> bool:
        """A response, timeout or transport error for a client transaction of ours."""
        key = ev.key
        entry = self._forks.get(key)
        if entry is not None:
            call, fork = entry
            if isinstance(ev, ResponseReceived):
                if ev.response.status >= 300:  # a 2xx may come again and is kept for its ACK
                    self._forks.pop(key, None)
                call.on_fork_response(fork, ev.response)
            elif isinstance(ev, (Timeout, TransportError)):
                self._forks.pop(key, None)
                call.on_fork_timeout(fork)
            return True
        entry = self._requests.get(key)
        if entry is None:
            return False
        call, purpose = entry
        response = ev.response if isinstance(ev, ResponseReceived) else None
        final = response is None or response.status >= 200
        if purpose is None:  # our own BYE: nothing waits for its answer
            pass
        elif purpose.startswith("refresh:"):
            call.on_refresh_response(purpose[8:], response)
        elif response is not None:
            call.on_forwarded_response(key, purpose, response)
        else:
            call.on_forwarded_timeout(key)
        if final and (response is None or response.cseq.method != "INVITE"):
            self._requests.pop(key, None)  # a 2xx to an INVITE may come again: kept until the call ends
        return True

    def owns(self, invite_key) -> bool:
        """Whether the INVITE server transaction `invite_key` is the start of one of our calls."""
        return invite_key in self._invites

    def on_cancel(self, invite_key) -> bool:
        call = self._invites.get(invite_key)
        if call is None:
            return False
        call.on_cancel()
        return True

    def on_in_dialog(self, ev: RequestReceived) -> bool:
        entry = self._dialogs.get(dialog_id_of(ev.request))
        if entry is None:
            return False
        call, side = entry
        if ev.request.method == "ACK":
            call.on_ack(side, ev.request)
        else:
            call.on_request(side, ev.key, ev.request)
        return True

    def on_media_events(self, events: list[MediaEvent]) -> None:
        """Media events in a batch: digits (RFC 4733 or in-band), AMD segments and finished recordings go to
        their call."""
        for ev in events:
            owner = self._media_legs.get(ev.leg)
            if ev.kind == "dtmf" and owner is not None:
                call, side = owner
                d = ev.detail
                call.on_dtmf(side, d["digit"], d["source"], d["duration_ms"], d["start_ns"])
            elif ev.kind == "recording_done":
                self.recordings.on_done(ev.detail)
            elif ev.kind == "amd" and owner is not None:
                call, side = owner
                if call.amd is not None and call.amd.side == side:
                    call.amd.on_segment(ev.detail)
                elif call.flow is not None:  # a flow's record verb listens for silence
                    call.flow.on_segment(side, ev.detail)
            elif ev.kind == "play_done" and owner is not None:
                call = owner[0]
                if call.flow is not None:
                    call.flow.on_play_done(ev.detail["play_id"], ev.detail["interrupted"])
            elif ev.kind == "stream_mark":
                self.streams.on_mark(ev.leg, ev.detail["mark"], ev.detail["cleared"])
            elif ev.kind not in ("leg_closed", "latched"):
                event(log, "media.event", level=logging.DEBUG, kind=ev.kind, leg=ev.leg)

    # -- timers, records, events ---------------------------------------------------------------------------
    def timer(self, call: Call, name: str, delay: float, callback: Callable[[], None]) -> None:
        self.cancel_timer(call, name)
        call.timers[name] = self.loop.call_later(delay, self._fire, call, name, callback)

    def _fire(self, call: Call, name: str, callback: Callable[[], None]) -> None:
        call.timers.pop(name, None)
        if call.state != "ended":
            callback()

    @staticmethod
    def cancel_timer(call: Call, name: str) -> None:
        handle = call.timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def save(self, call: Call) -> None:
        """Queue the call's record for the next group commit (within FLUSH_S): one transaction for every
        record changed meanwhile, instead of a commit per change, is what lets the store keep up with
        hundreds of calls a second. A crash loses at most the last FLUSH_S of changes; records left open
        are closed at the next start (`close_orphans`)."""
        self._dirty[call.id] = call.record
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_later(FLUSH_S, self.flush)

    def record(self, call_id: str) -> CallRecord | None:
        """A call's record as it is now: the live call's, one waiting for the group commit, or the stored one."""
        call = self.calls.get(call_id)
        if call is not None:
            return call.record
        return self._dirty.get(call_id) or self.store.get_call(call_id)

    def flush(self) -> None:
        """Write every queued record now."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._dirty:
            records, self._dirty = list(self._dirty.values()), {}
            self.store.save_calls(records)

    def publish(self, call: Call, kind: str, data: dict) -> None:
        self.publish_record(call.record, kind, data)

    def publish_record(self, rec: CallRecord, kind: str, data: dict) -> None:
        payload = {
            "call_id": rec.id,
            "direction": rec.direction,
            "from": rec.from_uri,
            "to": rec.to_uri,
            "status": rec.status,
        } | data
        self.bus.publish(kind, payload, call_id=rec.id)

    def finish(self, call: Call) -> None:
        """The call ended: drop it from every table, stop its timers, write its record."""
        self.calls.pop(call.id, None)
        for subject in call.subjects:
            self.policy.release(subject)
        self._invites.pop(call.key, None)
        self.recordings.call_ended(call)
        for leg in call.media.legs.values():
            if self._media_legs.get(leg.id, (None,))[0] is call:
                del self._media_legs[leg.id]
        for handle in call.timers.values():
            handle.cancel()
        call.timers.clear()
        for fork in call.forks:
            self._forks.pop(fork.key, None)
        for key in call.client_keys:
            if key in self._requests and self._requests[key][1] is not None:
                self._requests.pop(key)  # our BYEs stay until answered (their entry ends itself)
        for dialog_id in call.dialog_ids:
            self._dialogs.pop(dialog_id, None)
        self.counters["answered" if call.record.answered_at else "failed"] += 1
        self.save(call)

    def close_orphans(self) -> int:
        """Records of calls that were live when the process died: closed as ended by the system now, each
        with its `call.completed` (webhooks subscribed first hear it: an application waiting for the end of a
        call the crash cut off gets it)."""
        now = self.wall()
        orphans = self.store.open_calls()
        for rec in orphans:
            rec.ended_at = now
            rec.status = "completed" if rec.answered_at else "failed"
            rec.hangup_code, rec.hangup_reason, rec.hangup_by = 500, "softswitch restarted", "system"
            for leg in rec.legs:
                leg.ended_at = leg.ended_at or now
        self.store.save_calls(orphans)
        for rec in orphans:
            data = {k: getattr(rec, k) for k in ("status", "hangup_code", "hangup_reason", "hangup_by", "duration_s")}
            self.publish_record(rec, "call.completed", data)
        if orphans:
            event(log, "call.orphans_closed", level=logging.WARNING, count=len(orphans))
        self.recordings.close_orphans()
        return len(orphans)

    def shutdown(self) -> None:
        """End every call (BYE or final response) so records are closed before the process exits."""
        for call in list(self.calls.values()):
            call.hangup("system", 503, "shutting down")


TEST_TRUNK = "test-far-end"  # the simulated far end's trunk, added by Services when it runs
_API_PARTY = re.compile(r"[A-Za-z0-9+._-]{1,64}")


def _api_invite(to: str, from_: str, domain: str, local: tuple[str, int]) -> Request:
    """The INVITE a call placed by the API would have come with, had the API been a SIP phone: what the
    call's caller side (virtual) is built from. Never sent."""
    host, port = local
    host = f"[{host}]" if ":" in host else host
    text = (
        f"INVITE sip:{to}@{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{new_tag()}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{from_}@{domain}>;tag={new_tag()}\r\n"
        f"To: <sip:{to}@{domain}>\r\n"
        f"Call-ID: {new_call_id()}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:api@{host}:{port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return request
