"""TwiML into our verbs: what Twilio applications send, what is refused (with the line), and the JSON form."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.flows import twiml
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
    decode_json,
)

BASE = "https://app.example/ivr/start"
RS = "https://app.example/rs"


def parse(body: str) -> list:
    return twiml.parse(f'<?xml version="1.0" encoding="UTF-8"?>\n<Response>{body}</Response>'.encode(), BASE)


def test_twiml_ivr_document_becomes_verbs_with_urls_resolved():
    verbs = parse(
        '<Say language="fr-FR" loop="2">Bonjour</Say><Say voice="woman">Hello</Say>'
        '<Gather numDigits="1" action="/menu" timeout="7" finishOnKey="*">'
        "<Say>Press 1</Say><Play>tone.wav</Play><Pause length='2'/></Gather>"
        '<Record maxLength="30" playBeep="false" action="rec" recordingStatusCallback="/rs"/>'
        '<Dial callerId="+15550100" timeout="20" record="record-from-answer-dual"><Client>alice</Client></Dial>'
        "<Dial>+15551234</Dial><Dial><Sip>sip:bob@pbx.example</Sip></Dial>"
        '<Start><Stream url="wss://bot.example/s" track="both_tracks"><Parameter name="a" value="b"/></Stream></Start>'
        '<Connect><Stream url="wss://bot.example/c"/></Connect>'
        '<Redirect method="GET">/next</Redirect><Reject reason="busy"/><Hangup/>'
    )
    assert verbs == [
        Say(text="Bonjour", voice="fr-fr", loop=2),
        Say(text="Hello", voice="en-us+f3"),
        Gather(
            num_digits=1,
            timeout=7.0,
            finish_on_key="*",
            action="https://app.example/menu",
            prompt=[Say(text="Press 1"), Play(url="https://app.example/ivr/tone.wav"), Pause(length=2.0)],
        ),
        Record(max_length=30, play_beep=False, action="https://app.example/ivr/rec", recording_status_callback=RS),
        Dial(client="alice", caller_id="+15550100", timeout=20, record="dual"),
        Dial(number="+15551234"),
        Dial(sip="sip:bob@pbx.example"),
        Stream(url="wss://bot.example/s", track="both", parameters={"a": "b"}),
        Stream(url="wss://bot.example/c", connect=True),
        Redirect(url="https://app.example/next", method="GET"),
        Reject(reason="busy"),
        Hangup(),
    ]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("<Say>Hi</Say>\n<Enqueue>support</Enqueue>", "line 3: <Enqueue>: not a supported TwiML verb"),
        ('<Gather input="speech"/>', "only dtmf"),
        ("<Gather><Dial>1</Dial></Gather>", "not allowed in <Gather>"),
        ("<Dial><Number>1</Number><Number>2</Number></Dial>", "only one"),
        ("<Say loop='x'>a</Say>", "<Say>"),
        ("<Say loop='-1'>a</Say>", "loop"),
        ("<Say></Say>", "text"),
        ("<Play digits='1'>x.wav</Play>", "digits"),
        ('<Record playBeep="maybe"/>', "true or false"),
        ('<Start><Stream url="http://x/"/></Start>', "wss?"),
        ("<Start/>", "needs a <Stream>"),
        ("<say>lowercase</say>", "not a supported TwiML verb"),
    ],
)
def test_twiml_unsupported_or_malformed_is_an_error_naming_where(body, why):
    with pytest.raises(FlowError, match=why.replace("?", r"\?").replace("(", r"\(")):
        parse(body)


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        (b"<Foo/>", "must be a <Response>"),
        (b"<Response><Say>", "not well-formed"),
        (b'<!DOCTYPE r [<!ENTITY a "aaaa">]><Response>&a;</Response>', "DTD"),
        (b"<Response>" + b" " * (1 << 20) + b"</Response>", "1 MB"),
    ],
)
def test_twiml_documents_refused(doc, why):
    with pytest.raises(FlowError, match=why):
        twiml.parse(doc)


@given(st.binary(max_size=300))
def test_twiml_parse_raises_only_flow_errors(doc):
    with contextlib.suppress(FlowError):
        twiml.parse(b"<Response>" + doc + b"</Response>")


def test_the_examples_are_valid_instructions():
    examples = Path(__file__).resolve().parents[2] / "examples"
    ivr = twiml.parse((examples / "ivr.xml").read_bytes(), "https://your.app/ivr.xml")
    assert isinstance(ivr[0], Gather) and ivr[0].action == "https://your.app/menu"
    assert [type(v) for v in decode_json((examples / "menu.json").read_bytes())] == [Say, Stream, Say, Hangup]
    voicemail = twiml.parse((examples / "voicemail.xml").read_bytes(), "https://your.app/voicemail")
    assert [type(v) for v in voicemail] == [Say, Record, Say]
    dial = twiml.parse((examples / "dial.xml").read_bytes(), "https://your.app/dial")
    assert dial[1] == Dial(client="alice", timeout=20, caller_id="+15550100", record="dual",
                           action="https://your.app/dial/after")  # fmt: skip
