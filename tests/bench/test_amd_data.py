"""bench/amd_data.py, the generated AMD set: the quick set's shape, its ground truth against the audio, and
its determinism (the quick cases are the full set's cases of the same name)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import bench_module

amd_data = bench_module("amd_data")
CATEGORIES, RATE, Case = amd_data.CATEGORIES, amd_data.RATE, amd_data.Case


@pytest.fixture(scope="module")
def quick() -> list[Case]:
    return amd_data.build(quick=True)


def level_db(x: np.ndarray) -> float:
    return 10 * np.log10(max(float(np.mean(x.astype(float) ** 2)), 1e-9) / amd_data.DBM0_RMS**2)


def test_every_category_is_covered(quick):
    assert [c.category for c in quick] == sorted((c.category for c in quick), key=CATEGORIES.index)
    for category in CATEGORIES:
        assert 2 <= sum(c.category == category for c in quick) <= 4
    assert len({c.name for c in quick}) == len(quick)
    assert {c.truth for c in quick} == {"human", "machine", "unknown"}
    assert all(c.truth == amd_data.TRUTH[c.category] for c in quick)


def test_audio_is_8k_int16_of_plausible_length(quick):
    for c in quick:
        assert c.pcm.dtype == np.int16 and c.pcm.ndim == 1
        assert c.seconds == len(c.pcm) / RATE
        low, high = {"human_short": (6, 10), "human_long": (8, 10), "silence": (6, 10)}.get(c.category, (3, 25))
        assert low <= c.seconds <= high, c.name


def test_truth_is_ordered_and_complete(quick):
    for c in quick:
        times = (c.speech_start_ms, c.greeting_end_ms, c.beep_start_ms, c.beep_end_ms)
        if c.category == "silence":
            assert times == (None, None, None, None)
            continue
        assert c.speech_start_ms is not None and c.greeting_end_ms is not None
        assert 0 <= c.speech_start_ms < c.greeting_end_ms < c.seconds * 1000
        assert (c.beep_start_ms is None) == (c.category != "machine_beep") == (c.beep_end_ms is None)
        if c.beep_start_ms is not None and c.beep_end_ms is not None:
            assert c.greeting_end_ms + 199 <= c.beep_start_ms < c.beep_end_ms <= c.seconds * 1000 - 1999


def test_speech_and_beep_are_where_the_truth_says(quick):
    for c in quick:
        if c.speech_start_ms is None or c.greeting_end_ms is None:
            assert level_db(c.pcm) < -45, c.name  # line noise only
            continue
        s, e = round(c.speech_start_ms * RATE / 1000), round(c.greeting_end_ms * RATE / 1000)
        tail = c.pcm[-RATE // 4 :]  # the last 250 ms: the caller's turn, or the machine recording
        assert level_db(c.pcm[s:e]) > level_db(tail) + 10, c.name
        if c.beep_start_ms is not None and c.beep_end_ms is not None:
            b = c.pcm[round(c.beep_start_ms * RATE / 1000) : round(c.beep_end_ms * RATE / 1000)].astype(float)
            spectrum = np.abs(np.fft.rfft(b * np.hanning(len(b)), 1 << 15))
            peak = np.fft.rfftfreq(1 << 15, 1 / RATE)[int(np.argmax(spectrum))]
            assert 390 <= peak <= 2010, (c.name, peak)
            assert -22 <= level_db(b) <= -5, c.name


def test_quick_cases_are_the_full_sets_and_deterministic(quick):
    again = amd_data.case("machine_beep", 1)
    first = next(c for c in quick if c.name == again.name)
    assert np.array_equal(first.pcm, again.pcm)
    assert (first.speech_start_ms, first.greeting_end_ms, first.beep_start_ms, first.beep_end_ms) == (
        again.speech_start_ms,
        again.greeting_end_ms,
        again.beep_start_ms,
        again.beep_end_ms,
    )
    assert first.text == again.text


def test_text_is_what_the_greeting_says(quick):
    for c in quick:
        if c.category == "silence":
            assert c.text == ""
            continue
        texts = amd_data.TEXTS[c.lang]
        if c.category == "human_short":
            assert c.text in texts["short"], c.name
        elif c.category == "human_long":
            assert c.text in texts["long"], c.name
        else:
            assert len(c.text) >= 8, c.name
            assert all(t not in c.text for t in texts["short"] + texts["long"] if len(t) > 20), c.name
