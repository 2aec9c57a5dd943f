"""The control API's HTTP conventions, shared by every resource module: errors, JSON responses, strict
body and query decoding, cursor pagination, timestamps, and the route table that registers a handler
together with its scope and schemas (what `api.guard` enforces and `api.openapi` documents).

A resource module reads like this:

    routes = RouteTable()

    @routes.route("POST", "/v2/calls", scope="calls:write", body=CreateCall, response=Call, status=201,
                  summary="Start an outbound call")
    async def create_call(request: web.Request) -> web.Response:
        body = await decode_body(request, CreateCall)
        if ...:
            raise ApiError(404, "not_found", "no such trunk", [("trunk", "unknown trunk 'x'")])
        return json_response(call, status=201)

and `create_app(store, cfg, routes=[routes.register])` serves it. Authentication, the rate limit, the
scope check and `Idempotency-Key` replay happen before the handler runs (`api.guard`), so a handler only
does its own work.

Errors always have the shape `{"error": {"code", "message", "request_id", "param_errors": [{"param",
"reason"}]}}`. A body that is not JSON is 400 `bad_request`; JSON that does not fit the Struct (unknown
field, wrong type, missing field, out of range) is 422 `invalid_param` with one entry per problem.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from aiohttp import web

from api.auth import AUTHENTICATED, SCOPES, AuthKey
from softswitch.config import Config, _dotted, _msgspec_path
from softswitch.store import CallRecord, Store

log = logging.getLogger("softswitch.api")

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What every handler may use, from `request.app[...]`.
STORE = web.AppKey("store", Store)  # the softswitch's store (use it on the event loop's thread only)
CONFIG = web.AppKey("config", Config)  # the whole config, [api] and the rest
CLOCK = web.AppKey("clock", Callable[[], float])  # Unix time now; tests pass a fake one to create_app
B2BUA = web.AppKey("b2bua", object)  # softswitch.b2bua.switch.B2bua: the live calls (set by the calls routes)


def _request_key(name: str, kind: type) -> Any:
    """A typed request key (aiohttp 3.11+ warns about plain strings); the plain name on older aiohttp."""
    return web.RequestKey(name, kind) if hasattr(web, "RequestKey") else name


REQUEST_ID = _request_key("request_id", str)  # this request's id (echoed from X-Request-Id or generated)
RESPONSE_HEADERS = _request_key("response_headers", dict)  # headers every response to it carries (rate limit)
API_KEY = _request_key("api_key", AuthKey)  # the key that authenticated the request

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    422: "invalid_param",
    429: "rate_limited",
    500: "server_error",
}
MUTATIONS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# -- errors ----------------------------------------------------------------------------------------
class ParamError(msgspec.Struct):
    param: str
    reason: str


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    request_id: str
    param_errors: list[ParamError]


class ErrorBody(msgspec.Struct):
    """What every error response holds."""

    error: ErrorDetail


class ApiError(Exception):
    """An error answered to the client: raise it from a handler (or anything it calls) and the client gets
    the documented error shape with this status and code. `param_errors` are (param, reason) pairs."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param_errors: Iterable[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.param_errors = [ParamError(p, r) for p, r in param_errors]
        self.headers = dict(headers or {})


def code_for(status: int) -> str:
    """The error code of a status without a more specific one (405, 413 and other 4xx are bad requests)."""
    return ERROR_CODES.get(status, "server_error" if status >= 500 else "bad_request")


