"""A call flow running on a call: an application's instructions (softswitch.flows: JSON verbs or TwiML)
fetched from its URL and carried out on the call's party leg, one verb after the other.

Where flows start: a call the API placed with `url` once it is answered (the party is the called side), and
an inbound call whose route says `app:URL` (the party is the caller). An inbound call's instructions are
fetched before it is answered, as Twilio does: a first `reject` refuses it (603, or 486 for busy) without
answering; anything else answers it (our SDP, the call's other side virtual) and runs.

Verbs: `say` (text to speech, softswitch.flows.tts), `play` (a WAV by URL, fetched once and cached, or an
uploaded audio file), `pause`, `gather` (digits from every DTMF source; a key stops the prompt), `stream`
(softswitch.b2bua.streams: `connect` holds the flow until the stream ends), `redirect`, `hangup`, `reject`.
`record` (a beep, then the party's audio until a finish key, `max_length`, or `timeout` seconds of silence
as the engine's voice segmenter hears it; `recording.ready` as for any recording, and the recording's URL,
duration and key to the action), `dial` (a `number` or `client`, through the transfer machinery in place of the
call's virtual side, or a `<Sip>` URI dialled itself over UDP: once the party answers the two talk; when it
hangs up the caller stays and the action gets `DialCallStatus=completed` with `DialCallDuration` (or the next
verb runs); when it cannot be reached, the action gets `DialCallStatus` busy, no-answer or failed; a first
`answerOnBridge` dial of an inbound call hands the unanswered call over as a routed call).
When the instructions run out the call is hung up (as Twilio does). A fetch that fails, or instructions that
cannot run, end the flow: the caller hears a short error prompt, the call is hung up with the reason in its
record (`data.flow_error`, hangup_by "app") and a `call.flow_error` event is published. Redirect loops are
bounded: ten documents in a row that did nothing but fetch the next are an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import aiohttp
import numpy as np

from media.amd import AmdParams
from media.audio import decode_wav, load_wav
from softswitch.b2bua import transfer
from softswitch.b2bua.recording import RecordingError
from softswitch.flows import scenarios
from softswitch.flows import verbs as v
from softswitch.flows.fetch import fetch
from softswitch.flows.tts import EspeakTts, Tts, TtsError
from softswitch.logs import event
from softswitch.router import Target
from softswitch.streams import StreamSession
from softswitch.webhooks import outbound_connector

if TYPE_CHECKING:
    from softswitch.b2bua.call import Call

log = logging.getLogger("softswitch.flow")
ERROR_PROMPT = "We are sorry, an application error has occurred. Goodbye."
MAX_IDLE_FETCHES = 10  # documents in a row that only redirect
MAX_AUDIO_BYTES = 20 * 1024 * 1024
STOP = object()  # a verb's result: the flow is over
BEEP = (6000 * np.sin(2 * np.pi * 1000 * np.arange(4000) / 8000)).astype(np.int16).tobytes()  # 0.5 s, 1 kHz


class Flows:
    """What every call flow of one B2BUA shares: the HTTP client, text to speech, a cache of fetched audio,
    and the secret signing requests of route-started flows."""

    def __init__(self, sw, tts: Tts | None = None, allow_private: bool = False) -> None:
        self.sw = sw
        self.tts = tts or EspeakTts()
        self.allow_private = allow_private
        self.ca_file = ""  # [webhooks] ca_file: CAs trusted for https:// applications besides the system's
        self.route_secret: str | None = None  # set by Services (from the store)
        self.api_base = "http://127.0.0.1:8080"  # where the API answers (RecordingUrl); set by Services
        self.audio: OrderedDict[str, bytes] = OrderedDict()
        self._fetching: dict[str, asyncio.Future] = {}
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        """Made on first use (after Services set `allow_private`): names resolving to non-public addresses are
        refused at connect time unless allowed, as for webhooks; no cap on connections (calls fetch at once)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=outbound_connector(self.allow_private, self.ca_file))
        return self._http

    def scenario(self, name: str, branch: str, test: bool = False) -> list:
        """The verbs of a stored scenario's branch; LookupError when there is no such scenario or branch."""
        rec = self.sw.store.scenario_named(name, test)
        if rec is None:
            raise LookupError(f"no scenario {name!r}")
        verbs = scenarios.branch(scenarios.parse(rec.script), branch)
        if verbs is None:
            raise LookupError(f"scenario {name!r} has no {branch} branch")
        return verbs

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def fetch_audio(self, url: str) -> bytes:
        """A WAV file by URL as 8 kHz PCM, fetched once (the last 32 kept; asked twice at once, fetched once)."""
        if url in self.audio:
            self.audio.move_to_end(url)
            return self.audio[url]
        if url not in self._fetching:
            self._fetching[url] = asyncio.ensure_future(self._fetch_audio(url))
            self._fetching[url].add_done_callback(lambda _f: self._fetching.pop(url, None))
        return await asyncio.shield(self._fetching[url])

    async def _fetch_audio(self, url: str) -> bytes:
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

    def __init__(
        self,
        call: Call,
        side: str,
        url: str,
        *,
        method: str = "POST",
        secret: str | None,
        account: str,
        verbs: list | None = None,
    ):
        self.call = call
        self.sw = call.sw
        self.flows: Flows = call.sw.flows
        self.side = side
        self.url = url  # the current document's (for a gather without an action)
        self.method = method
        self.secret = secret
        self.account = account
        self.verbs = verbs  # a scenario's branch: run as they are (no URL to fetch them from)
        self.task: asyncio.Task | None = None
        self._plays: dict[int, asyncio.Future] = {}
        self._digits: asyncio.Queue[str] | None = None  # while a gather or a record listens
        self._silent_since: float | bool | None = False  # recording: when the silence began; False: not recording
        self._segmenter = AmdParams().kernel()
        self._dialing: asyncio.Future | None = None
        self.dialed: str | None = None  # the side a dial connected, while it is on
        self._dial_ended: asyncio.Future | None = None
        self._idle_fetches = 0

    # -- starting ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Fetch the instructions and run them (the call is answered)."""
        self.task = self.sw.loop.create_task(self._run(self.verbs), name=f"flow-{self.call.id}")

    def start_inbound(self) -> None:
        """Fetch the instructions of an inbound call, then answer it (or reject it) and run them."""
        self.task = self.sw.loop.create_task(self._inbound(), name=f"flow-{self.call.id}")

    async def _inbound(self) -> None:
        verbs, error = self.verbs, ""
        if verbs is None:
            try:
                verbs = await self._fetch(self.url, self.method, {}, status="ringing")
            except v.FlowError as exc:
                error = str(exc)
        if self.call.state not in ("routing", "ringing"):
            return  # the caller gave up meanwhile
        if verbs and isinstance(verbs[0], v.Reject):
            code, reason = (486, "Busy Here") if verbs[0].reason == "busy" else (603, "Decline")
            self.call.fail(code, reason, hangup_by="app")
            return
        if verbs and isinstance(verbs[0], v.Dial) and verbs[0].answer_on_bridge and not verbs[0].sip:
            # answerOnBridge first: not answered by us; the caller hears the party ring and gets its answer
            # (or its failure), as a routed call: the flow hands the call over and ends
            dial = verbs[0]
            target = dial.number or dial.client
            targets = [Target("user", dial.client, -1)] if dial.client else self.sw.router.targets(target)
            self.call.flow = None
            self.call.record.data["flow_dialed"] = target
            self.call.targets = list(targets)
            self.call.by_operator = True  # the flow chose the number: no transit rule (b2bua.policy)
            self.call.called_user = target
            self.call.next_target()
            return
        self.call.answer_locally()
        if verbs is None:
            await self._fail(error)
            return
        await self._run(verbs)

    def stop(self) -> None:
        """The call ended: stop whatever the flow was doing; a recording is finished first and its action
        still told (a voicemail caller hangs up to finish the message)."""
        if self._silent_since is not False and self._digits is not None:
            self._digits.put_nowait("")  # the record verb ends, as by a key
            return
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
                self._prepare(verbs)
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

    def _prepare(self, verbs: list) -> None:
        """Render the document's speech and fetch its audio now, in the background, so each verb's audio is
        ready when its turn comes: moving from one verb to the next leaves no gap (a failure here is the
        verb's own, raised when it runs)."""
        for verb in verbs:
            for item in (verb, *getattr(verb, "prompt", ())):
                if isinstance(item, v.Say):
                    job = self.flows.tts.render(item.text, item.voice)
                elif isinstance(item, v.Play) and item.url is not None:
                    job = self.flows.fetch_audio(self._abs(item.url))
                else:
                    continue
                task = self.sw.loop.create_task(job)
                task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no warning

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
        elif isinstance(verb, v.Record):
            return await self._record(verb)
        elif isinstance(verb, v.Dial):
            return await self._dial(verb)
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
        if row is None or row.test != self.call.record.test or row.status != "ready":
            raise v.FlowError(f"play: no ready audio file {verb.audio_id}")
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
        if not verb.action and not self.url:
            return None  # a scenario's gather with nowhere to send the digits: on to the next verb
        params = {"Digits": digits}
        if finished_on:
            params["FinishedOnKey"] = finished_on
        action = self._abs(verb.action) if verb.action else self.url
        return await self._fetch(action, verb.method if verb.action else self.method, params)

    # -- record ----------------------------------------------------------------------------------------
    def on_segment(self, side: str, detail: dict) -> None:
        """A voice/silence boundary of the party's audio (the engine's AMD segmenter), while recording."""
        if side != self.side or self._silent_since is False:
            return
        if detail["segment"] == "voice":
            self._silent_since = None
        elif self._silent_since is None:
            self._silent_since = self.sw.loop.time() - max(0, detail["now_ms"] - detail["start_ms"]) / 1000

    async def _record(self, verb: v.Record):
        if verb.play_beep:
            await self._play(BEEP, 1)
        try:
            rec = self.sw.recordings.start(self.call, "mono")
        except (RecordingError, OSError, ValueError) as exc:
            raise v.FlowError(f"record: {exc}") from None
        loop = self.sw.loop
        ready = loop.create_future()

        def on_ready(ev) -> None:
            if ev.data.get("recording_id") == rec.id and not ready.done():
                ready.set_result(ev.data)

        unsubscribe = self.sw.bus.subscribe(on_ready, types=["recording.ready"])
        self._digits = asyncio.Queue()
        self._silent_since = loop.time()  # silence from the start counts too
        if verb.timeout:
            self.sw.engine.detect_amd(self.leg, self._segmenter)
        deadline = loop.time() + verb.max_length
        finished_on = ""
        try:
            while True:
                now = loop.time()
                ends = [deadline]
                if verb.timeout and self._silent_since is not None:
                    ends.append(self._silent_since + verb.timeout)
                if now >= min(ends):
                    break
                try:
                    key = await asyncio.wait_for(self._digits.get(), min(min(ends) - now, 0.25))
                except TimeoutError:
                    continue
                if key == "" or key in verb.finish_on_key:  # "": the call ended
                    finished_on = key
                    break
            if self.call.state != "ended":  # (the call's end stops it by itself)
                self.sw.recordings.stop(self.call)
            data = await asyncio.wait_for(ready, 10)
        except (RecordingError, TimeoutError) as exc:
            raise v.FlowError(f"record: {exc or 'the recording was not finished in time'}") from None
        finally:
            unsubscribe()
            self._digits = None
            self._silent_since = False
            if verb.timeout and self.call.state != "ended":
                self.sw.engine.detect_amd(self.leg, None)
        recording = {
            "RecordingSid": rec.id,
            "RecordingUrl": f"{self.flows.api_base}/v2/recordings/{rec.id}",
            "RecordingDuration": str(round(data.get("duration_s", 0))),
        }
        if verb.recording_status_callback:
            status = recording | {"RecordingStatus": "completed", "RecordingChannels": "1"}
            self.sw.loop.create_task(self._notify(self._abs(verb.recording_status_callback), status))
        if not verb.action:
            return None
        params = recording | {"Digits": "hangup" if self.call.state == "ended" else finished_on}
        return await self._fetch(self._abs(verb.action), verb.method, params)

    async def _notify(self, url: str, extra: dict[str, str]) -> None:
        """A status callback (its answer, if any, is not instructions): POSTed and signed like a fetch."""
        try:
            await fetch(self.flows.http, url, self._params("in-progress") | extra, secret=self.secret,
                        allow_private=self.flows.allow_private, expect_instructions=False)  # fmt: skip
        except v.FlowError as exc:
            event(log, "flow.callback_failed", level=logging.WARNING, call=self.call.id, reason=str(exc))

    # -- dial ------------------------------------------------------------------------------------------
    def on_dial_result(self, status: int) -> None:
        """The dialled party answered (200) or could not be reached (its final status)."""
        if self._dialing is not None and not self._dialing.done():
            self._dialing.set_result(status)

    async def _dial(self, verb: v.Dial):
        virtual = "b" if self.side == "a" else "a"
        target = verb.number or verb.client or verb.sip
        if verb.sip is not None:
            if not verb.sip.startswith("sip:") or "@" not in verb.sip:
                raise v.FlowError(f"dial: {verb.sip!r} is not a sip: URI with a user")
            targets = [Target("sip", verb.sip, -1)]
            target = verb.sip.removeprefix("sip:").split("@", 1)[0]  # the called user, in our INVITE
        else:
            targets = [Target("user", verb.client, -1)] if verb.client else None
        if targets is None and not self.sw.router.targets(target):
            raise v.FlowError(f"dial: no route to {target}")
        self._dialing = self.sw.loop.create_future()
        if verb.caller_id is not None and not re.fullmatch(r"[A-Za-z0-9+._-]{1,64}", verb.caller_id):
            raise v.FlowError(f"dial: callerId {verb.caller_id!r} is not a number or name")
        if not transfer.start(self.call, virtual, target, targets, caller=verb.caller_id):
            raise v.FlowError("dial: the call is already connecting another party")
        give_up = self.sw.loop.call_later(verb.timeout, self._dial_timeout)
        try:
            status = await self._dialing
        finally:
            give_up.cancel()
            self._dialing = None
        if status == 200:  # connected: the flow waits until the dialled party hangs up (the caller's BYE ends all)
            self.call.record.data["flow_dialed"] = target
            if verb.record:
                with contextlib.suppress(RecordingError, OSError):
                    self.sw.recordings.start(self.call, verb.record)
            self.dialed = virtual
            self._dial_ended = self.sw.loop.create_future()
            connected_at = self.sw.loop.time()
            try:
                await self._dial_ended
            finally:
                self.dialed, self._dial_ended = None, None
            if verb.record:
                with contextlib.suppress(RecordingError):
                    self.sw.recordings.stop(self.call)
            if not verb.action:
                return None  # on to the next verb, with the caller
            duration = str(round(self.sw.loop.time() - connected_at))
            params = {"DialCallStatus": "completed", "DialCallDuration": duration}
            return await self._fetch(self._abs(verb.action), verb.method, params)
        dial_status = "busy" if status in (486, 600) else "no-answer" if status in (408, 480, 487) else "failed"
        if not verb.action:
            return None
        return await self._fetch(self._abs(verb.action), verb.method, {"DialCallStatus": dial_status})

    def on_dialed_hangup(self) -> None:
        """The party the dial connected hung up: the flow goes on with the caller."""
        if self._dial_ended is not None and not self._dial_ended.done():
            self._dial_ended.set_result(None)

    def _dial_timeout(self) -> None:
        t = self.call.transfer
        for fork in t.forks if t is not None else ():
            if not fork.done:
                self.sw.endpoint.cancel(fork.key)

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
