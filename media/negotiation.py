"""SDP for media legs: our offer or answer for a leg, and what the engine must do once both sides agreed.

The B2BUA calls these with the SDP of each side; the sans-IO offer/answer rules live in
softswitch/sip/offer_answer.py, and this module only ties them to a `Leg` (its address and port) and
to the engine (remote address, codec, telephone-event payload type).
"""

from __future__ import annotations

from media.engine import CODECS, Leg, MediaEngine
from softswitch.sip.offer_answer import (
    Capabilities,
    NegotiatedMedia,
    OriginTracker,
    build_answer,
    build_offer,
    negotiate,
)
from softswitch.sip.sdp import SessionDescription

DEFAULT_CODECS = (("PCMU", 8000), ("PCMA", 8000), ("telephone-event", 8000))


def capabilities(leg: Leg, codecs=DEFAULT_CODECS, ptime: int = 20) -> Capabilities:
    """What the engine can do on `leg`: G.711 both laws and RFC 4733 events, 20 ms frames."""
    return Capabilities(leg.host, tuple(codecs), ptime=ptime)


def offer(leg: Leg, origin: OriginTracker, codecs=DEFAULT_CODECS) -> SessionDescription:
    """Our offer for a leg (the B2BUA's outbound side), stamped with the dialog's origin."""
    return origin.stamp(build_offer(capabilities(leg, codecs), leg.port))


def answer(
    leg: Leg, remote_offer: SessionDescription, origin: OriginTracker, codecs=DEFAULT_CODECS
) -> tuple[SessionDescription, NegotiatedMedia | None]:
    """Our answer to a received offer, and the negotiated audio stream (None if nothing was common)."""
    ports = [leg.port if i == _audio_index(remote_offer) else 0 for i in range(len(remote_offer.media))]
    ours = origin.stamp(build_answer(remote_offer, capabilities(leg, codecs), ports))
    index = _audio_index(remote_offer)
    result = None if index is None else negotiate(remote_offer, ours, index, we_offered=False)
    return ours, result


def accepted(our_offer: SessionDescription, remote_answer: SessionDescription) -> NegotiatedMedia | None:
    """The audio stream agreed when the far end answered our offer."""
    index = _audio_index(our_offer)
    return None if index is None else negotiate(our_offer, remote_answer, index, we_offered=True)


def apply(engine: MediaEngine, leg: Leg, media: NegotiatedMedia) -> None:
    """Point the leg at the far end and set the codec and event payload types it agreed to."""
    name = media.codec.name.upper()
    if name not in CODECS:
        raise ValueError(f"the engine cannot carry {media.codec.name}/{media.codec.clock_rate}")
    host, port = media.remote_rtp
    if host not in ("0.0.0.0", "::"):  # unspecified: the far end asks us not to send (RFC 3264 8.4)
        engine.set_remote(leg, host, port)
    engine.set_codec(leg, name, pt=media.payload_type, te_pt=media.telephone_event)


def _audio_index(sdp: SessionDescription) -> int | None:
    for i, m in enumerate(sdp.media):
        if m.media.lower() == "audio" and m.port != 0:
            return i
    return None
