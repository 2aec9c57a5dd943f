"""The OpenAPI 3.1 document, generated from the registered routes (`api.http.RouteTable`) and their msgspec
Structs, so the document cannot drift from what the handlers decode and answer. Served at
`/v2/openapi.json`; `/docs` renders the same document as HTML (`api.docs`).

Each operation carries its scope twice: `x-scope` for tools and a sentence in its description for people.
"""

from __future__ import annotations

import re
from typing import Any, get_args

import msgspec
from aiohttp import web

from api.auth import ADMIN, AUTHENTICATED
from api.http import ErrorBody, RouteSpec, RouteTable, json_response, route_specs
from api.idempotency import KEY_PATTERN
from softswitch import __version__
from softswitch.flows.verbs import MAX_VERBS, Verb

REF = "#/components/schemas/{name}"
FLOW_VERBS = get_args(Verb)  # say, play, pause, gather, record, dial, stream, redirect, reject, hangup
TITLE = "softswitch control API"
CONVENTIONS = """\
Authenticate with `Authorization: Bearer sk_live_...` (or `sk_test_...`); keys are made with
`softswitch keys create` or `POST /v2/keys`. Scopes: calls:read, calls:write, recordings:read,
recordings:write, webhooks:write, admin (admin implies every other).

Every response carries `X-Request-Id` (yours, echoed, if you send a sane one: up to 128 characters of
letters, digits and `._:-`). Authenticated responses carry `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
`X-RateLimit-Reset` (Unix time when the bucket is full again); a refused request is 429 `rate_limited`
with `Retry-After`.

Errors: `{"error": {"code", "message", "request_id", "param_errors": [{"param", "reason"}]}}`, codes
bad_request (400, and 405/413), unauthorized (401), forbidden (403), not_found (404), conflict (409),
invalid_param (422: a body or query field named in param_errors), rate_limited (429), server_error (500).

Mutations accept `Idempotency-Key`: the same key with the same request replays the first response
(with `Idempotent-Replayed: true`) for 24 h; with another request it is 409 `conflict`, and while the first
is still executing too (retry after `Retry-After`).

Lists are newest first, `{"object": "list", "data": [...], "has_more": bool}`; `limit` 1-100 (default 20)
and `starting_after=<last id of the page you have>` for the next page. Timestamps are RFC 3339, UTC.
"""

_ERRORS = {
    400: ("BadRequest", "bad_request: the request is malformed (not JSON, bad header, 405)"),
    401: ("Unauthorized", "unauthorized: no key, an unknown or revoked key, or a rotated-out secret"),
    403: ("Forbidden", "forbidden: the key lacks the scope"),
    404: ("NotFound", "not_found: no such resource"),
    409: ("Conflict", "conflict: the resource's state, or an Idempotency-Key reused or still executing"),
    413: ("TooLarge", "bad_request: the body is larger than the server takes"),
    422: ("InvalidParam", "invalid_param: a field of the body or query is wrong (see param_errors)"),
    429: ("RateLimited", "rate_limited: the key's rate limit is spent; see Retry-After"),
    500: ("ServerError", "server_error: our fault; quote the request id"),
}
_RATE_HEADERS = {
    "X-RateLimit-Limit": "requests the key may make at once (bucket size)",
    "X-RateLimit-Remaining": "requests left now",
    "X-RateLimit-Reset": "Unix time (s) when the bucket is full again",
}


def openapi_path(path: str) -> str:
    """aiohttp's `/v2/keys/{id:[a-z_0-9]+}` as OpenAPI's `/v2/keys/{id}`."""
    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", r"{\1}", path)


def _error_responses(spec: RouteSpec, path_params: list[str]) -> list[int]:
    codes = [400, 500]  # 400: any request can be malformed at the HTTP level (the server's parser answers it)
    if spec.scope is not None:
        codes += [401, 429]
        if spec.scope != AUTHENTICATED:
            codes.append(403)
    if spec.body is not None or spec.query is not None or (spec.scope is not None and spec.mutation):
        codes += [400, 422]
    if spec.body is not None:
        codes.append(413)
    if path_params:
        codes.append(404)
    if spec.scope is not None and spec.mutation:
        codes.append(409)
    return sorted(set(codes))


def _parameters(spec: RouteSpec, path_params: list[str], schemas: dict[str, Any]) -> list[dict]:
    params: list[dict] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path_params
    ]
    if spec.query is not None:
        query = schemas[spec.query.__name__]
        for name, schema in query.get("properties", {}).items():
            param = {"name": name, "in": "query", "required": name in query.get("required", []), "schema": schema}
            if "description" in schema:
                param["description"] = schema["description"]
            params.append(param)
    if spec.scope is not None and spec.mutation:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "replays the first response of the same request for 24 h",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": f"^{KEY_PATTERN}$"},
            }
        )
    return params


