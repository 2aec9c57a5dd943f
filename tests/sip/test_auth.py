"""Digest auth: RFC test vectors, header parsing, server verification (nonces, nc, stale) and the client."""

from __future__ import annotations

import base64
import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.sip import auth
from softswitch.sip.auth import (
    HA1,
    Algorithm,
    AuthParseError,
    AuthReason,
    AuthResult,
    Challenge,
    Credentials,
    DigestClient,
    DigestServer,
    compute_ha1,
    digest_response,
    select_challenge,
    select_challenges,
)

# RFC 7616 section 3.9.1
RFC_USER = "Mufasa"
RFC_PASSWORD = "Circle of Life"
RFC_REALM = "http-auth@example.org"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_MD5 = "8ca523f5e9506fed4657c9700eebdbec"
RFC_SHA256 = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"

REALM = "example.test"
SECRET = b"0123456789abcdef0123456789abcdef"
URI = "sip:example.test"
T0 = 1_700_000_000.0
USERS = {"alice": "secret", "bob": "hunter2"}


def lookup(username: str, algorithm: Algorithm) -> str | None:
    return USERS.get(username)


def counter_bytes():
    """Deterministic, distinct random bytes for nonces and cnonces."""
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def make_server(**kwargs) -> DigestServer:
    return DigestServer(REALM, SECRET, **kwargs)


def first_challenge(server: DigestServer, now: float = T0) -> Challenge:
    return Challenge.parse(server.challenges(now)[0])


def with_field(value: str, **changes) -> str:
    """Re-serialise a credentials value with some fields replaced."""
    creds = Credentials.parse(value)
    fields = {name: getattr(creds, name) for name in Credentials.__slots__}
    fields.update(changes)
    return Credentials(**fields).serialize()


# --- test vectors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "expected"), [(Algorithm.MD5, RFC_MD5), (Algorithm.SHA256, RFC_SHA256)])
def test_auth_rfc7616_vectors(algorithm, expected):
    ha1 = compute_ha1(RFC_USER, RFC_REALM, RFC_PASSWORD, algorithm)
    got = digest_response(
        algorithm,
        ha1,
        nonce=RFC_NONCE,
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce=RFC_CNONCE,
    )
    assert got == expected


