"""The control API application: `create_app` wires the store, the config, readiness checks and every
resource's routes behind the shared middlewares (`api.guard`).

Resources are added without editing this module: pass `routes=[calls.routes.register, ...]`, callables
that take the app and register routes on it (`api.http.RouteTable.register`, or any function that also
sets the app keys its handlers need).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Mapping

from aiohttp import web

from api import docs, health, idempotency, keys, openapi
from api.guard import LIMITER, REQUEST_COUNTS, errors, guard
from api.health import CHECKS, STARTED_AT, Check
from api.http import CLOCK, CONFIG, STORE
from api.ratelimit import RateLimiter
from softswitch.config import Config
from softswitch.store import Store

__all__ = ["STARTED_AT", "create_app"]

CLIENT_MAX_SIZE = 1024 * 1024  # request bodies larger than this are refused (413, bad_request)


def create_app(
    store: Store,
    config: Config | None = None,
    *,
    checks: Mapping[str, Check] | None = None,
    routes: Iterable[Callable[[web.Application], None]] = (),
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The API app over `store` (used on the event loop's thread only). `checks` are `/health/ready`'s
    named checks; `routes` register more resources; `clock` (Unix seconds) drives key expiry, rate limits
    and idempotency expiry, so tests can move time."""
    config = config or Config()
    app = web.Application(middlewares=[errors, guard], client_max_size=CLIENT_MAX_SIZE)
    app[STARTED_AT] = time.monotonic()
    app[STORE] = store
    app[CONFIG] = config
    app[CLOCK] = clock
    app[CHECKS] = dict(checks or {})
    app[LIMITER] = RateLimiter(config.api.rate_limit_per_s, config.api.rate_limit_burst)
    app[openapi.CACHE] = {}
    app[REQUEST_COUNTS] = collections.Counter()  # what the metrics report (api.metrics)
    for register in (health.routes.register, keys.routes.register, openapi.routes.register, docs.routes.register):
        register(app)
    for register in routes:
        register(app)
    app.cleanup_ctx.append(idempotency.purge_loop)
    return app
