"""TLS contexts for SIP over TLS (RFC 3261 26.2): one loader for our certificate and key, so that
`check-config` and the endpoint agree on what "cannot be loaded" means and name the file at fault."""

from __future__ import annotations

import ssl
from pathlib import Path

HANDSHAKE_TIMEOUT_S = 10.0  # a peer that opens a socket and never finishes the handshake holds no slot longer
SHUTDOWN_TIMEOUT_S = 5.0  # how long a closing connection waits for the peer's close_notify (asyncio: 30 s)


class TlsFileError(ValueError):
    """The certificate or key cannot be used; `field` is "cert" or "key", the message says why."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class _Encrypted(Exception):
    pass


def _no_passphrase() -> bytes:
    # without a callback OpenSSL would prompt on the terminal and hang a service start
    raise _Encrypted


def _readable(field: str, path: str) -> None:
    try:
        Path(path).read_bytes()
    except FileNotFoundError:
        raise TlsFileError(field, f"file {path!r} does not exist") from None
    except OSError as exc:
        raise TlsFileError(field, f"cannot read {path!r}: {exc.strerror or exc}") from None


def load_identity(context: ssl.SSLContext, cert: str, key: str) -> None:
    """Load our certificate chain and key into `context`; TlsFileError names the file at fault."""
    _readable("cert", cert)
    _readable("key", key)
    try:  # loads certificates only, so a failure here is the certificate's, not the key's
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError:
        raise TlsFileError("cert", f"no PEM certificate found in {cert!r}") from None
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _Encrypted:
        raise TlsFileError("key", f"private key {key!r} is encrypted; give an unencrypted key") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsFileError("key", f"private key {key!r} does not match certificate {cert!r}") from None
        raise TlsFileError("key", f"no PEM private key found in {key!r}") from None


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """For our TLS listeners: TLS 1.2 or later. With `client_ca` (a PEM bundle), a client certificate is
    asked for and, when one is sent, verified against it (a handshake with an untrusted one fails); clients
    without one still connect (phones authenticate with digest), and trunks that require one are checked
    per request (`peer_names`)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_identity(context, cert, key)
    if client_ca:
        _load_cas(context, client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def verifying_context(ca_file: str = "") -> ssl.SSLContext:
    """For the HTTPS and WSS clients of applications (webhooks, call flows, media streams): servers verified
    as by default, against the system's CAs plus `ca_file`'s (a receiver with a private CA)."""
    context = ssl.create_default_context()
    if ca_file:
        _load_cas(context, ca_file)
    return context


def _load_cas(context: ssl.SSLContext, path: str) -> None:
    _readable("ca", path)
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise TlsFileError("ca", f"no PEM certificate found in {path!r}") from None


def peer_names(peercert: dict | None) -> tuple[str, ...]:
    """The names a verified peer certificate carries (`SSLObject.getpeercert()`): its subjectAltName DNS
    names and IP addresses, then its subject's commonName; () for no (verified) certificate."""
    if not peercert:
        return ()
    names = [value for kind, value in peercert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
    for rdn in peercert.get("subject", ()):
        names += [value for key, value in rdn if key == "commonName"]
    return tuple(names)


def client_context(verify: bool, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """For connections we open. `verify` off accepts any server certificate (trunks often present
    self-signed ones); our own certificate, when configured, is offered for trunks that want mutual TLS."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert and key:
        load_identity(context, cert, key)
    return context
