"""RFC 3264 offer/answer on top of `sdp.py`: answer an offer, make an offer, hold and resume, and the
negotiated facts of one stream that the media engine consumes.

Why a module of its own: the B2BUA answers the caller's offer on the inbound leg, makes its own offer on
the outbound leg and re-negotiates on re-INVITEs; all of that is pure functions over SessionDescription
values plus one small mutable object, `OriginTracker`, that owns our o= line across a dialog.

Theory of operation (RFC 3264 section numbers):
- 6: the answer has exactly one m= line per offered m= line, in the same order. A stream we do not take
  (media type or transport we do not support, no codec in common, or already disabled by the offerer
  with port 0) is rejected with port 0; the m= grammar needs a format, so the first offered one is kept.
- 6.1: for RTP the answer lists a subset of the offered formats, in our order of preference, with the
  OFFERER's payload type numbers (dynamic ones included), matched on encoding name (case-insensitive),
  clock rate and, when we name them, channels. telephone-event (RFC 4733) rides along with the intersection
  of both event lists; a stream whose only common formats are telephone-event/CN is rejected. Directions
  mirror the offer (sendonly -> recvonly, recvonly -> sendonly, inactive -> inactive) narrowed by ours.
- 8: a re-offer keeps the o= username and sess-id and raises the version (`origin_change` classifies it)
  and is answered by the same rules. Our o= keeps its sess-id, and `OriginTracker.stamp` raises our
  version only when our description changed since the last one we sent.
- 8.4: hold is a direction change (sendrecv -> sendonly, recvonly -> inactive); a c=0.0.0.0 offer from an
  RFC 2543 peer is read as hold by `SessionDescription.effective_direction`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import Enum

import msgspec
from msgspec.structs import replace

from softswitch.sip.sdp import (
    DIRECTIONS,
    STATIC_PAYLOAD_TYPES,
    Attribute,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SessionDescription,
    direction_from_flags,
    written_fmtp,
)

TELEPHONE_EVENT = "telephone-event"
AUXILIARY_CODECS = frozenset({TELEPHONE_EVENT, "cn", "red", "ulpfec", "rtx"})  # lower case
DEFAULT_EVENTS = "0-16"  # DTMF 0-9 * # A-D and flash, what we offer by default
_RFC4733_DEFAULT_EVENTS = "0-15"  # what an fmtp-less telephone-event means (RFC 4733 section 2.4.1)
_CODEC_NAME = re.compile(r"[^ \t/\r\n]+")  # an rtpmap encoding name
_EVENT_RANGE = re.compile(r"([0-9]{1,3})(?:-([0-9]{1,3}))?")
DYNAMIC_PAYLOAD_TYPES = range(96, 128)


class CodecSpec(msgspec.Struct, frozen=True):
    """One of our codec preferences. `channels` None matches any; `fmtp` None keeps the offerer's
    parameters in answers; `payload_type` fixes the number we use in our own offers."""

    name: str
    clock_rate: int
    channels: int | None = None
    fmtp: str | None = None
    payload_type: int | None = None

    def matches(self, codec: Codec) -> bool:
        return (
            codec.name.lower() == self.name.lower()
            and codec.clock_rate == self.clock_rate
            and (self.channels is None or codec.channels == self.channels)
        )

    @property
    def is_auxiliary(self) -> bool:
        return self.name.lower() in AUXILIARY_CODECS


def codec_spec(value: CodecSpec | tuple[str, int] | tuple[str, int, int]) -> CodecSpec:
    """A CodecSpec from a CodecSpec or a ("PCMU", 8000) / ("opus", 48000, 2) tuple."""
    return value if isinstance(value, CodecSpec) else CodecSpec(*value)


class Capabilities(msgspec.Struct, frozen=True):
    """What we can do on a leg. `codecs` is ordered by preference and also accepts tuples (normalised
    to CodecSpec); `direction` is our own restriction (sendonly while we hold, for instance)."""

    address: str
    codecs: tuple[CodecSpec, ...]
    ptime: int | None = None
    direction: Direction = Direction.SENDRECV
    media_types: tuple[str, ...] = ("audio",)
    protos: tuple[str, ...] = ("RTP/AVP",)
    rtcp_mux: bool = False
    session_name: str = "softswitch"
    username: str = "-"

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "codecs", tuple(codec_spec(c) for c in self.codecs))
        msgspec.structs.force_setattr(self, "media_types", tuple(m.lower() for m in self.media_types))
        msgspec.structs.force_setattr(self, "protos", tuple(p.upper() for p in self.protos))
        if not any(not c.is_auxiliary for c in self.codecs):
            raise ValueError("capabilities need at least one media codec")
        for spec in self.codecs:  # what an rtpmap line can say (our own descriptions are never read back)
            bad_channels = spec.channels is not None and spec.channels < 1
            if not _CODEC_NAME.fullmatch(spec.name) or spec.clock_rate <= 0 or bad_channels:
                raise ValueError(f"codec {spec.name!r}/{spec.clock_rate}/{spec.channels} cannot be written as rtpmap")
            if spec.payload_type is not None and not 0 <= spec.payload_type <= 127:
                raise ValueError(f"codec {spec.name!r}: payload type {spec.payload_type} is not 0-127")

    def supports(self, media: MediaDescription) -> bool:
        return media.media.lower() in self.media_types and media.proto.upper() in self.protos


class OriginTracker:
    """Our o= line across one dialog: a fixed username and sess-id (chosen by the caller, this module has
    no randomness or clock), and a version raised only when what we send changes (RFC 3264 section 8)."""

    __slots__ = ("_last", "_origin", "address", "sess_id", "sess_version", "username")

    def __init__(self, sess_id: int, address: str, *, username: str = "-", sess_version: int = 0) -> None:
        self.sess_id = sess_id
        self.sess_version = sess_version
        self.address = address
        self.username = username
        self._last: SessionDescription | None = None
        self._origin: Origin | None = None  # the o= line of the current version (made once per version)

    @property
    def origin(self) -> Origin:
        cached = self._origin
        if cached is None or (cached.sess_version, cached.address, cached.sess_id, cached.username) != (
            self.sess_version,
            self.address,
            self.sess_id,
            self.username,
        ):
            connection = Connection.ip(self.address)
            cached = Origin(self.username, self.sess_id, self.sess_version, "IN", connection.addrtype, self.address)
            self._origin = cached
        return cached

    @property
    def last(self) -> SessionDescription | None:
        """The description most recently stamped (what the peer holds from us)."""
        return self._last

    def stamp(self, sdp: SessionDescription) -> SessionDescription:
        """`sdp` with our o= line; the version goes up when it differs from the last one stamped."""
        stamped = sdp.with_origin(self.origin)
        if self._last is not None and stamped != self._last:
            self.sess_version += 1
            stamped = sdp.with_origin(self.origin)
        self._last = stamped
        return stamped


class OriginChange(Enum):
    """How an offer's o= line relates to the previous one from the same peer (RFC 3264 section 8)."""

    NEW_SESSION = "new_session"  # first offer, or another username / sess-id
    UNCHANGED = "unchanged"  # same version: a session refresh, the description must be the same
    MODIFIED = "modified"  # higher version: a re-offer to negotiate again
    STALE = "stale"  # lower version: out of order or broken peer


