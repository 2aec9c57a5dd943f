"""SRTP in C (cext/native/srtp.c): RFC 3711's key derivation vectors, AES-CM and HMAC-SHA1 against
independent implementations (the openssl command, Python's hmac), rollover, replay and tampering."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cext import srtp

MASTER = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139") + bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")


def rtp(seq: int, payload: bytes = b"\x55" * 160, ssrc: int = 0x1234ABCD, ts: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts, ssrc) + payload


def test_srtp_is_available_here():
    assert srtp.available() is None


def test_key_derivation_matches_rfc_3711_b3():
    assert srtp.derive(MASTER, 0, 16).hex().upper() == "C61E7A93744F39EE10734AFE3FF7A087"
    assert srtp.derive(MASTER, 2, 14).hex().upper() == "30CBBC08863D8C85D49DB34A9AE1"
    assert srtp.derive(MASTER, 1, 20).hex().upper().startswith("CEBE321F6FF7716B6FD4AB49AF256A15")


def openssl_ctr(key: bytes, iv: bytes, n: int) -> bytes:
    """n bytes of AES-128-CTR keystream from the openssl command (an implementation apart from ours)."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is installed by .ci/run"
    out = subprocess.run(
        [openssl, "enc", "-aes-128-ctr", "-K", key.hex(), "-iv", iv.hex(), "-nosalt"],
        input=bytes(n),
        capture_output=True,
        check=True,
    )
    return out.stdout


def counter_block(salt: bytes, ssrc: int, index: int) -> bytes:
    value = int.from_bytes(salt, "big") << 16 ^ ssrc << 64 ^ index << 16
    return value.to_bytes(16, "big")


@pytest.mark.parametrize(("tag_len", "seq"), [(10, 0), (10, 4321), (4, 65000)])
def test_protect_is_aes_cm_and_hmac_sha1_as_rfc_3711_says(tag_len, seq):
    packet = rtp(seq, bytes(160))
    protected = srtp.Srtp(MASTER, tag_len).protect(packet)
    assert len(protected) == len(packet) + tag_len and protected[:12] == packet[:12]
    k_e, k_a, k_s = srtp.derive(MASTER, 0, 16), srtp.derive(MASTER, 1, 20), srtp.derive(MASTER, 2, 14)
    # a zero payload encrypts to the keystream itself
    assert protected[12:172] == openssl_ctr(k_e, counter_block(k_s, 0x1234ABCD, seq), 160)
    expected = hmac.new(k_a, protected[:172] + struct.pack("!I", 0), hashlib.sha1).digest()[:tag_len]
    assert protected[172:] == expected


def test_round_trip_out_of_order_replay_and_tampering():
    tx, rx = srtp.Srtp(MASTER), srtp.Srtp(MASTER)
    sent = {seq: tx.protect(rtp(seq, bytes([seq % 256]) * 160)) for seq in range(100, 140)}
    for seq in [100, 101, 103, 102, *range(104, 140)]:  # 102 late, within the window
        assert rx.unprotect(sent[seq]) == rtp(seq, bytes([seq % 256]) * 160)
    with pytest.raises(srtp.SrtpError) as replay:
        rx.unprotect(sent[120])
    assert replay.value.replay
    forged = bytearray(tx.protect(rtp(140)))
    forged[20] ^= 1
    with pytest.raises(srtp.SrtpError) as bad:
        rx.unprotect(bytes(forged))
    assert not bad.value.replay
    with pytest.raises(srtp.SrtpError):
        srtp.Srtp(bytes(30)).unprotect(sent[139])  # another key


def test_sequence_wrap_moves_the_rollover_counter_on_both_sides():
    tx, rx = srtp.Srtp(MASTER), srtp.Srtp(MASTER)
    for seq in range(65530, 65536 + 10):
        packet = rtp(seq)
        assert rx.unprotect(tx.protect(packet)) == packet
    # the packet after the wrap was authenticated with ROC 1
    k_a = srtp.derive(MASTER, 1, 20)
    again = srtp.Srtp(MASTER)
    for seq in range(65530, 65536):
        again.protect(rtp(seq))
    after = again.protect(rtp(0))
    assert after[-10:] == hmac.new(k_a, after[:-10] + struct.pack("!I", 1), hashlib.sha1).digest()[:10]


def test_srtcp_round_trip_index_and_replay():
    tx, rx = srtp.Srtp(MASTER), srtp.Srtp(MASTER)
    report = struct.pack("!BBHI", 0x80, 200, 6, 0x1234ABCD) + bytes(20)
    first, second = tx.protect_rtcp(report), tx.protect_rtcp(report)
    assert len(first) == len(report) + 14 and first[:8] == report[:8] and first[8:28] != report[8:]
    assert struct.unpack("!I", first[28:32])[0] == 0x80000000 and struct.unpack("!I", second[28:32])[0] == 0x80000001
    assert rx.unprotect_rtcp(first) == report and rx.unprotect_rtcp(second) == report
    with pytest.raises(srtp.SrtpError) as replay:
        rx.unprotect_rtcp(first)
    assert replay.value.replay
    tampered = bytearray(tx.protect_rtcp(report))
    tampered[10] ^= 0x80
    with pytest.raises(srtp.SrtpError):
        rx.unprotect_rtcp(bytes(tampered))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.binary(max_size=300))
def test_hmac_sha1_matches_pythons(key, data):
    assert srtp.hmac_sha1(key, data) == hmac.new(key, data, hashlib.sha1).digest()
