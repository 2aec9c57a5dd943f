"""`/v2/webhooks`: endpoints that receive call events, signed per Standard Webhooks (softswitch.webhooks),
their delivery log, redelivery, secret rotation, and `/v2/webhook-event-types` with each payload's schema.

Every route, reads included, needs `webhooks:write`: an endpoint's deliveries reveal the events' contents,
and endpoints are configuration, like the key that made them. Test keys see (and receive events of) test
calls' endpoints only, live keys live ones only. The secret is shown when created and when rotated, never
in lists or reads.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from api.http import (
    CLOCK,
    CONFIG,
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
    require_cursor,
    timestamp,
    timestamp_or_none,
)
from softswitch.events import new_id
from softswitch.store import WebhookDelivery as DeliveryRecord
from softswitch.store import WebhookEndpoint as EndpointRecord
from softswitch.webhooks import EVENT_TYPES, ROTATION_GRACE_S, new_secret, url_problem

routes = RouteTable()
DISPATCHER = web.AppKey("webhook_dispatcher", object)  # softswitch.webhooks.WebhookDispatcher, woken on redeliver
SCOPE = "webhooks:write"
TAGS = ("webhooks",)

EventType = Literal[("*", *EVENT_TYPES)]  # an endpoint's `events`: these types, or "*" for all
Url = Annotated[str, msgspec.Meta(pattern="^https?://", max_length=2048, description="http(s) URL to POST events to")]
Events = Annotated[
    list[EventType], msgspec.Meta(min_length=1, max_length=16, description='event types, or ["*"] for all')
]
Description = Annotated[str, msgspec.Meta(max_length=500)]


class WebhookEndpoint(msgspec.Struct, kw_only=True):
    """An endpoint: where events go and which."""

    id: str
    object: str = "webhook_endpoint"
    url: str
    events: list[str]
    enabled: bool
    description: str
    created_at: Timestamp
    secret_rotated_until: Annotated[
        Timestamp | None, msgspec.Meta(description="the previous secret signs too until then")
    ] = None


class WebhookEndpointWithSecret(WebhookEndpoint, kw_only=True):
    """An endpoint with its signing secret (`whsec_...`), shown on creation and rotation only."""

    secret: str


class CreateWebhook(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Url
    events: Events = msgspec.field(default_factory=lambda: ["*"])
    enabled: bool = True
    description: Description = ""


class UpdateWebhook(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The fields to change; those left out stay as they are."""

    url: Url | None = None
    events: Events | None = None
    enabled: bool | None = None
    description: Description | None = None


class Attempt(msgspec.Struct, kw_only=True):
    attempt: int
    at: Timestamp
    status_code: int | None
    latency_ms: float | None
    error: str | None


class WebhookDelivery(msgspec.Struct, kw_only=True):
    """One event to one endpoint, with every attempt."""

    id: str
    object: str = "webhook_delivery"
    endpoint_id: str
    event_id: Annotated[str, msgspec.Meta(description="also the webhook-id header, the same on every attempt")]
    event_type: str
    call_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempt: Annotated[int, msgspec.Meta(description="attempts made so far")]
    next_attempt_at: Timestamp | None
    last_status_code: int | None
    last_latency_ms: float | None
    last_error: str | None
    created_at: Timestamp
    updated_at: Timestamp
    attempts: list[Attempt]


# -- the payloads, for /v2/webhook-event-types -----------------------------------------------------------
class CallData(msgspec.Struct, kw_only=True):
    call_id: str
    direction: str
    from_: str = msgspec.field(name="from")
    to: str
    status: str


class AnsweredData(CallData, kw_only=True):
    answered_by: Annotated[str | None, msgspec.Meta(description="with machine detection; null without")] = None


class CompletedData(CallData, kw_only=True):
    hangup_code: int | None = None
    hangup_reason: str | None = None
    hangup_by: str | None = None
    duration_s: float | None = None


class DtmfData(msgspec.Struct, kw_only=True):
    call_id: str
    direction: str
    to: str
    status: str
    digit: str
    source: str
    duration_ms: int | None = None
    from_: Annotated[str, msgspec.Meta(description="who pressed it: caller or callee")] = msgspec.field(name="from")


