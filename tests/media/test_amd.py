"""Answering machine detection: the compiled segmenter on synthetic signals, the decision on explicit time,
and the whole detector on the generated quick set (bench/amd_data.py)."""

from __future__ import annotations

import dtmf_signals as sig
import numpy as np
import pytest
from helpers import bench_module
from hypothesis import given, settings
from hypothesis import strategies as st

from cext import amd as kernel
from media.amd import AmdDetector, AmdParams, analyze
from media.dtmf import dbm0_amplitude

amd_data = bench_module("amd_data")

RATE = 8000


def noise(ms: float, dbm0: float = -60.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, dbm0_amplitude(dbm0) / np.sqrt(2), int(ms * 8))


def sines(ms: float, freqs: tuple[float, ...], dbm0: float = -15.0) -> np.ndarray:
    t = np.arange(int(ms * 8)) / RATE
    return sum(dbm0_amplitude(dbm0) * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs))


def segments(x: np.ndarray, **params) -> list[tuple[str, float, int]]:
    return [(kind, start / 8, hz) for kind, start, hz in kernel.AmdSegmenter(**params).feed(sig.pcm(x))]


def with_floor(*parts: np.ndarray, seed: int = 1) -> np.ndarray:
    x = np.concatenate(parts)
    return x + noise(len(x) / 8, seed=seed)


# -- the compiled segmenter -----------------------------------------------------------------------------
@pytest.mark.parametrize("freqs", [(1000.0,), (440.0,), (1950.0,), (480.0, 620.0), (425.0, 1000.0, 1800.0)])
def test_amd_kernel_beep_of_one_to_three_sines_is_a_tone_with_its_times(freqs):
    x = with_floor(np.zeros(4000), sines(400, freqs), np.zeros(4000))
    got = segments(x)
    tones = [i for i, s in enumerate(got) if s[0] == "tone"]
    assert len(tones) == 1
    _, start, hz = got[tones[0]]
    # close sines read as one modulated sine at their centre: the frequency lies within the beep's
    assert abs(start - 500) <= 15 and 0.98 * min(freqs) <= hz <= 1.02 * max(freqs)
    assert got[tones[0] + 1][0] == "silence" and abs(got[tones[0] + 1][1] - 900) <= 15  # the beep's end


@pytest.mark.parametrize("freq", [200.0, 2600.0])
def test_amd_kernel_tones_outside_300_2000_hz_are_not_beeps(freq):
    x = with_floor(np.zeros(4000), sines(500, (freq,)), np.zeros(4000))
    assert [s[0] for s in segments(x)] == ["voice", "silence"]


def test_amd_kernel_a_tone_shorter_than_100_ms_is_not_a_beep():
    x = with_floor(np.zeros(4000), sines(80, (1000.0,)), np.zeros(4000))
    assert "tone" not in [s[0] for s in segments(x)]


def test_amd_kernel_beep_at_15_db_snr_and_through_g711():
    x = np.concatenate([np.zeros(4000), sines(300, (850.0,), dbm0=-20.0), np.zeros(4000)])
    x = sig.ulaw_round_trip(x + noise(len(x) / 8, dbm0=-35.0, seed=3))
    assert [s[0] for s in segments(x)].count("tone") == 1


def test_amd_kernel_voice_and_silence_boundaries():
    burst = noise(300, dbm0=-20.0, seed=4)
    x = with_floor(np.zeros(4000), burst, np.zeros(8000), burst, np.zeros(4000))
    got = segments(x)
    assert [k for k, _, _ in got] == ["voice", "silence", "voice", "silence"]
    assert [abs(t - want) <= 10 for (_, t, _), want in zip(got, (500, 800, 1800, 2100), strict=True)] == [True] * 4


