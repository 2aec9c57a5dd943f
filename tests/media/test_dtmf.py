"""DTMF detector (cext/dtmf.pyx behind media/dtmf.py) against the Q.24 receiver rules, each at its edges,
and against the numpy reference of the same algorithm (detect_reference) on generated and random input.

Signals come from tests/dtmf_signals.py (deterministic). Each acceptance case runs every key at several
phases and sample offsets, so a rule holds for all 16 keys and not just for one lucky alignment.
"""

from __future__ import annotations

import dtmf_signals as sig
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from media import dtmf

TIMING_TOLERANCE_MS = 4


def one_key(digit: str, phase: float = 0.0, lead_ms: float = 50.0, **tone_kw) -> np.ndarray:
    return sig.pcm(np.concatenate([sig.pause(lead_ms), sig.tone(digit, phase=phase, **tone_kw), sig.pause(80)]))


def found(pcm: np.ndarray) -> str:
    events = dtmf.detect_samples(pcm)
    assert events == dtmf.detect_reference(pcm)  # every case doubles as a C-vs-reference check
    return "".join(e[0] for e in events)


def each_key(**tone_kw) -> list[str]:
    """What is detected for every key at 3 phases x 2 sample offsets of the tone."""
    return [
        found(one_key(d, phase=ph, lead_ms=lead, **tone_kw))
        for d in dtmf.KEYS
        for ph in (0.0, 2.0, 4.0)
        for lead in (50.0, 51.4)
    ]


def expected_each_key() -> list[str]:
    return [d for d in dtmf.KEYS for _ in range(6)]


def test_dtmf_all_16_keys_in_sequence_reported_once_with_times():
    pcm = sig.pcm(sig.sequence(dtmf.KEYS))
    events = dtmf.detect(pcm)
    assert [e.digit for e in events] == list(dtmf.KEYS)
    for event, (digit, start, end) in zip(events, sig.truth(dtmf.KEYS), strict=True):
        assert event.digit == digit
        assert abs(event.start_ms - start) <= TIMING_TOLERANCE_MS
        assert abs(event.end_ms - end) <= TIMING_TOLERANCE_MS


@pytest.mark.parametrize("lead_ms", [50.0, 50.6, 51.3, 52.1])
def test_dtmf_timing_within_a_few_ms_at_any_alignment(lead_ms):
    [event] = dtmf.detect(one_key("7", lead_ms=lead_ms, ms=100))
    assert abs(event.start_ms - lead_ms) <= TIMING_TOLERANCE_MS
    assert abs(event.end_ms - (lead_ms + 100)) <= TIMING_TOLERANCE_MS


@pytest.mark.parametrize("deviation", [-1.5, 1.5])
def test_dtmf_frequency_deviation_1_5_pct_accepted(deviation):
    assert each_key(ms=60, deviation_pct=deviation) == expected_each_key()


@pytest.mark.parametrize("deviation", [-3.5, 3.5])
def test_dtmf_frequency_deviation_3_5_pct_rejected(deviation):
    assert each_key(ms=60, deviation_pct=deviation) == [""] * 96


def test_dtmf_tone_40_ms_accepted():
    assert each_key(ms=40) == expected_each_key()


@pytest.mark.parametrize("ms", [20, 15, 10])
def test_dtmf_tone_20_ms_or_shorter_rejected(ms):
    assert each_key(ms=ms, level_dbm0=-3) == [""] * 96


def test_dtmf_pause_40_ms_splits_two_equal_digits():
    for lead in (50.0, 51.1, 52.3):
        x = np.concatenate([sig.pause(lead), sig.tone("5", 40), sig.pause(40), sig.tone("5", 40), sig.pause(80)])
        assert found(sig.pcm(x)) == "55"


def test_dtmf_break_of_10_ms_is_bridged():
    x = np.concatenate([sig.pause(50), sig.tone("9", 60), sig.pause(10), sig.tone("9", 60), sig.pause(80)])
    [event] = dtmf.detect(sig.pcm(x))
    assert (event.digit, event.start_ms, event.end_ms) == ("9", 50, 180)


