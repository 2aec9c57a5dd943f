"""`/v2/audio`: audio files uploaded to play into calls (`POST /v2/calls/{id}/play` with `audio_id`), so an
application need not host its prompts on a web server. The body of the upload is the WAV itself (any
common rate, width, channel count, G.711 or float: checked at upload, converted when played); files live
under `[media] audio_dir`, their rows in the store. Test keys' uploads are apart from live ones."""

from __future__ import annotations

import contextlib
import os
from typing import Annotated

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
    decode_query,
    json_response,
    paginate,
    require_cursor,
    timestamp,
)
from media.audio import decode_wav
from softswitch.events import new_id
from softswitch.store import AudioRecord

routes = RouteTable()
MAX_BYTES = 20 * 1024 * 1024


class Audio(msgspec.Struct, kw_only=True):
    """An uploaded audio file."""

    id: str
    object: str = "audio"
    name: str
    size: Annotated[int, msgspec.Meta(description="bytes of the file as uploaded")]
    duration_s: float
    created_at: Timestamp


class AudioQuery(PageQuery, kw_only=True):
    pass


class UploadQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="yours, to find it again")] = "audio"


def audio_object(a: AudioRecord) -> Audio:
    return Audio(
        id=a.id, name=a.name, size=a.size, duration_s=round(a.duration_s, 3), created_at=timestamp(a.created_at)
    )


def audio_of(request: web.Request, audio_id: str, param: str | None = None) -> AudioRecord:
    """The uploaded file `audio_id`, if the key may use it: 404 (or 422 naming `param`) otherwise."""
    audio = request.app[STORE].get_audio(audio_id)
    if audio is None or audio.test != current_key(request).test:
        if param is not None:
            raise ApiError(422, "invalid_param", "no such audio", [(param, f"no audio {audio_id}")])
        raise ApiError(404, "not_found", f"no audio {audio_id}")
    return audio


async def _read_limited(request: web.Request) -> bytes:
    blob = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        blob += chunk
        if len(blob) > MAX_BYTES:
            raise ApiError(413, "bad_request", f"audio larger than {MAX_BYTES} bytes")
    return bytes(blob)


@routes.route(
    "POST",
    "/v2/audio",
    scope="calls:write",
    query=UploadQuery,
    response=Audio,
    status=201,
    content_type="application/json",
    summary="Upload a WAV file to play into calls",
    description="The request body is the WAV file (Content-Type audio/wav), up to 20 MB; `?name=` labels it.",
    tags=["audio"],
)
async def upload(request: web.Request) -> web.Response:
    q = decode_query(request, UploadQuery)
    blob = await _read_limited(request)
    try:
        pcm = decode_wav(blob, "body")
    except ValueError as exc:
        raise ApiError(422, "invalid_param", "not a playable WAV file", [("body", str(exc))]) from None
    directory = request.app[CONFIG].media.audio_dir
    os.makedirs(directory, exist_ok=True)
    audio_id = new_id("aud")
    path = os.path.join(directory, f"{audio_id}.wav")
    with open(path, "wb") as f:
        f.write(blob)
    now = request.app[CLOCK]()
    record = AudioRecord(audio_id, q.name, path, len(blob), len(pcm) / 16000, current_key(request).test, now)
    request.app[STORE].save_audio(record)
    return json_response(audio_object(record), status=201, headers={"Location": f"/v2/audio/{audio_id}"})


@routes.route(
    "GET",
    "/v2/audio",
    scope="calls:read",
    query=AudioQuery,
    response=Page[Audio],
    summary="List uploaded audio files",
    tags=["audio"],
)
async def list_audio(request: web.Request) -> web.Response:
    q = decode_query(request, AudioQuery)
    store = request.app[STORE]
    cursor = q.starting_after
    require_cursor(cursor is not None and store.get_audio(cursor) is not None, cursor, "audio")
    rows = store.list_audio(limit=q.limit + 1, test=current_key(request).test, starting_after=cursor)
    return json_response(paginate([audio_object(a) for a in rows], q.limit))


@routes.route(
    "GET", "/v2/audio/{id}", scope="calls:read", response=Audio, summary="Get an uploaded audio file", tags=["audio"]
)
async def get_audio(request: web.Request) -> web.Response:
    return json_response(audio_object(audio_of(request, request.match_info["id"])))


@routes.route(
    "DELETE",
    "/v2/audio/{id}",
    scope="calls:write",
    response=Audio,
    summary="Delete an uploaded audio file",
    tags=["audio"],
)
async def delete_audio(request: web.Request) -> web.Response:
    audio = audio_of(request, request.match_info["id"])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(audio.path)
    request.app[STORE].delete_audio(audio.id)
    return json_response(audio_object(audio))