def test_amd_kernel_pauses_between_words_are_bridged_and_clicks_ignored():
    word = noise(200, dbm0=-20.0, seed=5)
    click = noise(10, dbm0=-10.0, seed=6)
    x = with_floor(np.zeros(4000), word, np.zeros(480), word, np.zeros(4000), click, np.zeros(4000))
    assert [k for k, _, _ in segments(x)] == ["voice", "silence"]  # 60 ms gap inside; the click is no word


def test_amd_kernel_noise_that_steps_up_is_learnt_as_the_floor():
    x = np.concatenate([noise(1000, dbm0=-65.0), noise(4000, dbm0=-35.0, seed=2)])
    got = segments(x)
    ends = [start for _, start, _ in got[1:]] + [5000]
    voiced = sum(end - start for (kind, start, _), end in zip(got, ends, strict=True) if kind == "voice")
    assert voiced <= 400  # 300 ms of steady frames teach the floor; not seconds of "speech"


def test_amd_kernel_speech_is_voice_never_a_beep():
    for voice, text in (("en-us+f3", "Hi, you have reached Anna. Please leave a message."), ("en-gb", "Hello?")):
        x = with_floor(np.zeros(2000), sig.speech(text, voice, rms_dbm0=-18.0), np.zeros(4000))
        kinds = [k for k, _, _ in segments(sig.ulaw_round_trip(x))]
        assert "voice" in kinds and "tone" not in kinds


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=40))
def test_amd_kernel_any_chunking_gives_the_same_segments(cuts):
    x = sig.pcm(with_floor(np.zeros(2000), sines(300, (1000.0,)), np.zeros(3000), noise(400, -20.0, 7)))
    whole = kernel.AmdSegmenter().feed(x)
    seg, got, at = kernel.AmdSegmenter(), [], 0
    for n in cuts:
        got += seg.feed(x[at : at + n])
        at += n
    got += seg.feed(x[at:])
    assert got == whole


# -- the decision, on explicit time ----------------------------------------------------------------------
def run(events: list[tuple[str, int]], until: int, step: int = 20, **kw) -> AmdDetector:
    """Boundaries are fed in the order given (the kernel's order: a tone comes after the voice boundary its
    first frames made, with an earlier start), each once time has reached its start."""
    det = AmdDetector(AmdParams(**kw.pop("params", {})), **kw)
    pending = list(events)
    for now in range(0, until + 1, step):
        while pending and pending[0][1] <= now:
            kind, start = pending.pop(0)
            det.segment(kind, start)
        det.advance(now)
        if det.done:
            break
    return det


def test_amd_decision_silence_is_unknown_at_the_initial_silence():
    det = run([], 6000)
    assert (det.result.result, det.result.decision_ms, det.result.reason) == ("unknown", 2500, "silence")


def test_amd_decision_short_greeting_then_waiting_is_human():
    det = run([("voice", 600), ("silence", 1300)], 6000)
    assert (det.result.result, det.result.decision_ms) == ("human", 2300)  # 1,000 ms after the greeting


def test_amd_decision_long_business_greeting_with_a_pause_is_still_human():
    det = run([("voice", 500), ("silence", 2500), ("voice", 2900), ("silence", 4600)], 8000)
    assert (det.result.result, det.result.decision_ms) == ("human", 5600)


def test_amd_decision_greeting_running_past_the_limit_is_machine():
    det = run([("voice", 300), ("silence", 2000), ("voice", 2400)], 8000)
    assert (det.result.result, det.result.decision_ms, det.result.reason) == ("machine", 4800, "long_greeting")


def test_amd_decision_more_than_max_words_is_machine_as_the_next_word_is_long_enough():
    words = [e for k in range(4) for e in (("voice", 300 + 400 * k), ("silence", 500 + 400 * k))]
    det = run(words, 6000, params={"max_words": 3})
    # the fourth word starts at 1,500 ms and is a word once it has lasted word_ms (100)
    assert (det.result.result, det.result.decision_ms, det.result.reason) == ("machine", 1600, "max_words")
    det = run(words, 6000, params={"max_words": 4})
    assert (det.result.result, det.result.reason) == ("human", "short_greeting")


