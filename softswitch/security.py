"""Security events of the SIP edge: logged, counted for `/metrics`, published as `security.alert`.

`Security` wraps the sans-IO `SourceGuard` with the process's clock, store and bus. What happens:

- `admit` runs for every message before it is parsed (the endpoint drops what it refuses);
- `auth_failed` counts a failed digest from a source, and bans it at `[security] fail_limit`;
- `refused` reports a call the toll-fraud rules turned down (softswitch.b2bua.policy);
- bans go to the store, so they survive a restart and `softswitch bans list|lift` (another process) sees
  and changes them; the server re-reads them every `SYNC_S`.

Alerts are capped at `[security] alerts_per_s` (token bucket): a spoofed flood's failures must not become
a flood of webhooks. The rest are still logged and counted (`alerts_suppressed`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from softswitch.b2bua.policy import Refusal
from softswitch.config import SecurityConfig
from softswitch.events import EventBus
from softswitch.guard import ADMIT, Ban, GuardPolicy, SourceGuard, Verdict
from softswitch.logs import event
from softswitch.store import Store

log = logging.getLogger("softswitch.security")

SYNC_S = 2.0  # bans are re-read from the store this often (lifted by the CLI, expired)


class Security:
    def __init__(
        self,
        guard: SourceGuard,
        store: Store,
        bus: EventBus,
        *,
        ban_action: str = "drop",
        alerts_per_s: float = 20.0,
        wall: Callable[[], float] = time.time,
    ):
        self.guard = guard
        self.store = store
        self.bus = bus
        self.ban_action = ban_action
        self.wall = wall
        self.counters: collections.Counter[str] = collections.Counter()
        self._alert_rate = alerts_per_s
        self._alert_tokens = alerts_per_s
        self._alert_at = 0.0
        self._task: asyncio.Task | None = None
        self._muted: dict[str, tuple[float, str]] = {}  # host -> (refused until, the counter of its drops)
        guard.replace_bans(store.bans(wall()))

    @classmethod
    def from_config(cls, sec: SecurityConfig, store: Store, bus: EventBus, trusted: Callable[[str], bool]) -> Security:
        policy = GuardPolicy(
            sec.rate_per_s, sec.rate_burst, sec.fail_limit, sec.fail_window_s, sec.ban_s, sec.max_sources
        )
        return cls(SourceGuard(policy, trusted), store, bus, ban_action=sec.ban_action, alerts_per_s=sec.alerts_per_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sync_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- per message -------------------------------------------------------------------------------------
    def muted(self, host: str) -> bool:
        """The fast path, asked for every datagram before anything else is made of it: True (and counted)
        while `host` is known to be refused (over its rate until its next token, or banned with
        `ban_action` drop). A flood from one address then costs a dict lookup per datagram."""
        entry = self._muted.get(host)
        if entry is None:
            return False
        if entry[0] <= self.wall():
            del self._muted[host]
            return False
        self.counters[entry[1]] += 1
        return True

    def admit(self, host: str) -> Verdict:
        """The endpoint asks before parsing: ADMIT, or why the message is dropped (or, banned with
        `ban_action` 403, answered 403)."""
        verdict = self.guard.admit(host, self.wall())
        if verdict is ADMIT:
            return verdict
        if verdict is Verdict.BANNED:
            self.counters["banned_dropped"] += 1
            if self.ban_action == "drop":
                self._mute(host, "banned_dropped")
            return verdict
        self.counters["rate_limited"] += 1
        self._mute(host, "rate_limited")
        if self.guard.limited_first(host):
            rate = f"{self.guard.policy.rate_per_s:g}/s"
            self._alert("rate_limited", host, level=logging.WARNING, detail=f"over {rate}: messages dropped")
        return verdict

    def _mute(self, host: str, counter: str) -> None:
        if len(self._muted) >= self.guard.policy.max_sources:
            self._muted.clear()  # a flood from as many addresses: start over (each gets refused once more)
        self._muted[host] = (self.guard.quiet_until(host), counter)

    def banned(self, host: str) -> bool:
        return self.guard.banned(host, self.wall())

    # -- authentication ------------------------------------------------------------------------------------
    def auth_failed(self, host: str, user: str | None, method: str, reason: str) -> None:
        now = self.wall()
        self.counters["auth_failures"] += 1
        self._alert("auth_failed", host, user=user or "", detail=f"{method}: {reason}")
        ban = self.guard.failed(host, now)
        if ban is not None:
            self._banned(ban)

    def ban(self, host: str, reason: str, *, seconds: float | None = None) -> Ban:
        now = self.wall()
        ban = self.guard.ban(host, now, reason, until=None if seconds is None else now + seconds)
        self._banned(ban)
        return ban

    def _banned(self, ban: Ban) -> None:
        self.counters["bans"] += 1
        self.store.save_ban(ban)
        self._alert("banned", ban.address, level=logging.WARNING, detail=ban.reason, until=ban.until)

    def lift(self, host: str) -> bool:
        self.store.delete_ban(host)
        self._muted.pop(host, None)
        return self.guard.lift(host)

    # -- toll fraud -----------------------------------------------------------------------------------------
    def refused(self, refusal: Refusal, *, source: str, origin: tuple[str, str], number: str, call_id: str) -> None:
        self.counters[f"refused_{refusal.kind}"] += 1
        kind, name = origin
        self._alert(
            "call_refused",
            source,
            level=logging.WARNING,
            detail=refusal.detail,
            rule=refusal.kind,
            origin=f"{kind}:{name}" if name else kind,
            number=number,
            call_id=call_id,
        )

    # -- out --------------------------------------------------------------------------------------------
    def _alert(self, kind: str, source: str, *, level: int = logging.INFO, **data) -> None:
        event(log, f"security.{kind}", level=level, source=source, **data)
        now = time.monotonic()
        self._alert_tokens = min(self._alert_rate, self._alert_tokens + (now - self._alert_at) * self._alert_rate)
        self._alert_at = now
        if self._alert_tokens < 1.0:
            self.counters["alerts_suppressed"] += 1
            return
        self._alert_tokens -= 1.0
        self.bus.publish("security.alert", {"kind": kind, "source": source, **data})

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            try:
                self.guard.replace_bans(self.store.bans(self.wall()))
                self._muted = {h: e for h, e in self._muted.items() if e[1] != "banned_dropped"}  # lifted ones
            except Exception as exc:  # a locked or busy store: next time
                event(log, "security.sync_failed", level=logging.WARNING, reason=str(exc))
