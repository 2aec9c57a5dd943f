"""Session timers (RFC 4028) for one side of a call: who refreshes, how often, and when to give up.

A B2BUA runs the timer separately on each side: towards the caller we are the UAS, towards the callee
the UAC. The side that refreshes sends a re-INVITE or UPDATE every half interval (section 10); the other
ends the session when no refresh came by `interval - min(32, interval / 3)` (section 10). A peer that
does not support the extension still gets a timer: we refresh it ourselves (section 9, 7.4), because a
call whose far end silently vanished must not run until the maximum call duration. Header parsing and
the negotiation rules live here; the call arms the timers.
"""

from __future__ import annotations

import msgspec

from softswitch.sip.message import Request, Response

MIN_SE = 90  # seconds, RFC 4028's minimum (section 4)
DEFAULT_INTERVAL = 1800


class SessionTimer(msgspec.Struct, frozen=True):
    interval: int
    we_refresh: bool

    @property
    def due_in(self) -> float:
        """Seconds until we must refresh, or until the session expires without the peer's refresh."""
        return self.interval / 2 if self.we_refresh else self.interval - min(32, self.interval / 3)

    def header(self, we_are_uac: bool) -> str:
        refresher = "uac" if self.we_refresh == we_are_uac else "uas"
        return f"{self.interval};refresher={refresher}"


def parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """`Session-Expires: 1800;refresher=uac` -> (1800, "uac"); None when absent or malformed."""
    if not value:
        return None
    delta, *params = (p.strip() for p in value.split(";"))
    if not delta.isdigit() or not delta.isascii():
        return None
    refresher = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher" and val.strip().lower() in ("uac", "uas"):
            refresher = val.strip().lower()
    return min(int(delta), 2**31), refresher


def _supports_timer(message: Request | Response) -> bool:
    return any(
        "timer" in (t.strip().lower() for t in v.split(","))
        for name in ("Supported", "Require")
        for v in message.get_all(name)
    )


def as_uas(
    request: Request, interval: int = DEFAULT_INTERVAL, min_se: int = MIN_SE
) -> tuple[SessionTimer | None, list[tuple[str, str]]]:
    """The timer for a dialog where we answer `request` (an INVITE or a refresh), and the headers for our
    2xx; (None, [("Min-SE", ...)]) means the interval asked for is too brief: answer 422 (section 5)."""
    asked = parse_session_expires(request.get("Session-Expires"))
    if asked is not None and asked[0] < min_se:
        return None, [("Min-SE", str(min_se))]
    peer_min = request.get("Min-SE", "").split(";")[0].strip()
    floor = max(min_se, int(peer_min) if peer_min.isdigit() else 0)
    if asked is not None:
        value, refresher = asked
    else:
        value, refresher = interval, None
    value = max(value, floor)
    if refresher is None:
        refresher = "uac" if _supports_timer(request) else "uas"
    timer = SessionTimer(value, we_refresh=refresher == "uas")
    headers = [("Session-Expires", timer.header(we_are_uac=False))]
    if refresher == "uac":
        headers.append(("Require", "timer"))
    return timer, headers


def request_headers(interval: int = DEFAULT_INTERVAL, min_se: int = MIN_SE) -> list[tuple[str, str]]:
    """What our INVITE asks for (Supported: timer is always in our INVITEs)."""
    return [("Session-Expires", str(interval)), ("Min-SE", str(min_se))]


def as_uac(response: Response, interval: int = DEFAULT_INTERVAL) -> SessionTimer:
    """The timer for a dialog our INVITE created, from its 2xx (section 7.2): the refresher it names;
    without Session-Expires the peer does not do timers, so we refresh at our own interval."""
    got = parse_session_expires(response.get("Session-Expires"))
    if got is None:
        return SessionTimer(interval, we_refresh=True)
    value, refresher = got
    return SessionTimer(value, we_refresh=refresher != "uas")
