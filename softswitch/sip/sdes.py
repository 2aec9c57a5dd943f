"""SDES: SRTP keys in SDP `a=crypto` attributes (RFC 4568), for RTP/SAVP streams.

`a=crypto:<tag> <suite> inline:<base64 key||salt>[|<lifetime>][|<MKI>:<length>] [session params]`.
We take the AES_CM_128_HMAC_SHA1_80 and _32 suites (the two every SDES phone offers), one key each,
without an MKI or session parameters (a line with either is passed over: RFC 4568 6.1 lets the answerer
pick any offered line it supports). Pure functions: the randomness of our own key is the caller's.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

SUITES = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4}  # suite -> SRTP tag length
MASTER_LEN = 30  # 16-byte key and 14-byte salt


@dataclass(frozen=True, slots=True)
class Crypto:
    tag: int
    suite: str
    master: bytes  # key || salt

    @property
    def tag_len(self) -> int:
        return SUITES[self.suite]

    def attribute_value(self) -> str:
        """The value of an `a=crypto` attribute carrying this key."""
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.master).decode()}"


def parse(value: str) -> Crypto | None:
    """An `a=crypto` value we can use, or None (unknown suite, MKI, session parameters, bad key)."""
    parts = value.split()
    if len(parts) != 3 or not parts[0].isdigit() or parts[1] not in SUITES:
        return None
    method, _, params = parts[2].partition(":")
    if method.lower() != "inline":
        return None
    fields = params.split("|")
    if len(fields) > 2 or (len(fields) == 2 and ":" in fields[1]):  # a lifetime may follow; an MKI may not
        return None
    try:
        master = base64.b64decode(fields[0], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(master) != MASTER_LEN:
        return None
    return Crypto(int(parts[0]), parts[1], master)


def choose(values: list[str]) -> Crypto | None:
    """The first offered `a=crypto` value we can use (the offerer lists them by preference)."""
    for value in values:
        crypto = parse(value)
        if crypto is not None:
            return crypto
    return None


def answer(offered: Crypto, our_master: bytes) -> Crypto:
    """Our answer's crypto: the offered tag and suite, our own key (RFC 4568 6.1)."""
    if len(our_master) != MASTER_LEN:
        raise ValueError("a master key and salt is 30 bytes")
    return Crypto(offered.tag, offered.suite, our_master)
