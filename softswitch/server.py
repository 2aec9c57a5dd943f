"""`softswitch serve`: bind everything the config names, run until SIGINT/SIGTERM, then release it.

Start-up order is store, SIP listeners, API; shutdown runs in reverse and is bounded so the process
exits within two seconds of the signal.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from api.app import create_app
from media.engine import MediaEngine
from softswitch import __version__
from softswitch.b2bua.switch import B2bua
from softswitch.config import Config, parse_hostport, parse_listen
from softswitch.events import EventBus
from softswitch.keepalive import ContactKeepalive
from softswitch.logs import event
from softswitch.registrar import Registrar
from softswitch.router import Router
from softswitch.sip.transaction import TimerConfig
from softswitch.store import Store
from softswitch.transport.endpoint import SipEndpoint
from softswitch.transport.sockets import BindError, os_reason
from softswitch.trunks import Trunks
from softswitch.uas import BasicUas

log = logging.getLogger("softswitch")

SHUTDOWN_BUDGET_S = 1.5


async def _start_api(cfg: Config) -> web.AppRunner:
    host, port = parse_hostport(cfg.api.listen)
    runner = web.AppRunner(create_app(), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, shutdown_timeout=0.5).start()
    except OSError as exc:
        await runner.cleanup()
        raise BindError(f"cannot listen on api:{cfg.api.listen}: {os_reason(exc)}") from None
    event(log, "api.listening", addr=cfg.api.listen)
    return runner


async def run(cfg: Config, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or a signal arrives); raises BindError if a port is taken."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = Store.open(cfg.store.path)
    event(log, "store.opened", path=cfg.store.path, schema=store.version)
    timers = TimerConfig(cfg.sip.t1_ms / 1000, cfg.sip.t2_ms / 1000, cfg.sip.t4_ms / 1000)
    passwords = {u.name: u.password for u in cfg.users}
    registrar = Registrar(store, passwords.get, cfg.sip.domain, algorithms=cfg.sip.auth_algorithms)
    media_host = parse_listen(cfg.sip.listen[0]).host if cfg.sip.listen else "127.0.0.1"
    engine = MediaEngine(cfg.rtp_port_range(), host=media_host)
    bus = EventBus()
    bus.subscribe(_log_event)
    calls = B2bua(
        engine=engine,
        store=store,
        bus=bus,
        router=Router(cfg),
        registrar=registrar,
        domain=cfg.sip.domain,
        user_agent=cfg.sip.user_agent,
        ring_timeout_s=cfg.calls.ring_timeout_s,
        max_duration_s=cfg.calls.max_duration_s,
        session_interval_s=cfg.calls.session_expires_s,
    )
    calls.close_orphans()
    uas = BasicUas(cfg.sip.user_agent, registrar, calls=calls)
    sip = SipEndpoint(
        uas,
        timers=timers,
        max_message_bytes=cfg.sip.max_message_bytes,
        tls_cert=cfg.sip.tls_cert or None,
        tls_key=cfg.sip.tls_key or None,
    )
    calls.endpoint = sip
    runner: web.AppRunner | None = None
    trunks: Trunks | None = None
    keepalive: ContactKeepalive | None = None
    try:
        for item in cfg.sip.listen:
            await sip.listen(parse_listen(item))
        trunks = Trunks(sip, cfg.trunks, domain=cfg.sip.domain, user_agent=cfg.sip.user_agent)
        calls.trunks = trunks
        trunks.start()
        keepalive = ContactKeepalive(sip, store, [u.name for u in cfg.users], cfg.sip.contact_ping_s)
        keepalive.start()
        runner = await _start_api(cfg)
        event(log, "softswitch.started", version=__version__)
        await stop.wait()
        event(log, "softswitch.stopping")
    finally:
        try:
            async with asyncio.timeout(SHUTDOWN_BUDGET_S):
                calls.shutdown()
                if trunks is not None:
                    await trunks.close()
                if keepalive is not None:
                    await keepalive.close()
                await asyncio.sleep(0.05)  # let the BYEs leave
                if runner is not None:
                    await runner.cleanup()
                await sip.close()
        except TimeoutError:
            event(log, "softswitch.shutdown_timeout", level=logging.WARNING)
        finally:
            engine.close()
            store.close()
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
