"""Media streams on a live call (softswitch.streams, Twilio Media Streams format): started toward a
subscriber's ws:// or wss:// URL (`POST /v2/calls/{id}/streams`, or `stream` on `POST /v2/calls`), listed,
stopped; and `GET /v2/calls/{id}/stream`, a WebSocket on the API itself for listen-only subscribers with a
`calls:read` key (the same messages, nothing taken in).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Literal

import msgspec
from aiohttp import WSMsgType, web

from api.http import (
    B2BUA,
    CONFIG,
    ApiError,
    RouteTable,
    current_key,
    decode_body,
    decode_query,
    json_response,
    live_call,
)
from softswitch.b2bua.streams import StreamError
from softswitch.streams import StreamSession, new_stream_sid, send_outbox
from softswitch.webhooks import url_problem

routes = RouteTable()
TAGS = ["calls"]
Track = Literal["inbound", "outbound", "both"]


class StreamSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A stream to start: the softswitch connects to `url` as a WebSocket client and speaks Twilio's Media
    Streams messages (connected, start, media, dtmf, mark, stop)."""

    url: Annotated[str, msgspec.Meta(pattern="^wss?://", max_length=2048, description="ws:// or wss:// URL")]
    track: Annotated[
        Track, msgspec.Meta(description="inbound: what the party says; outbound: what it hears; or both")
    ] = "inbound"
    bidirectional: Annotated[
        bool, msgspec.Meta(description="play the subscriber's media messages into the call (mark and clear too)")
    ] = False
    parameters: Annotated[dict[str, str], msgspec.Meta(description="sent as start.customParameters")] = msgspec.field(
        default_factory=dict
    )


class Stream(msgspec.Struct, kw_only=True):
    id: Annotated[str, msgspec.Meta(description="the streamSid of every message")]
    object: str = "stream"
    call_id: str
    url: str | None
    track: str
    bidirectional: bool
    status: Literal["connecting", "streaming", "stopped"]
    reason: str | None = None
    messages_sent: int = 0
    messages_dropped: int = 0
    malformed_received: int = 0


class StreamList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[Stream]


class ListenQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    track: Track = "inbound"


def stream_object(session: StreamSession) -> Stream:
    d = session.as_dict()
    return Stream(
        id=session.sid,
        call_id=session.call_id,
        url=session.url,
        track=session.track,
        bidirectional=session.bidirectional,
        status=session.status,  # type: ignore[arg-type]
        reason=d["reason"],
        messages_sent=d["messages_sent"],
        messages_dropped=d["messages_dropped"],
        malformed_received=d["malformed_received"],
    )


def check_stream_url(request: web.Request, url: str, param: str) -> None:
    problem = url_problem(url, request.app[CONFIG].webhooks.allow_private, schemes=("ws", "wss"))
    if problem is not None:
        raise ApiError(422, "invalid_param", f"{param}: {problem}", [(param, problem)])


def stream_kwargs(request: web.Request, spec: StreamSpec) -> dict:
    """What `CallStreams.start` takes for `spec` from this request's key."""
    return {
        "url": spec.url,
        "track": spec.track,
        "bidirectional": spec.bidirectional,
        "parameters": dict(spec.parameters),
        "account": current_key(request).id,
    }


@routes.route(
    "POST",
    "/v2/calls/{id}/streams",
    scope="calls:write",
    body=StreamSpec,
    response=Stream,
    status=201,
    summary="Start a media stream",
    description="The softswitch connects to `url` and streams the call's audio as Twilio Media Streams "
    "messages; `stream.started` and `stream.stopped` go out as webhooks. A call holds up to 8 streams, one "
    "of them bidirectional. A dropped connection is dialled again 3 times (0.5, 1, 2 s apart) before the "
    "stream stops.",
    tags=TAGS,
)
async def start_stream(request: web.Request) -> web.Response:
    spec = await decode_body(request, StreamSpec)
    check_stream_url(request, spec.url, "url")
    call = live_call(request)
    try:
        session = request.app[B2BUA].streams.start(call, **stream_kwargs(request, spec))
    except StreamError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return json_response(
        stream_object(session), status=201, headers={"Location": f"/v2/calls/{call.id}/streams/{session.sid}"}
    )


@routes.route(
    "GET", "/v2/calls/{id}/streams", scope="calls:read", response=StreamList, summary="A call's streams", tags=TAGS
)
async def list_streams(request: web.Request) -> web.Response:
    """The live call's streams, stopped ones included."""
    call = live_call(request)
    sessions = request.app[B2BUA].streams.by_call.get(call.id, {}).values()
    return json_response(StreamList(data=[stream_object(s) for s in sessions]))


@routes.route(
    "DELETE",
    "/v2/calls/{id}/streams/{stream_id}",
    scope="calls:write",
    response=Stream,
    summary="Stop a media stream",
    tags=TAGS,
)
async def stop_stream(request: web.Request) -> web.Response:
    """The subscriber gets `stop`; the call goes on."""
    call = live_call(request)
    session = request.app[B2BUA].streams.stop(call.id, request.match_info["stream_id"])
    if session is None:
        raise ApiError(404, "not_found", f"no stream {request.match_info['stream_id']} on call {call.id}")
    return json_response(stream_object(session))


@routes.route(
    "GET",
    "/v2/calls/{id}/stream",
    scope="calls:read",
    query=ListenQuery,
    summary="Listen to a call over a WebSocket",
    description="Upgrade to a WebSocket and receive the call's audio as Twilio Media Streams messages "
    "(connected, start, media, dtmf, stop); listen-only: what the client sends is ignored. "
    "`track`: inbound (default), outbound or both.",
    tags=TAGS,
)
async def listen(request: web.Request) -> web.StreamResponse:
    query = decode_query(request, ListenQuery)
    call = live_call(request)
    ws = web.WebSocketResponse(heartbeat=20.0)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "bad_request", "this endpoint is a WebSocket: send an Upgrade request")
    streams = request.app[B2BUA].streams
    session = StreamSession(new_stream_sid(), call.id, current_key(request).id, query.track)
    try:
        streams.start(call, url=None, track=query.track, session=session)
    except StreamError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    await ws.prepare(request)

    async def receive() -> None:  # listen-only: anything received is counted, never acted on
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                session.counters["malformed"] += 1

    loop = asyncio.get_running_loop()
    sender, reader = loop.create_task(send_outbox(session, ws)), loop.create_task(receive())
    try:  # until the stream stops (its `stop` sent) or the subscriber goes
        await asyncio.wait((sender, reader), return_when=asyncio.FIRST_COMPLETED)
    finally:
        streams.stop(call.id, session.sid, "the subscriber disconnected")
        reader.cancel()
        if not sender.done():
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(sender, 1.0)  # the `stop` message, when the subscriber is still there
        sender.cancel()
        await asyncio.gather(sender, reader, return_exceptions=True)
        await ws.close()
    return ws