class AmdData(CallData, kw_only=True):
    answered_by: str
    result: Annotated[str, msgspec.Meta(description="human, machine or unknown")]
    decision_ms: Annotated[int | None, msgspec.Meta(description="when the verdict came, ms from the answer")] = None
    beep_end_ms: Annotated[int | None, msgspec.Meta(description="detect_beep: when the beep ended")] = None
    reason: Annotated[
        str | None,
        msgspec.Meta(
            description="why: short_greeting (human); long_greeting, max_words or beep (machine); silence, "
            "timeout or hangup (unknown)"
        ),
    ] = None


class RecordingData(CallData, kw_only=True):
    recording_id: str
    channels: int
    duration_s: float
    size: int
    error: str | None = None


class StreamData(CallData, kw_only=True):
    stream_id: str
    url: Annotated[str | None, msgspec.Meta(description="null for a subscriber connected to the API")]
    track: str
    bidirectional: bool
    reason: Annotated[str | None, msgspec.Meta(description="why it stopped")] = None
    messages_sent: int = 0
    messages_dropped: Annotated[int, msgspec.Meta(description="dropped for a slow subscriber")] = 0
    malformed_received: int = 0


class FlowErrorData(CallData, kw_only=True):
    reason: Annotated[str, msgspec.Meta(description="why the call flow stopped")]
    url: Annotated[str, msgspec.Meta(description="the instructions URL it was at")]


class SecurityAlertData(msgspec.Struct, kw_only=True):
    kind: Annotated[str, msgspec.Meta(description="auth_failed, banned, rate_limited or call_refused")]
    source: Annotated[str, msgspec.Meta(description="the source address (or api for a call the API placed)")]
    detail: str = ""
    user: Annotated[str | None, msgspec.Meta(description="auth_failed: the user name tried")] = None
    until: Annotated[float | None, msgspec.Meta(description="banned: when the ban ends (Unix time)")] = None
    rule: Annotated[
        str | None, msgspec.Meta(description="call_refused: transit, destination, max_calls or calls_per_minute")
    ] = None
    origin: Annotated[str | None, msgspec.Meta(description="call_refused: user:NAME, trunk:NAME or api")] = None
    number: Annotated[str | None, msgspec.Meta(description="call_refused: the number called")] = None
    call_id: Annotated[str | None, msgspec.Meta(description="call_refused: the call, if it had begun")] = None


PAYLOADS: dict[str, tuple[type, str]] = {
    "call.initiated": (CallData, "a call started (inbound arrived, or outbound placed)"),
    "call.ringing": (CallData, "the called side is ringing"),
    "call.answered": (AnsweredData, "the call was answered (after AMD's verdict when it ran)"),
    "call.completed": (CompletedData, "the call ended"),
    "call.dtmf": (DtmfData, "a key was pressed"),
    "call.amd": (AmdData, "answering machine detection's verdict"),
    "recording.ready": (RecordingData, "a recording's WAV file is complete"),
    "stream.started": (StreamData, "a media stream's subscriber is connected and receives audio"),
    "stream.stopped": (StreamData, "a media stream ended (stopped, the call ended, or its subscriber gone)"),
    "call.flow_error": (FlowErrorData, "a call flow failed (fetch, bad instructions): the call is hung up"),
    "security.alert": (
        SecurityAlertData,
        "the SIP edge refused something: a failed authentication, a ban, a flooding source, a toll-fraud rule "
        "(at most [security] alerts_per_s)",
    ),
}
assert set(PAYLOADS) == set(EVENT_TYPES)


class EventType_(msgspec.Struct, kw_only=True):
    type: str
    description: str
    schema: Annotated[dict, msgspec.Meta(description="JSON Schema of the whole body: id, type, timestamp, data")]


class EventTypeList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[EventType_]


def _event_schema(data: type) -> dict:
    """The body every delivery carries, with `data` shaped as `data`."""
    envelope = msgspec.defstruct(
        "WebhookBody", [("id", str), ("type", str), ("timestamp", Timestamp), ("data", data)], kw_only=True
    )
    return msgspec.json.schema(envelope)


