"""Structured header values: the number fields of Via and CSeq take ASCII digits only (RFC 3261 25.1)."""

from __future__ import annotations

import pytest

from softswitch.sip.errors import SipParseError
from softswitch.sip.headers import parse_address, parse_cseq, parse_via

ARABIC_INDIC = "".join(chr(0x0660 + d) for d in range(10))  # U+0660..U+0669, which int() reads as 0..9
FULLWIDTH = "".join(chr(0xFF10 + d) for d in range(10))


def test_headers_cseq_ascii_digits_parse():
    cseq = parse_cseq(" 314159 INVITE ")
    assert (cseq.seq, cseq.method) == (314159, "INVITE")


@pytest.mark.parametrize("digits", [ARABIC_INDIC, FULLWIDTH], ids=["arabic-indic", "fullwidth"])
def test_headers_cseq_refuses_other_digits(digits):
    for text in (f"{digits[1]} INVITE", f"1{digits[2]} INVITE"):
        with pytest.raises(SipParseError):
            parse_cseq(text)


@pytest.mark.parametrize("digits", [ARABIC_INDIC, FULLWIDTH], ids=["arabic-indic", "fullwidth"])
def test_headers_via_port_refuses_other_digits(digits):
    assert parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1").port == 5060
    port = digits[5] + digits[0] + digits[6] + digits[0]
    with pytest.raises(SipParseError):
        parse_via(f"SIP/2.0/UDP 192.0.2.1:{port};branch=z9hG4bK1")


def test_headers_cseq_refuses_non_ascii_space():
    with pytest.raises(SipParseError):
        parse_cseq("1\u00a0INVITE")


def test_headers_addr_spec_parameters_may_be_quoted_strings():
    # RFC 3261 20.10: after a bare addr-spec, the parameters are the header's; gen-value may be quoted
    a = parse_address('sip:alice@example.com;0="0 x";tag=9')
    assert (a.uri_text, a.params, a.angle) == ("sip:alice@example.com", {"0": '"0 x"', "tag": "9"}, False)
    for bad in ('sip:a@h"x', "<sip:a@h", ""):
        with pytest.raises(SipParseError):
            parse_address(bad)
