"""bench/amd_ref.py, the app_amd reference: verdicts, causes and decision times on synthetic audio, checked
frame by frame (20 ms) against what Asterisk's algorithm specifies with its default parameters."""

from __future__ import annotations

import time
import wave

import numpy as np
import pytest
from helpers import bench_module

amd_ref = bench_module("amd_ref")
AmdParams, AmdResult, detect, frame_levels = amd_ref.AmdParams, amd_ref.AmdResult, amd_ref.detect, amd_ref.frame_levels

RATE = 8000


def ms(n: int) -> int:
    return n * RATE // 1000


def silence(duration_ms: int) -> np.ndarray:
    return np.zeros(ms(duration_ms), dtype=np.int16)


def buzz(duration_ms: int) -> np.ndarray:
    """A voiced-speech stand-in: 300 Hz with harmonics, mean |x| far above 256 in every 20 ms frame."""
    t = np.arange(ms(duration_ms)) / RATE
    x = sum(a * np.sin(2 * np.pi * f * t) for f, a in ((300, 4000), (600, 2500), (900, 1500), (1200, 800)))
    return np.round(x).astype(np.int16)


def noise(duration_ms: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 3000, ms(duration_ms)), -32768, 32767).astype(np.int16)


def cat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts).astype(np.int16)


VOICES = [pytest.param(buzz, id="buzz"), pytest.param(noise, id="noise")]


def test_defaults_are_asterisks():
    p = AmdParams()
    assert (p.initial_silence_ms, p.greeting_ms, p.after_greeting_silence_ms) == (2500, 1500, 800)
    assert (p.total_analysis_time_ms, p.min_word_length_ms, p.between_words_silence_ms) == (5000, 100, 50)
    assert (p.maximum_number_of_words, p.silence_threshold, p.maximum_word_length_ms) == (2, 256, 5000)


def test_pure_silence_is_machine_initialsilence_at_2500():
    assert detect(silence(10_000)) == AmdResult("MACHINE", "INITIALSILENCE-2500-2500", 2500)


@pytest.mark.parametrize("voice", VOICES)
def test_one_word_then_silence_is_human_after_800ms_of_silence(voice):
    r = detect(cat(voice(500), silence(3000)))
    assert r == AmdResult("HUMAN", "HUMAN-800-800", 500 + 800)
    assert r.result == "human"


@pytest.mark.parametrize("voice", VOICES)
def test_third_counted_word_is_machine_maxwords(voice):
    # 300 ms of silence first, so the first word is counted (the state starts as in-word). Words are counted when
    # they reach 100 ms: at 400, 900 and 1400 ms; the third exceeds maximumNumberOfWords=2.
    w, gap = voice(300), silence(200)
    r = detect(cat(silence(300), w, gap, w, gap, w, silence(3000)))
    assert r == AmdResult("MACHINE", "MAXWORDS-3-2", 1400)
    assert r.result == "machine"


def test_maximum_number_of_words_is_exceeded_not_reached():
    w, gap = buzz(300), silence(200)
    audio = cat(silence(300), w, gap, w, gap, w, silence(3000))
    assert detect(audio, AmdParams(maximum_number_of_words=1)) == AmdResult("MACHINE", "MAXWORDS-2-1", 900)
    # with 3, the third word is not enough: the silence after it (from 1600 ms) decides
    assert detect(audio, AmdParams(maximum_number_of_words=3)) == AmdResult("HUMAN", "HUMAN-800-800", 2400)


def test_opening_word_is_not_counted():
    # speech from the first sample: the first word does not count, so three words are two, and the silence
    # after the third (it ends at 1300 ms) gives HUMAN
    w, gap = buzz(300), silence(200)
    assert detect(cat(w, gap, w, gap, w, silence(3000))) == AmdResult("HUMAN", "HUMAN-800-800", 2100)


@pytest.mark.parametrize("voice", VOICES)
def test_continuous_voice_is_machine_longgreeting_at_1500(voice):
    assert detect(voice(2000)) == AmdResult("MACHINE", "LONGGREETING-1500-1500", 1500)


def test_long_greeting_counts_all_voice_since_answer():
    # 400 ms + 200 ms gap + 1100 ms: the voice total reaches 1500 ms at 400 + 200 + 1100 = 1700 ms
    r = detect(cat(buzz(400), silence(200), buzz(1500)))
    assert r == AmdResult("MACHINE", "LONGGREETING-1500-1500", 1700)


