"""OPTIONS keep-alive of registered contacts (`[sip] contact_ping_s`).

A softphone behind NAT is reachable only while its NAT binding lives; an OPTIONS every few tens of
seconds keeps the binding open, and a contact that stops answering (Timer F, or its TCP connection gone)
is removed from the location store at once instead of lingering until its registration expires, so calls
stop forking to it (what Kamailio's nathelper pings and Asterisk's qualify do). The ping goes over the
flow the REGISTER came on, like calls do.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from softswitch.logs import event
from softswitch.sip.dialog import new_tag
from softswitch.sip.message import Request
from softswitch.store import Binding, Store

log = logging.getLogger("softswitch.keepalive")


class ContactKeepalive:
    def __init__(
        self, endpoint, store: Store, users: list[str], interval_s: float, *, clock: Callable[[], float] = time.time
    ):
        self.endpoint = endpoint
        self.store = store
        self.users = users
        self.interval_s = interval_s
        self.clock = clock
        self.removed = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.ping_all()

    async def ping_all(self) -> int:
        """Ping every live contact once; returns how many were removed for not answering."""
        now = self.clock()
        bindings = [b for user in self.users for b in self.store.bindings(user, now)]
        results = await asyncio.gather(*(self._ping(b) for b in bindings))
        removed = 0
        for binding, alive in zip(bindings, results, strict=True):
            if not alive:
                self.store.delete_binding(binding.user, binding.contact)
                event(log, "registrar.contact_lost", level=logging.INFO, user=binding.user, contact=binding.contact)
                removed += 1
        self.removed += removed
        return removed

    async def _ping(self, binding: Binding) -> bool:
        host, _, port = binding.source.rpartition(":")
        flow = self.endpoint.flow_to(binding.transport, host.strip("[]"), int(port))
        if flow is None:
            return False  # its connection is gone: nothing reaches it any more
        local_host, local_port = flow.local
        request = Request(
            "OPTIONS",
            binding.contact,
            [
                ("Max-Forwards", "70"),
                ("From", f"<sip:keepalive@{local_host}:{local_port}>;tag={new_tag()}"),
                ("To", f"<{binding.contact}>"),
                ("Call-ID", secrets.token_hex(12)),
                ("CSeq", "1 OPTIONS"),
            ],
        )
        return await self.endpoint.final_response(request, flow) is not None
