"""How fast could any detector decide bench/amd_data.py's set? Upper bounds on the cases decided before a limit.

The AMD goal asks for a median decision under 2.5 s over all 240 cases: the median of 240 is the mean of
the 120th and 121st times, so at least 120 of them must be decided before 2.5 s. This counts, from the
set's ground truth, how many a detector could decide that early without guessing, under assumptions of
what it hears (each generous on purpose):

  timing   no words: a person is known at the end of the greeting (a perfect end detector, plus `--silence`
           ms to know it ended, 0 by default); a machine at the start of its beep, or once its greeting has
           run longer than any person's in the set (before that a 2 s greeting is a person's "Hello, this is
           Paul" or a voicemail's "Hello, this is Jennifer", as the set intends); silence at once.
  +vm      timing, and a perfect spotter of voicemail phrases ("leave a message", "not available", "the
           person you are calling", ...): a machine is known when its first such phrase ends.
  +words   +vm, and a perfect spotter of what only people say ("speaking", "how can I help", "who is
           this", ...): a person is known when the first such phrase ends.
When speech starts after the answer tells nothing: the set draws it from the same range for people and
machines (bench/amd_data.py, Fairness).
The phrase lists are checked against the set's texts: no voicemail phrase occurs in what a person says,
and no person's phrase in a greeting. When a phrase ends is estimated from its place in the text, spread
evenly over the greeting's span (within a few hundred ms).

Output: per bound and category, the cases decided before the limit, and the median of the earliest
times, a lower bound on the median decision time of any detector that hears what the bound assumes.
"""

from __future__ import annotations

import argparse
import re

import amd_data
import numpy as np

# Voicemail phrases (said by machines only) and what only people say, per language, lower case, |-separated.
VOICEMAIL = {
    "en": (
        "not available|unavailable|leave|message|voicemail|voice message|the tone|the beep|"
        "can't come to the phone|missed you|away from my desk|out of the office|on vacation|"
        "you are calling|you have called|dialled|forwarded|switched off|currently closed|closed for|"
        "our hours|busy assisting|out walking|not here|you know what to do|other line|take your call|"
        "subscriber"
    ).split("|"),
    "de": (
        "erreichbar|nachricht|signalton|piep|mailbox|anschluss von|geschäftszeiten|öffnungszeiten|"
        "nicht zu hause|nach dem ton|im gespräch"
    ).split("|"),
    "es": (
        "contestador|mensaje|señal|no puedo atender|no estamos|buzón|deje|deja|horario|cerrada|no está disponible"
    ).split("|"),
    "fr": ("messagerie|message|bip|répondeur|absent|disponible|joindre|laissez|fermés|horaires").split("|"),
}
PERSON = {
    "en": (
        "speaking|help|who is|who's|who am i|what can i do|what's up|direct your call|would you like|"
        "ordering|expecting|driving|my name is|problem|through to|thank you for holding|can you hear|this is she|"
        "hello?|yes?"
    ).split("|"),
    "de": ("wer ist da|sprechen mit|mein name ist|helfen|was kann ich|bitte?|hallo?").split("|"),
    "es": ("le atiende|soy|ayudar|quién|desea hablar|diga|bueno|aló").split("|"),
    "fr": ("à l'appareil|je vous écoute|qui est|aider|vous désirez|j'écoute").split("|"),
}
BOUNDS = ("timing", "+vm", "+words")


def _phrase_end_ms(case: amd_data.Case, phrases: list[str]) -> float | None:
    """When the first of `phrases` said in the greeting ends, spread evenly over the greeting's span."""
    text = case.text.lower()
    ends = [m.end() for p in phrases for m in re.finditer(re.escape(p), text)]
    if not ends or case.speech_start_ms is None or case.greeting_end_ms is None:
        return None
    span = case.greeting_end_ms - case.speech_start_ms
    return case.speech_start_ms + span * min(ends) / len(text)


def check_phrases(cases: list[amd_data.Case]) -> None:
    """No voicemail phrase in what a person says, no person's phrase in a greeting (else the bound cheats)."""
    for c in cases:
        wrong = PERSON if c.truth == "machine" else VOICEMAIL if c.truth == "human" else {}
        text = c.text.lower()
        hits = [p for p in wrong.get(c.lang, ()) if p in text]
        if hits:
            raise SystemExit(f"{c.name}: {hits} in {c.text!r}")


def earliest(cases: list[amd_data.Case], bound: str, silence_ms: float) -> np.ndarray:
    """Per case, the earliest time (ms from answer) a detector with `bound`'s hearing could decide it."""
    longest_person = max(c.greeting_end_ms - c.speech_start_ms for c in cases if c.truth == "human")
    out = []
    for c in cases:
        if c.truth == "unknown":
            out.append(0.0)
            continue
        if c.truth == "human":
            t = c.greeting_end_ms + silence_ms
            said = _phrase_end_ms(c, PERSON[c.lang]) if bound == "+words" else None
        else:
            t = c.speech_start_ms + longest_person
            if c.beep_start_ms is not None:
                t = min(t, c.beep_start_ms)
            said = _phrase_end_ms(c, VOICEMAIL[c.lang]) if bound != "timing" else None
        out.append(min(t, said) if said is not None else t)
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=float, default=2500.0, help="ms from answer (default 2500)")
    ap.add_argument("--silence", type=float, default=0.0, help="ms of silence to know a person's greeting ended")
    args = ap.parse_args()
    cases = amd_data.build()
    check_phrases(cases)
    need = len(cases) // 2
    print(f"{len(cases)} cases; a median under {args.limit:.0f} ms needs at least {need} decided before it\n")
    cats = list(amd_data.CATEGORIES)
    print(f"{'bound':<8}" + "".join(f"{c:>14}" for c in cats) + f"{'total':>8}{'median ms':>11}")
    for bound in BOUNDS:
        t = earliest(cases, bound, args.silence)
        row = [sum(t[i] < args.limit for i, c in enumerate(cases) if c.category == cat) for cat in cats]
        median = float(np.median(t))
        print(f"{bound:<8}" + "".join(f"{n:>14}" for n in row) + f"{sum(row):>8}{median:>11.0f}")
        print(f"amd_bound bound={bound} decided={sum(row)} need={need} median_ms={median:.0f}")


if __name__ == "__main__":
    main()
