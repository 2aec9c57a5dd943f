"""A call's media streams (softswitch.streams): which engine leg each taps, the engine's frames fanned out to
their sessions, a bidirectional subscriber's audio, marks and clears into the call, and the call's digits
and end out; `stream.started` and `stream.stopped` on the bus.

The party a stream hears is the caller for calls that came in, and the called party for calls the API
placed (its own side is virtual): `inbound` is what that party says, `outbound` what it is sent (the other
party, plus anything played or streamed to it), as Twilio's tracks are for its calls. The engine copies the
party leg's frames out per tick (one batch for every stream, `on_frames`); a stream's messages are built in
Python per frame and queued, bounded. Several streams may run on a call; one may be bidirectional.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

import aiohttp

from softswitch.logs import event
from softswitch.streams import TRACK_NAMES, Inbound, StreamClient, StreamSession, new_stream_sid
from softswitch.webhooks import outbound_connector

if TYPE_CHECKING:
    from softswitch.b2bua.call import Call

log = logging.getLogger("softswitch.streams")
MAX_PER_CALL = 8


class StreamError(Exception):
    """What the API answers with 409 (the call cannot stream now, or too many streams)."""


class CallStreams:
    """Every call's streams, for one B2BUA."""

    def __init__(self, sw, allow_private: bool = False) -> None:
        self.sw = sw
        self.allow_private = allow_private  # subscribers on loopback/private addresses (as webhooks)
        self.ca_file = ""  # [webhooks] ca_file: CAs trusted for wss:// subscribers besides the system's
        self.by_call: dict[str, dict[str, StreamSession]] = defaultdict(dict)
        self._leg_of: dict[str, int] = {}  # stream sid -> the engine leg it taps
        self._by_leg: dict[int, list[StreamSession]] = defaultdict(list)
        self._clients: dict[str, StreamClient] = {}
        self._mark_ids = itertools.count(1)
        self._http: aiohttp.ClientSession | None = None
        self.counters = {"frames": 0, "started": 0}

    def _party(self, call: Call) -> str:
        return "b" if call.a.virtual else "a"

    def _leg(self, call: Call):
        return call.media.legs.get(self._party(call))

    # -- starting and stopping -----------------------------------------------------------------------
    def start(
        self,
        call: Call,
        *,
        url: str | None,
        track: str = "inbound",
        bidirectional: bool = False,
        parameters: dict[str, str] | None = None,
        account: str = "",
        session: StreamSession | None = None,
    ) -> StreamSession:
        """A stream on an answered call: to `url` (we connect), or `session` made by the API for a subscriber
        that connected to us (listen-only). StreamError when the call is not answered or has enough."""
        if call.state != "answered":
            raise StreamError(f"call {call.id} is not answered")
        live = [s for s in self.by_call[call.id].values() if s.status != "stopped"]
        if len(live) >= MAX_PER_CALL:
            raise StreamError(f"call {call.id} has {MAX_PER_CALL} streams already")
        if bidirectional and any(s.bidirectional for s in live):
            raise StreamError(f"call {call.id} has a bidirectional stream already")
        leg = self._leg(call)
        if leg is None:
            raise StreamError(f"call {call.id} has no media")
        if session is None:
            session = StreamSession(
                new_stream_sid(), call.id, account, track, dict(parameters or {}), bidirectional, url=url
            )
        self.by_call[call.id][session.sid] = session
        self._leg_of[session.sid] = leg.id
        self._by_leg[leg.id].append(session)
        self._retap(leg)
        if bidirectional:
            self.sw.engine.stream_play(leg)
        if url is not None:
            if self._http is None:
                self._http = aiohttp.ClientSession(connector=outbound_connector(self.allow_private, self.ca_file))
            client = StreamClient(session, self._http, self._inbound, self._state)
            self._clients[session.sid] = client
            client.start()
        else:
            session.status = "streaming"
            session.put(session.connected())
            session.put(session.start())
            self._state(session, "connected")
        return session

    def stop(self, call_id: str, sid: str, reason: str = "stopped through the API") -> StreamSession | None:
        """End a stream: `stop` goes out, the taps and playout are released, `stream.stopped` published."""
        session = self.by_call.get(call_id, {}).get(sid)
        if session is None or session.status == "stopped":
            return session
        session.reason = session.reason or reason
        self._finish(session)
        return session

    def call_ended(self, call: Call) -> None:
        for session in list(self.by_call.get(call.id, {}).values()):
            self.stop(call.id, session.sid, "the call ended")
        self.by_call.pop(call.id, None)

    def _finish(self, session: StreamSession) -> None:
        session.put(session.stop())
        session.status = "stopped"
        session.wake.set()
        leg_id = self._leg_of.pop(session.sid, None)
        if leg_id is not None:
            sessions = self._by_leg.get(leg_id, [])
            if session in sessions:
                sessions.remove(session)
            if not sessions:
                self._by_leg.pop(leg_id, None)
            leg = self._engine_leg(session.call_id, leg_id)
            if leg is not None:
                self._retap(leg)
                if session.bidirectional:
                    self.sw.engine.stream_play(leg, False)
        client = self._clients.pop(session.sid, None)
        if client is not None:
            self.sw.loop.create_task(client.close())
        self._publish(session, "stream.stopped")

    def _engine_leg(self, call_id: str, leg_id: int):
        call = self.sw.calls.get(call_id)
        if call is None:
            return None
        return next((leg for leg in call.media.legs.values() if leg.id == leg_id), None)

    def _retap(self, leg) -> None:
        """Tap the leg for the union of the tracks its streams want (nothing once none is left)."""
        wanted = {t for s in self._by_leg.get(leg.id, []) for t in s.tracks}
        self.sw.engine.stream_tap(leg, rx="inbound" in wanted, tx="outbound" in wanted)

    async def close(self) -> None:
        for call_id in list(self.by_call):
            for session in list(self.by_call[call_id].values()):
                self.stop(call_id, session.sid, "shutting down")
        for client in list(self._clients.values()):
            await client.close(0.2)
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- what flows --------------------------------------------------------------------------------------
    def on_frames(self, batch: list[tuple[int, int, int, bytes]]) -> None:
        """The engine's tapped frames since the last wake-up, every stream's at once."""
        by_leg = self._by_leg
        for leg_id, track_no, ns, ulaw in batch:
            sessions = by_leg.get(leg_id)
            if not sessions:
                continue
            track = TRACK_NAMES[track_no]
            for session in sessions:
                if track in session.tracks and session.status == "streaming":
                    session.put(session.media(track, ns, ulaw))
        self.counters["frames"] += len(batch)

    def on_mark(self, leg_id: int, mark: int, cleared: bool) -> None:
        """The engine reached (or dropped) a subscriber's mark: echo it back."""
        for session in self._by_leg.get(leg_id, []):
            name = session.marks.pop(mark, None)
            if name is not None:
                session.put(session.mark(name))

    def on_dtmf(self, call: Call, side: str, digit: str) -> None:
        if side != self._party(call):
            return
        for session in self.by_call.get(call.id, {}).values():
            if session.status == "streaming":
                session.put(session.dtmf(digit))

    def _inbound(self, session: StreamSession, msg: Inbound) -> None:
        leg = self._engine_leg(session.call_id, self._leg_of.get(session.sid, -1))
        if leg is None or session.status == "stopped":
            return
        if msg.kind == "media":
            self.sw.engine.stream_push(leg, msg.audio)
        elif msg.kind == "mark":
            mark = next(self._mark_ids)
            session.marks[mark] = msg.name
            self.sw.engine.stream_mark(leg, mark)
        elif msg.kind == "clear":
            self.sw.engine.stream_clear(leg)

    def _state(self, session: StreamSession, what: str) -> None:
        if what == "connected":
            self.counters["started"] += 1
            self._publish(session, "stream.started")
        elif what == "stopped" and session.status != "stopped":
            event(log, "stream.gave_up", level=logging.WARNING, stream=session.sid, reason=session.reason)
            self._finish(session)

    def _publish(self, session: StreamSession, kind: str) -> None:
        call = self.sw.calls.get(session.call_id)
        data = session.as_dict()
        if call is not None:
            self.sw.publish(call, kind, data)
        else:
            rec = self.sw.record(session.call_id)
            if rec is not None:
                self.sw.publish_record(rec, kind, data)