def test_long_single_word_is_machine_maxwordlength():
    p = AmdParams(greeting_ms=10_000, total_analysis_time_ms=10_000)
    assert detect(buzz(6000), p) == AmdResult("MACHINE", "MAXWORDLENGTH-5000", 5000)
    p = AmdParams(greeting_ms=10_000, maximum_word_length_ms=3000)
    assert detect(buzz(6000), p) == AmdResult("MACHINE", "MAXWORDLENGTH-3000", 3000)


def test_maxwordlength_never_beats_toolong_at_equal_limits():
    # the total-time check comes first in the loop, and consecutive voice cannot exceed the total time
    assert detect(buzz(6000), AmdParams(greeting_ms=10_000)) == AmdResult("NOTSURE", "TOOLONG-5000", 5000)


def test_undecided_alternation_is_notsure_toolong_at_5000():
    # 60 ms bursts (never a 100 ms word, so no greeting) separated by 100 ms of silence (each resets the word and
    # restarts the silence run, which never reaches 2500 ms)
    audio = np.tile(cat(buzz(60), silence(100)), 40)
    r = detect(audio)
    assert r == AmdResult("NOTSURE", "TOOLONG-5000", 5000)
    assert r.result == "unknown"


def test_a_click_restarts_the_initial_silence():
    # the 20 ms click resets the silence run; 2500 ms of silence after it decide
    r = detect(cat(silence(2000), buzz(20), silence(3000)))
    assert r == AmdResult("MACHINE", "INITIALSILENCE-2500-2500", 2020 + 2500)


def test_short_gaps_do_not_end_a_word():
    # a 40 ms gap is below betweenWordsSilence: 60 + 60 ms of voice make one 120 ms word, which starts the
    # greeting, then 800 ms of silence give HUMAN
    r = detect(cat(buzz(60), silence(40), buzz(60), silence(1000)))
    assert r == AmdResult("HUMAN", "HUMAN-800-800", 160 + 800)
    # with a 60 ms gap the two 60 ms bursts are no words: no greeting, and only initial silence can decide
    r = detect(cat(buzz(60), silence(60), buzz(60), silence(3000)))
    assert r == AmdResult("MACHINE", "INITIALSILENCE-2500-2500", 180 + 2500)


def test_audio_ending_early_is_notsure_toolong_at_its_end():
    assert detect(silence(1000)) == AmdResult("NOTSURE", "TOOLONG-1000", 1000)
    assert detect(cat(buzz(500), silence(300))) == AmdResult("NOTSURE", "TOOLONG-800", 800)
    # a trailing partial frame is not analysed
    assert detect(silence(1000)[:-1]) == AmdResult("NOTSURE", "TOOLONG-980", 980)
    assert detect(np.zeros(0, dtype=np.int16)) == AmdResult("NOTSURE", "TOOLONG-0", 0)


def test_silence_threshold_is_on_the_truncated_mean_absolute_sample():
    frame = np.full(160, 256, dtype=np.int16)
    frame[0] = 255  # sum 256 * 160 - 1: integer mean 255, below the threshold
    below = np.full(160, -256, dtype=np.int16)
    assert frame_levels(cat(frame, below, np.full(160, -32768, dtype=np.int16))).tolist() == [255, 256, 32768]
    assert detect(np.tile(frame, 250)) == AmdResult("MACHINE", "INITIALSILENCE-2500-2500", 2500)
    assert detect(np.tile(below, 250)) == AmdResult("MACHINE", "LONGGREETING-1500-1500", 1500)
    assert detect(np.tile(frame, 250), AmdParams(silence_threshold=255)).status == "MACHINE"
    assert detect(np.tile(frame, 250), AmdParams(silence_threshold=255)).cause == "LONGGREETING-1500-1500"


def test_result_mapping():
    assert [AmdResult(s, "", 0).result for s in ("MACHINE", "HUMAN", "NOTSURE")] == ["machine", "human", "unknown"]


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        detect(np.zeros((2, 160), dtype=np.int16))
    with pytest.raises(TypeError):
        detect(np.zeros(160, dtype=np.float32))


def test_ten_seconds_take_milliseconds():
    audio = np.tile(cat(buzz(60), silence(100)), 63)  # ~10 s that never decides before its end
    p = AmdParams(total_analysis_time_ms=60_000)
    t0 = time.perf_counter()
    r = detect(audio, p)
    assert time.perf_counter() - t0 < 0.25
    assert r == AmdResult("NOTSURE", "TOOLONG-10080", 10080)


def test_cli_reads_wav(tmp_path, capsys):
    path = tmp_path / "hello.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(cat(buzz(500), silence(3000)).astype("<i2").tobytes())
    assert amd_ref.main([str(path)]) == 0
    assert capsys.readouterr().out.split("\t")[1:] == ["HUMAN", "HUMAN-800-800", "1300\n"]
