"""The verbs a call flow is made of: one msgspec schema for our JSON instructions, for what TwiML is turned
into (softswitch.flows.twiml), and for the OpenAPI document.

JSON instructions are a list of verb objects, each `{"verb": NAME, ...params}` with snake_case parameters:
`[{"verb": "say", "text": "Hello"}, {"verb": "gather", "num_digits": 4, "action": "https://app/next",
"prompt": [{"verb": "say", "text": "Enter your PIN"}]}, {"verb": "hangup"}]`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

MAX_VERBS = 100
Url = Annotated[str, msgspec.Meta(max_length=2048, description="absolute, or relative to the document's URL")]
Loop = Annotated[int, msgspec.Meta(ge=0, le=1000, description="times to play it; 0: until the verb is interrupted")]
Keys = Annotated[str, msgspec.Meta(pattern="^[0-9*#]*$", max_length=12)]
Method = Literal["POST", "GET"]


class _Verb(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="verb"):
    pass


class Say(_Verb, tag="say"):
    """Speak `text` (text to speech)."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    voice: Annotated[
        str,
        msgspec.Meta(
            pattern="^[a-z]{2,3}(-[a-z0-9]{1,8})*([+][a-z0-9]{1,8})?$",
            description="a language (en-us, fr-fr...), with an espeak-ng voice variant after + (en-us+f3)",
        ),
    ] = "en-us"
    loop: Loop = 1


class Play(_Verb, tag="play"):
    """Play a WAV file from `url`, or an uploaded audio file (`audio_id`)."""

    url: Url | None = None
    audio_id: str | None = None
    loop: Loop = 1

    def __post_init__(self) -> None:
        if (self.url is None) == (self.audio_id is None):
            raise ValueError("play needs a url or an audio_id (one of the two)")


class Pause(_Verb, tag="pause"):
    length: Annotated[float, msgspec.Meta(ge=0, le=600, description="seconds of silence")] = 1.0


Prompt = Say | Play | Pause


class Gather(_Verb, tag="gather"):
    """Collect DTMF digits (any source: RFC 4733, in-band, SIP INFO) while `prompt` plays; a key stops the
    prompt (barge-in). Ends on `num_digits`, `finish_on_key`, or `timeout` seconds without a key; then the
    digits go to `action` (the flow goes on there), or, with no action, to the next verb."""

    input: Literal["dtmf"] = "dtmf"
    num_digits: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    timeout: Annotated[float, msgspec.Meta(ge=1, le=600)] = 5.0
    finish_on_key: Keys = "#"
    action: Url | None = None
    method: Method = "POST"
    action_on_empty_result: bool = False
    prompt: Annotated[list[Prompt], msgspec.Meta(max_length=MAX_VERBS)] = []


class Record(_Verb, tag="record"):
    """Record what the caller says (after a beep), up to `max_length` s, until a `finish_on_key` key or
    `timeout` s of silence; the recording's URL goes to `action`."""

    max_length: Annotated[int, msgspec.Meta(ge=1, le=14400)] = 3600
    timeout: Annotated[int, msgspec.Meta(ge=0, le=600, description="seconds of silence that end it (0: off)")] = 5
    finish_on_key: Keys = "1234567890*#"
    play_beep: bool = True
    action: Url | None = None
    method: Method = "POST"
    recording_status_callback: Url | None = None


class Dial(_Verb, tag="dial"):
    """Connect the caller to one party: a `number` or `client` (a registered user) routed like any call, or
    a `sip` URI."""

    number: str | None = None
    client: str | None = None
    sip: Url | None = None
    timeout: Annotated[int, msgspec.Meta(ge=5, le=600)] = 30
    caller_id: str | None = None
    record: Literal[False, "mono", "dual"] = False
    action: Url | None = None
    method: Method = "POST"
    answer_on_bridge: bool = False

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.number, self.client, self.sip)) != 1:
            raise ValueError("dial needs one of number, client or sip")


class Stream(_Verb, tag="stream"):
    """A media stream (softswitch.streams): `connect` holds the flow until the stream ends (TwiML's
    `<Connect><Stream>`, bidirectional), otherwise it starts and the flow goes on (`<Start><Stream>`)."""

    url: Annotated[str, msgspec.Meta(pattern="^wss?://", max_length=2048)]
    track: Literal["inbound", "outbound", "both"] = "inbound"
    connect: bool = False
    parameters: dict[str, str] = {}


class Redirect(_Verb, tag="redirect"):
    """Fetch the next instructions from `url`; what is left of these is dropped."""

    url: Url
    method: Method = "POST"


class Reject(_Verb, tag="reject"):
    """Refuse a call that has not been answered: 603 (rejected) or 486 (busy)."""

    reason: Literal["rejected", "busy"] = "rejected"


class Hangup(_Verb, tag="hangup"):
    pass


Verb = Say | Play | Pause | Gather | Record | Dial | Stream | Redirect | Reject | Hangup
Instructions = Annotated[list[Verb], msgspec.Meta(max_length=MAX_VERBS)]

_decoder = msgspec.json.Decoder(Instructions)


class FlowError(Exception):
    """Instructions that cannot run: malformed, an unknown verb, an unsupported attribute value."""


def decode_json(body: bytes) -> list[Verb]:
    """Our JSON instructions; FlowError naming what is wrong (msgspec's path, e.g. `$[1].num_digits`)."""
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise FlowError(f"bad instructions: {exc}") from None
    except msgspec.DecodeError as exc:
        raise FlowError(f"instructions are not JSON: {exc}") from None