# -- objects ---------------------------------------------------------------------------------------------
def endpoint_object(ep: EndpointRecord, now: float, *, with_secret: bool = False) -> WebhookEndpoint:
    grace = ep.previous_expires_at if ep.previous_secret and (ep.previous_expires_at or 0) > now else None
    fields = {
        "id": ep.id,
        "url": ep.url,
        "events": ep.events,
        "enabled": ep.enabled,
        "description": ep.description,
        "created_at": timestamp(ep.created_at),
        "secret_rotated_until": timestamp_or_none(grace),
    }
    return WebhookEndpointWithSecret(**fields, secret=ep.secret) if with_secret else WebhookEndpoint(**fields)


def delivery_object(request: web.Request, d: DeliveryRecord) -> WebhookDelivery:
    attempts = [
        Attempt(
            attempt=a.attempt, at=timestamp(a.at), status_code=a.status_code, latency_ms=a.latency_ms, error=a.error
        )
        for a in request.app[STORE].webhook_attempts(d.id)
    ]
    return WebhookDelivery(
        id=d.id,
        endpoint_id=d.endpoint_id,
        event_id=d.event_id,
        event_type=d.event_type,
        call_id=d.call_id,
        status=d.status,
        attempt=d.attempt,
        next_attempt_at=timestamp(d.next_attempt_at) if d.status == "pending" else None,
        last_status_code=d.last_status_code,
        last_latency_ms=d.last_latency_ms,
        last_error=d.last_error,
        created_at=timestamp(d.created_at),
        updated_at=timestamp(d.updated_at),
        attempts=attempts,
    )


def check_url(request: web.Request, url: str, param: str = "url") -> None:
    """422 naming `param` when `url` cannot receive webhooks (not http(s), a private address refused...)."""
    problem = url_problem(url, request.app[CONFIG].webhooks.allow_private)
    if problem is not None:
        raise ApiError(422, "invalid_param", f"{param}: {problem}", [(param, problem)])


def add_status_callback(request: web.Request, call_id: str, url: str, events: list[str]) -> EndpointRecord:
    """A call's own endpoint: its events (of `events`) go to `url` too, signed with the webhook secret of
    the key that placed it. Called before the call's first event is published (call.initiated follows the
    API's answer)."""
    key = current_key(request)
    store = request.app[STORE]
    ep = EndpointRecord(
        new_id("wh"),
        url,
        events,
        True,
        f"status_callback of {call_id}",
        store.key_webhook_secret(key.id, new_secret),
        None,
        None,
        key.test,
        request.app[CLOCK](),
        call_id=call_id,
    )
    store.add_webhook_endpoint(ep)
    dispatcher = request.app.get(DISPATCHER)
    if dispatcher is not None:
        dispatcher.watch_call(call_id)
    return ep


def _endpoint(request: web.Request) -> EndpointRecord:
    """The endpoint the path names, if the key's mode (test or live) owns it; 404 otherwise."""
    ep = request.app[STORE].get_webhook_endpoint(request.match_info["webhook_id"])
    if ep is None or ep.test != current_key(request).test or ep.call_id is not None:
        raise ApiError(404, "not_found", f"no such webhook endpoint: {request.match_info['webhook_id']}")
    return ep


def _resync(request: web.Request) -> None:
    dispatcher = request.app.get(DISPATCHER)
    if dispatcher is not None:
        dispatcher.resync()


def _changed(request: web.Request) -> None:
    """An endpoint was added, changed or removed: the dispatcher looks again before the next event."""
    dispatcher = request.app.get(DISPATCHER)
    if dispatcher is not None:
        dispatcher.endpoints_changed()


# -- routes ----------------------------------------------------------------------------------------------
@routes.route(
    "POST",
    "/v2/webhooks",
    scope=SCOPE,
    body=CreateWebhook,
    response=WebhookEndpointWithSecret,
    status=201,
    summary="Add a webhook endpoint",
    tags=TAGS,
)
async def create_webhook(request: web.Request) -> web.Response:
    """The response holds the signing secret; it is not shown again (rotate it to get a new one)."""
    body = await decode_body(request, CreateWebhook)
    check_url(request, body.url)
    now = request.app[CLOCK]()
    ep = EndpointRecord(
        new_id("wh"),
        body.url,
        list(body.events),
        body.enabled,
        body.description,
        new_secret(),
        None,
        None,
        current_key(request).test,
        now,
    )
    request.app[STORE].add_webhook_endpoint(ep)
    _changed(request)
    return json_response(
        endpoint_object(ep, now, with_secret=True), status=201, headers={"Location": f"/v2/webhooks/{ep.id}"}
    )


