"""`/v2/keys` (admin keys manage API keys) and `/v2/account` (any key: who am I, how much rate is left)."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import msgspec
from aiohttp import web

from api import auth
from api.guard import LIMITER
from api.http import (
    CLOCK,
    STORE,
    ApiError,
    Page,
    PageQuery,
    RouteTable,
    Timestamp,
    current_key,
    decode_body,
    decode_query,
    json_response,
    paginate,
    timestamp,
    timestamp_or_none,
)
from softswitch.store import ApiKeyRecord

Scope = Literal["calls:read", "calls:write", "recordings:read", "recordings:write", "webhooks:write", "admin"]
assert set(get_args(Scope)) == set(auth.SCOPES)

routes = RouteTable()


class ApiKey(msgspec.Struct, kw_only=True):
    """An API key, without its secret."""

    id: str
    object: str = "api_key"
    name: str
    scopes: list[str]
    test: bool
    prefix: Annotated[str, msgspec.Meta(description="the first characters of the current secret")]
    created_at: Timestamp
    revoked_at: Timestamp | None = None
    previous_secret_expires_at: Annotated[
        Timestamp | None, msgspec.Meta(description="when the secret replaced by the last rotation stops working")
    ] = None


class ApiKeyWithSecret(ApiKey, kw_only=True):
    """An API key with its secret: answered once, when the key is made or rotated."""

    secret: str


class CreateKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1)]
    test: bool = False


class RotateKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    grace_s: Annotated[
        float, msgspec.Meta(ge=0, description="how long the old secret keeps working, in seconds (default 24 h)")
    ] = auth.DEFAULT_GRACE_S


class RateLimit(msgspec.Struct):
    limit: int
    remaining: int
    reset: Annotated[int, msgspec.Meta(description="Unix time (s) when the bucket is full again")]


class Account(msgspec.Struct, kw_only=True):
    """The key making the request."""

    object: str = "account"
    id: str
    name: str
    scopes: list[str]
    test: bool
    rate_limit: RateLimit


def key_view(key: ApiKeyRecord) -> ApiKey:
    return ApiKey(
        id=key.id,
        name=key.name,
        scopes=key.scopes,
        test=key.test,
        prefix=key.prefix,
        created_at=timestamp(key.created_at),
        revoked_at=timestamp_or_none(key.revoked_at),
        previous_secret_expires_at=timestamp_or_none(key.previous_expires_at),
    )


def _with_secret(key: ApiKeyRecord, secret: str) -> ApiKeyWithSecret:
    return ApiKeyWithSecret(**msgspec.structs.asdict(key_view(key)), secret=secret)


@routes.route("GET", "/v2/keys", scope="admin", query=PageQuery, response=Page[ApiKey], summary="List API keys")
async def list_keys(request: web.Request) -> web.Response:
    """Newest first, revoked keys included."""
    q = decode_query(request, PageQuery)
    keys = request.app[STORE].list_api_keys(limit=q.limit + 1, starting_after=q.starting_after)
    return json_response(paginate([key_view(k) for k in keys], q.limit))


@routes.route(
    "POST", "/v2/keys", scope="admin", body=CreateKey, response=ApiKeyWithSecret, status=201, summary="Create a key"
)
async def create_key(request: web.Request) -> web.Response:
    """The answer holds the secret; it is stored hashed and never shown again."""
    body = await decode_body(request, CreateKey)
    key, secret = auth.create_key(request.app[STORE], body.name, list(body.scopes), body.test, request.app[CLOCK]())
    return json_response(_with_secret(key, secret), status=201)


@routes.route("POST", "/v2/keys/{id}/revoke", scope="admin", response=ApiKey, summary="Revoke a key")
async def revoke_key(request: web.Request) -> web.Response:
    """The key stops working at once, every secret of it; revoking again changes nothing."""
    try:
        key = auth.revoke_key(request.app[STORE], request.match_info["id"], request.app[CLOCK]())
    except auth.KeyNotFound:
        raise _no_key(request) from None
    return json_response(key_view(key))


@routes.route(
    "POST", "/v2/keys/{id}/rotate", scope="admin", body=RotateKey, response=ApiKeyWithSecret, summary="Rotate a key"
)
async def rotate_key(request: web.Request) -> web.Response:
    """A new secret for the key; the previous one keeps working for `grace_s` seconds."""
    body = await decode_body(request, RotateKey)
    try:
        key, secret = auth.rotate_key(request.app[STORE], request.match_info["id"], body.grace_s, request.app[CLOCK]())
    except auth.KeyNotFound:
        raise _no_key(request) from None
    except auth.KeyRevoked:
        raise ApiError(409, "conflict", f"API key {request.match_info['id']} is revoked") from None
    return json_response(_with_secret(key, secret))


def _no_key(request: web.Request) -> ApiError:
    return ApiError(404, "not_found", f"no API key {request.match_info['id']}", [("id", "no such key")])


@routes.route("GET", "/v2/account", scope=auth.AUTHENTICATED, response=Account, summary="The calling key")
async def account(request: web.Request) -> web.Response:
    """The key's id, name, scopes and mode, and its rate limit after this request."""
    key = current_key(request)
    state = request.app[LIMITER].peek(key.id, request.app[CLOCK]())
    limit = RateLimit(state.limit, state.remaining, state.reset)
    scopes = sorted(key.scopes, key=auth.SCOPES.index)
    return json_response(Account(id=key.id, name=key.name, scopes=scopes, test=key.test, rate_limit=limit))
