"""The one error type for input we refuse, carrying what is needed to answer it."""

from __future__ import annotations

from typing import Any


class SipParseError(ValueError):
    """Malformed SIP input. `status` is the response it deserves (400, or 505 for a bad version);
    `partial` is the message as far as it could be read (start line and headers), so the caller can
    build that response when Via, Call-ID, CSeq, From and To are present; None when nothing is usable.
    """

    def __init__(self, reason: str, status: int = 400, partial: Any = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial
