"""URIs: sip/sips/tel parsing and serialisation, IPv6, escaping, and the RFC 3261 19.1.4 comparison rules."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.sip.errors import SipParseError
from softswitch.sip.uri import AbsoluteUri, SipUri, TelUri, parse_uri


def test_uri_full_sip_uri_parts():
    uri = parse_uri(
        "sips:alice:secretword@atlanta.example.com:5061;transport=TCP;lr;maddr=239.255.255.1?subject=hi&priority=urgent"
    )
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secretword",
        "atlanta.example.com",
        5061,
    )
    assert uri.params == {"transport": "TCP", "lr": None, "maddr": "239.255.255.1"}
    assert uri.headers == {"subject": "hi", "priority": "urgent"}
    assert uri.transport == "tcp" and uri.secure


def test_uri_round_trips_text():
    for text in [
        "sip:alice@atlanta.example.com",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip:alice@192.0.2.4",
        "sip:atlanta.example.com;method=REGISTER?to=alice%40atlanta.com",
        "sip:alice;day=tuesday@atlanta.example.com",
        "sip:[2001:db8::10]:5070;transport=udp",
        "sips:1212@gateway.example.com",
        "tel:+1-201-555-0123;phone-context=example.com",
    ]:
        assert str(parse_uri(text)) == text


def test_uri_ipv6_reference():
    uri = parse_uri("sip:bob@[2001:db8::9:1]:5062;transport=tcp")
    assert uri.host == "[2001:db8::9:1]" and uri.port == 5062 and uri.host_is_ipv6
    with pytest.raises(SipParseError):
        parse_uri("sip:bob@[2001:db8::zz]")


def test_uri_user_part_may_hold_unusual_characters():
    uri = parse_uri(
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
    )
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"


def test_uri_tel():
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(uri, TelUri) and uri.is_global and uri.digits == "+12015550123"
    assert parse_uri("tel:+12015550123;phone-context=example.com") == uri
    assert parse_uri("tel:7042;phone-context=example.com").is_global is False


def test_uri_unknown_scheme_is_kept_opaque():
    uri = parse_uri("urn:service:sos")
    assert isinstance(uri, AbsoluteUri) and uri.scheme == "urn" and str(uri) == "urn:service:sos"


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "alice@example.com",
        "sip:alice@",
        "sip:@example.com",
        "sip:a@b:99999",
        "sip:a@exa mple.com",
        "sip:a@example.com;;lr",
        "sip:a@example.com?x",
        "sip:a%zz@example.com",
        "sip:a@-bad-.com",
        "tel:",
        "tel:xyz",
    ],
)
def test_uri_malformed_is_refused(text):
    with pytest.raises(SipParseError):
        parse_uri(text)


# RFC 3261 19.1.4: equivalent pairs, then non-equivalent pairs, as listed there.
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
    ],
)
def test_uri_equivalent_per_19_1_4(a, b):
    assert parse_uri(a) == parse_uri(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ],
)
def test_uri_not_equivalent_per_19_1_4(a, b):
    assert parse_uri(a) != parse_uri(b)


def test_uri_with_params_copies():
    uri = parse_uri("sip:a@b.example")
    other = uri.with_params(lr=None, transport="tcp")
    assert str(other) == "sip:a@b.example;lr;transport=tcp" and str(uri) == "sip:a@b.example"


_user = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/", min_size=1, max_size=12)
_host = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,3}", fullmatch=True)
_pname = st.from_regex(r"[a-z][a-z0-9\-]{0,6}", fullmatch=True)


@given(
    scheme=st.sampled_from(["sip", "sips"]),
    user=st.none() | _user,
    host=_host,
    port=st.none() | st.integers(1, 65535),
    params=st.dictionaries(_pname, st.none() | _pname, max_size=4),
)
def test_uri_property_round_trip(scheme, user, host, port, params):
    uri = SipUri(scheme, user, None, host, port, params)
    again = parse_uri(str(uri))
    assert again == uri and str(again) == str(uri)


@given(st.text(max_size=60))
def test_uri_parser_raises_only_parse_errors(text):
    with contextlib.suppress(SipParseError):
        parse_uri(text)


def test_uri_read_again_from_the_cache_is_an_equal_object_of_its_own():
    """A URI text parsed before comes from the parse cache: equal, and not shared (SipUri is mutable)."""
    text = "sip:alice:pw@example.com:5070;transport=tcp;lr?subject=hi&priority=urgent"
    first, again = parse_uri(text), parse_uri(text)
    assert again == first and again is not first
    assert (again.user, again.password, again.host, again.port) == ("alice", "pw", "example.com", 5070)
    assert again.params == {"transport": "tcp", "lr": None} and again.headers == {"subject": "hi", "priority": "urgent"}
    again.params["maddr"] = "192.0.2.1"
    again.headers.clear()
    third = parse_uri(text)
    assert third.params == {"transport": "tcp", "lr": None} and third.headers == {"subject": "hi", "priority": "urgent"}
    assert str(third) == text


def test_uri_bad_text_is_refused_every_time_and_never_cached():
    for _ in range(2):
        with pytest.raises(SipParseError):
            parse_uri("sip:al ice@example.com")
