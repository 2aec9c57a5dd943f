"""DTMF in calls: the three ways a key press reaches us, merged into one stream of digits.

A far end may signal a press in-band (tones in the audio, heard by the engine's detector), as RFC 4733
telephone events (parsed by the engine) or as SIP INFO with an application/dtmf-relay body. Some gateways
send the same press two ways at once (RFC 4733 events while leaving the tones in the audio, or INFO as
well as events), so a press heard from a second source while the first source's report of the same key
is still on (its span, widened by `SLACK_NS` for the jitter buffer's delay and clock skew) is the same
press: it is dropped. Presses from one source are never merged with each other: a source that reports
"5" twice means two presses. Sources disagree about time by tens of milliseconds (in-band starts are
seen after the jitter buffer, RFC 4733 starts on the first packet's arrival, INFO has no start at all and
is placed to end when it arrived), which the slack absorbs; distinct presses of one key are at least one
tone and one pause (80 ms and more) apart on the wire, and a far end never alternates sources per press.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

DTMF_RELAY = "application/dtmf-relay"
SOURCES = ("inband", "rfc4733", "info")
SLACK_NS = 120_000_000
_RELAY_DIGITS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True, slots=True)
class Press:
    digit: str
    source: str
    start_ns: int
    end_ns: int


class DtmfMerger:
    """Decides which reported digits are new presses. Times are CLOCK_MONOTONIC nanoseconds, given by the
    caller (the engine's event times, or the arrival time of an INFO)."""

    def __init__(self, remembered: int = 8):
        self._recent: dict[str, deque[Press]] = {}
        self._remembered = remembered

    def accept(self, side: str, digit: str, source: str, start_ns: int, duration_ms: int) -> bool:
        """True when this report is a press not already reported from another source."""
        press = Press(digit, source, start_ns, start_ns + max(duration_ms, 0) * 1_000_000)
        recent = self._recent.setdefault(side, deque(maxlen=self._remembered))
        for seen in recent:
            if seen.digit == digit and seen.source != source and _overlap(seen, press):
                return False
        recent.append(press)
        return True


def _overlap(a: Press, b: Press) -> bool:
    return a.start_ns - SLACK_NS <= b.end_ns and b.start_ns - SLACK_NS <= a.end_ns


def parse_dtmf_relay(body: bytes) -> tuple[str, int] | None:
    """`Signal=5` / `Duration=160` (the de facto application/dtmf-relay body): (digit, ms), or None."""
    fields = {}
    for line in body.decode("ascii", "replace").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    digit = fields.get("signal", "").upper()
    if len(digit) != 1 or digit not in _RELAY_DIGITS:
        return None
    duration = fields.get("duration", "")
    return digit, int(duration) if duration.isdigit() and duration.isascii() else 0