def test_auth_rfc2617_vector():
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life", Algorithm.MD5)
    got = digest_response(
        Algorithm.MD5,
        ha1,
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert got == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(("algorithm", "expected"), [("MD5", RFC_MD5), ("SHA-256", RFC_SHA256)])
def test_auth_rfc7616_vectors_through_client(algorithm, expected):
    challenge = (
        f'Digest realm="{RFC_REALM}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC_NONCE}", opaque="{RFC_OPAQUE}"'
    )
    cnonce_raw = base64.b64decode(RFC_CNONCE)
    client = DigestClient(RFC_USER, RFC_PASSWORD, random_bytes=lambda n: cnonce_raw)
    creds = Credentials.parse(client.authorize(challenge, "GET", "/dir/index.html"))
    # Our cnonce is base64url; the RFC's uses "/", so only the digest over the RFC cnonce is compared.
    assert creds.cnonce == RFC_CNONCE.replace("/", "_")
    assert (creds.qop, creds.nc, creds.opaque, creds.algorithm) == ("auth", "00000001", RFC_OPAQUE, algorithm)
    ha1 = compute_ha1(RFC_USER, RFC_REALM, RFC_PASSWORD, Algorithm.from_name(algorithm))
    again = digest_response(
        Algorithm.from_name(algorithm),
        ha1,
        nonce=RFC_NONCE,
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce=RFC_CNONCE,
    )
    assert again == expected


# --- parsing -----------------------------------------------------------------------------------------


def test_auth_parse_rfc7616_challenge():
    value = (
        f'Digest\r\n    realm="{RFC_REALM}",\r\n    qop="auth, auth-int",\r\n    algorithm=SHA-256,\r\n'
        f'    nonce="{RFC_NONCE}",\r\n    opaque="{RFC_OPAQUE}"'
    )
    c = Challenge.parse(value)
    assert c == Challenge(RFC_REALM, RFC_NONCE, "SHA-256", ("auth", "auth-int"), RFC_OPAQUE)
    assert c.supported_algorithm is Algorithm.SHA256
    assert not c.stale


def test_auth_parse_tolerant_syntax():
    value = ' dIgEsT   ,REALM = "a \\"b\\" \\\\c" ,, Nonce=abc/def==,qop=auth, STALE=true, algorithm=md5-SESS ,'
    c = Challenge.parse(value)
    assert c.realm == 'a "b" \\c'
    assert c.nonce == "abc/def=="
    assert c.qop == ("auth",)
    assert c.stale is True
    assert c.supported_algorithm is Algorithm.MD5_SESS
    assert Challenge.parse('Digest realm="r", nonce="n"').supported_algorithm is Algorithm.MD5
    assert Challenge.parse('Digest realm="r", nonce="n", algorithm=SHA-512-256').supported_algorithm is None


def test_auth_parse_sip_credentials():
    value = (
        'Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    c = Credentials.parse(value)
    assert (c.username, c.realm, c.uri, c.qop, c.nc, c.cnonce) == (
        "bob",
        "biloxi.com",
        "sip:bob@biloxi.com",
        "auth",
        "00000001",
        "0a4f113b",
    )
    assert c.algorithm is None
    assert Credentials.parse(c.serialize()) == c


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        "Digest",
        'Digestrealm="r", nonce="n"',
        'Digest realm="r"',
        'Digest realm="r", nonce="n',
        'Digest realm="r", nonce="n\\',
        'Digest realm="r" nonce="n"',
        'Digest realm="r", nonce=',
        'Digest realm="r", nonce="n", realm="s"',
        'Digest realm="r", nonce="n", =x',
        'Digest realm="r", nonce="n", qop',
        'Digest realm="r\x00", nonce="n"',
        'Digest realm="r", nonce=a\x01b',
    ],
)
def test_auth_parse_malformed_challenges(value):
    with pytest.raises(AuthParseError):
        Challenge.parse(value)


@pytest.mark.parametrize(
    "value",
    [
        'Digest username="u", realm="r", nonce="n", uri="x"',
        'Digest username="u", realm="r", nonce="n", uri="x", response="y", qop=auth, nc=00000001',
        'Digest username="u", realm="r", nonce="n", uri="x", response="y", qop=auth, cnonce="c", nc=1',
        'Digest username="u", realm="r", nonce="n", uri="x", response="y", qop=auth, cnonce="c", nc=0000000g',
    ],
)
def test_auth_parse_malformed_credentials(value):
    with pytest.raises(AuthParseError):
        Credentials.parse(value)


@given(st.text())
def test_auth_parse_arbitrary_text_only_raises_parse_error(text):
    for parser in (Challenge.parse, Credentials.parse):
        with contextlib.suppress(AuthParseError):
            parser(text)


@given(st.lists(st.sampled_from(["Digest", " ", ",", '"', "\\", "=", "realm", "nonce", "uri", "qop", "nc", "x"])))
def test_auth_parse_grammar_pieces_only_raise_parse_error(pieces):
    text = "".join(pieces)
    for parser in (Challenge.parse, Credentials.parse):
        with contextlib.suppress(AuthParseError):
            parser(text)


