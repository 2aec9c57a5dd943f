"""Media streams: a call's audio to WebSocket subscribers and back, in the Twilio Media Streams format, so voice
bots and transcription tools written for Twilio work unchanged.

Messages out (JSON text frames): `connected`, `start` (`sequenceNumber`, `streamSid`, `start`: accountSid,
streamSid, callSid, tracks, customParameters, mediaFormat), `media` every 20 ms per track (`media`: track,
chunk, timestamp, payload: base64 8 kHz mu-law; chunk and timestamp as strings, chunk counted per track,
timestamp in ms since the stream started), `dtmf` (`dtmf`: track "inbound_track", digit), `mark` (echoed
once the audio queued before it has played, or been cleared), `stop`. Messages in (bidirectional streams):
`media` (`media.payload`: base64 mu-law to play), `mark` (`mark.name`), `clear`. Anything else, or a
malformed message, is counted and logged and changes nothing.

`StreamSession` builds and parses the messages (sans-IO) and holds the outbox: bounded, oldest dropped and
counted when a subscriber is slow, so a slow or dead subscriber never holds the media engine or other calls
up. `StreamClient` is the connection the softswitch opens to a subscriber's ws:// or wss:// URL.

Reconnection policy: a stream whose connection fails or drops while its call lasts is dialled again up to
`RECONNECTS` times, after 0.5, 1 and 2 s; each new connection gets `connected` and `start` again (the same
streamSid, sequence numbers going on), and the audio of the outage is dropped (counted), never replayed
late. When the attempts are used up the stream stops (`stream.stopped` with the reason).
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from softswitch.logs import event as log_event

log = logging.getLogger("softswitch.streams")

TRACKS = {"inbound": ("inbound",), "outbound": ("outbound",), "both": ("inbound", "outbound")}
TRACK_NAMES = ("inbound", "outbound")  # the engine's track numbers 0 and 1, as the party hears it
MAX_QUEUE = 500  # messages waiting for a subscriber: 5 s of both tracks
MAX_MESSAGE = 1 << 20  # the largest message accepted from a subscriber
RECONNECTS = 3
RECONNECT_DELAYS_S = (0.5, 1.0, 2.0)
CONNECT_TIMEOUT_S = 10.0


def new_stream_sid() -> str:
    """`MZ` and 32 hex digits: the shape of Twilio's stream SIDs, which some frameworks expect."""
    return "MZ" + secrets.token_hex(16)


@dataclass(slots=True)
class Inbound:
    """A subscriber's message, understood: `media` (audio: mu-law bytes), `mark` (name) or `clear`."""

    kind: str
    audio: bytes = b""
    name: str = ""


