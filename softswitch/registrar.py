"""The registrar (RFC 3261 10.3): REGISTER with digest authentication, bindings kept in the store.

Processing follows 10.3's steps: the To user must be one of ours (an unknown user is answered exactly
like a wrong password, so users cannot be enumerated); the request must carry valid credentials for that
user (401 with one challenge per algorithm, `stale=true` when only the nonce expired); then each Contact
is added, refreshed or removed, with its expiry bounded (423 with Min-Expires below the minimum, capped at
the maximum), `*` with `Expires: 0` removing them all, and a Call-ID/CSeq older than the binding's refused
(500, step 7). The 200 lists every current contact with its remaining time. Time is passed in (`now`,
Unix seconds), so the rules are testable without a clock.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from softswitch.sip.auth import HA1, Algorithm, AuthResult, DigestServer
from softswitch.sip.errors import SipParseError
from softswitch.sip.message import Request, Response, build_response
from softswitch.store import Binding, Store


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600


class Registrar:
    def __init__(
        self,
        store: Store,
        passwords: Callable[[str], str | Mapping[Algorithm, str] | None],
        realm: str,
        policy: RegistrarPolicy | None = None,
        secret: bytes | None = None,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        on_auth_failure: Callable[[str, str | None, str, str], None] | None = None,
    ):
        """`algorithms` is the order of our challenges (RFC 8760: the client takes the first it supports);
        some deployed clients fail on a SHA-256 challenge instead of skipping it, hence configurable.
        `on_auth_failure(host, user, method, reason)` hears of each failed digest (softswitch.security)."""
        self.store = store
        self.on_auth_failure = on_auth_failure
        self.passwords = passwords
        self.policy = policy or RegistrarPolicy()
        chosen = tuple(Algorithm.from_name(name) for name in algorithms)
        if not chosen or None in chosen:
            raise ValueError(f"unsupported digest algorithms {algorithms!r}")
        self.digest = DigestServer(realm, secret or secrets.token_bytes(32), algorithms=chosen)

    def register(self, request: Request, source: str, transport: str, now: float) -> Response:
        """The response to a REGISTER received from `source` ("host:port") over `transport`."""
        try:
            to_uri = request.to.sip_uri
        except SipParseError:  # not an address of record this registrar could hold (10.3 step 3)
            return build_response(request, 404, "Not a SIP Address of Record", to_tag=_tag())
        user = to_uri.user or ""
        result = self.verify(request, "Authorization", now)
        if not result.ok:
            if result.failed and self.on_auth_failure is not None:
                self.on_auth_failure(source.rpartition(":")[0], result.username, "REGISTER", result.reason.value)
            return self._challenge(request, now, result.stale)
        if result.username != user:
            return build_response(request, 403, "Credentials Do Not Match the To User", to_tag=_tag())
        contacts = request.get_all("Contact")
        header_expires = _int(request.get("Expires"))
        if contacts == ["*"]:
            if header_expires != 0:
                return build_response(request, 400, "Wildcard Contact Needs Expires: 0", to_tag=_tag())
            self.store.delete_bindings(user)
            return self._ok(request, user, now)
        updates = []
        for address in request.contacts:
            expires = _int(address.params.get("expires"))
            expires = header_expires if expires is None else expires
            expires = self.policy.default_expires if expires is None else expires
            if 0 < expires < self.policy.min_expires:
                return build_response(
                    request, 423, to_tag=_tag(), headers=[("Min-Expires", str(self.policy.min_expires))]
                )
            updates.append((str(address.uri), min(expires, self.policy.max_expires)))
        current = {b.contact: b for b in self.store.bindings(user, now)}
        for contact, _ in updates:
            old = current.get(contact)
            if old is not None and old.call_id == request.call_id and old.cseq >= request.cseq.seq:
                return build_response(request, 500, "Out of Order REGISTER", to_tag=_tag())
        for contact, expires in updates:
            if expires == 0:
                self.store.delete_binding(user, contact)
            else:
                self.store.save_binding(
                    Binding(user, contact, now + expires, source, transport, request.call_id, request.cseq.seq)
                )
        return self._ok(request, user, now)

    def contacts(self, user: str, now: float) -> list[Binding]:
        return self.store.bindings(user, now)

    def verify(self, request: Request, header: str, now: float) -> AuthResult:
        """Check the request's credentials in `header` (Authorization for REGISTER, Proxy-Authorization for
        calls) against the users' passwords; never raises on peer input."""
        return self.digest.verify(request.method, request.get_all(header), request.uri_text, self._lookup, now)

    def challenge_headers(self, header: str, now: float, stale: bool = False) -> list[tuple[str, str]]:
        """`header` (WWW-Authenticate or Proxy-Authenticate) once per algorithm, in our order."""
        return [(header, value) for value in self.digest.challenges(now, stale=stale)]

    def _lookup(self, name: str, algorithm: Algorithm) -> str | HA1 | None:
        secret = self.passwords(name)
        if secret is None or isinstance(secret, str):
            return secret
        ha1 = secret.get(algorithm)  # a user configured by HA1: one per algorithm
        return HA1(ha1.lower()) if ha1 else None

    def _challenge(self, request: Request, now: float, stale: bool) -> Response:
        headers = self.challenge_headers("WWW-Authenticate", now, stale)
        return build_response(request, 401, to_tag=_tag(), headers=headers)

    def _ok(self, request: Request, user: str, now: float) -> Response:
        headers = [
            ("Contact", f"<{b.contact}>;expires={max(int(b.expires_at - now), 0)}")
            for b in self.store.bindings(user, now)
        ]
        return build_response(request, 200, to_tag=_tag(), headers=headers)


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return min(int(text), 2**32 - 1) if text.isdigit() and text.isascii() else None


def _tag() -> str:
    return secrets.token_hex(4)
