"""`/health` (the process answers) and `/health/ready` (the parts it needs work), both without a key.

Readiness runs the named checks given to `create_app`, e.g. `{"store": ..., "media": ..., "sip": ...}`:
each a callable returning True/False (or an awaitable of one); raising or taking longer than
CHECK_TIMEOUT_S counts as failing (the exception is logged, not shown). 200 when all pass, else 503
naming the failing ones, so a load balancer or orchestrator can route around a broken node.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import msgspec
from aiohttp import web

from api.http import RouteTable, json_response
from softswitch import __version__

log = logging.getLogger("softswitch.api")

Check = Callable[[], bool | Awaitable[bool]]
CHECKS = web.AppKey("ready_checks", Mapping)
STARTED_AT = web.AppKey("started_at", float)
CHECK_TIMEOUT_S = 2.0

routes = RouteTable()


class Health(msgspec.Struct):
    status: str
    version: str
    uptime_s: float


class Readiness(msgspec.Struct):
    status: str  # "ready" or "not_ready"
    checks: dict[str, str]  # check name -> "ok" or "failing"
    failing: list[str]


@routes.route("GET", "/health", scope=None, response=Health, summary="Liveness", tags=["health"])
async def health(request: web.Request) -> web.Response:
    """The process is up: version and uptime."""
    return json_response(Health("ok", __version__, round(time.monotonic() - request.app[STARTED_AT], 3)))


async def _passes(name: str, check: Check) -> bool:
    try:
        result = check()
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, CHECK_TIMEOUT_S)
        return result is True
    except Exception:
        log.warning("api.ready_check_failed", exc_info=True, extra={"check": name})
        return False


@routes.route(
    "GET", "/health/ready", scope=None, response=Readiness, summary="Readiness (503 if a check fails)", tags=["health"]
)
async def ready(request: web.Request) -> web.Response:
    """Runs every readiness check; 503 names the failing ones."""
    checks: Mapping[str, Check] = request.app[CHECKS]
    results = await asyncio.gather(*(_passes(name, check) for name, check in checks.items()))
    states = {name: "ok" if ok else "failing" for name, ok in zip(checks, results, strict=True)}
    failing = [name for name, state in states.items() if state != "ok"]
    body = Readiness("not_ready" if failing else "ready", states, failing)
    return json_response(body, status=503 if failing else 200)
