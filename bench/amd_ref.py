"""Reference answering-machine detector: Asterisk's app_amd (the AMD() dialplan application), re-implemented
offline over a buffer of 8 kHz audio, with Asterisk's defaults. It is the side-by-side reference of bench/amd.py.

Sources followed (read, not copied):
  * apps/app_amd.c of asterisk/asterisk, current form: the one with the optional audioFile argument and the
    `iWordsCount > maximumNumberOfWords` test (stored commit 5bda46030049dd61f9dba7758814c1d8e8316c86; the same
    loop in the gtjoseph/asterisk-gh-test mirror of master). The AMD() pages of Asterisk 16, 18, 20, 22 and
    Latest document this form (with audioFile).
  * main/dsp.c, __ast_dsp_silence_noise() behind ast_dsp_silence() (the silence detector app_amd feeds).
  * configs/samples/amd.conf.sample, and the AMD() page of the documentation,
    https://docs.asterisk.org/Latest_API/API_Documentation/Dialplan_Applications/AMD

Defaults (AmdParams) are the compiled-in ones, which amd.conf.sample repeats: initialSilence 2500 ms, greeting
1500 ms, afterGreetingSilence 800 ms, totalAnalysisTime 5000 ms, minimumWordLength 100 ms, betweenWordsSilence
50 ms, maximumNumberOfWords 2, silenceThreshold 256, maximumWordLength 5000 ms. Older sources (the
ASTERISK_REGISTER_FILE era, e.g. stored commit 012156de900841ad3c77255176baa8f17fed1da6) had maximumNumberOfWords 3
tested with `>=`: both fire on the third counted word, only the cause differs (MAXWORDS-3-3 then, MAXWORDS-3-2 now).
We follow the current source.

The algorithm, per 20 ms frame of signed linear (160 samples; app_amd takes a frame's length as samples / 8):
  1. total += 20; if total >= totalAnalysisTime: NOTSURE, TOOLONG-<total>. This comes before the frame is
     looked at, so with the defaults no verdict is possible at or after 5000 ms.
  2. Silence detector: the frame is silent when the mean absolute sample, in integer arithmetic
     (sum |s| / 160, truncated), is below silenceThreshold. The detector keeps the length of the current run of
     silent frames (ms); a non-silent frame resets it to 0. app_amd reads that run length after each frame.
  3. Silent frame, run length r:
       r >= betweenWordsSilence: state = in-silence, consecutive voice = 0;
       still in the initial silence (no word yet) and r >= initialSilence: MACHINE, INITIALSILENCE-<r>-<initial>;
       in the greeting (a word was heard) and r >= afterGreetingSilence: HUMAN, HUMAN-<r>-<afterGreeting>.
     Note that it is the current run that counts, not the sum of the silence so far: a click resets it.
  4. Voice frame: consecutive voice += 20, voice total += 20, then in this order
       consecutive >= minimumWordLength and state is in-silence: words += 1, state = in-word;
       consecutive >= maximumWordLength: MACHINE, MAXWORDLENGTH-<consecutive>;
       words > maximumNumberOfWords: MACHINE, MAXWORDS-<words>-<maximumNumberOfWords>;
       in the greeting and voice total >= greeting: MACHINE, LONGGREETING-<voice>-<greeting>;
       consecutive >= minimumWordLength and not yet in the greeting: the greeting starts (initial silence over).
Consequences worth knowing when reading results (all faithful to the source):
  * The state starts as in-word, so a word only counts when at least betweenWordsSilence (3 frames) of silence
    came before it: audio that opens with speech does not count its first word. Three words from t=0 are two
    counted words, not MAXWORDS; with some silence before them the third is counted and gives MAXWORDS.
  * The voice total is all voice since answer (short clicks included), compared with greeting once the first word
    has started the greeting; gaps shorter than betweenWordsSilence do not end a word.
  * With 20 ms frames the consecutive voice never exceeds the total time, so MAXWORDLENGTH can only fire when
    maximumWordLength < totalAnalysisTime (with both at 5000, TOOLONG-5000 wins on the same frame).

Offline choices (documented here because app_amd works on a live channel):
  * decision_ms is app_amd's own clock, iTotalTime: the end of the frame on which the verdict is reached,
    counted from the first sample (the answer). Frames are 20 ms, so it is a multiple of 20.
  * Only whole frames are analysed; a trailing partial frame (< 160 samples) is dropped, as RTP at 20 ms ptime
    never delivers one.
  * If the audio ends before a verdict, the result is NOTSURE, TOOLONG-<total> with decision_ms = total, the end
    of the last whole frame: the analysis is given up there, as app_amd does when its time runs out. Every
    verdict the algorithm reaches on the frames given is returned as such; we do not invent audio after the end
    (a caller who wants "the line stays silent afterwards" appends zeros up to totalAnalysisTime).
  * Not modelled: HANGUP (there is no channel), CNG/null frames and the wall-clock timeout (they only matter when
    frames stop arriving or arrive late), NOAUDIODATA, and reading amd.conf (pass AmdParams instead).

Usage: detect(pcm) with int16 8 kHz mono samples; or `python bench/amd_ref.py FILE.wav ...` (8 kHz mono 16-bit).
"""

from __future__ import annotations

