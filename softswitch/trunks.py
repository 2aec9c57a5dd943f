"""Trunks kept alive: OPTIONS pings that mark each trunk up or down, and a registration where the
carrier wants one.

A trunk that stops answering OPTIONS (Timer F, or the connection failing) is marked down, and the router
skips it, so calls fail over to the next route at once instead of each waiting 32 s for Timer B (what
Kamailio's dispatcher and Asterisk's qualify do). Any response means the far end is alive: even a 404 or a
405 proves a SIP stack is there, so only a timeout, a transport error or a 503 counts as down. For TCP and
TLS trunks the ping also keeps the connection open, so calls reuse it (RFC 5923 spirit).

A trunk with `register = true` gets a REGISTER (RFC 3261 10.2) with our Contact, answering 401/407 with
its credentials, renewed before it expires (at 80 % of what the carrier granted) and retried every 30 s
while it fails. Both run as one task per trunk; `close()` stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass

from softswitch.config import Trunk, parse_hostport
from softswitch.logs import event
from softswitch.sip.auth import DigestClient, answer_challenge
from softswitch.sip.dialog import new_tag
from softswitch.sip.message import Request, Response

log = logging.getLogger("softswitch.trunks")

RETRY_S = 30.0


@dataclass
class TrunkState:
    trunk: Trunk
    up: bool = True  # optimistic until a ping fails, so calls are not refused at start-up
    registered: bool = False
    pings: int = 0


class Trunks:
    """Health and registrations of every configured trunk."""

    def __init__(self, endpoint, trunks: list[Trunk], *, domain: str, user_agent: str = "softswitch"):
        self.endpoint = endpoint
        self.domain = domain
        self.user_agent = user_agent
        self.states = {t.name: TrunkState(t) for t in trunks}
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        for state in self.states.values():
            if state.trunk.ping_interval_s > 0:
                self._tasks.append(asyncio.create_task(self._ping_loop(state)))
            if state.trunk.register:
                self._tasks.append(asyncio.create_task(self._register_loop(state)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def is_up(self, name: str) -> bool:
        state = self.states.get(name)
        return state is None or state.up

    # -- requests ---------------------------------------------------------------------------------------
    async def _send(self, trunk: Trunk, request_for) -> Response | None:
        """Send the request built by `request_for(flow)` and wait for its final response (None: none came)."""
        host, port = parse_hostport(trunk.address)
        try:
            flow = await self.endpoint.connect(trunk.transport, host, port)
        except (ConnectionError, OSError) as exc:
            event(log, "trunk.connect_failed", level=logging.INFO, trunk=trunk.name, reason=str(exc))
            return None
        if flow is None:
            return None
        return await self.endpoint.final_response(request_for(flow), flow)

    def _build(self, method: str, uri: str, to: str, flow, cseq: int, call_id: str, tag: str) -> Request:
        host, port = flow.local
        params = "" if flow.transport == "udp" else f";transport={flow.transport}"
        return Request(
            method,
            uri,
            [
                ("Max-Forwards", "70"),
                ("From", f"{to};tag={tag}"),
                ("To", to),
                ("Call-ID", call_id),
                ("CSeq", f"{cseq} {method}"),
                ("Contact", f"<sip:softswitch@{host}:{port}{params}>"),
                ("User-Agent", self.user_agent),
            ],
        )

    # -- pings ------------------------------------------------------------------------------------------
    async def _ping_loop(self, state: TrunkState) -> None:
        while True:
            await self.ping(state)
            await asyncio.sleep(state.trunk.ping_interval_s)

    async def ping(self, state: TrunkState) -> bool:
        """One OPTIONS; marks the trunk up or down and returns the new state."""
        trunk = state.trunk
        uri = f"sip:{trunk.address}"
        to = f"<sip:ping@{trunk.address}>"
        call_id = secrets.token_hex(12)
        reply = await self._send(trunk, lambda flow: self._build("OPTIONS", uri, to, flow, 1, call_id, new_tag()))
        up = reply is not None and reply.status != 503
        state.pings += 1
        if up != state.up:
            state.up = up
            status = None if reply is None else reply.status
            event(log, "trunk.up" if up else "trunk.down", level=logging.WARNING, trunk=trunk.name, status=status)
        return up

    # -- registration -----------------------------------------------------------------------------------
    async def _register_loop(self, state: TrunkState) -> None:
        call_id, tag, cseq = secrets.token_hex(12), new_tag(), 0
        while True:
            cseq += 2
            expires = await self.register(state, call_id, tag, cseq)
            await asyncio.sleep(max(expires * 0.8, 30.0) if expires else RETRY_S)

    async def register(self, state: TrunkState, call_id: str, tag: str, cseq: int) -> int | None:
        """REGISTER once (answering one challenge); the granted expiry, or None when it failed."""
        trunk = state.trunk
        host = trunk.address
        aor = f"<sip:{trunk.username}@{host.rsplit(':', 1)[0] if ':' in host else host}>"
        uri = f"sip:{host}"
        credentials: tuple[str, str] | None = None
        for attempt in range(2):

            def build(flow, seq=cseq + attempt, creds=credentials):
                request = self._build("REGISTER", uri, aor, flow, seq, call_id, tag)
                request.add("Expires", str(trunk.register_expires_s))
                if creds is not None:
                    request.add(*creds)
                return request

            response = await self._send(trunk, build)
            if response is None:
                break
            if response.status in (401, 407) and credentials is None and trunk.username:
                credentials = answer_challenge(response, DigestClient(trunk.username, trunk.password), "REGISTER", uri)
                if credentials is not None:
                    continue
            if 200 <= response.status < 300:
                granted = _granted(response, trunk.register_expires_s)
                if not state.registered:
                    event(log, "trunk.registered", trunk=trunk.name, expires=granted)
                state.registered = True
                return granted
            event(log, "trunk.register_failed", level=logging.WARNING, trunk=trunk.name, status=response.status)
            break
        state.registered = False
        return None


def _granted(response: Response, asked: int) -> int:
    """The expiry the registrar granted: our Contact's expires param, else Expires, else what we asked."""
    for contact in response.contacts:
        value = contact.params.get("expires")
        if value and value.isdigit():
            return int(value)
    value = (response.get("Expires") or "").strip()
    return int(value) if value.isdigit() else asked
