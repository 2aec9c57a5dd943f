"""bench/amd_bound.py: the earliest time each kind of listener could decide a case, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import bench_module

Case = bench_module("amd_data").Case  # first: amd_bound imports it by name
amd_bound = bench_module("amd_bound")
PCM = np.zeros(8000, dtype=np.int16)


def person(text: str, start: float, end: float) -> Case:
    return Case("human_long/en-us/p50s150/x-0", "human_long", "human", PCM, start, end, None, None, text)


def machine(text: str, start: float, end: float, beep: float | None = None, voice: str = "de") -> Case:
    beep_end = beep + 500 if beep is not None else None
    name = f"machine_beep/{voice}/p50s150/x-1"
    return Case(name, "machine_beep", "machine", PCM, start, end, beep, beep_end, text)


def test_each_listener_decides_no_earlier_than_what_it_hears():
    cases = [
        person("Green Valley Vet, this is Emma, how can I help?", 800.0, 3800.0),
        machine("Hallo, hier ist Familie Schneider. Bitte eine Nachricht.", 900.0, 2500.0, beep=3000.0),
        machine("Bitte eine Nachricht.", 100.0, 1100.0),
        Case("silence/n60dBm0-0", "silence", "unknown", PCM, None, None, None, None),
    ]
    timing = amd_bound.earliest(cases, "timing", 0.0)
    # the person at the end of the greeting; the first machine at its beep (before its greeting has run as
    # long as the longest person's, 3 s); the second, without a beep, once it has; silence at once
    assert timing.tolist() == [3800.0, 3000.0, 3100.0, 0.0]
    assert amd_bound.earliest(cases, "timing", 300.0)[0] == 4100.0
    vm = amd_bound.earliest(cases, "+vm", 0.0)
    text = cases[1].text.lower()
    assert vm[1] == pytest.approx(900.0 + 1600.0 * (text.index("nachricht") + len("nachricht")) / len(text))
    assert vm[0] == 3800.0  # voicemail phrases say nothing of people
    words = amd_bound.earliest(cases, "+words", 0.0)
    said = cases[0].text.lower()
    assert words[0] == pytest.approx(800.0 + 3000.0 * (said.index("help") + len("help")) / len(said))


def test_a_phrase_said_by_the_other_side_is_refused():
    amd_bound.check_phrases([person("Hello, Jane speaking.", 500.0, 2000.0), machine("Nachricht.", 0.0, 900.0)])
    with pytest.raises(SystemExit, match="leave"):
        amd_bound.check_phrases([person("Hello, please leave a message.", 500.0, 2000.0)])
    with pytest.raises(SystemExit, match="speaking"):
        amd_bound.check_phrases([machine("Anna speaking, leave a message.", 100.0, 2000.0, voice="en-us")])