def origin_change(previous: SessionDescription | None, current: SessionDescription) -> OriginChange:
    if previous is None:
        return OriginChange.NEW_SESSION
    old, new = previous.origin, current.origin
    if (old.username, old.sess_id) != (new.username, new.sess_id):
        return OriginChange.NEW_SESSION
    if new.sess_version == old.sess_version:
        return OriginChange.UNCHANGED
    return OriginChange.MODIFIED if new.sess_version > old.sess_version else OriginChange.STALE


def _placeholder_origin(caps: Capabilities) -> Origin:
    connection = Connection.ip(caps.address)
    return Origin(caps.username, 0, 0, "IN", connection.addrtype, caps.address)


def _events(fmtp: str) -> set[int] | None:
    """The event codes of a telephone-event fmtp ("0-15,66"), None when it is not such a list."""
    codes: set[int] = set()
    for part in fmtp.replace(" ", "").split(","):
        match = _EVENT_RANGE.fullmatch(part)
        if match is None:
            return None
        low = int(match[1])
        high = int(match[2]) if match[2] else low
        if high < low or high > 255:
            return None
        codes.update(range(low, high + 1))
    return codes


def _format_events(codes: set[int]) -> str:
    ordered = sorted(codes)
    parts, start = [], ordered[0]
    for previous, code in zip(ordered, [*ordered[1:], None], strict=True):
        if code != previous + 1:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = code
    return ",".join(parts)


def _answer_events(offered: str | None, ours: str | None) -> tuple[bool, str | None]:
    """(whether we share an event, the fmtp to answer telephone-event with)."""
    if ours is None:
        return True, offered
    theirs_set, ours_set = _events(offered or _RFC4733_DEFAULT_EVENTS), _events(ours)
    if theirs_set is None or ours_set is None:
        return True, offered
    common = theirs_set & ours_set
    if not common:
        return False, None
    return True, offered if common == theirs_set else _format_events(common)


