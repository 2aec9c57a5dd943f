"""Session timer negotiation (RFC 4028) for each side of a B2BUA call."""

from __future__ import annotations

import pytest

from softswitch.b2bua.session_timer import MIN_SE, SessionTimer, as_uac, as_uas, parse_session_expires
from softswitch.sip.message import Request, Response


def invite(*headers: tuple[str, str]) -> Request:
    base = [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKst1"),
        ("From", "<sip:a@x>;tag=1"),
        ("To", "<sip:b@y>"),
        ("Call-ID", "st1"),
        ("CSeq", "1 INVITE"),
    ]
    return Request("INVITE", "sip:b@y", [*base, *headers])


def ok(*headers: tuple[str, str]) -> Response:
    return Response(200, "OK", [("CSeq", "1 INVITE"), *headers])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1800", (1800, None)),
        ("1800;refresher=uac", (1800, "uac")),
        ("90 ; refresher = UAS", (90, "uas")),
        ("1800;refresher=bogus", (1800, None)),
        ("abc", None),
        ("", None),
        (None, None),
        ("١٨٠٠", None),  # non-ASCII digits are not a delta-seconds
    ],
)
def test_session_timer_parse(value, expected):
    assert parse_session_expires(value) == expected


def test_session_timer_uas_peer_supports_timer_refreshes_itself():
    timer, headers = as_uas(invite(("Supported", "timer"), ("Session-Expires", "600")))
    assert timer == SessionTimer(600, we_refresh=False)
    assert ("Session-Expires", "600;refresher=uac") in headers and ("Require", "timer") in headers
    assert timer.due_in == 600 - 32  # section 10: interval - min(32, interval/3)


def test_session_timer_uas_peer_without_support_gets_us_as_refresher():
    timer, headers = as_uas(invite(), interval=1800)
    assert timer == SessionTimer(1800, we_refresh=True)
    assert headers == [("Session-Expires", "1800;refresher=uas")]
    assert timer.due_in == 900


def test_session_timer_uas_honours_refresher_chosen_by_the_uac():
    timer, _ = as_uas(invite(("Supported", "timer"), ("Session-Expires", "1200;refresher=uas")))
    assert timer.we_refresh and timer.interval == 1200


def test_session_timer_uas_too_brief_is_422_with_min_se():
    timer, headers = as_uas(invite(("Session-Expires", "30")))
    assert timer is None and headers == [("Min-SE", str(MIN_SE))]


def test_session_timer_uas_respects_the_peer_min_se():
    timer, _ = as_uas(invite(("Supported", "timer"), ("Min-SE", "300")), interval=120)
    assert timer.interval == 300


def test_session_timer_uac_follows_the_answer():
    assert as_uac(ok(("Session-Expires", "900;refresher=uas"))) == SessionTimer(900, we_refresh=False)
    assert as_uac(ok(("Session-Expires", "900;refresher=uac"))) == SessionTimer(900, we_refresh=True)
    assert as_uac(ok(), interval=1800) == SessionTimer(1800, we_refresh=True)  # no support: we refresh


def test_session_timer_header_names_the_refresher_from_each_role():
    timer = SessionTimer(600, we_refresh=True)
    assert timer.header(we_are_uac=True) == "600;refresher=uac"
    assert timer.header(we_are_uac=False) == "600;refresher=uas"
