"""Text to speech with espeak-ng (the Debian package the suite installs): audio out, the cache, errors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from softswitch.flows.tts import EspeakTts, TtsError


async def test_tts_renders_8khz_speech_once_per_text_and_voice():
    tts = EspeakTts()
    pcm = await tts.render("Hello, and welcome.", "en-us")
    audio = np.frombuffer(pcm, np.int16)
    assert 0.8 < audio.size / 8000 < 3.0 and np.sqrt(np.mean(audio.astype(float) ** 2)) > 500
    assert await tts.render("Hello, and welcome.", "en-us") is pcm and tts.renders == 1
    both = await asyncio.gather(tts.render("Bonjour", "fr-fr"), tts.render("Bonjour", "fr-fr"))
    assert both[0] is both[1] and tts.renders == 2  # asked twice at once: rendered once
    woman = await tts.render("Hello, and welcome.", "en-us+f3")  # a voice variant: other audio
    assert woman != pcm and tts.renders == 3


async def test_tts_cache_is_bounded_and_errors_are_clear():
    tts = EspeakTts(cache_bytes=30_000)
    for word in ("one", "two", "three", "four"):
        await tts.render(word, "en-us")
    assert tts._size <= 30_000 and ("four", "en-us") in tts._cache and ("one", "en-us") not in tts._cache
    for text, voice, why in (("hi", "xx-zz", "does not exist"), ("hi", "EN", "not a voice"), (" ", "en-us", "text")):
        with pytest.raises(TtsError, match=why):
            await tts.render(text, voice)
    with pytest.raises(TtsError, match="cannot run"):
        await EspeakTts(binary="/nonexistent/espeak").render("hi", "en-us")