def _select_codecs(offered: Sequence[Codec], caps: Capabilities) -> list[Codec]:
    """Offered codecs we take, in our preference order (telephone-event, CN... last), with the offered
    payload type numbers."""
    chosen: list[Codec] = []
    for spec in caps.codecs:
        taken = {c.payload_type for c in chosen}
        codec = next((c for c in offered if spec.matches(c) and c.payload_type not in taken), None)
        if codec is None:
            continue
        fmtp = codec.fmtp
        if spec.name.lower() == TELEPHONE_EVENT:
            shared, fmtp = _answer_events(codec.fmtp, spec.fmtp)
            if not shared:
                continue
        elif spec.fmtp is not None:
            fmtp = spec.fmtp
        chosen.append(msgspec.structs.replace(codec, fmtp=fmtp))
    return sorted(chosen, key=lambda c: c.name.lower() in AUXILIARY_CODECS)  # media codecs first


def _codec_attributes(codecs: Sequence[Codec], ptime: int | None) -> list[Attribute]:
    attributes: list[Attribute] = []
    for codec in codecs:
        attributes.append(Attribute("rtpmap", codec.rtpmap))
        if fmtp := written_fmtp(codec):
            attributes.append(Attribute("fmtp", f"{codec.payload_type} {fmtp}"))
    if ptime:
        attributes.append(Attribute("ptime", str(ptime)))
    return attributes


def _rejected(media: MediaDescription) -> MediaDescription:
    return MediaDescription(media.media, 0, media.proto, media.formats[:1] or ("0",))


def _answer_media(
    offer: SessionDescription, media: MediaDescription, caps: Capabilities, port: int
) -> MediaDescription:
    if media.is_rejected or not caps.supports(media):
        return _rejected(media)
    chosen = _select_codecs(media.codecs, caps)
    if all(c.name.lower() in AUXILIARY_CODECS for c in chosen):
        return _rejected(media)
    offered = offer.effective_direction(media)
    ours = caps.direction
    direction = direction_from_flags(offered.receives and ours.sends, offered.sends and ours.receives)
    attributes = _codec_attributes(chosen, caps.ptime)
    if caps.rtcp_mux and media.rtcp_mux:
        attributes.append(Attribute("rtcp-mux"))
    attributes.append(Attribute(direction.value))
    formats = tuple(str(c.payload_type) for c in chosen)
    return MediaDescription(media.media, port, media.proto, formats, attributes=tuple(attributes)).knowing_codecs(
        chosen
    )


def build_answer(offer: SessionDescription, caps: Capabilities, ports: Sequence[int]) -> SessionDescription:
    """The answer to `offer`: `ports[i]` is our RTP port for offered m= line i (ignored for streams we
    reject). The o= line is a placeholder: pass the result through `OriginTracker.stamp`. When every
    stream comes back rejected the caller should refuse the offer instead (488 Not Acceptable Here)."""
    if len(ports) < len(offer.media):
        raise ValueError(f"{len(offer.media)} media sections offered but {len(ports)} ports given")
    media = tuple(_answer_media(offer, m, caps, port) for m, port in zip(offer.media, ports, strict=False))
    return SessionDescription(
        origin=_placeholder_origin(caps),
        name=caps.session_name,
        connection=Connection.ip(caps.address),
        media=media,
    )


def _static_payload_type(spec: CodecSpec) -> int | None:
    if spec.channels not in (None, 1):
        return None
    for pt, (name, rate, channels) in STATIC_PAYLOAD_TYPES.items():
        if name.lower() == spec.name.lower() and rate == spec.clock_rate and channels == 1:
            return pt
    return None


def _offer_codecs(caps: Capabilities) -> list[Codec]:
    """Our codecs with payload types: the spec's own, else the static one, else the next free dynamic."""
    taken = {s.payload_type for s in caps.codecs if s.payload_type is not None}
    codecs: list[Codec] = []
    for spec in caps.codecs:
        pt = spec.payload_type
        if pt is None:
            pt = _static_payload_type(spec)
        if pt is None or pt in (c.payload_type for c in codecs):
            pt = next((p for p in DYNAMIC_PAYLOAD_TYPES if p not in taken), None)
            if pt is None:
                raise ValueError("more codecs than dynamic payload types")
        taken.add(pt)
        fmtp = spec.fmtp
        if fmtp is None and spec.name.lower() == TELEPHONE_EVENT:
            fmtp = DEFAULT_EVENTS
        codecs.append(Codec(pt, spec.name, spec.clock_rate, spec.channels or 1, fmtp))
    return codecs


def build_offer(caps: Capabilities, port: int, *, media: str | None = None) -> SessionDescription:
    """An offer with one m= line (the first of `caps.media_types` unless named) on `port`, offering
    `caps.codecs` in order. The o= line is a placeholder: pass the result through `OriginTracker.stamp`."""
    codecs = _offer_codecs(caps)
    attributes = _codec_attributes(codecs, caps.ptime)
    if caps.rtcp_mux:
        attributes.append(Attribute("rtcp-mux"))
    attributes.append(Attribute(caps.direction.value))
    section = MediaDescription(
        media or caps.media_types[0],
        port,
        caps.protos[0],
        tuple(str(c.payload_type) for c in codecs),
        attributes=tuple(attributes),
    ).knowing_codecs(codecs)
    return SessionDescription(
        origin=_placeholder_origin(caps),
        name=caps.session_name,
        connection=Connection.ip(caps.address),
        media=(section,),
    )