def test_amd_decision_a_word_shorter_than_word_ms_is_not_speech():
    det = run([("voice", 500), ("silence", 560)], 6000)
    assert det.result.result == "unknown"


def test_amd_decision_beep_is_machine_at_once_and_its_end_is_reported():
    events = [("voice", 300), ("silence", 1500), ("voice", 1800), ("tone", 1790), ("silence", 2300)]
    det = run(events, 8000, detect_beep=True)
    r = det.result
    assert (r.result, r.decision_ms, r.reason) == ("machine", 1800, "beep")  # as the tone is reported
    assert (r.end, r.beep_end_ms, r.finished_ms) == ("beep", 2300, 2700)  # after 400 ms of quiet


def test_amd_decision_beep_mode_train_of_beeps_reports_the_last():
    events = [("voice", 300), ("silence", 5000), ("tone", 5300), ("silence", 5500), ("tone", 5650), ("silence", 5850)]
    det = run(events, 9000, detect_beep=True)
    assert (det.result.end, det.result.beep_end_ms) == ("beep", 5850)


def test_amd_decision_beep_mode_speech_after_a_tone_means_the_greeting_goes_on():
    events = [("voice", 300), ("tone", 5000), ("voice", 5200), ("silence", 7000), ("tone", 7400), ("silence", 7600)]
    det = run(events, 12000, detect_beep=True)
    assert (det.result.end, det.result.beep_end_ms) == ("beep", 7600)


def test_amd_decision_beep_mode_greeting_ending_in_silence():
    det = run([("voice", 300), ("silence", 6000)], 12000, detect_beep=True)
    assert (det.result.result, det.result.end, det.result.beep_end_ms, det.result.finished_ms) == (
        "machine",
        "silence",
        None,
        8000,
    )


def test_amd_decision_stop_before_a_verdict_is_unknown():
    det = run([("voice", 300)], 1000)
    assert det.stop(1000, "hangup").result == "unknown" and det.done


def test_amd_params_are_checked():
    with pytest.raises(ValueError, match="greeting_ms"):
        AmdParams(greeting_ms=0)
    with pytest.raises(ValueError, match="max_words must be between 1 and 1000"):
        AmdParams(max_words=0)
    with pytest.raises(ValueError, match="between_words_ms must be between"):
        AmdParams(between_words_ms=3_000_000_000)  # past the kernel's int
    with pytest.raises(ValueError, match="word_ms must be an integer"):
        AmdParams(word_ms=100.5)
    with pytest.raises(ValueError, match="greeting_ms must be an integer"):
        AmdParams(greeting_ms=True)
    assert AmdParams(silence_threshold_dbm0=-40).silence_threshold_dbm0 == -40
    with pytest.raises(ValueError, match="silence_threshold"):
        AmdParams(silence_threshold_dbm0=10.0)


# -- the whole detector on generated audio ---------------------------------------------------------------
@pytest.fixture(scope="module")
def quick() -> list[amd_data.Case]:
    return amd_data.build(quick=True)


def test_amd_quick_set_verdicts_and_beeps(quick):
    """The quick set (espeak-ng speech through G.711 with noise, every category): people answering
    briefly, greetings ending in a beep and silence are always right, beeps' ends within 300 ms; of the
    hard cases (long business answers by people, greetings without a beep) most are."""
    right: dict[str, list[bool]] = {}
    beeps = []
    for case in quick:
        r = analyze(case.pcm)
        right.setdefault(case.category, []).append(r.result == case.truth)
        if case.beep_end_ms is not None:
            beeps.append(r.beep_end_ms is not None and abs(r.beep_end_ms - case.beep_end_ms) <= 300)
    assert all(right["human_short"]) and all(right["machine_beep"]) and all(right["silence"])
    assert sum(beeps) >= len(beeps) - 1  # a beep of three sines can escape the tracker (bench: 95 % found)
    assert sum(right["human_long"]) >= 2 and sum(right["machine"]) >= 2
