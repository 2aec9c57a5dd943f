"""Answering machine detection: who answered (a person, a voicemail greeting, or nobody), and when a
greeting's beep ends.

Theory of operation. The compiled kernel (cext/native/amd.c) turns the far end's audio into segments,
voice, silence and steady tones, a few boundaries a second; this module decides per segment, with the
time given explicitly (sans-IO: the same `AmdDetector` runs on a file, where time is the sample count,
and in a call, where the media events and a timer bring it). What tells a person from a machine:

- A person answers with a short greeting ("Hello?", "Yes, speaking") and then waits for the caller: a
  greeting of at most `greeting_ms` followed by `after_greeting_silence_ms` of silence is `human`.
- A machine plays a recorded monologue that goes on: a greeting still running at `greeting_ms` is
  `machine`. People who answer with a business greeting ("Good afternoon, Acme, this is Sarah, how can I
  help you?") speak for 2 to 4.5 s, which is what sets the default `greeting_ms` (4,500): app_amd's
  1,500 ms (and its word count) read all of them as machines, the complaint users have most.
- A steady tone (a beep, 300-2,000 Hz for 100 ms or more) is `machine` at once: people do not beep.
- Nothing but silence for `initial_silence_ms` is `unknown`, as is no decision within `total_analysis_ms`.

Voice shorter than `word_ms` is a click or a breath, not a word. Pauses inside a greeting (between
sentences) are shorter than the after-greeting silence; the kernel already bridges pauses between words
(`between_words_ms`), so a "word" is a run of speech between pauses longer than that. More than
`max_words` of them is `machine` (Asterisk's maximum_number_of_words, counted as app_amd does). app_amd's
2 reads most business greetings by people as machines; on bench/amd_data.py 7 calls 6 people machines, 8
calls 2, and from 9 on the greeting length decides first. The default, 10, keeps a word of margin: it is the
knob for those who want Asterisk's behaviour, not a decision of its own here.

Beep mode (`detect_beep`): after `machine`, listen on until the greeting ends. A tone's end is the
beep's end, unless another tone follows within `beep_gap_ms` (a train of beeps: the last one counts);
`end_silence_ms` of silence after the greeting without a tone means a machine without a beep; after
`beep_timeout_ms` from answer the detector gives up (`end` = "timeout"). Speech after a tone means the
greeting goes on (a tone inside a greeting, or one the tracker heard in a sung vowel), so the tone is
forgotten. A human or unknown verdict ends detection at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

import numpy as np

from cext import amd as _k
from cext.buffers import pcm_bytes

RATE = _k.RATE
MS = RATE // 1000  # samples per ms
RESULTS = ("human", "machine", "unknown")


class AmdParamError(ValueError):
    """A bad AMD parameter: which one, and why (for config errors and API param_errors)."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name} {reason}")
        self.name, self.reason = name, reason


@dataclass(frozen=True, slots=True)
class AmdParams:
    """The knobs users know from Twilio and Asterisk, in ms and dBm0. Defaults tuned on bench/amd_data.py."""

    total_analysis_ms: int = 8000
    initial_silence_ms: int = 2500
    greeting_ms: int = 4500
    after_greeting_silence_ms: int = 1000
    word_ms: int = 100
    between_words_ms: int = 100
    max_words: int = 10
    silence_threshold_dbm0: float = -50.0
    beep_timeout_ms: int = 30000
    beep_gap_ms: int = 400
    end_silence_ms: int = 2000

    def __post_init__(self) -> None:
        for name, spec in SPECS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int if spec.kind is int else (int, float)):
                raise AmdParamError(name, "must be an integer" if spec.kind is int else "must be a number")
            if not spec.lo <= value <= spec.hi:
                raise AmdParamError(name, f"must be between {spec.lo:g} and {spec.hi:g}")

    def over(self, changes: dict[str, int | float]) -> AmdParams:
        """These parameters with some replaced (the config's `[amd]` over the defaults, a call's over the
        config's). AmdParamError names an unknown or bad one."""
        for name in changes:
            if name not in SPECS:
                raise AmdParamError(name, f"unknown (known: {', '.join(sorted(SPECS))})")
        return replace(self, **changes)

    def kernel(self) -> dict:
        """What the compiled segmenter takes of these."""
        return {"silence_dbm0": self.silence_threshold_dbm0, "voice_off_ms": self.between_words_ms}