def _redirect(sdp: SessionDescription, media: tuple[MediaDescription, ...]) -> SessionDescription:
    """`sdp` with new media sections and no session-level direction (each section carries its own)."""
    attributes = tuple(a for a in sdp.attributes if a.value is not None or a.name not in DIRECTIONS)
    return replace(sdp, attributes=attributes, media=media)


def set_direction(sdp: SessionDescription, direction: Direction) -> SessionDescription:
    """Every active stream with `direction` written on its m= section (session-level ones dropped)."""
    return _redirect(sdp, tuple(m if m.is_rejected else m.with_direction(direction) for m in sdp.media))


def hold(sdp: SessionDescription) -> SessionDescription:
    """Our description put on hold (RFC 3264 8.4): each active stream stops receiving, so sendrecv
    becomes sendonly and recvonly becomes inactive. Stamp it and send it as a re-offer."""
    media = tuple(
        m if m.is_rejected else m.with_direction(direction_from_flags(sdp.effective_direction(m).sends, False))
        for m in sdp.media
    )
    return _redirect(sdp, media)


def resume(sdp: SessionDescription, direction: Direction = Direction.SENDRECV) -> SessionDescription:
    """Our description taken off hold: every active stream back to `direction` (sendrecv)."""
    return set_direction(sdp, direction)


class NegotiatedMedia(msgspec.Struct, frozen=True):
    """What the media engine needs for one stream, from our point of view once offer and answer met.

    `payload_type` and `codec` are what we send (the peer's number for the first codec of the answer
    that both sides listed), `telephone_event` the peer's RFC 4733 payload type at that codec's clock
    rate, `remote_rtp`/`remote_rtcp` where we send, `direction` whether we send and/or receive.
    """

    index: int
    media: str
    payload_type: int
    codec: Codec
    telephone_event: int | None
    remote_rtp: tuple[str, int]
    remote_rtcp: tuple[str, int]
    rtcp_mux: bool
    ptime: int
    direction: Direction


def _codec_key(codec: Codec) -> tuple[str, int, int]:
    return codec.name.lower(), codec.clock_rate, codec.channels


def negotiate(
    offer: SessionDescription,
    answer: SessionDescription,
    index: int = 0,
    *,
    we_offered: bool,
    default_ptime: int = 20,
) -> NegotiatedMedia | None:
    """The negotiated stream `index`, or None when it is rejected, has no common codec or no address."""
    if index >= len(offer.media) or index >= len(answer.media):
        return None
    offered, answered = offer.media[index], answer.media[index]
    if offered.is_rejected or answered.is_rejected:
        return None
    local_sdp, local, remote_sdp, remote = (
        (offer, offered, answer, answered) if we_offered else (answer, answered, offer, offered)
    )
    offered_keys = {_codec_key(c) for c in offered.codecs}
    remote_codecs: dict[tuple[str, int, int], Codec] = {}
    for codec in remote.codecs:  # the peer's first payload type for each codec
        remote_codecs.setdefault(_codec_key(codec), codec)
    common = [c for c in answered.codecs if _codec_key(c) in offered_keys and _codec_key(c) in remote_codecs]
    chosen = next((c for c in common if c.name.lower() not in AUXILIARY_CODECS), None)
    remote_rtp = remote_sdp.rtp_address(remote)
    if chosen is None or remote_rtp is None:
        return None
    send = remote_codecs[_codec_key(chosen)]
    events = [c for c in common if c.name.lower() == TELEPHONE_EVENT]
    event = next((c for c in events if c.clock_rate == send.clock_rate), events[0] if events else None)
    mux = local.rtcp_mux and remote.rtcp_mux
    remote_rtcp = remote_sdp.rtcp_address(remote) if remote.rtcp or mux else (remote_rtp[0], remote_rtp[1] + 1)
    ours, theirs = local_sdp.effective_direction(local), remote_sdp.effective_direction(remote)
    return NegotiatedMedia(
        index=index,
        media=remote.media,
        payload_type=send.payload_type,
        codec=send,
        telephone_event=None if event is None else remote_codecs[_codec_key(event)].payload_type,
        remote_rtp=remote_rtp,
        remote_rtcp=remote_rtcp or remote_rtp,
        rtcp_mux=mux,
        ptime=remote.ptime or local.ptime or default_ptime,
        direction=direction_from_flags(ours.sends and theirs.receives, ours.receives and theirs.sends),
    )