def _http_error(request: web.Request, exc: web.HTTPException) -> ApiError:
    """aiohttp's own errors (no route, wrong method, body too large) in our shape."""
    if isinstance(exc, web.HTTPNotFound):
        return ApiError(404, "not_found", f"no such resource: {request.method} {request.path}")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return ApiError(
            405,
            "bad_request",
            f"method {request.method} is not allowed on {request.path} (allowed: {allowed})",
            headers={"Allow": allowed},
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return ApiError(413, "bad_request", "request body too large")
    return ApiError(exc.status, code_for(exc.status), exc.reason)


def error_response(request: web.Request, exc: BaseException) -> web.Response:
    """The response for anything a handler raised: ApiError as is, aiohttp's HTTP errors translated, and
    anything else (our fault) logged with its traceback and answered 500 without details."""
    if isinstance(exc, web.HTTPException):
        exc = _http_error(request, exc)
    if not isinstance(exc, ApiError):
        fields = {"request_id": request.get(REQUEST_ID), "method": request.method, "path": request.path}
        log.error("api.unhandled_exception", exc_info=exc, extra=fields)
        exc = ApiError(500, "server_error", "internal error; quote the request id if you report it")
    body = ErrorBody(ErrorDetail(exc.code, exc.message, request.get(REQUEST_ID, ""), exc.param_errors))
    return json_response(body, status=exc.status, headers=exc.headers)


# -- responses and timestamps ----------------------------------------------------------------------
_encoder = msgspec.json.Encoder()


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """`value` (a Struct, or anything msgspec encodes) as a JSON response."""
    return web.Response(body=_encoder.encode(value), status=status, headers=headers, content_type="application/json")


# RFC 3339 UTC in JSON ("2025-01-02T03:04:05.678Z"); the schema says so too.
Timestamp = Annotated[datetime, msgspec.Meta(extra_json_schema={"format": "date-time"})]


def timestamp(unix: float) -> datetime:
    """A Unix time (what the store keeps) as the UTC datetime a Struct's `Timestamp` field takes."""
    return datetime.fromtimestamp(round(unix, 3), UTC)


def timestamp_or_none(unix: float | None) -> datetime | None:
    return None if unix is None else timestamp(unix)


# -- request decoding ------------------------------------------------------------------------------
def _param_error(exc: msgspec.ValidationError, where: str) -> ApiError:
    """msgspec's 'reason - at `$.a[0].b`' as param `a[0].b` (`where` names the root: body or query)."""
    reason, path = _msgspec_path(str(exc))
    reason = reason.replace("Object contains unknown field", "unknown field").replace(
        "Object missing required field", "missing required field"
    )
    param = _dotted(path) if path else f"({where})"
    return ApiError(422, "invalid_param", f"invalid {where}: {param}: {reason}", [(param, reason)])


async def decode_body(request: web.Request, type_: type[T]) -> T:
    """The JSON body as `type_` (a Struct with `forbid_unknown_fields=True`): 400 `bad_request` if it is
    not JSON, 422 `invalid_param` naming the field if it does not fit. An empty body reads as `{}`, so a
    Struct whose fields all have defaults needs no body."""
    ctype = request.content_type  # application/octet-stream when the client sent no Content-Type
    raw = await request.read()
    if raw.strip() and ctype not in ("application/json", "application/octet-stream") and not ctype.endswith("+json"):
        raise ApiError(
            400, "bad_request", "send the body as JSON", [("Content-Type", f"must be application/json, not {ctype}")]
        )
    try:
        return msgspec.json.decode(raw if raw.strip() else b"{}", type=type_)
    except msgspec.ValidationError as exc:
        raise _param_error(exc, "body") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_request", f"request body is not valid JSON: {exc}") from None


def decode_query(request: web.Request, type_: type[T]) -> T:
    """The query string as `type_` (a Struct; strings are converted to its field types, unknown
    parameters refused); a repeated parameter becomes a list. 422 `invalid_param` naming the parameter."""
    raw: dict[str, Any] = {}
    for name in request.query:
        values = request.query.getall(name)
        raw[name] = values[0] if len(values) == 1 else values
    try:
        return msgspec.convert(raw, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise _param_error(exc, "query") from None


# -- pagination ------------------------------------------------------------------------------------
class PageQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Cursor pagination, Stripe's way: lists are newest first; ask for the next page with
    `starting_after=<id of the last item you got>`. Subclass it to add a list's filters."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=100, description="items per page, 1-100")] = 20
    starting_after: Annotated[
        str | None, msgspec.Meta(description="an item id: return the items created before it")
    ] = None


class Page(msgspec.Struct, Generic[T], kw_only=True):
    """One page of a list: `data` newest first, `has_more` true when a next page exists."""

    object: str = "list"
    data: list[T]
    has_more: bool


class TimeRangeQuery(PageQuery, kw_only=True):
    """A list filtered by creation time."""

    created_after: Timestamp | None = None  # Timestamp: the document says date-time (a bare datetime does not)
    created_before: Timestamp | None = None

    def bounds(self) -> dict[str, float | None]:
        """As the store's `after` / `before` (Unix seconds)."""
        return {
            "after": self.created_after.timestamp() if self.created_after else None,
            "before": self.created_before.timestamp() if self.created_before else None,
        }


def require_cursor(found: bool, cursor: str | None, what: str) -> None:
    """A `starting_after` that names nothing is the client's mistake, not an empty page: 422."""
    if cursor is not None and not found:
        raise ApiError(422, "invalid_param", f"no such {what}", [("starting_after", f"no {what} {cursor}")])


def paginate(items: Sequence[T], limit: int) -> Page[T]:
    """A page from up to `limit + 1` items fetched (the extra one only tells that more exist)."""
    return Page(data=list(items[:limit]), has_more=len(items) > limit)


# -- routes ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A registered route: what the guard enforces (`scope`: None for public routes, AUTHENTICATED for
    any valid key, else the scope needed) and what the OpenAPI document says about it."""

    method: str
    path: str
    handler: Handler
    scope: str | None
    summary: str
    body: type | None = None
    query: type | None = None
    response: Any = None
    status: int = 200
    content_type: str = "application/json"
    description: str = ""
    tags: tuple[str, ...] = ()

    @property
    def mutation(self) -> bool:
        return self.method in MUTATIONS


ROUTE_SPECS = web.AppKey("route_specs", dict)  # aiohttp route -> RouteSpec, in registration order


@dataclass
class RouteTable:
    """Routes of one resource module, registered on an app with `register` (the `create_app` hook)."""

    specs: list[RouteSpec] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        scope: str | None,
        summary: str,
        body: type | None = None,
        query: type | None = None,
        response: Any = None,
        status: int = 200,
        content_type: str = "application/json",
        description: str = "",
        tags: Iterable[str] = (),
    ) -> Callable[[Handler], Handler]:
        """Decorate a handler: `scope` is the scope a key needs (`api.auth.SCOPES`), AUTHENTICATED for any
        key, None for a public route; `body`/`query`/`response` are the Structs it decodes and answers
        (documented in OpenAPI; the handler still calls `decode_body`/`decode_query` itself)."""
        if scope is not None and scope != AUTHENTICATED and scope not in SCOPES:
            raise ValueError(f"route {method} {path}: unknown scope {scope!r}")

        def add(handler: Handler) -> Handler:
            self.specs.append(
                RouteSpec(
                    method.upper(),
                    path,
                    handler,
                    scope,
                    summary,
                    body,
                    query,
                    response,
                    status,
                    content_type,
                    description or (handler.__doc__ or "").strip(),
                    tuple(tags),
                )
            )
            return handler

        return add

    def register(self, app: web.Application) -> None:
        """Add every route to `app` and record it for the guard and the OpenAPI document."""
        specs = app.setdefault(ROUTE_SPECS, {})
        for spec in self.specs:
            specs[app.router.add_route(spec.method, spec.path, spec.handler)] = spec


def route_specs(app: web.Application) -> list[RouteSpec]:
    """Every route registered through a RouteTable, in order."""
    return list(app.get(ROUTE_SPECS, {}).values())


def spec_of(request: web.Request) -> RouteSpec | None:
    """The RouteSpec of the route a request matched (None for aiohttp's own, e.g. 404)."""
    return request.app.get(ROUTE_SPECS, {}).get(request.match_info.route)


# -- request ids -----------------------------------------------------------------------------------
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def sane_request_id(value: str | None) -> str | None:
    """A client's X-Request-Id worth echoing (short, no spaces or control characters), else None."""
    return value if value is not None and _SANE_ID.fullmatch(value) else None


def current_key(request: web.Request) -> AuthKey:
    """The key that authenticated this request (routes with a scope always have one)."""
    return request[API_KEY]


# -- the call a path names (/v2/calls/{id}/...) -----------------------------------------------------------
def call_record(request: web.Request) -> CallRecord:
    """The call of the path, as the key may see it (a live call's own record: the store may be up to a
    group commit behind): 404 otherwise."""
    rec = request.app[B2BUA].record(request.match_info["id"])
    if rec is None or rec.test != current_key(request).test:
        raise ApiError(404, "not_found", f"no call {request.match_info['id']}")
    return rec


def live_call(request: web.Request):
    """The live call of the path: 409 when it has ended (or not yet reached what the action needs)."""
    rec = call_record(request)
    call = request.app[B2BUA].calls.get(rec.id)
    if call is None or call.state == "ended":
        raise ApiError(409, "conflict", f"call {rec.id} has ended")
    return call


def answered_call(request: web.Request):
    """The live call of the path, answered: 409 otherwise."""
    call = live_call(request)
    if call.state != "answered":
        raise ApiError(409, "conflict", f"call {call.id} is not answered yet")
    return call
