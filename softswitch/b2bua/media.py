"""A call's anchored media: one engine leg per side and the SDP rewriting between the sides.

Theory of operation. A B2BUA never forwards the far ends' SDP: each side only ever sees our address and
port, so every packet passes through the media engine (anchoring, needed to record, detect and stream).
An offer from one side (`offer_from`) becomes our offer to the other side, listing only the offered codecs
the engine can carry, in the offerer's order, with the offerer's direction (hold is `sendonly`, RFC 3264
8.4). The other side's answer (`answer_from`) picks one codec; our answer to the offerer then names that
same codec, so the engine can relay packets as they are (no transcoding), and states the answerer's
direction. Once both halves are agreed each leg is pointed at its far end and the two legs are bridged:
relayed when both sides use the same codec, processed (decoded and re-encoded every 20 ms) otherwise.

Sides are "a" (the caller, our UAS half) and "b" (the callee, our UAC half). An offer-less INVITE (late
offer, RFC 3261 13.2.1) is handled by `initial_offer`: the callee gets our full offer, and the caller
gets an offer in our 2xx that its ACK answers (`late_answer`).

SRTP (SDES, RFC 4568): a side whose signalling is TLS (`secure`) may offer RTP/SAVP with `a=crypto` keys;
our answer takes the first suite we know with a key of our own, and that side's engine leg then protects
and checks every packet (the other side may well be plain RTP: each leg is its own crypto context). An
RTP/SAVP offer over plain signalling is refused: its keys would have crossed the network in clear.
"""

from __future__ import annotations

import secrets

from msgspec.structs import replace

from media.engine import CODECS, Bridge, Leg, MediaEngine, srtp_available
from media.negotiation import apply
from softswitch.sip import sdes
from softswitch.sip.offer_answer import (
    TELEPHONE_EVENT,
    Capabilities,
    CodecSpec,
    NegotiatedMedia,
    OriginChange,
    OriginTracker,
    build_answer,
    build_offer,
    negotiate,
    origin_change,
)
from softswitch.sip.sdp import SENDRECV, Attribute, Direction, SdpError, SessionDescription

OTHER = {"a": "b", "b": "a"}
INBAND_DTMF = ("auto", "always", "never")
ENGINE_CODECS = (("PCMU", 8000), ("PCMA", 8000), (TELEPHONE_EVENT, 8000))


