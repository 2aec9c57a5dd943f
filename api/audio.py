"""`/v2/audio-files`: audio files uploaded to play into calls (`POST /v2/calls/{id}/play` with `audio_id`, or
a call flow's `play`), so an application need not host its prompts on a web server.

The upload is the file itself as the body (any audio Content-Type) or a `multipart/form-data` part named
`file`: WAV (any common rate, width, channel count, G.711 or float), FLAC, Ogg Vorbis or MP3, up to 20 MB.
It is answered at once with `status: pending` and converted once, off the event loop, to 8 kHz mono PCM16
(media.audio.decode_audio); then `ready` (playable, downloadable as that WAV) or `error` with the reason.
Files live under `[media] audio_dir`, their rows in the store. Test keys' uploads are apart from live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import wave
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
    decode_query,
    json_response,
    paginate,
    require_cursor,
    timestamp,
)
from media.audio import decode_audio
from softswitch.events import new_id
from softswitch.store import AudioRecord

routes = RouteTable()
MAX_BYTES = 20 * 1024 * 1024
CONVERSIONS = web.AppKey("audio_conversions", set)  # the conversions under way (kept from the GC)


class Audio(msgspec.Struct, kw_only=True):
    """An uploaded audio file."""

    id: str
    object: str = "audio_file"
    name: str
    status: Annotated[Literal["pending", "ready", "error"], msgspec.Meta(description="ready: playable")]
    error: str | None = None
    format: Annotated[str, msgspec.Meta(description="as uploaded: WAV, FLAC, OGG or MP3")]
    size: Annotated[int, msgspec.Meta(description="bytes of the file as uploaded")]
    duration_s: Annotated[float, msgspec.Meta(description="once converted")]
    created_at: Timestamp


class AudioQuery(PageQuery, kw_only=True):
    pass


class UploadQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="yours, to find it again")] = "audio"


def audio_object(a: AudioRecord) -> Audio:
    return Audio(
        id=a.id,
        name=a.name,
        status=a.status,  # type: ignore[arg-type]
        error=a.error,
        format=a.format,
        size=a.size,
        duration_s=round(a.duration_s, 3),
        created_at=timestamp(a.created_at),
    )


def audio_of(request: web.Request, audio_id: str, param: str | None = None) -> AudioRecord:
    """The uploaded file `audio_id`, if the key may use it: 404 (or 422 naming `param`) otherwise; to play
    (`param` given) it must be ready (409 while converting, 422 when it could not be)."""
    audio = request.app[STORE].get_audio(audio_id)
    if audio is None or audio.test != current_key(request).test:
        if param is not None:
            raise ApiError(422, "invalid_param", "no such audio", [(param, f"no audio {audio_id}")])
        raise ApiError(404, "not_found", f"no audio {audio_id}")
    if param is not None and audio.status == "pending":
        raise ApiError(409, "conflict", f"audio {audio_id} is still being converted")
    if param is not None and audio.status == "error":
        raise ApiError(422, "invalid_param", "unplayable audio", [(param, audio.error or "conversion failed")])
    return audio


async def _read_limited(stream) -> bytes:
    blob = bytearray()
    while chunk := await stream.read_chunk(65536) if hasattr(stream, "read_chunk") else await stream.read(65536):
        blob += chunk
        if len(blob) > MAX_BYTES:
            raise ApiError(413, "bad_request", f"audio larger than {MAX_BYTES} bytes")
    return bytes(blob)


async def _upload_body(request: web.Request) -> bytes:
    """The file: the body itself, or the multipart part named `file`."""
    if request.content_type != "multipart/form-data":
        return await _read_limited(request.content)
    reader = await request.multipart()
    async for part in reader:
        if part.name == "file":
            return await _read_limited(part)
    raise ApiError(422, "invalid_param", "no file part", [("file", "a multipart part named file is required")])


def _convert(blob: bytes, path: str) -> tuple[float, str]:
    """In a worker thread: decode, write the 8 kHz WAV; (duration, format as uploaded)."""
    pcm, kind = decode_audio(blob, "upload")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)
    return len(pcm) / 16000, kind


async def _conversion(store, record: AudioRecord, blob: bytes) -> None:
    try:
        record.duration_s, record.format = await asyncio.to_thread(_convert, blob, record.path)
        record.status = "ready"
    except (ValueError, OSError) as exc:
        record.status, record.error = "error", str(exc)[:500]
    if store.get_audio(record.id) is not None:  # not deleted meanwhile
        store.save_audio(record)


@routes.route(
    "POST",
    "/v2/audio-files",
    scope="calls:write",
    query=UploadQuery,
    response=Audio,
    status=201,
    content_type="application/json",
    summary="Upload an audio file to play into calls",
    description="The body is the file (WAV, FLAC, OGG or MP3, up to 20 MB), or a multipart/form-data part named "
    "`file`; `?name=` labels it. Answered with status pending; converted once to 8 kHz, then ready or error.",
    tags=["audio"],
)
async def upload(request: web.Request) -> web.Response:
    q = decode_query(request, UploadQuery)
    blob = await _upload_body(request)
    if not blob:
        raise ApiError(422, "invalid_param", "empty upload", [("body", "no file")])
    directory = request.app[CONFIG].media.audio_dir
    os.makedirs(directory, exist_ok=True)
    audio_id = new_id("aud")
    now = request.app[CLOCK]()
    path = os.path.join(directory, f"{audio_id}.wav")
    record = AudioRecord(audio_id, q.name, path, len(blob), 0.0, current_key(request).test, now, "pending", None, "")
    store = request.app[STORE]
    store.save_audio(record)
    task = asyncio.get_running_loop().create_task(_conversion(store, record, blob))
    request.app[CONVERSIONS].add(task)
    task.add_done_callback(request.app[CONVERSIONS].discard)
    location = f"/v2/audio-files/{audio_id}"
    return json_response(audio_object(record), status=201, headers={"Location": location})


@routes.route(
    "GET",
    "/v2/audio-files",
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
    "GET",
    "/v2/audio-files/{id:[^/.]+}",
    scope="calls:read",
    response=Audio,
    summary="Get an uploaded audio file",
    tags=["audio"],
)
async def get_audio(request: web.Request) -> web.Response:
    return json_response(audio_object(audio_of(request, request.match_info["id"])))


@routes.route(
    "GET",
    "/v2/audio-files/{id:[^/.]+}.wav",
    scope="calls:read",
    summary="Download an audio file as converted (8 kHz mono PCM16 WAV)",
    tags=["audio"],
)
async def download_audio(request: web.Request) -> web.StreamResponse:
    audio = audio_of(request, request.match_info["id"])
    if audio.status != "ready":
        raise ApiError(409, "conflict", f"audio {audio.id} is {audio.status}")
    return web.FileResponse(audio.path, headers={"Content-Type": "audio/wav"})


@routes.route(
    "DELETE",
    "/v2/audio-files/{id:[^/.]+}",
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


def register(app: web.Application) -> None:
    """The `create_app` hook for these routes (with the set that keeps conversions under way)."""
    app[CONVERSIONS] = set()
    routes.register(app)
