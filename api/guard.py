"""The middlewares every request passes: request ids and the error shape, then, for routes that need a
key, authentication, the rate limit, the scope check and idempotency, in that order.

Order matters to clients: a bad secret is 401 before anything else; the rate limit counts every
authenticated request (a key cannot probe scopes for free); a missing scope is 403 before any idempotency
key is taken; and only a request allowed to run claims its Idempotency-Key.
"""

from __future__ import annotations

import collections

from aiohttp import web

from api import idempotency
from api.auth import AUTHENTICATED, AuthFailed, authenticate, bearer_secret
from api.http import (
    API_KEY,
    CLOCK,
    REQUEST_ID,
    RESPONSE_HEADERS,
    STORE,
    ApiError,
    Handler,
    error_response,
    sane_request_id,
    spec_of,
)
from api.ratelimit import RateLimiter
from softswitch.events import new_id

LIMITER = web.AppKey("limiter", RateLimiter)
# Requests answered, by (method, route pattern, status): a dict increment per request, read by the metrics
# scrape (api.metrics). Routes are counted by pattern (`/v2/calls/{id}`), never by raw URL, and unknown
# methods as OTHER, so clients cannot grow the table without bound.
REQUEST_COUNTS = web.AppKey("request_counts", collections.Counter)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of requests no route matched (404, 405)


def route_label(request: web.Request) -> str:
    """The path pattern of the route a request matched, or UNMATCHED."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def _count(request: web.Request, status: int) -> None:
    method = request.method if request.method in HTTP_METHODS else "OTHER"
    request.app[REQUEST_COUNTS][(method, route_label(request), status)] += 1


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: give the request its id, turn every failure into the error shape, put `X-Request-Id`
    (and the rate limit headers, once known) on every response, and count it for the metrics."""
    request[REQUEST_ID] = sane_request_id(request.headers.get("X-Request-Id")) or new_id("req")
    request[RESPONSE_HEADERS] = {}
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect: pass it on with the id
            exc.headers["X-Request-Id"] = request[REQUEST_ID]
            _count(request, exc.status)
            raise
        response = error_response(request, exc)
    except Exception as exc:
        response = error_response(request, exc)
    _count(request, response.status)
    if not response.prepared:
        response.headers["X-Request-Id"] = request[REQUEST_ID]
        response.headers.update(request[RESPONSE_HEADERS])
    return response


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """For routes registered with a scope: authenticate, rate limit, check the scope, then run the handler
    (under its Idempotency-Key when a mutation sends one)."""
    spec = spec_of(request)
    if spec is None or spec.scope is None:
        return await handler(request)
    now = request.app[CLOCK]()
    try:
        key = authenticate(request.app[STORE], bearer_secret(request.headers.get("Authorization")), now)
    except AuthFailed as exc:
        challenge = {"WWW-Authenticate": 'Bearer realm="softswitch"'}
        raise ApiError(401, "unauthorized", str(exc), headers=challenge) from None
    request[API_KEY] = key
    state = request.app[LIMITER].take(key.id, now)
    request[RESPONSE_HEADERS].update(state.headers())
    if not state.allowed:
        raise ApiError(429, "rate_limited", f"rate limit of key {key.id} exceeded; retry after {state.retry_after} s")
    if spec.scope != AUTHENTICATED and not key.allows(spec.scope):
        raise ApiError(403, "forbidden", f"API key {key.id} lacks the {spec.scope} scope this needs")
    if spec.mutation and idempotency.HEADER in request.headers:
        return await idempotency.run(request, key, handler)
    return await handler(request)
