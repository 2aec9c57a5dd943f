"""A call flow running on a call: an application's instructions (softswitch.flows: JSON verbs or TwiML)
fetched from its URL and carried out on the call's party leg, one verb after the other.

Where flows start: a call the API placed with `url` once it is answered (the party is the called side), and
an inbound call whose route says `app:URL` (the party is the caller). An inbound call's instructions are
fetched before it is answered, as Twilio does: a first `reject` refuses it (603, or 486 for busy) without
answering; anything else answers it (our SDP, the call's other side virtual) and runs.

Verbs: `say` (text to speech, softswitch.flows.tts), `play` (a WAV by URL, fetched once and cached, or an
uploaded audio file), `pause`, `gather` (digits from every DTMF source; a key stops the prompt), `stream`
(softswitch.b2bua.streams: `connect` holds the flow until the stream ends), `redirect`, `hangup`, `reject`.
`record` and `dial` are not carried out yet: a document using them fails like one with an unknown verb.
When the instructions run out the call is hung up (as Twilio does). A fetch that fails, or instructions that
cannot run, end the flow: the caller hears a short error prompt, the call is hung up with the reason in its
record (`data.flow_error`, hangup_by "app") and a `call.flow_error` event is published. Redirect loops are
bounded: ten documents in a row that did nothing but fetch the next are an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import aiohttp

from media.audio import decode_wav, load_wav
from softswitch.flows import verbs as v
from softswitch.flows.fetch import fetch
from softswitch.flows.tts import EspeakTts, Tts, TtsError
from softswitch.logs import event
from softswitch.streams import StreamSession

if TYPE_CHECKING:
    from softswitch.b2bua.call import Call

log = logging.getLogger("softswitch.flow")
ERROR_PROMPT = "We are sorry, an application error has occurred. Goodbye."
MAX_IDLE_FETCHES = 10  # documents in a row that only redirect
MAX_AUDIO_BYTES = 20 * 1024 * 1024
STOP = object()  # a verb's result: the flow is over


class Flows:
    """What every call flow of one B2BUA shares: the HTTP client, text to speech, a cache of fetched audio,
    and the secret signing requests of route-started flows."""

    def __init__(self, sw, tts: Tts | None = None, allow_private: bool = False) -> None:
        self.sw = sw
        self.tts = tts or EspeakTts()
        self.allow_private = allow_private
        self.route_secret: str | None = None  # set by Services (from the store)
        self.audio: OrderedDict[str, bytes] = OrderedDict()
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def fetch_audio(self, url: str) -> bytes:
        """A WAV file by URL as 8 kHz PCM, fetched once (the last 32 kept)."""
        if url in self.audio:
            self.audio.move_to_end(url)
            return self.audio[url]
        try:
            async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=15)) as resp:
                blob = await resp.content.read(MAX_AUDIO_BYTES + 1)
                if resp.status != 200 or len(blob) > MAX_AUDIO_BYTES:
                    raise v.FlowError(f"play {url}: answered {resp.status} (or larger than 20 MB)")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise v.FlowError(f"play {url}: {type(exc).__name__}: {exc}") from None
        try:
            pcm = decode_wav(blob, url)
        except ValueError as exc:
            raise v.FlowError(f"play: {exc}") from None
        self.audio[url] = pcm
        while len(self.audio) > 32:
            self.audio.popitem(last=False)
        return pcm


class CallFlow:
    """One call's flow (module docstring)."""

    def __init__(self, call: Call, side: str, url: str, *, method: str = "POST", secret: str | None, account: str):
        self.call = call
        self.sw = call.sw
        self.flows: Flows = call.sw.flows
        self.side = side
        self.url = url  # the current document's (for a gather without an action)
        self.method = method
        self.secret = secret
        self.account = account
        self.task: asyncio.Task | None = None
        self._plays: dict[int, asyncio.Future] = {}
        self._digits: asyncio.Queue[str] | None = None  # while a gather listens
        self._idle_fetches = 0

    # -- starting ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Fetch the instructions and run them (the call is answered)."""
        self.task = self.sw.loop.create_task(self._run(None), name=f"flow-{self.call.id}")

    def start_inbound(self) -> None:
        """Fetch the instructions of an inbound call, then answer it (or reject it) and run them."""
        self.task = self.sw.loop.create_task(self._inbound(), name=f"flow-{self.call.id}")

    async def _inbound(self) -> None:
        try:
            verbs = await self._fetch(self.url, self.method, {}, status="ringing")
        except v.FlowError as exc:
            verbs, error = None, str(exc)
        if self.call.state not in ("routing", "ringing"):
            return  # the caller gave up meanwhile
        if verbs and isinstance(verbs[0], v.Reject):
            code, reason = (486, "Busy Here") if verbs[0].reason == "busy" else (603, "Decline")
            self.call.fail(code, reason, hangup_by="app")
            return
        self.call.answer_locally()
        if verbs is None:
            await self._fail(error)
            return
        await self._run(verbs)

    def stop(self) -> None:
        """The call ended: stop whatever the flow was doing."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        for future in self._plays.values():
            if not future.done():
                future.cancel()

    # -- events from the call -------------------------------------------------------------------------
    def on_play_done(self, play_id: int, interrupted: bool) -> None:
        future = self._plays.pop(play_id, None)
        if future is not None and not future.done():
            future.set_result(interrupted)

    def on_digit(self, side: str, digit: str) -> None:
        if side == self.side and self._digits is not None:
            self._digits.put_nowait(digit)
            self.sw.engine.stop_play(self.leg)  # barge-in

    @property
    def leg(self):
        return self.call.media.legs[self.side]

    # -- running -------------------------------------------------------------------------------------
    async def _run(self, verbs: list | None) -> None:
        try:
            if verbs is None:
                verbs = await self._fetch(self.url, self.method, {})
            while True:
                following = None
                for verb in verbs:
                    result = await self._do(verb)
                    if result is STOP or self.call.state == "ended":
                        return
                    if result is not None:
                        following = result
                        break
                if following is None:  # the instructions ran out
                    self.call.hangup("app", 200, "the call flow ended")
                    return
                verbs = following
        except v.FlowError as exc:
            await self._fail(str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours must not leave the call up and silent
            event(log, "flow.crashed", level=logging.ERROR, call=self.call.id, error=f"{type(exc).__name__}: {exc}")
            await self._fail(f"internal error: {type(exc).__name__}")

    async def _do(self, verb: v.Verb):
        self._idle_fetches = 0 if not isinstance(verb, v.Redirect) else self._idle_fetches
        if isinstance(verb, v.Say):
            await self._play(await self._speech(verb.text, verb.voice), verb.loop)
        elif isinstance(verb, v.Play):
            await self._play(await self._audio(verb), verb.loop)
        elif isinstance(verb, v.Pause):
            await self._pause(verb.length)
        elif isinstance(verb, v.Gather):
            return await self._gather(verb)
        elif isinstance(verb, v.Redirect):
            self._idle_fetches += 1
            return await self._fetch(self._abs(verb.url), verb.method, {})
        elif isinstance(verb, v.Hangup | v.Reject):  # reject after the answer: a hangup, as Twilio does
            self.call.hangup("app", 200, "hung up by the call flow")
            return STOP
        elif isinstance(verb, v.Stream):
            await self._stream(verb)
        else:
            raise v.FlowError(f"the {verb.__class__.__name__.lower()} verb is not supported yet")
        return None

    async def _fetch(self, url: str, method: str, extra: dict[str, str], status: str = "in-progress") -> list:
        if self._idle_fetches >= MAX_IDLE_FETCHES:
            raise v.FlowError(f"{MAX_IDLE_FETCHES} documents in a row only redirected: a loop?")
        verbs = await fetch(
            self.flows.http,
            url,
            self._params(status) | extra,
            method=method,
            secret=self.secret,
            allow_private=self.flows.allow_private,
        )
        self.url, self.method = url, method
        return verbs

    def _abs(self, url: str) -> str:
        """A URL of the instructions, relative ones resolved against the current document's."""
        return urljoin(self.url, url)

    def _params(self, status: str) -> dict[str, str]:
        rec = self.call.record
        params = {
            "CallSid": rec.id,
            "AccountSid": self.account,
            "From": _user(rec.from_uri),
            "To": _user(rec.to_uri),
            "Direction": "outbound-api" if self.call.a.virtual else "inbound",
            "CallStatus": status,
            "ApiVersion": "2010-04-01",
        }
        if rec.data.get("answered_by"):
            params["AnsweredBy"] = rec.data["answered_by"]
        return params

    # -- audio ---------------------------------------------------------------------------------------
    async def _speech(self, text: str, voice: str) -> bytes:
        try:
            return await self.flows.tts.render(text, voice)
        except TtsError as exc:
            raise v.FlowError(f"say: {exc}") from None

    async def _audio(self, verb: v.Play) -> bytes:
        if verb.url is not None:
            return await self.flows.fetch_audio(self._abs(verb.url))
        row = self.sw.store.get_audio(verb.audio_id)
        if row is None or row.test != self.call.record.test:
            raise v.FlowError(f"play: no audio file {verb.audio_id}")
        return await asyncio.to_thread(load_wav, row.path)

    async def _play(self, pcm: bytes, loop: int) -> bool:
        """Play and wait for the end; True when a key (or the call's end) cut it short."""
        if not pcm:
            return False
        forever = loop == 0
        data = pcm if forever else pcm * loop
        play_id = self.sw.engine.play(self.leg, data, forever)
        future = self.sw.loop.create_future()
        self._plays[play_id] = future
        return await future

    async def _pause(self, seconds: float) -> None:
        if self._digits is None:
            await asyncio.sleep(seconds)
            return
        try:  # in a gather: a key ends the pause
            digit = await asyncio.wait_for(self._digits.get(), seconds)
            self._digits.put_nowait(digit)  # heard by the gather, not lost
        except TimeoutError:
            pass

    # -- gather ----------------------------------------------------------------------------------------
    async def _gather(self, verb: v.Gather):
        self._digits = asyncio.Queue()
        digits, finished_on = "", ""
        try:
            for prompt in verb.prompt:
                if not self._digits.empty():
                    break  # barge-in: the rest of the prompt is skipped
                await self._do(prompt)
            while True:
                try:
                    key = await asyncio.wait_for(self._digits.get(), verb.timeout)
                except TimeoutError:
                    break
                if key in verb.finish_on_key:
                    finished_on = key
                    break
                digits += key
                if verb.num_digits is not None and len(digits) >= verb.num_digits:
                    break
        finally:
            self._digits = None
        if not digits and not (verb.action and verb.action_on_empty_result):
            return None  # nothing pressed: on to the next verb
        params = {"Digits": digits}
        if finished_on:
            params["FinishedOnKey"] = finished_on
        action = self._abs(verb.action) if verb.action else self.url
        return await self._fetch(action, verb.method if verb.action else self.method, params)

    # -- streams ---------------------------------------------------------------------------------------
    async def _stream(self, verb: v.Stream) -> None:
        from softswitch.b2bua.streams import StreamError

        try:
            session: StreamSession = self.sw.streams.start(
                self.call,
                url=verb.url,
                track=verb.track,
                bidirectional=verb.connect,
                parameters=dict(verb.parameters),
                account=self.account,
            )
        except StreamError as exc:
            raise v.FlowError(f"stream: {exc}") from None
        while verb.connect and session.status != "stopped":  # <Connect><Stream>: until the stream ends
            await asyncio.sleep(0.1)

    # -- failing -----------------------------------------------------------------------------------------
    async def _fail(self, reason: str) -> None:
        call = self.call
        event(log, "flow.error", level=logging.WARNING, call=call.id, reason=reason)
        call.record.data["flow_error"] = reason
        self.sw.save(call)
        self.sw.publish(call, "call.flow_error", {"reason": reason, "url": self.url})
        if call.state != "answered":
            return
        with contextlib.suppress(TtsError):
            await self._play(await self.flows.tts.render(ERROR_PROMPT, "en-us"), 1)
        call.hangup("app", 500, f"call flow error: {reason}"[:200])


def _user(uri: str) -> str:
    user = uri.split(":", 1)[-1].split("@", 1)[0]
    return user.split(";", 1)[0]
