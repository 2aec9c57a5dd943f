"""The control API application. Resources arrive with the API issue; `/health` serves now."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from softswitch import __version__

STARTED_AT = web.AppKey("started_at", float)


class Health(msgspec.Struct):
    status: str
    version: str
    uptime_s: float


async def health(request: web.Request) -> web.Response:
    body = Health("ok", __version__, round(time.monotonic() - request.app[STARTED_AT], 3))
    return web.Response(body=msgspec.json.encode(body), content_type="application/json")


def create_app() -> web.Application:
    app = web.Application()
    app[STARTED_AT] = time.monotonic()
    app.router.add_get("/health", health)
    return app
