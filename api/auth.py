"""API keys: scopes, secrets, how secrets are stored, and checking a request's bearer secret.

A key (`key_...`) has a name, scopes and a mode (live or test) and one current secret,
`sk_live_<43 url-safe characters>` (`sk_test_...` for test keys: 256 random bits). Only a salted hash of a
secret is stored, with its first 16 characters (`sk_live_` + 8 more) as an indexed lookup prefix: a request
costs one indexed query and one hash check, and the prefix tells keys apart in listings without revealing
anything usable (the remaining 35 characters still hold over 200 random bits).

Rotation gives a key a new secret; the old one keeps working until its grace period ends (24 h unless
asked otherwise), so deployments can switch over without downtime. A revoked key stops working at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
from dataclasses import dataclass

from softswitch.events import new_id
from softswitch.store import ApiKeyRecord, ApiKeySecret, Store

SCOPES = ("calls:read", "calls:write", "recordings:read", "recordings:write", "webhooks:write", "admin")
ADMIN = "admin"
AUTHENTICATED = "authenticated"  # a route any valid key may call, whatever its scopes
DEFAULT_GRACE_S = 24 * 3600

PREFIX_CHARS = 16  # "sk_live_" + 8: the lookup prefix stored in clear
PBKDF2_ITERATIONS = 10_000
_SECRET = re.compile(r"sk_(live|test)_[A-Za-z0-9_-]{32,128}")


def has_scope(scopes: frozenset[str] | set[str] | list[str], needed: str) -> bool:
    """Whether a key with `scopes` may do what `needed` allows: admin implies every scope; no other
    scope implies another (calls:write does not grant calls:read)."""
    return ADMIN in scopes or needed in scopes


@dataclass(frozen=True, slots=True)
class AuthKey:
    """The key a request authenticated with."""

    id: str
    name: str
    scopes: frozenset[str]
    test: bool

    def allows(self, scope: str) -> bool:
        return has_scope(self.scopes, scope)


def new_secret(test: bool) -> str:
    """A fresh secret: `sk_test_`/`sk_live_` and 32 random bytes, url-safe base64 (43 characters)."""
    return f"sk_{'test' if test else 'live'}_{secrets.token_urlsafe(32)}"


def secret_prefix(secret: str) -> str:
    return secret[:PREFIX_CHARS]


def hash_secret(secret: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """`pbkdf2_sha256$ITERATIONS$SALT$HASH` (base64) of a secret, with a fresh 16-byte salt per secret.

    Why PBKDF2-HMAC-SHA256 with few iterations, not scrypt or a password-strength work factor: a secret
    is 256 random bits, not a password, so no guessing attack gets anywhere whatever the work factor; what
    the hash must do is keep a copy of the database from being usable to call the API, and keep equal
    secrets from having equal hashes (the salt). The check runs on every request, so its cost is a cost
    per request (and a lever for anyone sending bad secrets): 10,000 iterations take about 5 ms, scrypt
    at its usual n=2**14 about 70 ms and 16 MB. Verified secrets are also remembered in memory (by
    SHA-256 of the secret, never the secret itself), so a busy key pays the 5 ms once. The iteration
    count is stored with each hash and can be raised for new secrets without breaking old ones."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${_b64(salt)}${_b64(digest)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_VERIFIED_MAX = 4096
_verified: dict[tuple[str, bytes], None] = {}  # (stored hash, SHA-256 of a secret it matched)
_verified_lock = threading.Lock()


def verify_secret(secret: str, stored: str) -> bool:
    """Whether `secret` is the one `stored` (from hash_secret) was made from; compared in constant time."""
    seen = (stored, hashlib.sha256(secret.encode()).digest())
    if seen in _verified:
        return True
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        expected = _unb64(digest)
        got = hashlib.pbkdf2_hmac("sha256", secret.encode(), _unb64(salt), int(iterations))
    except ValueError:
        return False
    if not hmac.compare_digest(got, expected):
        return False
    with _verified_lock:
        if len(_verified) >= _VERIFIED_MAX:
            _verified.clear()
        _verified[seen] = None
    return True


class AuthFailed(Exception):
    """The bearer secret does not authenticate a key; the message says why, for the 401 answer."""


def bearer_secret(authorization: str | None) -> str:
    """The secret of an `Authorization: Bearer sk_...` header; AuthFailed when there is none."""
    if not authorization:
        raise AuthFailed("missing API key: send Authorization: Bearer sk_...")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthFailed("use the Bearer scheme: Authorization: Bearer sk_...")
    return token.strip()


def authenticate(store: Store, secret: str, now: float) -> AuthKey:
    """The live key `secret` belongs to; AuthFailed if it is unknown, revoked, or a rotated-out secret
    whose grace period has ended."""
    if not _SECRET.fullmatch(secret):
        raise AuthFailed("invalid API key")
    for key, stored in store.api_key_secrets(secret_prefix(secret)):
        if not verify_secret(secret, stored.hash):
            continue
        if key.revoked_at is not None and key.revoked_at <= now:
            raise AuthFailed(f"API key {key.id} was revoked")
        if stored.expires_at is not None and stored.expires_at <= now:
            raise AuthFailed(f"this secret of API key {key.id} was rotated out and its grace period has ended")
        return AuthKey(key.id, key.name, frozenset(key.scopes), key.test)
    raise AuthFailed("invalid API key")


# -- key management (the CLI and /v2/keys) ---------------------------------------------------------
class KeyNotFound(LookupError):
    """No key has this id."""


class KeyRevoked(Exception):
    """The key is revoked; it cannot be rotated."""


def _check_new_key(name: str, scopes: list[str]) -> list[str]:
    if not name.strip():
        raise ValueError("name must not be empty")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r} (known: {', '.join(SCOPES)})")
    if not scopes:
        raise ValueError("give at least one scope")
    return sorted(set(scopes), key=SCOPES.index)


def create_key(store: Store, name: str, scopes: list[str], test: bool, now: float) -> tuple[ApiKeyRecord, str]:
    """Make and save a key; returns it with its secret, which is not stored and cannot be shown again."""
    scopes = _check_new_key(name, scopes)
    secret = new_secret(test)
    key = ApiKeyRecord(new_id("key"), name.strip(), scopes, test, now, prefix=secret_prefix(secret))
    store.create_api_key(key, ApiKeySecret(key.id, key.prefix, hash_secret(secret), now))
    return key, secret


def rotate_key(store: Store, key_id: str, grace_s: float, now: float) -> tuple[ApiKeyRecord, str]:
    """Give a key a new secret; its previous secrets keep working for `grace_s` seconds (0: stop now)."""
    if grace_s < 0:
        raise ValueError("grace must not be negative")
    key = store.get_api_key(key_id)
    if key is None:
        raise KeyNotFound(key_id)
    if key.revoked_at is not None:
        raise KeyRevoked(key_id)
    secret = new_secret(key.test)
    store.rotate_api_key(key_id, ApiKeySecret(key_id, secret_prefix(secret), hash_secret(secret), now), now + grace_s)
    rotated = store.get_api_key(key_id)
    assert rotated is not None
    return rotated, secret


def revoke_key(store: Store, key_id: str, now: float) -> ApiKeyRecord:
    """Revoke a key at once (revoking it again changes nothing)."""
    key = store.revoke_api_key(key_id, now)
    if key is None:
        raise KeyNotFound(key_id)
    return key
