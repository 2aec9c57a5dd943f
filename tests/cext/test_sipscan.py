"""The compiled SIP fast path against the Python reference parser: whenever the kernel answers, its
message must equal the reference's, and it must never answer for input the reference refuses."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.sip.errors import SipParseError
from softswitch.sip.message import Request, _from_scan, _scan, parse, parse_reference

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from fuzz_sip import mutate
from sip_samples import INVITE, OK

RFC4475 = sorted((Path(__file__).resolve().parents[1] / "sip" / "data" / "rfc4475").glob("*.dat"))


def snapshot(msg) -> tuple:
    start = (msg.method, msg.uri_text) if isinstance(msg, Request) else (msg.status, msg.reason)
    addr = [(a.display, a.uri_text, a.params, a.angle) for a in (msg.from_, msg.to)]
    try:  # lower Vias are parsed on first use, and may be refused then
        vias = [(v.protocol, v.transport, v.host, v.port, v.params) for v in msg.vias]
    except SipParseError as exc:
        vias = exc.reason
    return start, msg.headers, msg.body, addr, (msg.cseq.seq, msg.cseq.method), vias, msg.serialize()


def check_agrees(data: bytes) -> bool:
    """True when the fast path answered (and agreed)."""
    fast = _scan(data)
    try:
        ref = parse_reference(data)
    except SipParseError:
        assert fast is None, data
        return False
    if fast is None:
        return False
    assert snapshot(_from_scan(data, fast)) == snapshot(ref)
    return True


def test_sipscan_takes_the_fast_path_for_typical_messages():
    assert check_agrees(INVITE) and check_agrees(OK)
    assert parse(INVITE).via.branch == "z9hG4bK776asdhds"


@pytest.mark.parametrize("path", RFC4475, ids=lambda p: p.stem)
def test_sipscan_agrees_on_rfc4475(path):
    check_agrees(path.read_bytes())


def test_sipscan_agrees_on_mutations():
    rng = random.Random(1)
    seeds = [INVITE, OK] + [p.read_bytes() for p in RFC4475]
    answered = sum(check_agrees(mutate(rng, rng.choice(seeds))) for _ in range(20000))
    assert answered > 500  # the comparison ran on many accepted inputs, not only on refusals


_token = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,8}", fullmatch=True)
_pval = st.none() | _token | _token.map(lambda t: f'"{t} x"') | st.just("[2001:db8::1]") | st.just("")
_params = st.lists(st.tuples(_token, _pval), max_size=3).map(
    lambda ps: "".join(
        f";{n}" if v is None else f"; {n} = {v}" if i % 2 else f";{n}={v}" for i, (n, v) in enumerate(ps)
    )
)
_display = st.sampled_from(["", '"Alice" ', "Bob ", "Bob  Smith", '"Q\\"x" ', '"" ', "a,b "])
_uri = st.sampled_from(
    [
        "sip:alice@example.com",
        "sips:b@[2001:db8::2]:5061",
        "tel:+123",
        "sip:x@h;lr",
        "http:x",
        "sip:a b@c",
        "<sip:q@r>",
        'sip:"q"@r',
    ]
)


@settings(max_examples=400)
@given(
    display=_display,
    uri=_uri,
    angle=st.booleans(),
    fparams=_params,
    vparams=_params,
    port=st.sampled_from(["", ":5060", ":0", ":70000", ":12"]),
    cseq=st.sampled_from(["1 INVITE", "1 BYE", "99999999999 INVITE", "1  INVITE"]),
    name_case=st.sampled_from(["From", "from", "f", "FROM ", "F"]),
    mf=st.sampled_from(["70", "256", "0070", "x"]),
    length=st.sampled_from([None, 0, 3, 5]),
)
def test_sipscan_agrees_on_generated_messages(display, uri, angle, fparams, vparams, port, cseq, name_case, mf, length):
    addr = f"{display}<{uri}>{fparams}" if angle or display else f"{uri}{fparams}"
    body = b"abc"
    head = (
        f"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP host.example.com{port}{vparams}\r\n"
        f"{name_case}: {addr}\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: {cseq}\r\nMax-Forwards: {mf}\r\n"
    )
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    check_agrees(head.encode() + b"\r\n" + body)