@routes.route(
    "GET",
    "/v2/webhooks",
    scope=SCOPE,
    query=PageQuery,
    response=Page[WebhookEndpoint],
    summary="List webhook endpoints",
    tags=TAGS,
)
async def list_webhooks(request: web.Request) -> web.Response:
    """Newest first."""
    query = decode_query(request, PageQuery)
    store, test = request.app[STORE], current_key(request).test
    if query.starting_after is not None:
        cursor = store.get_webhook_endpoint(query.starting_after)
        require_cursor(cursor is not None and cursor.test == test, query.starting_after, "webhook endpoint")
    rows = store.list_webhook_endpoints(limit=query.limit + 1, test=test, starting_after=query.starting_after)
    now = request.app[CLOCK]()
    return json_response(paginate([endpoint_object(ep, now) for ep in rows], query.limit))


@routes.route(
    "GET", "/v2/webhooks/{webhook_id}", scope=SCOPE, response=WebhookEndpoint, summary="Get an endpoint", tags=TAGS
)
async def get_webhook(request: web.Request) -> web.Response:
    """An endpoint (without its secret)."""
    return json_response(endpoint_object(_endpoint(request), request.app[CLOCK]()))


@routes.route(
    "PATCH",
    "/v2/webhooks/{webhook_id}",
    scope=SCOPE,
    body=UpdateWebhook,
    response=WebhookEndpoint,
    summary="Change an endpoint",
    tags=TAGS,
)
async def update_webhook(request: web.Request) -> web.Response:
    """Change its URL, events, description, or enable it again (after a 410 disabled it)."""
    ep = _endpoint(request)
    body = await decode_body(request, UpdateWebhook)
    if body.url is not None:
        check_url(request, body.url)
    events = None if body.events is None else list(body.events)
    updated = request.app[STORE].update_webhook_endpoint(
        ep.id, url=body.url, events=events, enabled=body.enabled, description=body.description
    )
    _changed(request)  # enabled, disabled or other events: the dispatcher looks again (and sends what waited)
    return json_response(endpoint_object(updated, request.app[CLOCK]()))


@routes.route("DELETE", "/v2/webhooks/{webhook_id}", scope=SCOPE, summary="Delete an endpoint", tags=TAGS)
async def delete_webhook(request: web.Request) -> web.Response:
    """The endpoint and its delivery log; nothing more is sent to it."""
    ep = _endpoint(request)
    request.app[STORE].delete_webhook_endpoint(ep.id)
    _changed(request)
    return json_response({"id": ep.id, "object": "webhook_endpoint", "deleted": True})