_printable = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)
_token = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEF0123456789-.!%*_+`'~"), min_size=1, max_size=12)


@given(
    realm=_printable,
    nonce=_printable,
    algorithm=st.none() | _token,
    qop=st.lists(_token.map(str.lower), max_size=3).map(tuple),
    opaque=st.none() | _printable,
    stale=st.booleans(),
    domain=st.none() | _printable,
)
def test_auth_challenge_round_trip(realm, nonce, algorithm, qop, opaque, stale, domain):
    c = Challenge(realm, nonce, algorithm, qop, opaque, stale, domain)
    assert Challenge.parse(c.serialize()) == c


@given(
    fields=st.fixed_dictionaries(
        {name: _printable for name in ("username", "realm", "nonce", "uri", "response")},
        optional={"cnonce": _printable, "opaque": _printable, "algorithm": _token},
    ),
    qop=st.none() | _token,
    nc=st.integers(0, 2**32 - 1),
)
def test_auth_credentials_round_trip(fields, qop, nc):
    if qop is not None:
        fields.update(qop=qop, nc=f"{nc:08x}", cnonce=fields.get("cnonce", ""))
    c = Credentials(**fields)
    assert Credentials.parse(c.serialize()) == c


def test_auth_serialize_refuses_control_characters():
    with pytest.raises(ValueError):
        Challenge("r\r\nX-Evil: 1", "n").serialize()
    with pytest.raises(ValueError):
        Challenge("r", "n", algorithm="MD5, x").serialize()


# --- server: challenges and round trips ---------------------------------------------------------------


def test_auth_challenges_offer_sha256_first_with_one_nonce():
    server = make_server(opaque="op")
    values = server.challenges(T0)
    parsed = [Challenge.parse(v) for v in values]
    assert [c.supported_algorithm for c in parsed] == [Algorithm.SHA256, Algorithm.MD5]
    assert values[0].startswith('Digest realm="example.test", nonce="')
    assert "algorithm=SHA-256" in values[0] and 'qop="auth"' in values[0]
    assert parsed[0].nonce == parsed[1].nonce
    assert all(c.qop == ("auth",) and c.opaque == "op" and not c.stale for c in parsed)
    assert all(Challenge.parse(v).stale for v in server.challenges(T0, stale=True))
    assert "stale=TRUE" in server.challenges(T0, stale=True)[0]
    assert Challenge.parse(server.challenges(T0)[0]).nonce != parsed[0].nonce


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_auth_round_trip(algorithm):
    server = make_server(algorithms=(algorithm,))
    client = DigestClient("alice", "secret")
    value = client.authorize(server.challenges(T0)[0], "REGISTER", URI)
    result = server.verify("REGISTER", value, URI, lookup, T0 + 1)
    assert result == AuthResult(AuthReason.OK, "alice", False, algorithm)
    assert result.ok and result.public_reason is AuthReason.OK


def test_auth_round_trip_client_selects_sha256():
    server = make_server()
    challenge = select_challenge(reversed(server.challenges(T0)))
    value = DigestClient("bob", "hunter2").authorize(challenge, "INVITE", "sip:alice@example.test")
    result = server.verify("INVITE", value, "sip:alice@example.test", lookup, T0)
    assert result.ok and result.algorithm is Algorithm.SHA256


def test_auth_round_trip_auth_int():
    server = make_server(qop=("auth-int",))
    client = DigestClient("alice", "secret")
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    value = client.authorize(first_challenge(server), "INVITE", URI, body=body)
    assert Credentials.parse(value).qop == "auth-int"
    assert server.verify("INVITE", value, URI, lookup, T0, body=body).ok
    value = client.authorize(first_challenge(server), "INVITE", URI, body=body)
    assert server.verify("INVITE", value, URI, lookup, T0, body=body + b"x").reason is AuthReason.BAD_RESPONSE


def test_auth_client_prefers_auth_when_both_offered():
    server = make_server(qop=("auth", "auth-int"))
    value = DigestClient("alice", "secret").authorize(first_challenge(server), "INVITE", URI, body=b"sdp")
    assert Credentials.parse(value).qop == "auth"
    assert server.verify("INVITE", value, URI, lookup, T0).ok


def test_auth_ha1_stored_password():
    stored = {a: compute_ha1("carol", REALM, "pa55", a) for a in (Algorithm.MD5, Algorithm.SHA256)}

    def ha1_lookup(username, algorithm):
        return HA1(stored[algorithm].upper()) if username == "carol" else None

    for algorithm in (Algorithm.SHA256, Algorithm.MD5, Algorithm.SHA256_SESS):
        server = make_server(algorithms=(algorithm,))
        value = DigestClient("carol", "pa55").authorize(first_challenge(server), "REGISTER", URI)
        assert server.verify("REGISTER", value, URI, ha1_lookup, T0).ok

    server = make_server(algorithms=(Algorithm.SHA256,))
    value = DigestClient("carol", "pa55").authorize(first_challenge(server), "REGISTER", URI)
    wrong = server.verify("REGISTER", value, URI, lambda u, a: HA1(stored[Algorithm.MD5]), T0)
    assert wrong.reason is AuthReason.BAD_RESPONSE


def test_auth_rfc2069_without_qop():
    server = make_server(qop=(), algorithms=(Algorithm.MD5,), allow_no_qop=True)
    challenge = first_challenge(server)
    assert challenge.qop == ()
    client = DigestClient("alice", "secret")
    value = client.authorize(challenge, "REGISTER", URI)
    creds = Credentials.parse(value)
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    assert server.verify("REGISTER", value, URI, lookup, T0).ok
    assert server.tracked_nonces == 1
    # The old behaviour accepted this again for the nonce's whole lifetime: without nc, a replay.
    again = server.verify("REGISTER", value, URI, lookup, T0 + 1)
    assert (again.reason, again.stale, again.username) == (AuthReason.STALE_NONCE, True, "alice")
    fresh = Challenge.parse(server.challenges(T0 + 1, stale=True)[0])
    assert server.verify("REGISTER", client.authorize(fresh, "REGISTER", URI), URI, lookup, T0 + 2).ok


def test_auth_rfc2069_nonce_is_single_use_with_or_without_qop():
    server = make_server(allow_no_qop=True)
    challenge = first_challenge(server)
    old_phone = Challenge(challenge.realm, challenge.nonce, challenge.algorithm)
    no_qop = DigestClient("alice", "secret").authorize(old_phone, "REGISTER", URI)
    assert server.verify("REGISTER", no_qop, URI, lookup, T0).ok
    with_qop = DigestClient("alice", "secret").authorize(challenge, "REGISTER", URI)
    assert server.verify("REGISTER", with_qop, URI, lookup, T0).reason is AuthReason.REPLAY
    assert server.verify("REGISTER", no_qop, URI, lookup, T0 + 299).reason is AuthReason.STALE_NONCE

    # and the other way round: a nonce already counted with qop does not answer an RFC 2069 request
    challenge = first_challenge(server)
    old_phone = Challenge(challenge.realm, challenge.nonce, challenge.algorithm)
    with_qop = DigestClient("alice", "secret").authorize(challenge, "REGISTER", URI)
    assert server.verify("REGISTER", with_qop, URI, lookup, T0).ok
    no_qop = DigestClient("alice", "secret").authorize(old_phone, "REGISTER", URI)
    assert server.verify("REGISTER", no_qop, URI, lookup, T0).reason is AuthReason.STALE_NONCE


def test_auth_no_qop_refused_by_default():
    server = make_server()  # offers qop=auth: an answer without it would be a downgrade
    assert not server.allow_no_qop
    challenge = first_challenge(server)
    stripped = Challenge(challenge.realm, challenge.nonce, challenge.algorithm)  # qop removed on the way
    value = DigestClient("alice", "secret").authorize(stripped, "REGISTER", URI)
    assert Credentials.parse(value).qop is None
    result = server.verify("REGISTER", value, URI, lookup, T0)
    assert (result.reason, result.stale) == (AuthReason.UNSUPPORTED, False) and server.tracked_nonces == 0


def test_auth_no_qop_refused_when_not_allowed():
    server = make_server(allow_no_qop=False)
    challenge = first_challenge(server)
    old_phone = Challenge(challenge.realm, challenge.nonce, challenge.algorithm)
    value = DigestClient("alice", "secret").authorize(old_phone, "REGISTER", URI)
    assert server.verify("REGISTER", value, URI, lookup, T0).reason is AuthReason.UNSUPPORTED
    assert make_server(allow_no_qop=True).verify("REGISTER", value, URI, lookup, T0).ok


# --- server: nonces, stale, replay -------------------------------------------------------------------


def test_auth_stale_nonce_after_expiry():
    server = make_server(nonce_lifetime=300)
    client = DigestClient("alice", "secret")
    challenge = first_challenge(server)
    value = client.authorize(challenge, "REGISTER", URI)
    assert server.verify("REGISTER", value, URI, lookup, T0 + 300).ok
    value = client.authorize(challenge, "REGISTER", URI)
    result = server.verify("REGISTER", value, URI, lookup, T0 + 300.5)
    assert (result.reason, result.stale, result.username) == (AuthReason.STALE_NONCE, True, "alice")
    assert not result.ok

    # A wrong password on an expired nonce is not stale: the client must ask its user.
    value = DigestClient("alice", "wrong").authorize(challenge, "REGISTER", URI)
    result = server.verify("REGISTER", value, URI, lookup, T0 + 301)
    assert (result.reason, result.stale) == (AuthReason.BAD_RESPONSE, False)

    # The client retries with the fresh stale=TRUE challenge without re-prompting.
    fresh = Challenge.parse(server.challenges(T0 + 301, stale=True)[0])
    assert fresh.stale
    assert server.verify("REGISTER", client.authorize(fresh, "REGISTER", URI), URI, lookup, T0 + 302).ok


def test_auth_replayed_nc_rejected():
    server = make_server()
    value = DigestClient("alice", "secret").authorize(first_challenge(server), "REGISTER", URI)
    assert server.verify("REGISTER", value, URI, lookup, T0).ok
    result = server.verify("REGISTER", value, URI, lookup, T0 + 1)
    assert result.reason is AuthReason.REPLAY and not result.stale


def test_auth_increasing_nc_accepted():
    server = make_server()
    client = DigestClient("alice", "secret")
    challenge = first_challenge(server)
    values = [client.authorize(challenge, "REGISTER", URI) for _ in range(4)]
    assert [Credentials.parse(v).nc for v in values] == ["00000001", "00000002", "00000003", "00000004"]
    assert server.verify("REGISTER", values[0], URI, lookup, T0).ok
    assert server.verify("REGISTER", values[2], URI, lookup, T0).ok  # gaps are fine (lost requests)
    assert server.verify("REGISTER", values[1], URI, lookup, T0).reason is AuthReason.REPLAY
    assert server.verify("REGISTER", values[3], URI, lookup, T0).ok


def test_auth_nc_zero_is_a_replay():
    server = make_server()
    nonce = first_challenge(server).nonce
    ha1 = compute_ha1("alice", REALM, "secret", Algorithm.SHA256)
    response = digest_response(
        Algorithm.SHA256, ha1, nonce=nonce, method="REGISTER", uri=URI, qop="auth", nc="00000000", cnonce="c"
    )
    creds = Credentials("alice", REALM, nonce, URI, response, "SHA-256", "c", None, "auth", "00000000")
    assert server.verify("REGISTER", creds.serialize(), URI, lookup, T0).reason is AuthReason.REPLAY


def test_auth_nc_counted_per_nonce():
    server = make_server()
    client = DigestClient("alice", "secret")
    first, second = first_challenge(server), first_challenge(server)
    a = client.authorize(first, "REGISTER", URI)
    b = client.authorize(second, "REGISTER", URI)
    assert Credentials.parse(a).nc == Credentials.parse(b).nc == "00000001"
    assert Credentials.parse(a).cnonce != Credentials.parse(b).cnonce
    assert server.verify("REGISTER", a, URI, lookup, T0).ok
    assert server.verify("REGISTER", b, URI, lookup, T0).ok
    assert Credentials.parse(client.authorize(first, "REGISTER", URI)).nc == "00000002"


@pytest.mark.parametrize("how", ["random", "tampered_time", "other_secret", "other_realm", "not_base64"])
def test_auth_forged_nonce_rejected(how):
    server = make_server()
    nonce = first_challenge(server).nonce
    if how == "random":
        nonce = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()
    elif how == "tampered_time":
        raw = bytearray(base64.urlsafe_b64decode(nonce + "="))
        raw[5] ^= 0x01
        nonce = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    elif how == "other_secret":
        nonce = DigestServer(REALM, b"another secret").new_nonce(T0)
    elif how == "other_realm":
        nonce = DigestServer("other.test", SECRET).new_nonce(T0)
    else:
        nonce = "n" * 42 + "!"
    forged = Challenge(REALM, nonce, "SHA-256", ("auth",))
    value = DigestClient("alice", "secret").authorize(forged, "REGISTER", URI)
    result = server.verify("REGISTER", value, URI, lookup, T0)
    assert (result.reason, result.stale) == (AuthReason.BAD_NONCE, False)


def test_auth_prune_drops_expired_records():
    server = make_server(nonce_lifetime=60)
    client = DigestClient("alice", "secret")
    for t in (T0, T0 + 30, T0 + 50):
        assert server.verify(
            "REGISTER", client.authorize(first_challenge(server, t), "REGISTER", URI), URI, lookup, t
        ).ok
    assert server.tracked_nonces == 3
    assert server.prune(T0 + 61) == 1
    assert server.tracked_nonces == 2
    assert server.prune(T0 + 200) == 2
    assert server.tracked_nonces == 0


def test_auth_bounded_table_evicts_oldest_and_stales_them():
    server = make_server(max_tracked_nonces=4)
    client = DigestClient("alice", "secret")
    challenges = [first_challenge(server, T0 + i) for i in range(6)]
    for i, c in enumerate(challenges[:5]):
        assert server.verify("REGISTER", client.authorize(c, "REGISTER", URI), URI, lookup, T0 + i).ok
    assert server.tracked_nonces == 4
    # The evicted oldest nonce cannot be replayed: it is stale (the client just re-challenges)...
    again = server.verify("REGISTER", client.authorize(challenges[0], "REGISTER", URI), URI, lookup, T0 + 6)
    assert again.reason is AuthReason.STALE_NONCE and again.stale
    # ... while newer nonces, tracked or not yet used, still work.
    assert server.verify("REGISTER", client.authorize(challenges[4], "REGISTER", URI), URI, lookup, T0 + 6).ok
    assert server.verify("REGISTER", client.authorize(challenges[5], "REGISTER", URI), URI, lookup, T0 + 6).ok
    assert server.tracked_nonces <= 4


# --- server: identity and request checks -------------------------------------------------------------


def test_auth_wrong_password():
    server = make_server()
    value = DigestClient("alice", "guess").authorize(first_challenge(server), "REGISTER", URI)
    result = server.verify("REGISTER", value, URI, lookup, T0)
    assert result == AuthResult(AuthReason.BAD_RESPONSE, "alice", False, Algorithm.SHA256)
    assert result.public_reason is AuthReason.BAD_RESPONSE


def test_auth_unknown_user_looks_like_wrong_password():
    server = make_server()
    wrong = server.verify(
        "REGISTER", DigestClient("alice", "guess").authorize(first_challenge(server), "REGISTER", URI), URI, lookup, T0
    )
    unknown = server.verify(
        "REGISTER", DigestClient("mallory", "x").authorize(first_challenge(server), "REGISTER", URI), URI, lookup, T0
    )
    assert wrong.reason is AuthReason.BAD_RESPONSE
    assert unknown.reason is AuthReason.UNKNOWN_USER  # internal: for logs
    assert unknown.public_reason is wrong.public_reason is AuthReason.BAD_RESPONSE
    assert (unknown.ok, unknown.stale) == (wrong.ok, wrong.stale) == (False, False)
    # An unknown user on an expired nonce is not told "stale" either.
    late = server.verify(
        "REGISTER",
        DigestClient("mallory", "x").authorize(first_challenge(server), "REGISTER", URI),
        URI,
        lookup,
        T0 + 999,
    )
    assert late.public_reason is AuthReason.BAD_RESPONSE and not late.stale


def test_auth_unknown_user_still_computes_a_digest(monkeypatch):
    calls = []
    real = auth.digest_response

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(auth, "digest_response", counting)
    server = make_server()
    for user in ("alice", "mallory"):
        value = DigestClient(user, "guess").authorize(first_challenge(server), "REGISTER", URI)
        calls.clear()
        server.verify("REGISTER", value, URI, lookup, T0)
        assert calls == [Algorithm.SHA256]


def test_auth_realm_mismatch():
    server = make_server()
    other = Challenge.parse(DigestServer("other.test", SECRET).challenges(T0)[0])
    value = DigestClient("alice", "secret").authorize(other, "REGISTER", URI)
    result = server.verify("REGISTER", value, URI, lookup, T0)
    assert (result.reason, result.username) == (AuthReason.REALM_MISMATCH, "alice")


def test_auth_picks_our_realm_among_several_headers():
    server = make_server()
    client = DigestClient("alice", "secret")
    ours = client.authorize(first_challenge(server), "INVITE", URI)
    theirs = client.authorize(Challenge.parse(DigestServer("proxy.test", SECRET).challenges(T0)[0]), "INVITE", URI)
    assert server.verify("INVITE", ["Basic Zm9vOmJhcg==", "Digest nonsense", theirs, ours], URI, lookup, T0).ok


def test_auth_uri_mismatch():
    server = make_server()
    value = DigestClient("alice", "secret").authorize(first_challenge(server), "REGISTER", "sip:other.test")
    assert server.verify("REGISTER", value, URI, lookup, T0).reason is AuthReason.URI_MISMATCH
    assert server.verify("REGISTER", value, " sip:other.test ", lookup, T0).ok


def test_auth_opaque_must_be_echoed():
    server = make_server(opaque="xyz")
    value = DigestClient("alice", "secret").authorize(first_challenge(server), "REGISTER", URI)
    assert Credentials.parse(value).opaque == "xyz"
    assert server.verify("REGISTER", with_field(value, opaque=None), URI, lookup, T0).reason is (
        AuthReason.OPAQUE_MISMATCH
    )
    assert server.verify("REGISTER", value, URI, lookup, T0).ok


def test_auth_unsupported_algorithm_or_qop():
    server = make_server(algorithms=(Algorithm.SHA256,))
    challenge = first_challenge(server)
    md5 = Challenge(challenge.realm, challenge.nonce, "MD5", ("auth",))
    value = DigestClient("alice", "secret").authorize(md5, "REGISTER", URI)
    assert server.verify("REGISTER", value, URI, lookup, T0).reason is AuthReason.UNSUPPORTED
    value = DigestClient("alice", "secret").authorize(challenge, "REGISTER", URI)
    assert server.verify("REGISTER", with_field(value, algorithm="SHA-512-256"), URI, lookup, T0).reason is (
        AuthReason.UNSUPPORTED
    )
    assert server.verify("REGISTER", with_field(value, qop="auth-int"), URI, lookup, T0).reason is (
        AuthReason.UNSUPPORTED
    )


@pytest.mark.parametrize("value", [None, [], "", "Basic Zm9vOmJhcg==", ["Bearer abc"]])
def test_auth_no_credentials(value):
    result = make_server().verify("REGISTER", value, URI, lookup, T0)
    assert (result.reason, result.ok, result.username) == (AuthReason.NO_CREDENTIALS, False, None)


@pytest.mark.parametrize("value", ['Digest username="alice"', 'Digest username="a", realm="r', "digest ="])
def test_auth_malformed_credentials_reported(value):
    assert make_server().verify("REGISTER", value, URI, lookup, T0).reason is AuthReason.MALFORMED


@given(st.text() | st.builds(lambda s: 'Digest username="alice", realm="example.test", ' + s, st.text()))
def test_auth_verify_never_raises_on_peer_input(text):
    result = make_server().verify("REGISTER", text, URI, lookup, T0)
    assert not result.ok


def test_auth_server_rejects_bad_configuration():
    with pytest.raises(ValueError):
        DigestServer(REALM, b"")
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, algorithms=())
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, qop=("auth-conf",))
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, qop=(), allow_no_qop=False)
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, qop=())  # no qop offered needs the explicit opt-in


# --- client ------------------------------------------------------------------------------------------


def test_auth_select_challenge_prefers_sha256():
    md5 = 'Digest realm="r", nonce="n1", algorithm=MD5, qop="auth"'
    sha = 'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"'
    sess = 'Digest realm="r", nonce="n3", algorithm=SHA-256-sess, qop="auth"'
    unknown = 'Digest realm="r", nonce="n4", algorithm=SHA-512-256, qop="auth"'
    odd_qop = 'Digest realm="r", nonce="n5", algorithm=SHA-256, qop="auth-conf"'
    assert select_challenge([md5, sha]).nonce == "n2"
    assert select_challenge([sess, md5, sha]).nonce == "n2"
    assert select_challenge([unknown, odd_qop, "garbage", md5]).nonce == "n1"
    assert select_challenge(['Basic realm="r"', unknown]) is None
    assert select_challenge([]) is None


def test_auth_select_challenges_answers_each_realm():
    # One 407 gathered by a forking proxy: two proxies, each challenging for its own realm.
    edge = DigestServer("edge.example.test", SECRET, algorithms=(Algorithm.MD5, Algorithm.SHA256))
    core = DigestServer("core.example.test", b"another secret", algorithms=(Algorithm.MD5,))
    values = [*edge.challenges(T0), *core.challenges(T0), 'Digest realm="odd", nonce="n", algorithm=SHA-512-256']
    chosen = select_challenges(values)
    assert sorted(chosen) == ["core.example.test", "edge.example.test"]  # "odd": nothing we can answer
    assert chosen["edge.example.test"].supported_algorithm is Algorithm.SHA256  # listed after MD5, still chosen
    assert chosen["core.example.test"].supported_algorithm is Algorithm.MD5
    assert select_challenge(values).realm == "edge.example.test"  # one realm only: the core would refuse

    client = DigestClient("alice", "secret")
    answers = [client.authorize(c, "INVITE", URI) for c in chosen.values()]  # one Proxy-Authorization each
    for server in (edge, core):
        assert server.verify("INVITE", answers, URI, lookup, T0).ok
    only_edge = client.authorize(select_challenge(values), "INVITE", URI)
    assert core.verify("INVITE", only_edge, URI, lookup, T0).reason is AuthReason.REALM_MISMATCH
    assert select_challenges([]) == {} and select_challenges(['Basic realm="r"']) == {}


def test_auth_client_refuses_unanswerable_challenge():
    client = DigestClient("alice", "secret")
    with pytest.raises(ValueError):
        client.authorize('Digest realm="r", nonce="n", algorithm=SHA-512-256', "REGISTER", URI)
    with pytest.raises(ValueError):
        client.authorize('Digest realm="r", nonce="n", qop="auth-conf"', "REGISTER", URI)
    with pytest.raises(AuthParseError):
        client.authorize("Digest realm=", "REGISTER", URI)


def test_auth_client_state_is_bounded():
    client = DigestClient("alice", "secret", random_bytes=counter_bytes())
    for i in range(100):
        client.authorize(Challenge("r", f"nonce{i}", qop=("auth",)), "REGISTER", URI)
    assert len(client._nc) <= 16
    value = client.authorize(Challenge("r", "nonce99", qop=("auth",)), "REGISTER", URI)
    assert Credentials.parse(value).nc == "00000002"
