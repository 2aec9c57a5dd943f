"""cext/gctrack.pyx: values taken out of the cyclic collector's walks, and only those that cannot hold a cycle."""

from __future__ import annotations

import gc
import weakref

import pytest
from cext.gctrack import untrack_leaf, untrack_scalar, untracked
from hypothesis import given
from hypothesis import strategies as st

from softswitch.sip.message import parse
from softswitch.sip.sdp import SessionDescription
from softswitch.sip.transaction import client_key, server_key

SCALARS = st.one_of(st.text(max_size=8), st.integers(), st.floats(allow_nan=False), st.none(), st.binary(max_size=4))


@given(st.lists(SCALARS, max_size=6))
def test_gctrack_a_tuple_of_scalars_is_untracked_and_unchanged(items: list) -> None:
    made = tuple(items)
    assert untracked(made) is made and made == tuple(items)
    assert not gc.is_tracked(made)


def test_gctrack_a_tuple_holding_a_container_stays_tracked() -> None:
    inner: list = []
    empty: dict = {}  # untracked by CPython while it holds scalars only, but it may take a container later
    for t in ((inner,), ("key", 1, inner), (1, ("nested", [2])), ("key", empty), ("key", {"a": 1})):
        assert gc.is_tracked(untracked(t))
    assert not gc.is_tracked(untracked((1, untracked(("nested", 2)))))


def test_gctrack_a_cycle_through_a_tracked_item_is_still_collected() -> None:
    """The reason for the rule: a tuple that reaches a container may close a cycle, which only the GC frees."""

    class Node:
        pass

    node = Node()
    node.key = untracked(("x", node))  # node -> tuple -> node
    assert gc.is_tracked(node.key)
    gone = weakref.ref(node)
    del node
    gc.collect()
    assert gone() is None


def test_gctrack_untrack_scalar_skips_objects_outside_the_collector() -> None:
    for value in ("text", 5, 2.5, None, b"raw"):
        assert untrack_scalar(value) is value  # no GC header to touch: returned as is


def test_gctrack_parsed_sdp_lines_and_transaction_keys_are_untracked() -> None:
    sdp = SessionDescription.parse(
        b"v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nb=AS:64\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
    lines = [sdp.origin, sdp.connection, *sdp.bandwidths, *sdp.media[0].attributes]
    assert len(lines) == 5 and not any(gc.is_tracked(o) for o in lines)
    assert gc.is_tracked(sdp) and gc.is_tracked(sdp.media[0])  # these hold tuples and a cache: walked as ever
    assert sdp.media[0].attributes[0].value == "101 telephone-event/8000"
    request = parse(
        b"OPTIONS sip:a@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKk1\r\n"
        b"From: <sip:b@192.0.2.2>;tag=1\r\nTo: <sip:a@192.0.2.1>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    for key in (client_key(request), server_key(request)):
        assert not gc.is_tracked(key) and "z9hG4bKk1" in key


def test_gctrack_untrack_leaf_takes_out_only_what_refers_to_nothing_tracked() -> None:
    class Slotted:
        __slots__ = ("a", "b")

        def __init__(self, a: object, b: object) -> None:
            self.a, self.b = a, b

    pairs = [untracked(("Via", "x")), untracked(("To", "y"))]
    assert untrack_leaf(pairs) and not gc.is_tracked(pairs)
    holder = Slotted("text", pairs)  # its type is tracked, and is not counted: every instance refers to it
    assert untrack_leaf(holder) and not gc.is_tracked(holder)
    for busy in ([[1]], Slotted("text", [1]), [("pair", [1])]):
        assert not untrack_leaf(busy) and gc.is_tracked(busy)
    assert untrack_leaf("outside the collector")
    constant, other = Slotted(1, 2), Slotted(3, 4)
    assert not untrack_leaf(Slotted(constant, "x"), (other,))
    named = Slotted(constant, "x")
    assert untrack_leaf(named, (other, constant)) and not gc.is_tracked(named)  # `constants` are not counted
    with pytest.raises(TypeError):
        untrack_leaf([], None)


def test_gctrack_an_untracked_leaf_is_still_freed_by_its_reference_count() -> None:
    class Leaf:
        __slots__ = ("__weakref__", "text")

    leaf = Leaf()
    leaf.text = "kept to be sent again"
    assert untrack_leaf(leaf)
    gone = weakref.ref(leaf)
    del leaf
    assert gone() is None
