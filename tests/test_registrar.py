"""Registrar: digest, bindings, expiry bounds, unregister, ordering, persistence (RFC 3261 10.3)."""

from __future__ import annotations

import pytest

from softswitch.registrar import Registrar, RegistrarPolicy
from softswitch.sip.auth import Challenge, DigestClient
from softswitch.sip.message import Request, parse
from softswitch.store import Store

USERS = {"alice": "secret-a", "bob": "secret-b"}
NOW = 1_800_000_000.0


@pytest.fixture
def registrar(tmp_path):
    store = Store.open(tmp_path / "sw.db")
    yield Registrar(store, USERS.get, "example.test", RegistrarPolicy(min_expires=60, max_expires=7200))
    store.close()


def register(
    user: str,
    contacts: list[str],
    cseq: int = 1,
    expires: str | None = None,
    call_id: str = "reg-1",
    auth: str | None = None,
) -> Request:
    headers = [
        ("Via", "SIP/2.0/UDP 192.0.2.5:5062;branch=z9hG4bK" + str(cseq)),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{user}@example.test>;tag=f{cseq}"),
        ("To", f"<sip:{user}@example.test>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
    ]
    headers += [("Contact", c) for c in contacts]
    if expires is not None:
        headers.append(("Expires", expires))
    if auth:
        headers.append(("Authorization", auth))
    return parse(Request("REGISTER", "sip:example.test", headers).serialize())


def authorized(registrar: Registrar, user: str, password: str, contacts: list[str], now: float = NOW, **kw):
    """Send a REGISTER, answer its 401 with the password, and return the final response."""
    first = registrar.register(register(user, contacts, **kw), "192.0.2.5:5062", "udp", now)
    assert first.status == 401
    challenge = Challenge.parse(first.get_all("WWW-Authenticate")[0])
    auth = DigestClient(user, password).authorize(challenge, "REGISTER", "sip:example.test")
    return registrar.register(register(user, contacts, auth=auth, **kw), "192.0.2.5:5062", "udp", now)


def test_registrar_challenges_with_sha256_first(registrar):
    response = registrar.register(register("alice", ["<sip:alice@192.0.2.5:5062>"]), "192.0.2.5:5062", "udp", NOW)
    assert response.status == 401
    algorithms = [Challenge.parse(v).algorithm for v in response.get_all("WWW-Authenticate")]
    assert algorithms == ["SHA-256", "MD5"]
    assert all(Challenge.parse(v).realm == "example.test" for v in response.get_all("WWW-Authenticate"))


def test_registrar_binds_and_lists_contacts(registrar):
    response = authorized(registrar, "alice", "secret-a", ["<sip:alice@192.0.2.5:5062>"])
    assert response.status == 200
    assert response.get_all("Contact") == ["<sip:alice@192.0.2.5:5062>;expires=3600"]
    (binding,) = registrar.contacts("alice", NOW)
    assert (binding.source, binding.transport, binding.expires_at) == ("192.0.2.5:5062", "udp", NOW + 3600)


def test_registrar_unknown_user_looks_like_wrong_password(registrar):
    wrong = authorized(registrar, "alice", "nope", ["<sip:alice@h.example>"])
    unknown = authorized(registrar, "mallory", "nope", ["<sip:mallory@h.example>"])
    assert wrong.status == unknown.status == 401
    assert [n for n, _ in wrong.headers] == [n for n, _ in unknown.headers]
    assert not registrar.contacts("alice", NOW) and not registrar.contacts("mallory", NOW)


def test_registrar_credentials_must_match_to_user(registrar):
    first = registrar.register(register("bob", ["<sip:bob@h.example>"]), "192.0.2.5:5062", "udp", NOW)
    challenge = Challenge.parse(first.get_all("WWW-Authenticate")[0])
    auth = DigestClient("alice", "secret-a").authorize(challenge, "REGISTER", "sip:example.test")
    response = registrar.register(register("bob", ["<sip:bob@h.example>"], auth=auth), "192.0.2.5:5062", "udp", NOW)
    assert response.status == 403


def test_registrar_expiry_bounds(registrar):
    too_brief = authorized(registrar, "alice", "secret-a", ["<sip:alice@h.example>;expires=30"])
    assert too_brief.status == 423 and too_brief.get("Min-Expires") == "60"
    capped = authorized(registrar, "alice", "secret-a", ["<sip:alice@h.example>"], expires="99999")
    assert capped.get_all("Contact") == ["<sip:alice@h.example>;expires=7200"]


def test_registrar_several_contacts_and_unregister(registrar):
    contacts = ["<sip:alice@desk.example>;expires=600", "<sip:alice@mobile.example>"]
    response = authorized(registrar, "alice", "secret-a", contacts, expires="1200")
    assert sorted(response.get_all("Contact")) == [
        "<sip:alice@desk.example>;expires=600",
        "<sip:alice@mobile.example>;expires=1200",
    ]
    gone = authorized(registrar, "alice", "secret-a", ["<sip:alice@desk.example>;expires=0"], cseq=2)
    assert gone.get_all("Contact") == ["<sip:alice@mobile.example>;expires=1200"]
    wildcard = authorized(registrar, "alice", "secret-a", ["*"], cseq=3, expires="0")
    assert wildcard.status == 200 and wildcard.get_all("Contact") == []
    assert registrar.contacts("alice", NOW) == []


def test_registrar_wildcard_needs_expires_zero(registrar):
    assert authorized(registrar, "alice", "secret-a", ["*"], expires="60").status == 400


def test_registrar_refuses_an_older_cseq_of_the_same_call_id(registrar):
    assert authorized(registrar, "alice", "secret-a", ["<sip:alice@h.example>"], cseq=5).status == 200
    assert authorized(registrar, "alice", "secret-a", ["<sip:alice@h.example>"], cseq=4).status == 500
    other_call = authorized(registrar, "alice", "secret-a", ["<sip:alice@h.example>"], cseq=1, call_id="reg-2")
    assert other_call.status == 200  # a new Call-ID (the phone rebooted) replaces the binding


def test_registrar_bindings_expire(registrar):
    authorized(registrar, "alice", "secret-a", ["<sip:alice@h.example>;expires=120"])
    assert registrar.contacts("alice", NOW + 119)
    assert registrar.contacts("alice", NOW + 121) == []
    assert registrar.store.purge_bindings(NOW + 121) == 1


def test_registrar_bindings_survive_restart(tmp_path):
    store = Store.open(tmp_path / "sw.db")
    authorized(Registrar(store, USERS.get, "example.test"), "bob", "secret-b", ["<sip:bob@192.0.2.9>"])
    store.close()
    store = Store.open(tmp_path / "sw.db")
    try:
        assert [b.contact for b in Registrar(store, USERS.get, "example.test").contacts("bob", NOW)] == [
            "sip:bob@192.0.2.9"
        ]
    finally:
        store.close()


def test_registrar_stale_nonce_is_flagged(registrar):
    first = registrar.register(register("alice", ["<sip:alice@h.example>"]), "192.0.2.5:5062", "udp", NOW)
    challenge = Challenge.parse(first.get_all("WWW-Authenticate")[0])
    auth = DigestClient("alice", "secret-a").authorize(challenge, "REGISTER", "sip:example.test")
    late = registrar.register(register("alice", ["<sip:alice@h.example>"], auth=auth), "x:1", "udp", NOW + 3600)
    assert late.status == 401 and Challenge.parse(late.get_all("WWW-Authenticate")[0]).stale


def test_registrar_non_sip_address_of_record_is_404(registrar):
    request = register("alice", ["<sip:alice@h.example>"])
    request.set("To", "isbn:2983792873")
    assert registrar.register(request, "x:1", "udp", NOW).status == 404


def test_registrar_users_configured_by_ha1_authenticate_with_each_algorithm(tmp_path):
    import hashlib

    from softswitch.sip.auth import Algorithm

    realm = "example.test"
    md5 = hashlib.md5(f"carol:{realm}:s3cret".encode()).hexdigest()
    sha = hashlib.sha256(f"carol:{realm}:s3cret".encode()).hexdigest()
    secrets_ = {"carol": {Algorithm.MD5: md5, Algorithm.SHA256: sha}, "dave": {Algorithm.MD5: md5}}
    store = Store.open(tmp_path / "ha1.db")
    registrar = Registrar(store, secrets_.get, realm)
    try:
        assert authorized(registrar, "carol", "s3cret", ["<sip:carol@192.0.2.5:5062>"]).status == 200  # SHA-256
        assert authorized(registrar, "carol", "wrong", ["<sip:carol@192.0.2.5:5062>"]).status == 401
        md5_only = Registrar(store, secrets_.get, realm, algorithms=("MD5",))
        contact = ["<sip:carol@192.0.2.5:5062>"]
        assert authorized(md5_only, "carol", "s3cret", contact, call_id="reg-2").status == 200  # MD5
        # a user with an MD5 HA1 only cannot answer a SHA-256 challenge: refused like a wrong password
        assert authorized(registrar, "dave", "s3cret", ["<sip:dave@192.0.2.5:5062>"]).status == 401
    finally:
        store.close()