def test_dtmf_back_to_back_and_repeated_digits():
    digits = "1133#9*#00DD"
    pcm = sig.pcm(sig.sequence(digits, tone_ms=45, pause_ms=45))
    assert found(pcm) == digits


@pytest.mark.parametrize("level", [-25.0, -3.0])
def test_dtmf_levels_minus_25_to_minus_3_dbm0_accepted(level):
    assert each_key(ms=50, level_dbm0=level) == expected_each_key()


@pytest.mark.parametrize("level", [-35.0, -45.0])
def test_dtmf_levels_well_below_minus_25_dbm0_rejected(level):
    assert each_key(ms=60, level_dbm0=level) == [""] * 96


@pytest.mark.parametrize("twist", [4.0, -8.0])
def test_dtmf_twist_4_db_forward_8_db_reverse_accepted(twist):
    assert each_key(ms=50, level_dbm0=-12, twist_db=twist) == expected_each_key()


@pytest.mark.parametrize("twist", [8.0, -12.0])
def test_dtmf_twist_beyond_limits_rejected(twist):
    assert each_key(ms=60, level_dbm0=-12, twist_db=twist) == [""] * 96


@pytest.mark.parametrize("high", [False, True])
def test_dtmf_single_tone_of_a_pair_rejected(high):
    assert each_key(ms=200, level_dbm0=-3, low=not high, high=high) == [""] * 96


@pytest.mark.parametrize("level", [-25.0, -10.0, -3.0])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dtmf_15_db_snr_white_noise(level, seed):
    x = sig.sequence(dtmf.KEYS, tone_ms=45, pause_ms=45, level_dbm0=level, deviation_pct=1.5 - seed)
    assert found(sig.pcm(sig.add_noise(x, 15.0, seed=seed))) == dtmf.KEYS


@pytest.mark.parametrize("law", [sig.ulaw_round_trip, sig.alaw_round_trip])
@pytest.mark.parametrize(("level", "twist"), [(-25.0, 0.0), (-3.0, 0.0), (-14.0, 4.0), (-14.0, -8.0)])
def test_dtmf_survives_g711_companding(law, level, twist):
    x = sig.sequence(dtmf.KEYS, tone_ms=45, pause_ms=45, level_dbm0=level, twist_db=twist, deviation_pct=1.5)
    assert found(law(x)) == dtmf.KEYS


def test_dtmf_edges_combined_noise_twist_deviation_mulaw():
    x = sig.sequence(dtmf.KEYS, tone_ms=45, pause_ms=45, level_dbm0=-20.0, twist_db=-8.0, deviation_pct=-1.5)
    assert found(sig.ulaw_round_trip(sig.add_noise(x, 15.0, seed=9))) == dtmf.KEYS


def test_dtmf_synthetic_music_no_detection():
    pcm = sig.pcm(sig.music(20.0))
    assert found(pcm) == ""
    assert found(sig.ulaw_round_trip(pcm)) == ""


SPEECH = (
    ("en-us", 50, "one two three four five six seven eight nine zero oh star pound hash"),
    ("en-us+f3", 85, "Eeee, ooo, aah, nine nine nine, eight oh eight, you too, me three."),
    ("en-gb+m3", 20, "Please hold the line, we are connecting you to an operator now."),
    ("de", 50, "1 2 3 4 5 6 7 8 9 0, Guten Tag, bitte warten Sie einen Moment."),
    ("fr", 85, "1 2 3 4 5 6 7 8 9 0, bonjour, je voudrais parler au service client."),
)


@pytest.mark.parametrize("voice,pitch,text", SPEECH, ids=[v for v, _, _ in SPEECH])
def test_dtmf_espeak_speech_no_detection(voice, pitch, text):
    """Talk-off: voices low and high, digits spoken in words, through mu-law and A-law."""
    x = sig.speech(text, voice, pitch)
    assert len(x) > 8000 * 2
    assert found(sig.ulaw_round_trip(x)) == ""
    assert found(sig.alaw_round_trip(x)) == ""


def test_dtmf_white_noise_and_silence_no_detection():
    assert found(sig.pcm(sig.add_noise(np.zeros(80000), 0.0, ref_power=1e7))) == ""
    assert found(np.zeros(8000, dtype=np.int16)) == ""


