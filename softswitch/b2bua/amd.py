"""Answering machine detection on a call's answered side: the engine's AMD kernel reports segments, the
detector (media.amd) decides, and the call publishes the verdict.

`machine_detection` (a route's, or the API's for an outbound call) is Twilio's: "enable" decides human,
machine or unknown as soon as it can; "detect_message_end" waits, for a machine, until its greeting has
ended (with a beep, or with silence) so a message can be left after it. `call.answered` is held back
until the verdict and carries `answered_by` in Twilio's words (human, machine_start, machine_end_beep,
machine_end_silence, machine_end_other, unknown); `call.amd` carries the result, when it was reached and
when the beep ended. A call that ends first is `unknown`.

Time: the kernel counts samples from the answer, and each of its events says where that count stood; a
timer brings the silences that produce no events. Wall time runs ahead of the kernel's count by the
jitter buffer's delay, so the timer subtracts the smallest lead seen (measured at every event).
"""

from __future__ import annotations

from media.amd import AmdDetector, AmdParams, AmdResult

MODES = ("enable", "detect_message_end")
TICK_S = 0.1


def answered_by(result: AmdResult, mode: str) -> str:
    """Twilio's AnsweredBy value for a result."""
    if result.result != "machine":
        return result.result
    if mode == "enable":
        return "machine_start"
    return {"beep": "machine_end_beep", "silence": "machine_end_silence"}.get(result.end or "", "machine_end_other")


class CallAmd:
    """Detection on `side` of `call`, started as that side answers."""

    def __init__(self, call, side: str, mode: str, params: AmdParams | None = None):
        if mode not in MODES:
            raise ValueError(f"machine_detection must be one of {', '.join(MODES)}, not {mode!r}")
        self.call = call
        self.side = side
        self.mode = mode
        self.params = params or AmdParams()
        self.detector = AmdDetector(self.params, detect_beep=mode == "detect_message_end")
        self._started = call.sw.loop.time()
        self._lead_ms: float | None = None
        self.leg = call.media.legs[side]
        call.sw.engine.detect_amd(self.leg, self.params.kernel())
        call.sw.timer(call, "amd", TICK_S, self._tick)

    @property
    def done(self) -> bool:
        return self.detector.done

    def on_segment(self, detail: dict) -> None:
        """An `amd` media event of this side's leg."""
        if self.done:
            return
        lead = self._wall_ms() - detail["now_ms"]
        self._lead_ms = lead if self._lead_ms is None else min(self._lead_ms, lead)
        self.detector.segment(detail["segment"], detail["start_ms"], detail["freq_hz"])
        self._advance(detail["now_ms"])

    def abandon(self) -> None:
        """The call is ending: whatever was not decided is unknown, published before the call completes."""
        if self.done:
            return
        now = max(int(self._wall_ms() - (self._lead_ms or 0.0)), 0)
        self._publish(self.detector.stop(now, "hangup"))

    def _wall_ms(self) -> float:
        return (self.call.sw.loop.time() - self._started) * 1000.0

    def _tick(self) -> None:
        if self.done:
            return
        self._advance(int(self._wall_ms() - (self._lead_ms or 0.0)))
        if not self.done:
            self.call.sw.timer(self.call, "amd", TICK_S, self._tick)

    def _advance(self, now_ms: int) -> None:
        result = self.detector.advance(now_ms)
        if result is not None and self.detector.done:
            self._publish(result)

    def _publish(self, result: AmdResult) -> None:
        self.call.sw.cancel_timer(self.call, "amd")
        self.call.sw.engine.detect_amd(self.leg, None)
        self.call.on_amd(self, result, answered_by(result, self.mode))
