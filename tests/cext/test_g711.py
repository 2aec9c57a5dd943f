"""G.711 kernel against two independent references, over every PCM16 input and every code word.

Reference 1 is written from the ITU-T G.711 tables (decision and reconstruction levels per segment)
and encodes by searching the decision levels, not by bit manipulation. Reference 2 is CPython's
audioop (Sun's implementation): identical to G.191 for A-law and for mu-law decoding; its mu-law
encoder rounds negative inputs differently from G.191, so there it is only compared on x >= 0.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from media import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def _ulaw_levels():
    """(lowest magnitude, code magnitude bits, reconstruction) per interval, 14-bit units (Table 2a)."""
    rows = []
    for seg in range(8):
        for mant in range(16):
            low = ((16 + mant) << (seg + 1)) - 33
            recon = (((2 * mant) + 33) << seg) - 33
            rows.append((max(low, 0), (seg << 4) | mant, recon))
    return rows


def _alaw_levels():
    """Same for A-law, in steps of 16 on the 16-bit scale (Table 1a)."""
    rows = []
    for seg in range(8):
        for mant in range(16):
            low = mant if seg == 0 else (16 + mant) << (seg - 1)
            recon = (mant << 4) + 8 if seg == 0 else (((mant + 16) << 4) + 8) << (seg - 1)
            rows.append((low, (seg << 4) | mant, recon))
    return rows


def _encode_by_search(pcm: np.ndarray, law: str) -> np.ndarray:
    x = pcm.astype(np.int32)
    ones = np.where(x < 0, -x - 1, x)  # G.191: one's complement of negatives
    if law == "u":
        mag, rows, pos_mask, neg_mask = np.minimum(ones >> 2, 8158), _ulaw_levels(), 0xFF, 0x7F
    else:
        mag, rows, pos_mask, neg_mask = ones >> 4, _alaw_levels(), 0xD5, 0x55
    lows = np.array([r[0] for r in rows])
    bits = np.array([r[1] for r in rows])
    idx = np.searchsorted(lows, mag, side="right") - 1
    return (bits[idx] ^ np.where(x < 0, neg_mask, pos_mask)).astype(np.uint8)


def _decode_by_table(law: str) -> np.ndarray:
    out = np.zeros(256, dtype=np.int16)
    for code in range(256):
        if law == "u":
            c = (~code) & 0xFF
            rec = {r[1]: r[2] for r in _ulaw_levels()}[c & 0x7F] * 4
            out[code] = -rec if c & 0x80 else rec
        else:
            c = code ^ 0x55
            rec = {r[1]: r[2] for r in _alaw_levels()}[c & 0x7F]
            out[code] = rec if c & 0x80 else -rec
    return out


@pytest.mark.parametrize("law", ["u", "a"])
def test_g711_encode_every_pcm16_input_matches_table_search(law):
    enc = g711.ulaw_encode if law == "u" else g711.alaw_encode
    got = np.frombuffer(enc(ALL_PCM), dtype=np.uint8)
    want = _encode_by_search(ALL_PCM, law)
    assert np.array_equal(got, want), np.nonzero(got != want)[0][:10]


@pytest.mark.parametrize("law", ["u", "a"])
def test_g711_decode_every_code_word_matches_table(law):
    dec = g711.ulaw_decode if law == "u" else g711.alaw_decode
    got = np.frombuffer(dec(ALL_CODES), dtype=np.int16)
    assert np.array_equal(got, _decode_by_table(law))


def test_g711_matches_audioop_where_the_algorithms_agree():
    pcm = ALL_PCM.tobytes()
    assert g711.alaw_encode(pcm) == audioop.lin2alaw(pcm, 2)
    assert g711.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)
    positive = ALL_PCM[ALL_PCM >= 0].tobytes()
    assert g711.ulaw_encode(positive) == audioop.lin2ulaw(positive, 2)


@pytest.mark.parametrize("law", ["u", "a"])
def test_g711_code_words_round_trip(law):
    enc, dec = (g711.ulaw_encode, g711.ulaw_decode) if law == "u" else (g711.alaw_encode, g711.alaw_decode)
    back = enc(dec(ALL_CODES))
    if law == "u":  # 0x7F is mu-law's negative zero: it decodes to 0, which encodes as 0xFF
        assert back == ALL_CODES[:0x7F] + b"\xff" + ALL_CODES[0x80:]
    else:
        assert back == ALL_CODES


def test_g711_known_values():
    assert g711.ulaw_encode(np.array([0], np.int16)) == b"\xff"
    assert g711.alaw_encode(np.array([0], np.int16)) == b"\xd5"
    assert np.frombuffer(g711.ulaw_decode(b"\x00\x80"), np.int16).tolist() == [-32124, 32124]
    assert np.frombuffer(g711.alaw_decode(b"\xd5\x55\x2a\xaa"), np.int16).tolist() == [8, -8, -32256, 32256]


@pytest.mark.parametrize("law", ["u", "a"])
def test_g711_quantiser_is_symmetric_about_minus_half(law):
    enc = g711.ulaw_encode if law == "u" else g711.alaw_encode
    pos = np.frombuffer(enc(ALL_PCM[ALL_PCM >= 0]), np.uint8)
    neg = np.frombuffer(enc(~ALL_PCM[ALL_PCM >= 0]), np.uint8)
    assert np.array_equal(pos ^ 0x80, neg)


def test_g711_transcoding_goes_through_linear():
    u2a = np.frombuffer(g711.ulaw_to_alaw(ALL_CODES), np.uint8)
    via = np.frombuffer(g711.alaw_encode(g711.ulaw_decode(ALL_CODES)), np.uint8)
    assert np.array_equal(u2a, via)
    a2u = np.frombuffer(g711.alaw_to_ulaw(ALL_CODES), np.uint8)
    assert np.array_equal(a2u, np.frombuffer(g711.ulaw_encode(g711.alaw_decode(ALL_CODES)), np.uint8))


@given(st.binary(max_size=400))
def test_g711_facade_accepts_any_buffer(data):
    if len(data) % 2:
        with pytest.raises(ValueError):
            g711.ulaw_encode(data)
        data = data[:-1]
    arr = np.frombuffer(data, np.int16)
    assert g711.ulaw_encode(data) == g711.ulaw_encode(arr) == g711.ulaw_encode(bytearray(data))
    assert len(g711.alaw_encode(memoryview(data))) == len(data) // 2
    assert g711.ulaw_encode(arr[::2]) == g711.ulaw_encode(arr[::2].copy())
