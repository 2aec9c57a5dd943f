"""Our JSON verbs: the schema every instruction document is read with."""

from __future__ import annotations

import pytest

from softswitch.flows.verbs import Dial, FlowError, Hangup, Play, Say, decode_json


def test_json_verbs_and_their_errors():
    verbs = decode_json(
        b'[{"verb": "say", "text": "Hello", "voice": "en-gb"},'
        b' {"verb": "gather", "num_digits": 4, "action": "/next", "prompt": [{"verb": "play", "url": "a.wav"}]},'
        b' {"verb": "dial", "client": "alice"}, {"verb": "hangup"}]'
    )
    assert verbs[0] == Say(text="Hello", voice="en-gb") and verbs[-1] == Hangup()
    assert verbs[1].prompt == [Play(url="a.wav")] and verbs[2] == Dial(client="alice")
    for bad, why in (
        (b'[{"verb": "dance"}]', "verb"),
        (b'[{"verb": "say"}]', "text"),
        (b'[{"verb": "play"}]', "url or an audio_id"),
        (b'[{"verb": "dial", "number": "1", "client": "a"}]', "one of number"),
        (b'[{"verb": "gather", "finish_on_key": "x"}]', "finish_on_key"),
        (b'[{"verb": "say", "text": "a", "extra": 1}]', "extra"),
        (b"[{", "not JSON"),
    ):
        with pytest.raises(FlowError, match=why):
            decode_json(bad)