def _operation(spec: RouteSpec, refs: dict[Any, dict], schemas: dict[str, Any], op_ids: set[str]) -> dict:
    path_params = re.findall(r"\{([^}:]+)", spec.path)
    op_id = spec.handler.__name__
    while op_id in op_ids:
        op_id += "_"
    op_ids.add(op_id)
    if spec.scope is None:
        scope_text = "No key needed."
    elif spec.scope == AUTHENTICATED:
        scope_text = "Any valid key."
    elif spec.scope == ADMIN:
        scope_text = "Scope: `admin`."
    else:
        scope_text = f"Scope: `{spec.scope}` (or `admin`)."
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": spec.summary,
        "description": f"{spec.description}\n\n{scope_text}".strip(),
        "x-scope": spec.scope,
        "security": [] if spec.scope is None else [{"bearer": []}],
        "parameters": _parameters(spec, path_params, schemas),
    }
    if spec.tags:
        op["tags"] = list(spec.tags)
    if spec.body is not None:
        body_schema = schemas[spec.body.__name__]
        op["requestBody"] = {
            "required": bool(body_schema.get("required")),
            "content": {"application/json": {"schema": refs[spec.body]}},
        }
    if spec.response is not None:
        schema = refs[spec.response]
    elif spec.content_type == "application/json":
        schema = {"type": "object"}
    else:
        schema = {"type": "string"}
    ok: dict[str, Any] = {"description": spec.summary, "content": {spec.content_type: {"schema": schema}}}
    if spec.scope is not None:
        ok["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in _RATE_HEADERS}
    op["responses"] = {str(spec.status): ok}
    for status in _error_responses(spec, path_params):
        op["responses"][str(status)] = {"$ref": f"#/components/responses/{_ERRORS[status][0]}"}
    return op


def build(specs: list[RouteSpec], *, title: str = TITLE, version: str = __version__) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these routes."""
    types: list[Any] = [ErrorBody]
    for spec in specs:
        types += [t for t in (spec.body, spec.query, spec.response) if t is not None and t not in types]
    refs_list, schemas = msgspec.json.schema_components(types, ref_template=REF)
    # what an application answers a call flow with (not a body of ours, but its schema is part of the API);
    # its verbs are named CallFlowSay, CallFlowPlay...: some names (Play, Stream) are the API's own bodies too
    verb_refs, verb_schemas = msgspec.json.schema_components(FLOW_VERBS, ref_template=REF.replace("{", "CallFlow{"))
    schemas |= {f"CallFlow{name}": schema for name, schema in verb_schemas.items()}
    schemas["CallFlowInstructions"] = {
        "type": "array",
        "maxItems": MAX_VERBS,
        "items": {"oneOf": list(verb_refs)},
        "description": "A call flow's JSON instructions (application/json): verbs run in order. TwiML "
        "(text/xml) is read into the same verbs.",
    }
    refs = dict(zip(types, refs_list, strict=True))
    paths: dict[str, dict] = {}
    op_ids: set[str] = set()
    for spec in specs:
        paths.setdefault(openapi_path(spec.path), {})[spec.method.lower()] = _operation(spec, refs, schemas, op_ids)
    responses: dict[str, Any] = {}
    for status, (name, text) in _ERRORS.items():
        responses[name] = {"description": text, "content": {"application/json": {"schema": refs[ErrorBody]}}}
        if status == 429:
            responses[name]["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    headers = {name: {"description": text, "schema": {"type": "integer"}} for name, text in _RATE_HEADERS.items()}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": CONVENTIONS},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "headers": headers,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API key's secret, sk_live_..."}
            },
        },
    }


CACHE = web.AppKey("openapi_cache", dict)  # set by create_app: {"document": ...} once built

routes = RouteTable()


def document(app: web.Application) -> dict[str, Any]:
    """The app's document, built on first use (its routes are fixed once it serves)."""
    cache = app[CACHE]
    if "document" not in cache:
        cache["document"] = build(route_specs(app))
    return cache["document"]


@routes.route("GET", "/v2/openapi.json", scope=None, summary="This OpenAPI document", tags=["meta"])
async def openapi_json(request: web.Request) -> web.Response:
    """OpenAPI 3.1, generated from the routes and their schemas."""
    return json_response(document(request.app))