@routes.route(
    "POST",
    "/v2/webhooks/{webhook_id}/rotate-secret",
    scope=SCOPE,
    response=WebhookEndpointWithSecret,
    summary="Rotate an endpoint's signing secret",
    tags=TAGS,
)
async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret; for 24 h deliveries carry signatures with both, so receivers can switch over."""
    ep = _endpoint(request)
    now = request.app[CLOCK]()
    rotated = request.app[STORE].rotate_webhook_secret(ep.id, new_secret(), now + ROTATION_GRACE_S)
    return json_response(endpoint_object(rotated, now, with_secret=True))


@routes.route(
    "GET",
    "/v2/webhooks/{webhook_id}/deliveries",
    scope=SCOPE,
    query=PageQuery,
    response=Page[WebhookDelivery],
    summary="An endpoint's deliveries and their attempts",
    tags=TAGS,
)
async def list_deliveries(request: web.Request) -> web.Response:
    """Newest first, each with its attempts: status code, latency and error of every one."""
    ep = _endpoint(request)
    query = decode_query(request, PageQuery)
    store = request.app[STORE]
    if query.starting_after is not None:
        cursor = store.get_webhook_delivery(query.starting_after)
        require_cursor(cursor is not None and cursor.endpoint_id == ep.id, query.starting_after, "delivery")
    rows = store.list_webhook_deliveries(ep.id, limit=query.limit + 1, starting_after=query.starting_after)
    return json_response(paginate([delivery_object(request, d) for d in rows], query.limit))


@routes.route(
    "POST",
    "/v2/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    scope=SCOPE,
    response=WebhookDelivery,
    status=202,
    summary="Send a delivery again",
    tags=TAGS,
)
async def redeliver(request: web.Request) -> web.Response:
    """Queue it to be sent at once, with the same `webhook-id`; its retry schedule continues."""
    ep = _endpoint(request)
    store = request.app[STORE]
    delivery = store.get_webhook_delivery(request.match_info["delivery_id"])
    if delivery is None or delivery.endpoint_id != ep.id:
        raise ApiError(404, "not_found", f"no such delivery: {request.match_info['delivery_id']}")
    delivery = store.redeliver_webhook(delivery.id, request.app[CLOCK]())
    _resync(request)
    return json_response(delivery_object(request, delivery), status=202)


@routes.route(
    "GET",
    "/v2/webhook-event-types",
    scope=SCOPE,
    response=EventTypeList,
    summary="The event types and their payloads' JSON Schemas",
    tags=TAGS,
)
async def event_types(request: web.Request) -> web.Response:
    """What an endpoint's `events` may name, with the schema of each delivery's body."""
    data = [EventType_(type=t, description=d, schema=_event_schema(s)) for t, (s, d) in PAYLOADS.items()]
    return json_response(EventTypeList(data=data))


class KeyWebhookSecret(msgspec.Struct, kw_only=True):
    object: str = "webhook_secret"
    key_id: str
    secret: Annotated[str, msgspec.Meta(description="whsec_...: verifies the status callbacks of the key's calls")]


@routes.route(
    "GET",
    "/v2/account/webhook-secret",
    scope="calls:write",
    response=KeyWebhookSecret,
    summary="The secret signing your calls' status callbacks",
    tags=TAGS,
)
async def key_webhook_secret(request: web.Request) -> web.Response:
    """Deliveries to a call's `status_callback` are signed with this secret of the key that placed the call
    (Standard Webhooks, as for endpoints); made on first use, the same afterwards."""
    key = current_key(request)
    return json_response(
        KeyWebhookSecret(key_id=key.id, secret=request.app[STORE].key_webhook_secret(key.id, new_secret))
    )


@routes.route(
    "POST",
    "/v2/account/webhook-secret/rotate",
    scope="calls:write",
    response=KeyWebhookSecret,
    summary="Replace the secret signing your calls' status callbacks",
    tags=TAGS,
)
async def rotate_key_webhook_secret(request: web.Request) -> web.Response:
    """A new secret for the key's calls from now on. Status callbacks of calls placed before (and their
    retries) carry signatures with both the old and the new secret for 24 h, so receivers can switch over."""
    key = current_key(request)
    store = request.app[STORE]
    secret = new_secret()
    store.rotate_key_webhook_secret(key.id, secret, request.app[CLOCK]() + ROTATION_GRACE_S)
    _changed(request)
    return json_response(KeyWebhookSecret(key_id=key.id, secret=secret))


@routes.route(
    "GET",
    "/v2/flows/signing-secret",
    scope="admin",
    response=KeyWebhookSecret,
    summary="The secret signing the requests of call flows started by routes",
    tags=TAGS,
)
async def flow_signing_secret(request: web.Request) -> web.Response:
    """Instructions requests of flows started by a `[[routes]] to = "app:URL"` are signed with this (those of
    calls placed through the API with the placing key's webhook secret)."""
    secret = request.app[STORE].setting("flow_secret", new_secret)
    return json_response(KeyWebhookSecret(key_id="", secret=secret))


def register_with(dispatcher: object | None) -> callable:
    """The `create_app` hook for these routes; `dispatcher` (a WebhookDispatcher, or None) is woken when a
    delivery is queued again, so it goes at once."""

    def register(app: web.Application) -> None:
        app[DISPATCHER] = dispatcher
        routes.register(app)

    return register