class ParamSpec(NamedTuple):
    """What one parameter takes: its type, its bounds (the config, the API and the CLI check the same), and
    what it does (for the API's schema)."""

    kind: type
    lo: float
    hi: float
    doc: str


_MS = 120_000  # no AMD parameter in ms goes past 2 minutes (Twilio's timeout stops at 59 s)
SPECS: dict[str, ParamSpec] = {
    "total_analysis_ms": ParamSpec(int, 1, _MS, "no verdict this long after the answer: unknown"),
    "initial_silence_ms": ParamSpec(int, 1, _MS, "silence this long from the answer: unknown"),
    "greeting_ms": ParamSpec(int, 1, _MS, "a greeting still going this long after it began: machine"),
    "after_greeting_silence_ms": ParamSpec(int, 1, _MS, "silence this long after a shorter greeting: human"),
    "word_ms": ParamSpec(int, 1, _MS, "voice shorter than this is a click or a breath, not a word"),
    "between_words_ms": ParamSpec(int, 1, _MS, "a pause at least this long separates two words"),
    "max_words": ParamSpec(int, 1, 1000, "more words than this in the greeting: machine"),
    "silence_threshold_dbm0": ParamSpec(float, -90.0, 0.0, "audio below this level is silence"),
    "beep_timeout_ms": ParamSpec(int, 1, _MS, "beep mode gives up this long after the answer"),
    "beep_gap_ms": ParamSpec(int, 1, _MS, "quiet this long after a tone makes it the beep (not one of a train)"),
    "end_silence_ms": ParamSpec(int, 1, _MS, "silence this long ends a greeting that had no beep"),
}
assert list(SPECS) == [f.name for f in fields(AmdParams)]


@dataclass(slots=True)
class AmdResult:
    """The verdict. `decision_ms` and `beep_end_ms` count from the answer; `end` says how beep mode ended:
    "beep", "silence" (a machine without a beep), "timeout", or None (not in beep mode, or not a machine)."""

    result: str
    decision_ms: int
    reason: str
    beep_end_ms: int | None = None
    end: str | None = None
    finished_ms: int | None = None  # when detection ended (the verdict, or the end of beep mode)


@dataclass(slots=True)
class _Segment:
    kind: str
    start: int  # ms
    freq: int = 0
    word: bool = False  # closed as a word (counted in AmdDetector._words)


