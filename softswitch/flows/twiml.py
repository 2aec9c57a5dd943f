"""TwiML, the subset that matters, turned into our verbs (softswitch.flows.verbs), so applications written
for Twilio run unchanged.

Supported: `<Say voice language loop>`, `<Play loop>`, `<Pause length>`, `<Gather input="dtmf" numDigits
timeout finishOnKey action method actionOnEmptyResult>` with nested `<Say>`, `<Play>`, `<Pause>`, `<Record
maxLength timeout finishOnKey playBeep action method recordingStatusCallback>`, `<Dial timeout callerId
record action method answerOnBridge>` with a number as text or one `<Number>`, `<Sip>` or `<Client>`,
`<Hangup>`, `<Reject reason>`, `<Redirect method>`, `<Start><Stream>` and `<Connect><Stream>` (with
`<Parameter name value>`). Relative URLs resolve against the document's URL.

Not supported, and an error (never silently skipped): any other verb or noun (`<Enqueue>`, `<Conference>`,
`<Queue>`, `<Pay>`, `<Refer>`, `<Sms>`...), `<Gather input="speech">`, `<Dial>` with several nouns, `<Stop>`.
Attributes we do not act on (`statusCallback` of `<Dial>`, `<Say>`'s neural voice names, `trim`...) are
ignored. `<Say>` speaks with espeak-ng in the `language` given (default en-US); `voice="man"`, `"woman"` and
`"alice"` choose an espeak-ng variant, other (neural) voice names are ignored.

Parsing: the standard library's expat (no DTD: a document declaring one is refused), at most 1 MB.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urljoin
from xml.parsers import expat

import msgspec

from softswitch.flows.verbs import (
    Dial,
    FlowError,
    Gather,
    Hangup,
    Pause,
    Play,
    Record,
    Redirect,
    Reject,
    Say,
    Stream,
    Verb,
)

MAX_BYTES = 1 << 20
TRACKS = {"inbound_track": "inbound", "outbound_track": "outbound", "both_tracks": "both"}
VARIANTS = {"woman": "+f3", "alice": "+f3", "man": "+m3"}  # Twilio's basic voices, as espeak-ng variants


def parse(document: bytes, base_url: str = "") -> list[Verb]:
    """The verbs of a TwiML `<Response>`; FlowError naming the line for anything unsupported or malformed."""
    if len(document) > MAX_BYTES:
        raise FlowError("TwiML document larger than 1 MB")
    root, lines = _tree(document)
    if root.tag != "Response":
        raise FlowError(f"TwiML must be a <Response>, not <{root.tag}>")
    return _Reader(base_url, lines).verbs(root)


def _tree(document: bytes) -> tuple[ET.Element, dict[int, int]]:
    """The element tree, built with expat directly so each element's line is known (for errors)."""
    parser = expat.ParserCreate()
    stack: list[ET.Element] = []
    lines: dict[int, int] = {}
    root: list[ET.Element] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        el = ET.Element(tag, attrs)
        lines[id(el)] = parser.CurrentLineNumber
        (stack[-1].append if stack else root.append)(el)
        stack.append(el)

    def end(_tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack and not len(stack[-1]):
            stack[-1].text = (stack[-1].text or "") + data

    def doctype(*_args: object) -> None:
        raise FlowError("TwiML with a DTD is refused")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = doctype
    try:
        parser.Parse(document, True)
    except expat.ExpatError as exc:
        raise FlowError(f"TwiML is not well-formed XML: {exc}") from None
    return root[0], lines


class _Reader:
    def __init__(self, base_url: str, lines: dict[int, int]) -> None:
        self.base = base_url
        self.lines = lines

    def fail(self, el: ET.Element, why: str) -> FlowError:
        return FlowError(f"TwiML line {self.lines.get(id(el), 0)}: <{el.tag}>: {why}")

    def verbs(self, root: ET.Element) -> list[Verb]:
        out: list[Verb] = []
        for el in root:
            out += self.verb(el)
        return out

    def verb(self, el: ET.Element) -> list[Verb]:
        handler = getattr(self, f"_{el.tag.lower()}", None) if el.tag[:1].isupper() else None
        if handler is None:
            raise self.fail(el, "not a supported TwiML verb")
        try:
            return handler(el)
        except (ValueError, TypeError, msgspec.ValidationError) as exc:
            raise self.fail(el, str(exc)) from None

    # -- helpers ---------------------------------------------------------------------------------------
    def url(self, value: str | None) -> str | None:
        return urljoin(self.base, value.strip()) if value else None

    @staticmethod
    def text(el: ET.Element) -> str:
        return (el.text or "").strip()

    @staticmethod
    def boolean(value: str | None, default: bool) -> bool:
        if value is None:
            return default
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"expected true or false, got {value!r}")

    @staticmethod
    def number(value: str | None, default, kind=int):
        return default if value is None else kind(value)

    def no_children(self, el: ET.Element) -> None:
        for child in el:
            raise self.fail(child, f"not allowed in <{el.tag}>")

    def _make(self, cls, **fields):
        return msgspec.convert({k: v for k, v in fields.items() if v is not None}, cls)

    # -- verbs -------------------------------------------------------------------------------------------
    def _say(self, el):
        self.no_children(el)
        voice = (el.get("language") or "en-US").lower() + VARIANTS.get((el.get("voice") or "").lower(), "")
        return [self._make(Say, text=self.text(el), voice=voice, loop=self.number(el.get("loop"), 1))]

    def _play(self, el):
        self.no_children(el)
        if el.get("digits"):
            raise ValueError("the digits attribute is not supported")
        return [self._make(Play, url=self.url(self.text(el)), loop=self.number(el.get("loop"), 1))]

    def _pause(self, el):
        self.no_children(el)
        return [self._make(Pause, length=self.number(el.get("length"), 1.0, float))]

    def _gather(self, el):
        if (el.get("input") or "dtmf").lower() != "dtmf":
            raise ValueError(f"input={el.get('input')!r}: only dtmf is supported")
        prompt = []
        for child in el:
            if child.tag not in ("Say", "Play", "Pause"):
                raise self.fail(child, "not allowed in <Gather> (only Say, Play, Pause)")
            prompt += self.verb(child)
        finish = el.get("finishOnKey")
        fields = {
            "num_digits": self.number(el.get("numDigits"), None),
            "timeout": self.number(el.get("timeout"), 5.0, float),
            "finish_on_key": "#" if finish is None else finish,
            "action": self.url(el.get("action")),
            "method": (el.get("method") or "POST").upper(),
            "action_on_empty_result": self.boolean(el.get("actionOnEmptyResult"), False),
        }
        return [self._make(Gather, **fields, prompt=msgspec.to_builtins(prompt))]

    def _record(self, el):
        self.no_children(el)
        finish = el.get("finishOnKey")
        return [
            self._make(
                Record,
                max_length=self.number(el.get("maxLength"), None),
                timeout=self.number(el.get("timeout"), None),
                finish_on_key=finish,
                play_beep=self.boolean(el.get("playBeep"), True),
                action=self.url(el.get("action")),
                method=(el.get("method") or "POST").upper(),
                recording_status_callback=self.url(el.get("recordingStatusCallback")),
            )
        ]

    def _dial(self, el):
        nouns = list(el)
        if len(nouns) > 1:
            raise ValueError("only one <Number>, <Sip> or <Client> per <Dial> is supported")
        target: dict[str, str] = {}
        if nouns:
            noun = nouns[0]
            kinds = {"Number": "number", "Sip": "sip", "Client": "client"}
            if noun.tag not in kinds:
                raise self.fail(noun, "not allowed in <Dial> (Number, Sip or Client)")
            identity = noun.find("Identity")
            value = self.text(identity) if identity is not None else self.text(noun)
            target[kinds[noun.tag]] = value
        elif self.text(el):
            target["number"] = self.text(el)
        record = el.get("record", "do-not-record")
        records = {"do-not-record": False, "record-from-answer": "mono", "record-from-ringing": "mono",
                   "record-from-answer-dual": "dual", "record-from-ringing-dual": "dual"}  # fmt: skip
        if record not in records:
            raise ValueError(f"record={record!r} is not a recording mode")
        return [
            self._make(
                Dial,
                **target,
                timeout=self.number(el.get("timeout"), None),
                caller_id=el.get("callerId"),
                record=records[record],
                action=self.url(el.get("action")),
                method=(el.get("method") or "POST").upper(),
                answer_on_bridge=self.boolean(el.get("answerOnBridge"), False),
            )
        ]

    def _hangup(self, el):
        self.no_children(el)
        return [Hangup()]

    def _reject(self, el):
        self.no_children(el)
        return [self._make(Reject, reason=el.get("reason"))]

    def _redirect(self, el):
        self.no_children(el)
        return [self._make(Redirect, url=self.url(self.text(el)), method=(el.get("method") or "POST").upper())]

    def _start(self, el):
        return self._streams(el, connect=False)

    def _connect(self, el):
        return self._streams(el, connect=True)

    def _streams(self, el, connect: bool):
        out = []
        for child in el:
            if child.tag != "Stream":
                raise self.fail(child, f"not supported in <{el.tag}> (only Stream)")
            params = {}
            for p in child:
                if p.tag != "Parameter":
                    raise self.fail(p, "not allowed in <Stream> (only Parameter)")
                params[p.get("name", "")] = p.get("value", "")
            track = TRACKS.get(child.get("track", "inbound_track"))
            if track is None:
                raise self.fail(child, f"track={child.get('track')!r} is not a track")
            url = self.url(child.get("url"))
            try:
                out.append(self._make(Stream, url=url, track=track, connect=connect, parameters=params))
            except msgspec.ValidationError as exc:
                raise self.fail(child, str(exc)) from None
        if not out:
            raise ValueError(f"<{el.tag}> needs a <Stream>")
        return out