def test_dtmf_streaming_any_chunking_matches_whole():
    pcm = sig.pcm(sig.add_noise(sig.sequence("159D*", tone_ms=50, pause_ms=50), 20.0))
    whole = dtmf.detect_samples(pcm)
    rng = np.random.default_rng(5)
    det = dtmf.DtmfDetector()
    got, pos = [], 0
    while pos < len(pcm):
        step = int(rng.integers(1, 300))
        got += det.feed(pcm[pos : pos + step])
        pos += step
    assert got + det.flush() == whole
    det.reset()
    assert det.feed(pcm.tobytes()) + det.flush() == whole  # bytes work too, positions restart after reset


def test_dtmf_stream_facade_reports_ms():
    stream = dtmf.DtmfStream()
    pcm = sig.pcm(sig.sequence("42", tone_ms=60, pause_ms=60))
    events = stream.feed(pcm[:900]) + stream.feed(pcm[900:]) + stream.finish()
    assert events == dtmf.detect(pcm)
    assert [e.digit for e in events] == ["4", "2"]


def test_dtmf_digit_still_sounding_at_end_reported_by_flush():
    pcm = sig.pcm(np.concatenate([sig.pause(50), sig.tone("#", 100)]))
    det = dtmf.DtmfDetector()
    assert det.feed(pcm) == []
    [(digit, start, end)] = det.flush()
    assert digit == "#" and abs(start - 400) <= 32 and abs(end - 1200) <= 32
    assert det.flush() == []


def test_dtmf_detect_resamples_other_rates():
    pcm8 = sig.sequence("38", tone_ms=80, pause_ms=80)
    t = np.arange(len(pcm8) * 2) / 16000
    pcm16 = np.interp(t, np.arange(len(pcm8)) / 8000, pcm8)
    assert [e.digit for e in dtmf.detect(sig.pcm(pcm16), rate=16000)] == ["3", "8"]


def test_dtmf_feed_rejects_wrong_buffers():
    det = dtmf.DtmfDetector()
    with pytest.raises(ValueError):
        det.feed(b"\x00\x01\x02")
    with pytest.raises(TypeError):
        det.feed(np.zeros(10, dtype=np.float32))
    assert det.feed(b"") == []


@pytest.mark.parametrize("seed", range(4))
def test_dtmf_reference_agrees_on_random_mixtures(seed):
    """Tones at random levels, deviations, twists and lengths in noise: C and numpy give the same events."""
    rng = np.random.default_rng(100 + seed)
    parts = []
    for _ in range(12):
        parts.append(
            sig.tone(
                str(rng.choice(list(dtmf.KEYS))),
                float(rng.uniform(10, 90)),
                level_dbm0=float(rng.uniform(-35, -3)),
                deviation_pct=float(rng.uniform(-4, 4)),
                twist_db=float(rng.uniform(-12, 8)),
                phase=float(rng.uniform(0, 6)),
            )
        )
        parts.append(sig.pause(float(rng.uniform(0, 60))))
    pcm = sig.pcm(sig.add_noise(np.concatenate(parts), float(rng.uniform(5, 30)), seed=seed))
    assert dtmf.detect_samples(pcm) == dtmf.detect_reference(pcm)


@settings(max_examples=60, deadline=None)
@given(arrays(np.int16, st.integers(0, 3000)))
def test_dtmf_arbitrary_int16_never_crashes_and_agrees_with_reference(pcm):
    events = dtmf.detect_samples(pcm)
    assert events == dtmf.detect_reference(pcm)
    for digit, start, end in events:
        assert digit in dtmf.KEYS and 0 <= start < end <= len(pcm)


@settings(max_examples=30, deadline=None)
@given(st.text(alphabet=dtmf.KEYS, min_size=1, max_size=4), st.integers(0, 40), st.floats(-20.0, -5.0))
def test_dtmf_generated_sequences_detected_exactly(digits, lead, level):
    pcm = sig.pcm(sig.sequence(digits, tone_ms=50, pause_ms=50, lead_ms=40 + lead / 8, level_dbm0=level))
    assert found(pcm) == digits