@dataclass(slots=True)
class AmdDetector:
    """The decision, per segment, on explicit time. Feed `segment()` the kernel's boundaries and call
    `advance(now_ms)` whenever time has passed (at every boundary, and on a timer in calls)."""

    params: AmdParams = field(default_factory=AmdParams)
    detect_beep: bool = False
    result: AmdResult | None = None
    done: bool = False
    _segments: list[_Segment] = field(default_factory=lambda: [_Segment("silence", 0)])
    _first_word: int | None = None
    _words: int = 0  # words ended (voice of at least word_ms); the one being said counts in _decide
    _last_word_end: int | None = None
    _last_tone_end: int | None = None

    def segment(self, kind: str, start_ms: int, freq_hz: int = 0) -> None:
        """A boundary: `kind` ("voice", "silence" or "tone") from `start_ms` on. A tone may start before
        the boundary just reported (the beep's first frames read as voice until it proved steady)."""
        segs = self._segments
        while len(segs) > 1 and segs[-1].start >= start_ms:
            self._words -= segs.pop().word
        self._close(segs[-1], start_ms)
        segs.append(_Segment(kind, start_ms, freq_hz))

    def _close(self, seg: _Segment, end: int) -> None:
        """`seg` ends at `end` (again, shorter, when a tone reaches back over the boundary that closed it)."""
        self._words -= seg.word
        seg.word = seg.kind == "voice" and end - seg.start >= self.params.word_ms
        self._words += seg.word
        if seg.word:
            if self._first_word is None:
                self._first_word = seg.start
            self._last_word_end = end
        elif seg.kind == "tone":
            self._last_tone_end = end

    def advance(self, now_ms: int) -> AmdResult | None:
        """Time has reached `now_ms`: returns the result when it changes (the verdict; in beep mode, again
        when the greeting has ended), else None."""
        if self.done:
            return None
        decided = False
        if self.result is None:
            verdict = self._decide(now_ms)
            if verdict is None:
                return None
            self.result = AmdResult(verdict[0], now_ms, verdict[1])
            if verdict[0] != "machine" or not self.detect_beep:
                self._end(now_ms, None, None)
                return self.result
            decided = True
        end = self._greeting_end(now_ms)
        if end is not None:
            self._end(now_ms, *end)
            return self.result
        return self.result if decided else None

    def stop(self, now_ms: int, reason: str) -> AmdResult:
        """Detection is over at `now_ms` (the input ended, the call hung up): an undecided detector says
        `unknown` with this `reason`; a machine whose greeting had not ended gets it as its `end`."""
        if self.result is None:
            self.result = AmdResult("unknown", now_ms, reason)
        if not self.done:
            self._end(now_ms, reason if self.result.result == "machine" and self.detect_beep else None, None)
        return self.result

    def _end(self, now_ms: int, how: str | None, beep_end_ms: int | None) -> None:
        assert self.result is not None
        self.done = True
        self.result.finished_ms = now_ms
        self.result.end, self.result.beep_end_ms = how, beep_end_ms

    def _current(self, now_ms: int) -> tuple[_Segment, int]:
        seg = self._segments[-1]
        return seg, now_ms - seg.start

    def _decide(self, now: int) -> tuple[str, str] | None:
        p = self.params
        seg, length = self._current(now)
        if seg.kind == "tone" or self._last_tone_end is not None:
            return "machine", "beep"
        word_now = seg.kind == "voice" and length >= p.word_ms
        first = self._first_word if self._first_word is not None else (seg.start if word_now else None)
        if first is None:
            if now >= p.initial_silence_ms:
                return "unknown", "silence"
            return None
        if self._words + word_now > p.max_words:
            return "machine", "max_words"
        if seg.kind == "voice":
            if now - first >= p.greeting_ms:
                return "machine", "long_greeting"
        elif self._last_word_end is not None and now - self._last_word_end >= p.after_greeting_silence_ms:
            if self._last_word_end - first < p.greeting_ms:
                return "human", "short_greeting"
            return "machine", "long_greeting"
        if now >= p.total_analysis_ms:
            return "unknown", "timeout"
        return None

    def _greeting_end(self, now: int) -> tuple[str, int | None] | None:
        """Beep mode: ("beep", its end), ("silence", None) or ("timeout", None) once the greeting is over."""
        p = self.params
        seg, length = self._current(now)
        if seg.kind == "voice" and length >= p.word_ms:
            self._last_tone_end = None  # speech after a tone: the greeting goes on (that was not its beep)
        if self._last_tone_end is not None and seg.kind == "silence":
            if length >= p.beep_gap_ms:
                return "beep", self._last_tone_end
        elif seg.kind == "silence" and seg.start > 0 and length >= p.end_silence_ms:
            return "silence", None
        if now >= p.beep_timeout_ms:
            return "timeout", None
        return None


def analyze(pcm, params: AmdParams | None = None, detect_beep: bool = True) -> AmdResult:
    """Detection over a whole recording of what the far end sent from the answer on (8 kHz PCM16), fed in
    20 ms ticks as the media thread would. The end of the input is the end of time: a detector still
    undecided there says `unknown` ("ended"); beep mode still listening ends with `end` = "ended"."""
    params = params or AmdParams()
    samples = np.frombuffer(pcm_bytes(pcm), dtype=np.int16)
    kernel = _k.AmdSegmenter(**params.kernel())
    det = AmdDetector(params, detect_beep)
    tick = 20 * MS
    for at in range(0, len(samples) - tick + 1, tick):
        for kind, start, freq in kernel.feed(samples[at : at + tick]):
            det.segment(kind, start // MS, freq)
        if det.advance((at + tick) // MS) is not None and det.done:
            break
    return det.stop(len(samples) // MS, "ended")