import sys
import wave
from dataclasses import dataclass

import numpy as np

RATE = 8000
SAMPLES_PER_MS = RATE // 1000  # DEFAULT_SAMPLES_PER_MS
FRAME_MS = 20
FRAME_SAMPLES = FRAME_MS * SAMPLES_PER_MS  # 160

_IN_WORD = 1
_IN_SILENCE = 2


@dataclass(frozen=True, slots=True)
class AmdParams:
    """AMD() arguments in their order, with Asterisk's defaults (apps/app_amd.c, amd.conf.sample)."""

    initial_silence_ms: int = 2500
    greeting_ms: int = 1500
    after_greeting_silence_ms: int = 800
    total_analysis_time_ms: int = 5000
    min_word_length_ms: int = 100
    between_words_silence_ms: int = 50
    maximum_number_of_words: int = 2  # current source: MACHINE when the count exceeds it (older: 3, reached)
    silence_threshold: int = 256  # on the mean absolute sample value of a frame, 0..32767
    maximum_word_length_ms: int = 5000


DEFAULTS = AmdParams()


@dataclass(frozen=True, slots=True)
class AmdResult:
    status: str  # AMDSTATUS: "MACHINE" | "HUMAN" | "NOTSURE"
    cause: str  # AMDCAUSE, formatted as app_amd does, e.g. "MAXWORDS-3-2", "HUMAN-800-800", "TOOLONG-5000"
    decision_ms: int  # app_amd's iTotalTime when the verdict was reached: ms of audio from the answer

    @property
    def result(self) -> str:
        """The verdict in lower case: machine, human, or unknown (for NOTSURE)."""
        return {"MACHINE": "machine", "HUMAN": "human"}.get(self.status, "unknown")


def frame_levels(pcm: np.ndarray) -> np.ndarray:
    """Per whole 20 ms frame, the silence detector's measure: sum of |sample| // 160, as ints (dsp.c's accum)."""
    x = np.asarray(pcm)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"expected integer (int16) samples, got {x.dtype}")
    n = x.size // FRAME_SAMPLES
    frames = x[: n * FRAME_SAMPLES].astype(np.int32).reshape(n, FRAME_SAMPLES)
    return np.abs(frames).sum(axis=1) // FRAME_SAMPLES  # non-negative, so floor division is C's truncation


def detect(pcm: np.ndarray, params: AmdParams = DEFAULTS) -> AmdResult:
    """app_amd's verdict on `pcm` (int16, 8 kHz, mono, from the answer on); see the module docstring."""
    p = params
    silent = (frame_levels(pcm) < p.silence_threshold).tolist()

    total = 0  # iTotalTime
    silence_run = 0  # the detector's totalsilence: ms of consecutive silent frames
    in_initial_silence = True
    in_greeting = False
    voice = 0  # voiceDuration
    consecutive = 0  # consecutiveVoiceDuration
    words = 0  # iWordsCount
    state = _IN_WORD  # currentState starts as in-word

    for is_silent in silent:
        total += FRAME_MS
        if total >= p.total_analysis_time_ms:
            return AmdResult("NOTSURE", f"TOOLONG-{total}", total)

        if is_silent:
            silence_run += FRAME_MS
            if silence_run >= p.between_words_silence_ms:
                state = _IN_SILENCE
                consecutive = 0
            if in_initial_silence and silence_run >= p.initial_silence_ms:
                return AmdResult("MACHINE", f"INITIALSILENCE-{silence_run}-{p.initial_silence_ms}", total)
            if in_greeting and silence_run >= p.after_greeting_silence_ms:
                return AmdResult("HUMAN", f"HUMAN-{silence_run}-{p.after_greeting_silence_ms}", total)
        else:
            silence_run = 0
            consecutive += FRAME_MS
            voice += FRAME_MS
            if consecutive >= p.min_word_length_ms and state == _IN_SILENCE:
                words += 1
                state = _IN_WORD
            if consecutive >= p.maximum_word_length_ms:
                return AmdResult("MACHINE", f"MAXWORDLENGTH-{consecutive}", total)
            if words > p.maximum_number_of_words:
                return AmdResult("MACHINE", f"MAXWORDS-{words}-{p.maximum_number_of_words}", total)
            if in_greeting and voice >= p.greeting_ms:
                return AmdResult("MACHINE", f"LONGGREETING-{voice}-{p.greeting_ms}", total)
            if consecutive >= p.min_word_length_ms and not in_greeting:
                in_initial_silence = False
                in_greeting = True

    return AmdResult("NOTSURE", f"TOOLONG-{total}", total)


def read_wav(path: str) -> np.ndarray:
    """Samples of an 8 kHz mono 16-bit WAV file."""
    with wave.open(path, "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE, 1, 2):
            raise ValueError(
                f"{path}: need 8000 Hz mono 16-bit, got {w.getframerate()} Hz "
                f"{w.getnchannels()} ch {8 * w.getsampwidth()}-bit"
            )
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: amd_ref.py FILE.wav ...  (8 kHz mono 16-bit; Asterisk AMD() defaults)", file=sys.stderr)
        return 2
    for path in paths:
        r = detect(read_wav(path))
        print(f"{path}\t{r.status}\t{r.cause}\t{r.decision_ms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
