"""`Idempotency-Key` on mutations: a retried request gets the first one's response instead of running twice.

Keys are per API key (two clients cannot collide) and kept 24 h in the store, so a restart keeps them.
The fingerprint of a request is SHA-256 over its method, path with query, and body bytes:

- first use: a `pending` row is written before the handler runs, then the response (status, the handler's
  own headers, body) is saved with it;
- same key, same request, finished: that response is replayed, with `Idempotent-Replayed: true` (a fresh
  `X-Request-Id` and rate limit headers, as for any response);
- same key, other request: 409 `conflict`;
- same key while the first is still executing: 409 `conflict` at once, with `Retry-After: 1` (Stripe does
  the same); the two never both execute, across processes too, since the claim is one SQLite transaction.

A request refused as malformed (400/422: it never executed) releases its key, so the corrected request may
use it; every other outcome, 5xx included, is kept, since what happened before a 5xx is not known. A pending
row older than `LOCK_S` is taken to be a crashed attempt and may be claimed again. Expired rows are purged
hourly (`purge_loop`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator

from aiohttp import web

from api.auth import AuthKey
from api.http import CLOCK, STORE, ApiError, Handler, error_response
from softswitch.logs import event

log = logging.getLogger("softswitch.api")

HEADER = "Idempotency-Key"
TTL_S = 24 * 3600.0
LOCK_S = 60.0
PURGE_EVERY_S = 3600.0
KEY_PATTERN = r"[\x21-\x7e]{1,255}"  # printable ASCII, no spaces (the OpenAPI document says so too)
_KEY = re.compile(KEY_PATTERN)
_NOT_REPLAYED = frozenset({"content-length", "date", "server", "x-request-id", "transfer-encoding"})


def _fingerprint(request: web.Request, body: bytes) -> str:
    h = hashlib.sha256(f"{request.method} {request.rel_url}\n".encode())
    h.update(body)
    return h.hexdigest()


def _replay(status: int, headers: list[tuple[str, str]], body: bytes) -> web.Response:
    response = web.Response(status=status, body=body)
    for name, value in headers:
        response.headers.add(name, value)
    response.headers["Idempotent-Replayed"] = "true"
    return response


async def run(request: web.Request, key: AuthKey, handler: Handler) -> web.StreamResponse:
    """Run `handler` for a mutation under its Idempotency-Key (the header must be present)."""
    idem = request.headers[HEADER]
    if not _KEY.fullmatch(idem):
        raise ApiError(
            400, "bad_request", "bad Idempotency-Key", [(HEADER, "1 to 255 printable ASCII characters, no spaces")]
        )
    store, now = request.app[STORE], request.app[CLOCK]()
    fingerprint = _fingerprint(request, await request.read())
    held = store.claim_idempotency(key.id, idem, fingerprint, now, lock_s=LOCK_S, ttl_s=TTL_S)
    if held is not None:
        if held.fingerprint != fingerprint:
            raise ApiError(
                409,
                "conflict",
                "this Idempotency-Key was used with a different request (method, path or body); use a new key",
                [(HEADER, "reused with a different request")],
            )
        if held.state == "pending":
            raise ApiError(
                409,
                "conflict",
                "a request with this Idempotency-Key is still executing; retry later to get its response",
                [(HEADER, "in use by a request that has not finished")],
                headers={"Retry-After": "1"},
            )
        assert held.status is not None
        return _replay(held.status, held.headers, held.body)
    try:  # cancelled (shutdown): the row stays pending, and the lock's end frees it
        response = await handler(request)
    except Exception as exc:
        response = error_response(request, exc)
    if response.status in (400, 422) or not isinstance(response, web.Response) or response.prepared:
        store.release_idempotency(key.id, idem)  # refused before executing, or a stream we cannot replay
        return response
    body = response.body if isinstance(response.body, bytes) else b""
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _NOT_REPLAYED]
    if "Content-Type" not in response.headers and response.content_type:
        headers.append(("Content-Type", response.content_type))
    store.finish_idempotency(key.id, idem, response.status, headers, body)
    return response


async def purge_loop(app: web.Application) -> AsyncIterator[None]:
    """`cleanup_ctx` hook: purge expired keys at start and every PURGE_EVERY_S while the app runs."""

    async def loop() -> None:
        while True:
            purged = app[STORE].purge_idempotency(app[CLOCK]())
            if purged:
                event(log, "api.idempotency_purged", rows=purged)
            await asyncio.sleep(PURGE_EVERY_S)

    task = asyncio.get_running_loop().create_task(loop())
    yield
    task.cancel()
