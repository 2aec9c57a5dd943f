"""`/v2/calls`: the calls the softswitch carried or carries (from the store), and control of live ones
(hang up, send digits, record, play) through call control (softswitch.b2bua), never SIP or sockets.

Statuses are the cloud APIs' words: queued, initiated, ringing, in-progress (answered), completed, busy,
no-answer, failed, canceled. Calls placed with a test key (`sk_test_`) never leave the box: they reach the
simulated far end (softswitch.testmode: magic numbers), and test keys see test calls only, live keys live
calls only.
"""

from __future__ import annotations

from typing import Annotated, Literal

import aiohttp
import msgspec
from aiohttp import web

from api.audio import audio_of
from api.http import (
    B2BUA,
    STORE,
    ApiError,
    Page,
    PageQuery,
    RouteTable,
    TimeRangeQuery,
    Timestamp,
    answered_call,
    call_record,
    current_key,
    decode_body,
    decode_query,
    json_response,
    live_call,
    paginate,
    require_cursor,
    timestamp,
    timestamp_or_none,
)
from api.recordings import Recording, recording_object
from api.streams import StreamSpec, check_stream_url, stream_kwargs
from api.webhooks import EventType, WebhookDelivery, add_status_callback, check_url, delivery_object
from media.amd import SPECS as AMD_SPECS
from media.amd import AmdParamError, AmdParams
from media.audio import decode_wav, load_wav
from softswitch.b2bua import transfer as transfers
from softswitch.b2bua.recording import RecordingError
from softswitch.store import CallRecord
from softswitch.webhooks import new_secret

routes = RouteTable()
PLAY_MAX_BYTES = 20 * 1024 * 1024
SIDES = {"caller": "a", "callee": "b"}
# E.164 (+ and 7-15 digits), an extension or short number (2-15 digits), or a user / caller name
PARTY = r"^(\+[1-9][0-9]{6,14}|[0-9]{2,15}|[A-Za-z][A-Za-z0-9._-]{0,63})$"
AMD_MODES = {"detect": "enable", "detect_beep": "detect_message_end"}
_AMD_BUILT_IN = AmdParams()
# media.amd.AmdParams' fields, each optional: what a call changes of the server's `[amd]` (as Telnyx's
# answering_machine_detection_config, with the names and units of the config's [amd])
MachineDetectionConfig = msgspec.defstruct(
    "MachineDetectionConfig",
    [
        (
            name,
            Annotated[
                spec.kind,
                msgspec.Meta(
                    ge=spec.lo, le=spec.hi, description=f"{spec.doc} (built in: {getattr(_AMD_BUILT_IN, name)})"
                ),
            ]
            | None,
            None,
        )
        for name, spec in AMD_SPECS.items()
    ],
    kw_only=True,
    forbid_unknown_fields=True,
)

Status = Literal[
    "queued", "initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled"
]
Party = Literal["caller", "callee"]


class Call(msgspec.Struct, kw_only=True):
    """A call: its parties, its state, and how it ended."""

    id: str
    object: str = "call"
    status: Status
    direction: Annotated[str, msgspec.Meta(description="inbound (from a trunk), outbound (to one) or internal")]
    from_: str = msgspec.field(name="from")
    to: str
    trunk: str | None = None
    user: Annotated[str | None, msgspec.Meta(description="the registered user who placed it")] = None
    created_at: Timestamp
    answered_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    duration_s: Annotated[float | None, msgspec.Meta(description="talk time, once answered and ended")] = None
    hangup_code: int | None = None
    hangup_reason: str | None = None
    hangup_by: str | None = None
    answered_by: Annotated[
        str | None,
        msgspec.Meta(
            description="with machine_detection: human, machine_start, machine_end_beep, "
            "machine_end_silence, machine_end_other or unknown"
        ),
    ] = None
    metadata: dict[str, str] = {}
    status_callback: Annotated[
        str | None, msgspec.Meta(description="where this call's events go too (GET .../webhook-deliveries)")
    ] = None