@dataclass(eq=False)
class StreamSession:
    """One stream to one subscriber: the message sequence and the outbox."""

    sid: str
    call_id: str
    account_sid: str
    track: str  # inbound, outbound or both
    parameters: dict[str, str] = field(default_factory=dict)
    bidirectional: bool = False
    url: str | None = None  # None: a subscriber that connected to us (listen-only)
    max_queue: int = MAX_QUEUE
    status: str = "connecting"  # connecting, streaming, stopped
    reason: str = ""
    started_ns: int | None = None
    sequence: int = 0
    chunks: dict[str, int] = field(default_factory=lambda: {"inbound": 0, "outbound": 0})
    counters: dict[str, int] = field(
        default_factory=lambda: {"sent": 0, "dropped": 0, "malformed": 0, "received_media": 0}
    )
    outbox: deque[str] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    marks: dict[int, str] = field(default_factory=dict)  # engine mark id -> the subscriber's name

    @property
    def tracks(self) -> tuple[str, ...]:
        return TRACKS[self.track]

    # -- out -----------------------------------------------------------------------------------------
    def put(self, message: str) -> None:
        if len(self.outbox) >= self.max_queue:
            self.outbox.popleft()
            self.counters["dropped"] += 1
        self.outbox.append(message)
        self.wake.set()

    def _seq(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self) -> str:
        start = {
            "accountSid": self.account_sid,
            "streamSid": self.sid,
            "callSid": self.call_id,
            "tracks": list(self.tracks),
            "customParameters": dict(self.parameters),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        return json.dumps({"event": "start", "sequenceNumber": self._seq(), "start": start, "streamSid": self.sid})

    def media(self, track: str, ns: int, ulaw: bytes) -> str:
        """A 20 ms frame; `ns` is the engine's tick time, which dates it from the stream's first frame."""
        if self.started_ns is None:
            self.started_ns = ns
        self.chunks[track] += 1
        payload = binascii.b2a_base64(ulaw, newline=False).decode()
        return (
            f'{{"event":"media","sequenceNumber":"{self._seq()}","media":{{"track":"{track}",'
            f'"chunk":"{self.chunks[track]}","timestamp":"{(ns - self.started_ns) // 1_000_000}",'
            f'"payload":"{payload}"}},"streamSid":"{self.sid}"}}'
        )

    def dtmf(self, digit: str) -> str:
        body = {"event": "dtmf", "streamSid": self.sid, "sequenceNumber": self._seq()}
        return json.dumps(body | {"dtmf": {"track": "inbound_track", "digit": digit}})

    def mark(self, name: str) -> str:
        body = {"event": "mark", "sequenceNumber": self._seq(), "streamSid": self.sid}
        return json.dumps(body | {"mark": {"name": name}})

    def stop(self) -> str:
        stop = {"accountSid": self.account_sid, "callSid": self.call_id}
        return json.dumps({"event": "stop", "sequenceNumber": self._seq(), "streamSid": self.sid, "stop": stop})

    # -- in ------------------------------------------------------------------------------------------
    def parse(self, text: str) -> Inbound | None:
        """A subscriber's message, or None (counted as malformed and logged) when it is not one we act on."""
        try:
            msg = json.loads(text)
            kind = msg["event"]
            if kind == "media" and self.bidirectional:
                audio = binascii.a2b_base64(msg["media"]["payload"])
                self.counters["received_media"] += 1
                return Inbound("media", audio=audio)
            if kind == "mark" and self.bidirectional:
                name = msg["mark"]["name"]
                if isinstance(name, str):
                    return Inbound("mark", name=name)
            elif kind == "clear" and self.bidirectional:
                return Inbound("clear")
            reason = f"unexpected event {kind!r}" if isinstance(kind, str) else "event is not a string"
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        self.counters["malformed"] += 1
        log_event(log, "stream.bad_message", logging.WARNING, stream=self.sid, call=self.call_id, reason=reason[:200])
        return None

    def as_dict(self) -> dict:
        return {
            "stream_id": self.sid,
            "url": self.url,
            "track": self.track,
            "bidirectional": self.bidirectional,
            "status": self.status,
            "reason": self.reason or None,
            "messages_sent": self.counters["sent"],
            "messages_dropped": self.counters["dropped"],
            "malformed_received": self.counters["malformed"],
        }


async def send_outbox(session: StreamSession, ws) -> None:
    """Send the session's queued messages on `ws` (a client or server WebSocket) as they come, until the
    session stops (then what is queued, the `stop` last, is sent) or the connection fails."""
    while True:
        while session.outbox:
            await ws.send_str(session.outbox.popleft())
            session.counters["sent"] += 1
        if session.status == "stopped":
            return
        session.wake.clear()
        await session.wake.wait()


class StreamClient:
    """The softswitch's connection to a subscriber's URL, with the reconnection policy (module docstring).

    `on_inbound(session, Inbound)` gets what a bidirectional subscriber sends; `on_state(session, what)` hears
    "connected" (the first time), "stopped" (for good, reason in the session)."""

    def __init__(
        self,
        session: StreamSession,
        http: aiohttp.ClientSession,
        on_inbound: Callable[[StreamSession, Inbound], None],
        on_state: Callable[[StreamSession, str], None],
    ) -> None:
        self.session = session
        self.http = http
        self.on_inbound = on_inbound
        self.on_state = on_state
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"stream-{self.session.sid}")

    async def _run(self) -> None:
        s = self.session
        failures = 0
        ever = False
        while s.status != "stopped":
            try:
                async with self.http.ws_connect(
                    s.url, timeout=aiohttp.ClientWSTimeout(ws_close=2.0), max_msg_size=MAX_MESSAGE, heartbeat=20.0
                ) as ws:
                    failures = 0
                    s.outbox.clear()  # audio queued while connecting or during an outage is stale
                    s.outbox.extend((s.connected(), s.start()))
                    if not ever:
                        ever = True
                        s.status = "streaming"
                        self.on_state(s, "connected")
                    s.wake.set()
                    loop = asyncio.get_running_loop()
                    reader, sender = loop.create_task(self._read(ws)), loop.create_task(send_outbox(s, ws))
                    try:
                        await asyncio.wait((reader, sender), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        reader.cancel()
                        sender.cancel()
                    if sender.done() and not sender.cancelled() and sender.exception() is None:
                        await ws.close()  # stopped, and the stop message went out
                        return
                    if sender.done() and not sender.cancelled():
                        raise sender.exception()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                s.reason = f"{type(exc).__name__}: {exc}"[:300]
            if s.status == "stopped":
                return
            failures += 1
            if failures > RECONNECTS:
                s.reason = s.reason or "the subscriber closed the connection"
                self.on_state(s, "stopped")
                return
            log_event(log, "stream.reconnect", logging.WARNING, stream=s.sid, call=s.call_id, attempt=failures)
            await asyncio.sleep(RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S)) - 1])

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        s = self.session
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                inbound = s.parse(msg.data)
                if inbound is not None:
                    self.on_inbound(s, inbound)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                s.parse("")  # counted as malformed
        s.reason = "the subscriber closed the connection"

    async def close(self, grace_s: float = 1.0) -> None:
        """The stream is stopped: let the outbox (ending with `stop`) go out for up to `grace_s`, then end."""
        if self.task is None:
            return
        self.session.wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace_s)
        except (TimeoutError, asyncio.CancelledError):
            self.task.cancel()
