"""SDES `a=crypto` attributes (softswitch.sip.sdes, RFC 4568)."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from softswitch.sip import sdes

KEY = bytes(range(30))
B64 = base64.b64encode(KEY).decode()


def test_parse_the_two_suites_with_and_without_a_lifetime():
    c = sdes.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}")
    assert (c.tag, c.suite, c.master, c.tag_len) == (1, "AES_CM_128_HMAC_SHA1_80", KEY, 10)
    c = sdes.parse(f"7 AES_CM_128_HMAC_SHA1_32 inline:{B64}|2^31")
    assert (c.tag, c.tag_len) == (7, 4)


def test_parse_passes_over_what_we_do_not_do():
    for value in (
        f"1 AES_256_CM_HMAC_SHA1_80 inline:{B64}",  # another suite
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^20|1:4",  # an MKI
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64} UNENCRYPTED_SRTP",  # session parameters
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(KEY[:20]).decode(),  # short key
        "1 AES_CM_128_HMAC_SHA1_80 inline:not*base64",
        f"x AES_CM_128_HMAC_SHA1_80 inline:{B64}",
        f"1 AES_CM_128_HMAC_SHA1_80 uri:{B64}",
        "",
    ):
        assert sdes.parse(value) is None, value


def test_choose_takes_the_first_usable_and_answer_keeps_tag_and_suite():
    offered = [f"1 AES_256_CM_HMAC_SHA1_80 inline:{B64}", f"2 AES_CM_128_HMAC_SHA1_32 inline:{B64}"]
    chosen = sdes.choose(offered)
    assert chosen.tag == 2
    mine = sdes.answer(chosen, bytes(30))
    assert mine.attribute_value() == "2 AES_CM_128_HMAC_SHA1_32 inline:" + base64.b64encode(bytes(30)).decode()
    assert sdes.choose(["garbage"]) is None


@given(st.integers(0, 2**31 - 1), st.sampled_from(sorted(sdes.SUITES)), st.binary(min_size=30, max_size=30))
def test_attribute_round_trip(tag, suite, master):
    crypto = sdes.Crypto(tag, suite, master)
    assert sdes.parse(crypto.attribute_value()) == crypto
