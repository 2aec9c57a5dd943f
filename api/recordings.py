"""`/v2/recordings`: the call recordings (rows in the store, WAV files under `[media] recordings_dir`),
listed, fetched (the WAV streamed, with HTTP Range) and deleted. Started and stopped through
`/v2/calls/{id}/record`."""

from __future__ import annotations

import contextlib
import os
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from api.http import (
    B2BUA,
    STORE,
    ApiError,
    Page,
    RouteTable,
    TimeRangeQuery,
    Timestamp,
    current_key,
    decode_query,
    json_response,
    paginate,
    require_cursor,
    timestamp,
)
from softswitch.store import RecordingRecord

routes = RouteTable()


class Recording(msgspec.Struct, kw_only=True):
    """A recording of a call: `dual` (2 channels: caller left, callee right) or `mono` (the mix)."""

    id: str
    object: str = "recording"
    call_id: str
    status: Literal["in-progress", "paused", "completed", "failed"]
    channels: int
    duration_s: float
    size: Annotated[int, msgspec.Meta(description="bytes of the WAV file")]
    error: str | None = None
    created_at: Timestamp
    media_url: Annotated[str, msgspec.Meta(description="where the WAV is served")]


class RecordingQuery(TimeRangeQuery, kw_only=True):
    call_id: str | None = None


def recording_object(rec: RecordingRecord) -> Recording:
    return Recording(
        id=rec.id,
        call_id=rec.call_id,
        status=rec.status,  # type: ignore[arg-type]
        channels=rec.channels,
        duration_s=round(rec.duration_s, 3),
        size=rec.size,
        error=rec.error,
        created_at=timestamp(rec.created_at),
        media_url=f"/v2/recordings/{rec.id}.wav",
    )


def _recording(request: web.Request) -> RecordingRecord:
    """The recording of the path, if its call is of the key's kind (test or live): 404 otherwise."""
    store = request.app[STORE]
    if B2BUA in request.app:
        request.app[B2BUA].flush()
    rec = store.get_recording(request.match_info["id"])
    call = None if rec is None else store.get_call(rec.call_id)
    if rec is None or call is None or call.test != current_key(request).test:
        raise ApiError(404, "not_found", f"no recording {request.match_info['id']}")
    return rec


@routes.route(
    "GET",
    "/v2/recordings",
    scope="recordings:read",
    query=RecordingQuery,
    response=Page[Recording],
    summary="List recordings",
    description="Newest first; `starting_after` pages back.",
    tags=["recordings"],
)
async def list_recordings(request: web.Request) -> web.Response:
    q = decode_query(request, RecordingQuery)
    if B2BUA in request.app:
        request.app[B2BUA].flush()  # a call's record may still wait for the group commit
    store = request.app[STORE]
    cursor = q.starting_after
    require_cursor(cursor is not None and store.get_recording(cursor) is not None, cursor, "recording")
    rows = store.list_recordings(
        limit=q.limit + 1, call_id=q.call_id, starting_after=cursor, test=current_key(request).test, **q.bounds()
    )
    return json_response(paginate([recording_object(r) for r in rows], q.limit))


@routes.route(
    "GET",
    "/v2/recordings/{id:[^/.]+}.wav",
    scope="recordings:read",
    content_type="audio/wav",
    summary="Download a recording's WAV",
    description="Supports HTTP Range requests.",
    tags=["recordings"],
)
async def download(request: web.Request) -> web.StreamResponse:
    rec = _recording(request)
    if not os.path.exists(rec.path):
        raise ApiError(404, "not_found", f"the file of recording {rec.id} is gone")
    return web.FileResponse(rec.path, headers={"Content-Type": "audio/wav"})


@routes.route(
    "GET",
    "/v2/recordings/{id:[^/.]+}",
    scope="recordings:read",
    response=Recording,
    summary="Get a recording",
    tags=["recordings"],
)
async def get_recording(request: web.Request) -> web.Response:
    return json_response(recording_object(_recording(request)))


@routes.route(
    "DELETE",
    "/v2/recordings/{id:[^/.]+}",
    scope="recordings:write",
    response=Recording,
    summary="Delete a recording (its file and its row)",
    tags=["recordings"],
)
async def delete_recording(request: web.Request) -> web.Response:
    rec = _recording(request)
    if rec.status in ("in-progress", "paused"):
        raise ApiError(409, "conflict", f"recording {rec.id} is still running: stop it first")
    with contextlib.suppress(FileNotFoundError):  # already gone: the row goes all the same
        os.unlink(rec.path)
    request.app[STORE].delete_recording(rec.id)
    return json_response(recording_object(rec))