class MediaRefused(Exception):
    """An offer we cannot take (no common codec, no audio, malformed): 488 Not Acceptable Here."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _audio(sdp: SessionDescription) -> int | None:
    for i, m in enumerate(sdp.media):
        if m.port != 0 and m.media.lower() == "audio":
            return i
    return None


def _same_codec(agreed: NegotiatedMedia) -> list[CodecSpec]:
    """An offer that keeps a stream on the codec already agreed (so the bridge can stay a relay)."""
    return [CodecSpec(agreed.codec.name, agreed.codec.clock_rate), CodecSpec(TELEPHONE_EVENT, 8000)]


def parse_sdp(body: bytes) -> SessionDescription:
    try:
        return SessionDescription.parse(body)
    except SdpError as exc:
        raise MediaRefused(f"malformed SDP: {exc}") from None


class CallMedia:
    """Both engine legs of one call and the offer/answer exchange in flight between its sides."""

    def __init__(self, engine: MediaEngine, host: str | None = None, inband_dtmf: str = "auto"):
        """`inband_dtmf`: listen for key tones in a side's audio `always`, `never`, or (`auto`) only on a
        side that negotiated no telephone-event (its far end can only send DTMF in-band)."""
        self.engine = engine
        self.inband_dtmf = inband_dtmf
        self.listening: dict[str, bool] = {"a": False, "b": False}
        self.legs: dict[str, Leg] = {}
        self.legs["a"] = engine.create_leg(host)
        try:
            self.legs["b"] = engine.create_leg(host)
        except BaseException:
            engine.destroy_leg(self.legs["a"])
            raise
        sess = secrets.randbelow(2**31)
        self.origins = {side: OriginTracker(sess + i, leg.host) for i, (side, leg) in enumerate(self.legs.items())}
        self.bridge: Bridge | None = None
        self.mode: str | None = None
        self.negotiated: dict[str, NegotiatedMedia] = {}
        # the exchange in flight: who offered, what they offered, and what we offered the other side
        self._offerer: str | None = None
        self._their_offer: SessionDescription | None = None
        self._our_offer: SessionDescription | None = None
        self._answer_sent: SessionDescription | None = None  # our answer to the offerer, once given
        self.remote: dict[str, SessionDescription] = {}  # the last description each side sent us
        self.secure: set[str] = set()  # sides whose signalling is TLS: they may key SRTP (SDES)
        self._their_crypto: sdes.Crypto | None = None  # the offerer's SRTP key, in the exchange in flight
        self._our_masters: dict[str, bytes] = {}  # our SRTP key per side, kept across re-offers
        self.srtp: dict[str, tuple[bytes, bytes, int]] = {}  # side -> (our master, theirs, tag length)
        self._srtp_applied: dict[str, tuple[bytes, bytes, int] | None] = {}

    # -- offers ------------------------------------------------------------------------------------
    def offer_from(self, side: str, body: bytes) -> bytes:
        """`side` offered `body`: our offer for the other side. MediaRefused when nothing is usable."""
        offer = parse_sdp(body)
        index = _audio(offer)
        if index is None:
            raise MediaRefused("no audio stream offered")
        self.remote[side] = offer
        self._their_crypto = self._offered_crypto(side, offer.media[index])
        codecs = self._usable(offer.media[index].codecs)
        if not any(c.name.lower() != TELEPHONE_EVENT for c in codecs):
            raise MediaRefused("no codec in common (PCMU, PCMA)")
        direction = offer.effective_direction(offer.media[index])
        other = OTHER[side]
        ours = build_offer(self._caps(other, codecs, direction), self.legs[other].port)
        self._offerer, self._their_offer, self._answer_sent = side, offer, None
        self._our_offer = self.origins[other].stamp(ours)
        return self._our_offer.serialize()

    def initial_offer(self, side: str) -> bytes:
        """Our own offer to `side` (the callee of an offer-less INVITE): everything the engine carries."""
        caps = self._caps(side, [CodecSpec(*c) for c in ENGINE_CODECS], SENDRECV)
        self._offerer, self._their_offer, self._answer_sent = None, None, None
        self.srtp.pop(side, None)  # our own offers are plain RTP
        self._our_offer = self.origins[side].stamp(build_offer(caps, self.legs[side].port))
        return self._our_offer.serialize()

    def secured_offer(self, side: str) -> bytes:
        """Our offer to `side` as RTP/SAVP with an SDES key of ours (for a callee reached over TLS that
        wants SRTP); its answer's key (`answer_from`) keys the leg. The same key serves every such fork."""
        if self._our_offer is None:
            raise MediaRefused("no offer to secure")
        index = _audio(self._our_offer) or 0
        master = self._our_masters.setdefault(side, secrets.token_bytes(sdes.MASTER_LEN))
        crypto = sdes.Crypto(1, "AES_CM_128_HMAC_SHA1_80", master)
        section = self._our_offer.media[index]
        keyed = replace(
            section,
            proto="RTP/SAVP",
            attributes=(*section.attributes, Attribute("crypto", crypto.attribute_value())),
        )
        media = tuple(keyed if i == index else m for i, m in enumerate(self._our_offer.media))
        return replace(self._our_offer, media=media).serialize()

    @property
    def answered(self) -> bool:
        """Whether the offerer already has our answer (early media came with SDP, say)."""
        return self._answer_sent is not None

    # -- answers -----------------------------------------------------------------------------------
    def answer_from(self, side: str, body: bytes, parked: bool = False) -> bytes | None:
        """`side` answered our offer with `body`: set both legs up and return our answer for the offerer
        (None when the exchange was our own offer, for a late-offer caller: see `late_offer_for`).
        `parked`: the answer is our own stand-in for a side nobody holds (c=0.0.0.0, b2bua.call.parked),
        which must not read as the offerer being put on hold: the offerer gets a sendrecv answer."""
        if self._our_offer is None:
            raise MediaRefused("an answer without an offer")
        answer = parse_sdp(body)
        ours = negotiate(self._our_offer, answer, _audio(self._our_offer) or 0, we_offered=True)
        if ours is None:
            raise MediaRefused("the answer has no usable audio stream")
        self._answered_crypto(side, answer.media[ours.index])
        self.negotiated[side] = ours
        self.remote[side] = answer
        if self._offerer is None:
            self._connect()  # our own offer (a transfer target, a late-offer callee): nothing to answer
            return None
        offerer = self._offerer
        offer = self._their_offer
        index = _audio(offer)
        chosen = [CodecSpec(ours.codec.name, ours.codec.clock_rate)]
        if any(c.name.lower() == TELEPHONE_EVENT for c in offer.media[index].codecs):
            chosen.append(CodecSpec(TELEPHONE_EVENT, 8000))
        their_view = SENDRECV if parked else answer.effective_direction(answer.media[ours.index])
        crypto = self._their_crypto
        caps = self._caps(offerer, chosen, their_view, srtp=crypto is not None)
        ports = [self.legs[offerer].port if i == index else 0 for i in range(len(offer.media))]
        built = build_answer(offer, caps, ports)
        if crypto is not None:
            mine = sdes.answer(crypto, self._our_masters.setdefault(offerer, secrets.token_bytes(sdes.MASTER_LEN)))
            section = built.media[index]
            keyed = replace(section, attributes=(*section.attributes, Attribute("crypto", mine.attribute_value())))
            built = replace(built, media=tuple(keyed if i == index else m for i, m in enumerate(built.media)))
            self.srtp[offerer] = (mine.master, crypto.master, crypto.tag_len)
        else:
            self.srtp.pop(offerer, None)
        reply = self.origins[offerer].stamp(built)
        agreed = negotiate(offer, reply, index, we_offered=False)
        if agreed is None:
            raise MediaRefused("no codec in common with the offer")
        self.negotiated[offerer] = agreed
        self._answer_sent = reply
        self._connect()
        return reply.serialize()

    def transfer_offer(self, side: str) -> bytes:
        """Our offer to a transfer target that will take `side`'s place: a new session on the same engine
        leg, carrying only the codec the remaining party uses (so the bridge can keep relaying)."""
        codecs = _same_codec(self.negotiated[OTHER[side]])
        self.origins[side] = OriginTracker(secrets.randbelow(2**31), self.legs[side].host)
        self._offerer, self._their_offer, self._answer_sent = None, None, None
        self.srtp.pop(side, None)  # a new party on that side: its own (plain) session
        caps = self._caps(side, codecs, SENDRECV)
        self._our_offer = self.origins[side].stamp(build_offer(caps, self.legs[side].port))
        return self._our_offer.serialize()

    def unhold_offer(self, side: str) -> bytes | None:
        """A fresh sendrecv offer for `side` if its stream is not sendrecv now (held), else None."""
        agreed = self.negotiated.get(side)
        if agreed is None or agreed.direction is SENDRECV:
            return None
        caps = self._caps(side, _same_codec(agreed), SENDRECV)
        return self.origins[side].stamp(build_offer(caps, self.legs[side].port)).serialize()

    def leg_stats(self, side: str) -> dict:
        """Media statistics of `side`'s engine leg so far (for a party leaving the call)."""
        s = self.engine.stats(self.legs[side])
        if s is None:
            return {}
        return {
            "rx_packets": s.rx_packets,
            "tx_packets": s.tx_packets,
            "lost": max(s.lost, 0),
            "loss_pct": round(s.loss_pct, 3),
            "jitter_ms": round(s.jitter_ms, 2),
            "mos": round(s.mos, 2) if s.rx_packets else None,
            "codec": self.negotiated[side].codec.name if side in self.negotiated else None,
        }

    def late_offer_for(self, side: str) -> bytes:
        """Our offer to a caller that sent none, once the callee has answered ours: the callee's codec."""
        codecs = _same_codec(self.negotiated[OTHER[side]])
        self._offerer, self._their_offer = None, None
        self.srtp.pop(side, None)
        self._our_offer = self.origins[side].stamp(
            build_offer(self._caps(side, codecs, SENDRECV), self.legs[side].port)
        )
        return self._our_offer.serialize()

    def late_answer(self, side: str, body: bytes) -> None:
        """The caller's answer (in its ACK) to `late_offer_for`: set its leg up and bridge."""
        self.answer_from(side, body)  # our own offer was answered: nothing to relay back

    def is_refresh(self, side: str, body: bytes) -> bool:
        """Whether `body` repeats the last description from `side` (same o= version: a session refresh,
        RFC 3264 8 and RFC 4028), so nothing needs renegotiating."""
        try:
            sdp = SessionDescription.parse(body)
        except SdpError:
            return False
        return origin_change(self.remote.get(side), sdp) is OriginChange.UNCHANGED

    def last_sent(self, side: str) -> bytes | None:
        """What `side` last had from us (to repeat in a 2xx after an early answer, 13.2.1)."""
        last = self.origins[side].last
        return None if last is None else last.serialize()

    # -- engine ------------------------------------------------------------------------------------
    def _connect(self) -> None:
        a, b = self.negotiated.get("a"), self.negotiated.get("b")
        if a is None or b is None:
            return
        for side in ("a", "b"):
            keys = self.srtp.get(side)
            if keys != self._srtp_applied.get(side):  # before the leg is pointed anywhere: no clear packet
                ours, theirs, tag_len = keys if keys is not None else (None, None, 10)
                self.engine.set_srtp(self.legs[side], ours, theirs, tag_len)
                self._srtp_applied[side] = keys
        apply(self.engine, self.legs["a"], a)
        apply(self.engine, self.legs["b"], b)
        for side, agreed in (("a", a), ("b", b)):
            self._listen(side, agreed)
        mode = "relay" if a.codec.name.upper() == b.codec.name.upper() else "processed"
        if self.bridge is None:
            self.bridge = self.engine.bridge(self.legs["a"], self.legs["b"], mode)
        else:
            for leg in self.legs.values():  # a leg that left (a dialled party gone) joins again
                self.engine.join(self.bridge, leg)
            if mode != self.mode:
                self.engine.set_mode(self.bridge, mode == "processed")
        self.mode = mode

    def _listen(self, side: str, agreed: NegotiatedMedia) -> None:
        policy = self.inband_dtmf
        want = policy == "always" or (policy == "auto" and agreed.telephone_event is None)
        if want != self.listening[side]:
            self.engine.detect_dtmf(self.legs[side], want)
            self.listening[side] = want

    def close(self) -> dict[str, dict]:
        """Tear both legs down; returns each side's media statistics for the call record."""
        stats = {side: self.leg_stats(side) for side in self.legs}
        if self.bridge is not None:
            self.engine.unbridge(self.bridge)
            self.bridge = None
        for leg in self.legs.values():
            self.engine.destroy_leg(leg)
        return stats

    # -- helpers -----------------------------------------------------------------------------------
    def _caps(self, side: str, codecs, direction: Direction, *, srtp: bool = False) -> Capabilities:
        protos = ("RTP/SAVP",) if srtp else ("RTP/AVP",)
        return Capabilities(self.legs[side].host, tuple(codecs), ptime=20, direction=direction, protos=protos)

    def _answered_crypto(self, side: str, media) -> None:
        """An RTP/SAVP answer to our `secured_offer` keys `side`'s leg; a plain one leaves it plain."""
        if media.proto.upper() != "RTP/SAVP":
            self.srtp.pop(side, None)
            return
        crypto = sdes.choose(list(media.attribute_values("crypto")))
        ours = self._our_masters.get(side)
        if crypto is None or ours is None or side not in self.secure:
            raise MediaRefused("an SRTP answer without a usable key (or to an offer we did not secure)")
        self.srtp[side] = (ours, crypto.master, crypto.tag_len)

    def _offered_crypto(self, side: str, media) -> sdes.Crypto | None:
        """The SRTP key of an RTP/SAVP offer (None for plain RTP); MediaRefused when we cannot take it."""
        if media.proto.upper() != "RTP/SAVP":
            return None
        if side not in self.secure:
            raise MediaRefused("SRTP offered over unencrypted signalling (SDES needs TLS)")
        if (why := srtp_available()) is not None:
            raise MediaRefused(f"SRTP is not available here: {why}")
        crypto = sdes.choose(list(media.attribute_values("crypto")))
        if crypto is None:
            raise MediaRefused("no SRTP crypto suite in common (AES_CM_128_HMAC_SHA1_80 or _32)")
        return crypto

    @staticmethod
    def _usable(offered) -> list[CodecSpec]:
        out: list[CodecSpec] = []
        for codec in offered:
            name = codec.name.upper()
            known = (name in CODECS or name.lower() == TELEPHONE_EVENT) and codec.clock_rate == 8000
            if known and all(o.name.upper() != name for o in out):
                out.append(CodecSpec(codec.name, 8000))
        return out
