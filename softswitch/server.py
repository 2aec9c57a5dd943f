"""`softswitch serve`: bind everything the config names, run until SIGINT/SIGTERM, then release it.

Start-up order is store, SIP listeners, API; shutdown runs in reverse and is bounded so the process
exits within two seconds of the signal.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from api import audio as api_audio
from api import calls as api_calls
from api import recordings as api_recordings
from api import scenarios as api_scenarios
from api import streams as api_streams
from api import webhooks as api_webhooks
from api.app import create_app
from api.health import Check
from api.metrics import Metrics, metrics_app
from media.amd import AmdParams
from media.engine import MediaEngine
from softswitch import __version__
from softswitch.b2bua.policy import from_config as call_policy
from softswitch.b2bua.switch import TEST_TRUNK, B2bua
from softswitch.config import Config, Trunk, parse_hostport, parse_listen
from softswitch.events import EventBus
from softswitch.gcpolicy import GcPolicy
from softswitch.keepalive import ContactKeepalive
from softswitch.logs import event
from softswitch.registrar import Registrar
from softswitch.router import Router
from softswitch.security import Security
from softswitch.sip.auth import Algorithm
from softswitch.sip.transaction import TimerConfig
from softswitch.store import Store
from softswitch.testmode import TestFarEnd
from softswitch.transport.endpoint import SipEndpoint
from softswitch.transport.sockets import BindError, os_reason
from softswitch.transport.tls import server_context
from softswitch.trunks import Trunks
from softswitch.uas import BasicUas
from softswitch.webhooks import WebhookDispatcher, new_secret

log = logging.getLogger("softswitch")

SHUTDOWN_BUDGET_S = 1.5


async def _start_api(
    cfg: Config,
    store: Store,
    checks: dict[str, Check],
    calls: B2bua,
    metrics: Metrics,
    webhooks: WebhookDispatcher | None = None,
) -> list[web.AppRunner]:
    """The control API, and the keyless metrics listener when `[api] metrics_listen` asks for one."""
    routes = [
        api_calls.register_with(calls),
        api_recordings.routes.register,
        api_streams.routes.register,
        api_scenarios.routes.register,
        api_audio.register,
        metrics.register,
        api_webhooks.register_with(webhooks),
    ]
    tls = server_context(cfg.api.tls_cert, cfg.api.tls_key) if cfg.api.tls_cert else None
    runners = [await _serve(create_app(store, cfg, checks=checks, routes=routes), "api", cfg.api.listen, tls)]
    if cfg.api.metrics_listen:
        try:
            runners.append(await _serve(metrics_app(metrics), "metrics", cfg.api.metrics_listen))
        except BindError:
            await runners[0].cleanup()
            raise
    return runners


async def _serve(app: web.Application, name: str, listen: str, tls: ssl.SSLContext | None = None) -> web.AppRunner:
    host, port = parse_hostport(listen)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=tls).start()
    except OSError as exc:
        await runner.cleanup()
        raise BindError(f"cannot listen on {name}:{listen}: {os_reason(exc)}") from None
    event(log, f"{name}.listening", addr=listen, scheme="https" if tls else "http")
    return runner


class Services:
    """Everything one softswitch runs, wired together; `start()` binds it all, `close()` releases it.

    `run` drives it from the CLI; tests and embedders can hold one directly (its `calls`, `store` and
    `bus` are the call control, the records and the events). `own_process`: the process is this switch's
    alone (`run`), so what its start-up leaves may leave the garbage collector for good (`GcPolicy`)."""

    def __init__(self, cfg: Config, *, own_process: bool = False):
        self.cfg = cfg
        self.store = Store.open(cfg.store.path)
        event(log, "store.opened", path=cfg.store.path, schema=self.store.version)
        timers = TimerConfig(cfg.sip.t1_ms / 1000, cfg.sip.t2_ms / 1000, cfg.sip.t4_ms / 1000)
        passwords = {
            u.name: u.password or {a: h for a, h in ((Algorithm.MD5, u.ha1_md5), (Algorithm.SHA256, u.ha1_sha256)) if h}
            for u in cfg.users
        }
        self.bus = EventBus()
        self.bus.subscribe(_log_event)
        router = Router(cfg)
        self.security = Security.from_config(cfg.security, self.store, self.bus, router.trusted)
        self.registrar = Registrar(
            self.store,
            passwords.get,
            cfg.sip.domain,
            algorithms=cfg.sip.auth_algorithms,
            on_auth_failure=self.security.auth_failed,
        )
        media_host = parse_listen(cfg.sip.listen[0]).host if cfg.sip.listen else "127.0.0.1"
        self.engine = MediaEngine(cfg.rtp_port_range(), host=media_host)
        self.calls = B2bua(
            engine=self.engine,
            store=self.store,
            bus=self.bus,
            router=router,
            registrar=self.registrar,
            domain=cfg.sip.domain,
            user_agent=cfg.sip.user_agent,
            ring_timeout_s=cfg.calls.ring_timeout_s,
            max_duration_s=cfg.calls.max_duration_s,
            session_interval_s=cfg.calls.session_expires_s,
            inband_dtmf=cfg.calls.inband_dtmf,
            amd=AmdParams(**cfg.amd),
            recordings_dir=cfg.media.recordings_dir,
            policy=call_policy(cfg),
        )
        self.calls.security = self.security
        self.calls.srtp_parties = {("user", u.name) for u in cfg.users if u.srtp} | {
            ("trunk", t.name) for t in cfg.trunks if t.srtp
        }
        self.sip = SipEndpoint(
            BasicUas(cfg.sip.user_agent, self.registrar, calls=self.calls),
            timers=timers,
            max_message_bytes=cfg.sip.max_message_bytes,
            tls_cert=cfg.sip.tls_cert or None,
            tls_key=cfg.sip.tls_key or None,
            tls_client_ca=cfg.sip.tls_client_ca or None,
            drop_scanners=cfg.sip.drop_scanners,
            security=self.security,
            max_transactions=cfg.sip.max_transactions,
            report_terminated=False,  # BasicUas and the B2BUA never wait for a transaction's end
        )
        self.calls.endpoint = self.sip
        self.trunks = Trunks(self.sip, cfg.trunks, domain=cfg.sip.domain, user_agent=cfg.sip.user_agent)
        self.calls.trunks = self.trunks
        names = [u.name for u in cfg.users]
        self.keepalive = ContactKeepalive(self.sip, self.store, names, cfg.sip.contact_ping_s)
        self.test_far_end = TestFarEnd()
        self.webhooks = WebhookDispatcher(
            self.store,
            self.bus,
            allow_private=cfg.webhooks.allow_private,
            ca_file=cfg.webhooks.ca_file,
            timeout_s=cfg.webhooks.timeout_s,
            concurrency=cfg.webhooks.concurrency,
            test_of=self._test_event,
        )
        self.gc = GcPolicy(retire_startup=own_process)
        self.metrics = Metrics(self.calls, self.sip, self.bus, self.webhooks, gc_policy=self.gc)
        self.calls.streams.allow_private = cfg.webhooks.allow_private
        self.calls.flows.allow_private = cfg.webhooks.allow_private
        self.calls.streams.ca_file = self.calls.flows.ca_file = cfg.webhooks.ca_file
        self.calls.flows.route_secret = self.store.setting("flow_secret", new_secret)
        self.calls.flows.api_base = ("https://" if cfg.api.tls_cert else "http://") + cfg.api.listen
        self.runners: list[web.AppRunner] = []
        self._gc_task: asyncio.Task | None = None

    async def start(self) -> None:
        """Bind the SIP listeners and the API, start the background tasks; BindError if a port is taken."""
        self.store.checkpoint_in_background()
        for item in self.cfg.sip.listen:
            await self.sip.listen(parse_listen(item))
        self.trunks.start()
        self.security.start()
        self.keepalive.start()
        await self._start_test_far_end()
        await self.webhooks.start()
        self.calls.close_orphans()  # after the dispatcher subscribed: their call.completed reach webhooks
        self.runners = await _start_api(
            self.cfg, self.store, self.ready_checks(), self.calls, self.metrics, self.webhooks
        )
        loop = asyncio.get_running_loop()
        self.gc.start(loop.time())
        self._gc_task = loop.create_task(self.gc.run(loop.time))
        event(log, "softswitch.started", version=__version__)

    async def _start_test_far_end(self) -> None:
        """The simulated far end test API keys' calls reach (softswitch.testmode), as a trunk of its own that
        no route names: only `B2bua.originate(test=True)` sends calls there."""
        host, port = await self.test_far_end.start()
        self.calls.router.trust(host)  # its answers come from this process, as fast as test calls go
        self.calls.router.trunks[TEST_TRUNK] = Trunk(name=TEST_TRUNK, address=f"{host}:{port}", ping_interval_s=0)

    def _test_event(self, ev) -> bool:
        """Whether an event is a test call's (webhooks of test keys get those, of live keys the others)."""
        rec = self.calls.record(ev.call_id) if ev.call_id else None
        return bool(rec and rec.test)

    def ready_checks(self) -> dict[str, Check]:
        """What `/health/ready` asks: the store answers a query, the media thread has run (its CPU clock
        reads 0 once stopped), and SIP has listeners."""
        return {
            "store": lambda: self.store.version > 0,
            "media": lambda: self.engine.cpu_seconds() > 0,
            "sip": lambda: bool(self.sip._udp or self.sip._servers),
        }

    async def close(self) -> None:
        """End every call, stop the tasks and listeners (bounded), then the media engine and the store."""
        if self._gc_task is not None:
            self._gc_task.cancel()
            self.gc.stop()
        try:
            async with asyncio.timeout(SHUTDOWN_BUDGET_S):
                self.calls.shutdown()
                await self.trunks.close()
                await self.keepalive.close()
                await self.security.close()
                await asyncio.sleep(0.05)  # let the BYEs leave
                for runner in self.runners:
                    await runner.cleanup()
                await self.sip.close()
                await self.test_far_end.close()
                await self.calls.streams.close()
                await self.calls.flows.close()
        except TimeoutError:
            event(log, "softswitch.shutdown_timeout", level=logging.WARNING)
        finally:
            self.calls.flush()
            self.metrics.close()
            self.engine.close()
            await self.webhooks.close()  # what it had not sent stays pending in the store, for the next start
            self.store.close()


async def run(cfg: Config, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or a signal arrives); raises BindError if a port is taken."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    services = Services(cfg, own_process=True)
    try:
        await services.start()
        await stop.wait()
        event(log, "softswitch.stopping")
    finally:
        await services.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    event(log, "softswitch.stopped")


def _log_event(ev) -> None:
    """Every bus event in the log (debug level): the audit trail operators and tests read."""
    if log.isEnabledFor(logging.DEBUG):
        event(
            log, ev.type, level=logging.DEBUG, call=ev.call_id, **{k: v for k, v in ev.data.items() if k != "call_id"}
        )


def install_loop_policy() -> str:
    """Use uvloop where installed; returns the loop's name for the log."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
