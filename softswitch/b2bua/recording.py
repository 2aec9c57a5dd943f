"""Call recordings: started, paused and stopped on a live call (the API's `/record`), written by the media
engine into `[media] recordings_dir`, and reported as `recording.ready` once the file is whole.

A recording is a WAV file of the call's bridge: `dual` puts the caller on the left channel and the callee on
the right (what each party said, for transcription and QA), `mono` the mix. The media thread only feeds the
writer; the file is closed off the event loop (MediaEngine) and its `recording_done` event brings the final
duration and size here. A recording still running when its call ends is stopped by the bridge going away,
so it is finished and reported all the same. Each recording is a row in the store from its start (status
in-progress, paused, completed or failed), which the API lists and serves. A recording the process died
in the middle of is made whole at the next start (`close_orphans`): the writer keeps its file playable to
the last 250 ms, so it is completed with what it holds and reported like any other.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from media.audio import salvage_wav
from softswitch.events import new_id
from softswitch.logs import event
from softswitch.store import RecordingRecord

MODES = ("mono", "dual")
log = logging.getLogger(__name__)


class RecordingError(Exception):
    """What the API answers with 409 (no bridge yet, one already running, nothing to stop)."""


@dataclass(slots=True)
class Recording:
    id: str
    call_id: str
    path: str
    channels: int
    started_at: float
    status: str = "in-progress"  # in-progress, paused, completed, failed
    duration_s: float = 0.0
    size: int = 0
    error: str = ""
    engine_id: int = field(default=0, repr=False)

    def as_record(self) -> RecordingRecord:
        return RecordingRecord(
            self.id,
            self.call_id,
            self.path,
            self.channels,
            self.status,
            self.duration_s,
            self.size,
            self.error or None,
            self.started_at,
        )

    @classmethod
    def from_record(cls, rec: RecordingRecord) -> Recording:
        return cls(
            rec.id, rec.call_id, rec.path, rec.channels, rec.created_at, rec.status, rec.duration_s, rec.size,
            rec.error or "",
        )  # fmt: skip

    def as_dict(self) -> dict:
        return {
            "recording_id": self.id,
            "call_id": self.call_id,
            "path": self.path,
            "channels": self.channels,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "size": self.size,
            "error": self.error or None,
        }


class Recordings:
    """The recordings of the switch's live calls, by engine recording id while the engine writes them."""

    def __init__(self, sw, directory: str):
        self.sw = sw
        self.directory = directory
        self._running: dict[int, tuple[object, Recording]] = {}  # engine id -> (call, recording)
        self.by_call: dict[str, Recording] = {}  # the call's current (or last) recording

    def start(self, call, mode: str = "dual") -> Recording:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        bridge = call.media.bridge
        if call.state != "answered" or bridge is None:
            raise RecordingError("the call is not answered")
        current = self.by_call.get(call.id)
        if current is not None and current.status in ("in-progress", "paused"):
            raise RecordingError("the call is being recorded already")
        os.makedirs(self.directory, exist_ok=True)
        rec_id = new_id("rec")
        path = os.path.join(self.directory, f"{rec_id}.wav")
        rec = Recording(rec_id, call.id, path, 2 if mode == "dual" else 1, self.sw.wall())
        rec.engine_id = self.sw.engine.record(bridge, path, stereo=mode == "dual")
        self._running[rec.engine_id] = (call, rec)
        self.by_call[call.id] = rec
        self.sw.store.save_recording(rec.as_record())
        self.sw.publish(call, "recording.started", rec.as_dict())
        return rec

    def pause(self, call, paused: bool) -> Recording:
        rec = self._live(call)
        self.sw.engine.pause_recording(call.media.bridge, paused)
        rec.status = "paused" if paused else "in-progress"
        self.sw.store.save_recording(rec.as_record())
        return rec

    def stop(self, call) -> Recording:
        rec = self._live(call)
        self.sw.engine.stop_recording(call.media.bridge)
        return rec

    def _live(self, call) -> Recording:
        rec = self.by_call.get(call.id)
        if rec is None or rec.status not in ("in-progress", "paused"):
            raise RecordingError("the call is not being recorded")
        return rec

    def on_done(self, detail: dict) -> None:
        """The engine's `recording_done`: the file is closed; publish `recording.ready`."""
        entry = self._running.pop(detail["recording_id"], None)
        if entry is None:
            return
        call, rec = entry
        rec.duration_s, rec.size = detail["duration_s"], detail["size"]
        rec.error = str(detail["error"]) if detail["error"] else ""
        rec.status = "failed" if rec.error else "completed"
        self.sw.store.save_recording(rec.as_record())
        self.sw.publish(call, "recording.ready", rec.as_dict())
        if self.by_call.get(call.id) is rec and call.state == "ended":
            del self.by_call[call.id]

    def close_orphans(self) -> int:
        """Recordings that were running when the process died: each file made whole (every frame that
        reached it, see media.audio.salvage_wav) and completed, or failed if it is gone, with its
        `recording.ready`. Run after the calls' own orphans, so the event follows their `call.completed`."""
        orphans = self.sw.store.open_recordings()
        for row in orphans:
            rec = Recording.from_record(row)
            try:
                fmt, size = salvage_wav(rec.path)
            except (OSError, ValueError) as exc:
                rec.status, rec.error = "failed", f"cut off by a restart, file unusable: {exc}"
            else:
                rec.status, rec.error = "completed", ""
                rec.size, rec.duration_s = 44 + size, size / fmt.block_align / fmt.rate
            self.sw.store.save_recording(rec.as_record())
            call = self.sw.store.get_call(rec.call_id)
            if call is not None:
                self.sw.publish_record(call, "recording.ready", rec.as_dict())
        if orphans:
            event(log, "recording.orphans_closed", level=logging.WARNING, count=len(orphans))
        return len(orphans)

    def call_ended(self, call) -> None:
        """Forget a finished call's last recording (a running one is forgotten when the engine reports it)."""
        rec = self.by_call.get(call.id)
        if rec is not None and rec.status not in ("in-progress", "paused"):
            del self.by_call[call.id]