class CreateCall(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A call to place: the softswitch calls `to` (routed by `[[routes]]`, like any call) from `from`."""

    to: Annotated[str, msgspec.Meta(pattern=PARTY, description="E.164 number (+15551234567), extension or user name")]
    from_: Annotated[str, msgspec.Meta(pattern=PARTY, description="caller id: E.164 number or name")] = msgspec.field(
        name="from"
    )
    connect: (
        Annotated[str, msgspec.Meta(pattern=PARTY, description="once `to` answers, connect it to this number or user")]
        | None
    ) = None
    timeout: Annotated[int, msgspec.Meta(ge=1, le=600, description="seconds to ring before giving up")] = 60
    record: Annotated[
        Literal[False, "mono", "dual"],
        msgspec.Meta(description="record from the answer: the mix or one party per channel"),
    ] = False
    machine_detection: Annotated[
        Literal["off", "detect", "detect_beep"],
        msgspec.Meta(description="answering machine detection: call.amd, and answered_by on call.answered"),
    ] = "off"
    machine_detection_config: Annotated[
        MachineDetectionConfig | None,
        msgspec.Meta(description="this call's answering machine detection parameters, over the server's [amd]"),
    ] = None
    metadata: Annotated[dict[str, str], msgspec.Meta(description="yours, kept with the call")] = {}
    status_callback: (
        Annotated[
            str,
            msgspec.Meta(
                pattern="^https?://",
                max_length=2048,
                description="this call's events are POSTed here too, as webhooks, signed with the key's webhook "
                "secret (GET /v2/account/webhook-secret)",
            ),
        ]
        | None
    ) = None
    stream: Annotated[StreamSpec | None, msgspec.Meta(description="a media stream started as the call is answered")] = (
        None
    )
    url: (
        Annotated[
            str,
            msgspec.Meta(
                pattern="^https?://",
                max_length=2048,
                description="once answered, the call runs the instructions found here (TwiML or JSON verbs)",
            ),
        ]
        | None
    ) = None
    method: Annotated[Literal["POST", "GET"], msgspec.Meta(description="how `url` is requested")] = "POST"
    status_callback_events: Annotated[
        list[EventType], msgspec.Meta(min_length=1, max_length=16, description='which events; ["*"] for all')
    ] = msgspec.field(default_factory=lambda: ["*"])


class CallQuery(TimeRangeQuery, kw_only=True):
    status: Status | None = None
    direction: Literal["inbound", "outbound", "internal"] | None = None
    from_: Annotated[str | None, msgspec.Meta(description="part of the caller's URI or number")] = msgspec.field(
        default=None, name="from"
    )
    to: Annotated[str | None, msgspec.Meta(description="part of the called URI or number")] = None


class SendDigits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    digits: Annotated[str, msgspec.Meta(pattern="^[0-9*#A-Da-d]{1,64}$")]
    to: Annotated[Party, msgspec.Meta(description="whose far end hears them")] = "callee"
    duration_ms: Annotated[int, msgspec.Meta(ge=40, le=2000)] = 100
    method: Annotated[
        Literal["auto", "rfc4733", "inband"],
        msgspec.Meta(description="auto: RFC 4733 when that side negotiated it, tones in the audio otherwise"),
    ] = "auto"


class RecordAction(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    action: Literal["start", "stop", "pause", "resume"]
    mode: Annotated[
        Literal["dual", "mono"], msgspec.Meta(description="dual: caller left, callee right; mono: the mix")
    ] = "dual"


class Play(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What to play: a WAV file by `url`, or one uploaded to /v2/audio-files by `audio_id` (one of the two)."""

    url: Annotated[str, msgspec.Meta(pattern="^https?://", description="a WAV file (any common rate)")] | None = None
    audio_id: Annotated[str | None, msgspec.Meta(description="an uploaded audio file (POST /v2/audio-files)")] = None
    to: Literal["caller", "callee", "both"] = "both"
    loop: bool = False


class Transfer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    to: Annotated[str, msgspec.Meta(pattern=PARTY, description="the number or user who takes the party's place")]
    party: Annotated[Party, msgspec.Meta(description="who is replaced (the other party stays)")] = "callee"


class StopPlay(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    to: Literal["caller", "callee", "both"] = "both"


def call_object(rec: CallRecord) -> Call:
    return Call(
        id=rec.id,
        status="in-progress" if rec.status == "answered" else rec.status,  # type: ignore[arg-type]
        direction=rec.direction,
        from_=rec.from_uri,
        to=rec.to_uri,
        trunk=rec.trunk,
        user=rec.user,
        created_at=timestamp(rec.created_at),
        answered_at=timestamp_or_none(rec.answered_at),
        ended_at=timestamp_or_none(rec.ended_at),
        duration_s=None if rec.duration_s is None else round(rec.duration_s, 3),
        hangup_code=rec.hangup_code,
        hangup_reason=rec.hangup_reason,
        hangup_by=rec.hangup_by,
        answered_by=rec.data.get("answered_by"),
        metadata=rec.data.get("metadata", {}),
        status_callback=rec.data.get("status_callback"),
    )


def _sides(to: str) -> list[str]:
    return ["a", "b"] if to == "both" else [SIDES[to]]


@routes.route(
    "GET",
    "/v2/calls",
    scope="calls:read",
    query=CallQuery,
    response=Page[Call],
    summary="List calls",
    description="Newest first; `starting_after` pages back. Live calls are `status=in-progress`.",
    tags=["calls"],
)
async def list_calls(request: web.Request) -> web.Response:
    q = decode_query(request, CallQuery)
    request.app[B2BUA].flush()  # the records the next group commit would write: listed as they are now
    store = request.app[STORE]
    cursor = q.starting_after
    require_cursor(cursor is not None and store.get_call(cursor) is not None, cursor, "call")
    rows = store.list_calls(
        limit=q.limit + 1,
        status="answered" if q.status == "in-progress" else q.status,
        direction=q.direction,
        from_uri=q.from_,
        to_uri=q.to,
        starting_after=cursor,
        test=current_key(request).test,
        **q.bounds(),
    )
    return json_response(paginate([call_object(r) for r in rows], q.limit))


@routes.route(
    "POST",
    "/v2/calls",
    scope="calls:write",
    body=CreateCall,
    response=Call,
    status=201,
    summary="Place a call",
    description="Answers at once with the call `queued`; it then moves through initiated, ringing, "
    "in-progress and an end (completed, busy, no-answer, failed, canceled). The call's other side is the "
    "API's own: once answered it can be recorded, played to, sent digits and hung up.",
    tags=["calls"],
)
async def create_call(request: web.Request) -> web.Response:
    call = place_call(request, await decode_body(request, CreateCall))
    return json_response(call_object(call.record), status=201, headers={"Location": f"/v2/calls/{call.id}"})


def amd_changes_of(server: AmdParams, body: CreateCall) -> dict[str, int | float]:
    """What the body's `machine_detection_config` changes of the AMD parameters (checked against the
    server's; the route's, if it has some, are what they go over)."""
    config = body.machine_detection_config
    if config is None:
        return {}
    param = "machine_detection_config"
    if body.machine_detection == "off":
        raise ApiError(422, "invalid_param", f"{param} needs machine_detection", [(param, "machine_detection is off")])
    changes = {name: value for name in config.__struct_fields__ if (value := getattr(config, name)) is not None}
    try:
        server.over(changes)
    except AmdParamError as exc:
        raise ApiError(422, "invalid_param", str(exc), [(f"{param}.{exc.name}", exc.reason)]) from None
    return changes


def place_call(request: web.Request, body: CreateCall, verbs: list | None = None):
    """Place the call `body` describes for the request's key (the live Call); `verbs`: a scenario's branch
    to run once answered. ApiError for what cannot be placed."""
    test = current_key(request).test
    b2bua = request.app[B2BUA]
    if test and body.connect is not None:
        raise ApiError(422, "invalid_param", "test calls cannot connect", [("connect", "not with a test key")])
    if body.connect is not None and body.url is not None:
        raise ApiError(422, "invalid_param", "connect or url, not both", [("url", "not with connect")])
    if body.connect is not None and not b2bua.router.targets(body.connect):
        raise ApiError(422, "invalid_param", "no route", [("connect", f"no route matches {body.connect}")])
    if body.status_callback is not None:
        check_url(request, body.status_callback, "status_callback")
    if body.stream is not None:
        check_stream_url(request, body.stream.url, "stream.url")
    if body.url is not None:
        check_url(request, body.url, "url")
    amd_changes = amd_changes_of(b2bua.amd_params, body)
    try:
        call = b2bua.originate(
            body.to,
            body.from_,
            connect=body.connect,
            ring_timeout_s=body.timeout,
            machine_detection=AMD_MODES.get(body.machine_detection, ""),
            amd_changes=amd_changes,
            test=test,
        )
    except LookupError:
        raise ApiError(422, "invalid_param", "no route", [("to", f"no route matches {body.to}")]) from None
    except OSError as exc:
        raise ApiError(503, "server_error", f"cannot place calls now: {exc}", headers={"Retry-After": "5"}) from None
    if body.metadata:
        call.record.data["metadata"] = dict(body.metadata)
    if body.status_callback:
        call.record.data["status_callback"] = body.status_callback
        add_status_callback(request, call.id, body.status_callback, list(body.status_callback_events))
    if body.record:
        call.record_on_answer = body.record
    if body.stream is not None:
        call.stream_on_answer = stream_kwargs(request, body.stream)
    if body.url is not None or verbs is not None:
        key = current_key(request)
        secret = request.app[STORE].key_webhook_secret(key.id, new_secret)
        call.flow_on_answer = {
            "url": body.url or "",
            "method": body.method,
            "secret": secret,
            "account": key.id,
            "verbs": verbs,
        }
    return call


@routes.route("GET", "/v2/calls/{id}", scope="calls:read", response=Call, summary="Get a call", tags=["calls"])
async def get_call(request: web.Request) -> web.Response:
    return json_response(call_object(call_record(request)))


@routes.route(
    "GET",
    "/v2/calls/{id}/webhook-deliveries",
    scope="calls:read",
    query=PageQuery,
    response=Page[WebhookDelivery],
    summary="Deliveries to the call's status_callback",
    description="Newest first, each with its attempts (status code, latency, error). Empty for a call placed "
    "without a status_callback; account-wide endpoints' deliveries are under /v2/webhooks.",
    tags=["calls"],
)
async def call_webhook_deliveries(request: web.Request) -> web.Response:
    rec = call_record(request)
    query = decode_query(request, PageQuery)
    store = request.app[STORE]
    endpoints = store.call_webhook_endpoints(rec.id)
    if query.starting_after is not None:
        cursor = store.get_webhook_delivery(query.starting_after)
        ok = cursor is not None and cursor.endpoint_id in {ep.id for ep in endpoints}
        require_cursor(ok, query.starting_after, "delivery")
    rows = [
        d
        for ep in endpoints
        for d in store.list_webhook_deliveries(ep.id, limit=query.limit + 1, starting_after=query.starting_after)
    ]
    return json_response(paginate([delivery_object(request, d) for d in rows], query.limit))


@routes.route(
    "POST",
    "/v2/calls/{id}/hangup",
    scope="calls:write",
    response=Call,
    summary="Hang up a live call",
    description="Ends the call on both sides (CANCEL before the answer, BYE after).",
    tags=["calls"],
)
async def hangup(request: web.Request) -> web.Response:
    call = live_call(request)
    if call.state == "answered":
        call.hangup("api", 200, "hung up through the API")
    else:  # still queued or ringing: the call is canceled
        call.hangup("api", 487, "canceled through the API")
    return json_response(call_object(call.record))


@routes.route(
    "POST",
    "/v2/calls/{id}/dtmf",
    scope="calls:write",
    body=SendDigits,
    response=Call,
    summary="Send DTMF digits to a party",
    tags=["calls"],
)
async def send_digits(request: web.Request) -> web.Response:
    body = await decode_body(request, SendDigits)
    call = answered_call(request)
    call.send_dtmf(SIDES[body.to], body.digits.upper(), duration_ms=body.duration_ms, method=body.method)
    return json_response(call_object(call.record))


@routes.route(
    "POST",
    "/v2/calls/{id}/record",
    scope="calls:write",
    body=RecordAction,
    response=Recording,
    summary="Start, stop, pause or resume the call's recording",
    tags=["calls", "recordings"],
)
async def record(request: web.Request) -> web.Response:
    body = await decode_body(request, RecordAction)
    call = answered_call(request)
    recordings = request.app[B2BUA].recordings
    try:
        if body.action == "start":
            rec = recordings.start(call, body.mode)
        elif body.action == "stop":
            rec = recordings.stop(call)
        else:
            rec = recordings.pause(call, body.action == "pause")
    except RecordingError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return json_response(recording_object(rec.as_record()), status=201 if body.action == "start" else 200)


@routes.route(
    "POST",
    "/v2/calls/{id}/play",
    scope="calls:write",
    body=Play,
    response=Call,
    summary="Play a WAV file to a party (replaces what it hears until the file ends)",
    tags=["calls"],
)
async def play(request: web.Request) -> web.Response:
    body = await decode_body(request, Play)
    answered_call(request)
    if (body.url is None) == (body.audio_id is None):
        raise ApiError(422, "invalid_param", "say what to play", [("url", "give url or audio_id, one of the two")])
    if body.audio_id is not None:
        try:
            pcm = load_wav(audio_of(request, body.audio_id, "audio_id").path)
        except ValueError as exc:
            raise ApiError(422, "invalid_param", "cannot play the audio", [("audio_id", str(exc))]) from None
    else:
        pcm = await _fetch_wav(body.url)
    call = answered_call(request)  # the download took time: the call may have ended meanwhile
    engine = request.app[B2BUA].engine
    for side in _sides(body.to):
        engine.play(call.media.legs[side], pcm, body.loop)
    return json_response(call_object(call.record))


@routes.route(
    "POST",
    "/v2/calls/{id}/stop-play",
    scope="calls:write",
    body=StopPlay,
    response=Call,
    summary="Stop what is playing to a party",
    tags=["calls"],
)
async def stop_play(request: web.Request) -> web.Response:
    body = await decode_body(request, StopPlay)
    call = answered_call(request)
    engine = request.app[B2BUA].engine
    for side in _sides(body.to):
        engine.stop_play(call.media.legs[side])
    return json_response(call_object(call.record))


@routes.route(
    "POST",
    "/v2/calls/{id}/transfer",
    scope="calls:write",
    body=Transfer,
    response=Call,
    status=202,
    summary="Blind transfer: a number or user takes a party's place",
    description="Answers 202 at once. The other party stays; when the new one answers, the replaced party "
    "gets a BYE. If it cannot be reached the call goes on as before.",
    tags=["calls"],
)
async def transfer_call(request: web.Request) -> web.Response:
    body = await decode_body(request, Transfer)
    call = answered_call(request)
    if not request.app[B2BUA].router.targets(body.to):
        raise ApiError(422, "invalid_param", "no route", [("to", f"no route matches {body.to}")])
    if not transfers.start(call, SIDES[body.party], body.to):
        raise ApiError(409, "conflict", f"call {call.id} is being transferred already")
    return json_response(call_object(call.record), status=202)


async def _fetch_wav(url: str) -> bytes:
    """The WAV at `url` as 8 kHz mono PCM16: 422 naming `url` when it cannot be had or played."""
    try:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            if resp.status != 200:
                raise ApiError(422, "invalid_param", "cannot fetch the audio", [("url", f"HTTP {resp.status}")])
            blob = await resp.content.read(PLAY_MAX_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ApiError(422, "invalid_param", "cannot fetch the audio", [("url", str(exc) or "timed out")]) from None
    if len(blob) > PLAY_MAX_BYTES:
        raise ApiError(422, "invalid_param", "audio too large", [("url", f"larger than {PLAY_MAX_BYTES} bytes")])
    try:
        return decode_wav(blob, "url")
    except ValueError as exc:
        raise ApiError(422, "invalid_param", "cannot play the audio", [("url", str(exc))]) from None


def register_with(b2bua) -> callable:
    """The `create_app` hook for these routes, bound to the switch's call control."""

    def register(app: web.Application) -> None:
        app[B2BUA] = b2bua
        routes.register(app)

    return register
