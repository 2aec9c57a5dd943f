"""The media engine over real UDP sockets on loopback: relay, rewriting, latching, statistics, ports."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import time

import pytest
from helpers import HOST, far_end, header, rtp, wait_for

from media.engine import MediaEngine, PortPool
from media.quality import mos, r_factor


@pytest.fixture
def engine():
    eng = MediaEngine((24000, 24999), HOST)
    yield eng
    eng.close()


@pytest.fixture
def call(engine):
    """Two legs bridged in relay mode, with a far-end socket for each."""
    a, b = engine.create_leg(), engine.create_leg()
    fa, fb = far_end(), far_end()
    engine.set_remote(a, HOST, fa.getsockname()[1])
    engine.set_remote(b, HOST, fb.getsockname()[1])
    engine.bridge(a, b)
    yield engine, a, b, fa, fb
    fa.close()
    fb.close()


def test_engine_relays_both_ways_with_our_ssrc(call):
    engine, a, b, fa, fb = call
    for i in range(10):
        fa.sendto(rtp(1000 + i, 5000 + 160 * i, 0xAAAA), (HOST, a.port))
        got = header(fb.recv(2048))
        assert (got["seq"], got["ts"]) == (1000 + i, 5000 + 160 * i)
        fb.sendto(rtp(7 + i, 99 + 160 * i, 0xBBBB, pt=8), (HOST, b.port))
        back = header(fa.recv(2048))
        assert (back["seq"], back["ts"], back["pt"]) == (7 + i, 99 + 160 * i, 8)
    # the far end can read a packet before the media thread has counted its send: wait for the count
    wait_for(lambda: engine.stats(a).tx_packets == 10)
    sa, sb = engine.stats(a), engine.stats(b)
    assert sa.rx_packets == 10 and sa.tx_packets == 10 and sa.lost == 0 and sa.expected == 10
    assert sb.rx_packets == 10 and sb.tx_packets == 10 and sb.rx_bytes == 10 * 172


def test_engine_relays_a_burst_whole_in_order_each_payload_its_own(call):
    """Packets queued on a leg's socket are read several to a system call (up to 32, the rest on the next
    wake-up): bursts of 80 arrive whole, in order, and no packet carries another one's payload. (80 packets
    fit the leg socket's default receive buffer, which holds about 250 of them.)"""
    engine, a, b, fa, fb = call
    for burst in range(0, 400, 80):
        for i in range(burst, burst + 80):
            fa.sendto(rtp(i, 160 * i, 0xC0DE, payload=bytes([i % 251]) * (20 + i % 140)), (HOST, a.port))
        for i in range(burst, burst + 80):
            got = fb.recv(2048)
            assert header(got)["seq"] == i and got[12:] == bytes([i % 251]) * (20 + i % 140)
    assert wait_for(lambda: engine.stats(a).rx_packets == 400)


def test_engine_rewrites_ssrc_consistently_and_payload_untouched(call):
    engine, a, b, fa, fb = call
    payload = bytes(range(160))
    fa.sendto(rtp(1, 160, 0x1234, payload=payload), (HOST, a.port))
    first = fb.recv(2048)
    fa.sendto(rtp(2, 320, 0x1234, payload=payload), (HOST, a.port))
    second = fb.recv(2048)
    assert header(first)["ssrc"] == header(second)["ssrc"] != 0x1234
    assert first[12:] == second[12:] == payload


def test_engine_source_change_continues_sequence_and_time(call):
    engine, a, b, fa, fb = call
    for i in range(5):
        fa.sendto(rtp(100 + i, 8000 + 160 * i, 0xA1), (HOST, a.port))
        last = header(fb.recv(2048))
    time.sleep(0.06)
    fa.sendto(rtp(40000, 123456, 0xA2), (HOST, a.port))  # a new source after a re-INVITE, say
    new = header(fb.recv(2048))
    assert new["ssrc"] == last["ssrc"]
    assert new["seq"] == (last["seq"] + 1) & 0xFFFF
    assert new["marker"]
    gap = (new["ts"] - last["ts"]) & 0xFFFFFFFF
    assert 400 <= gap <= 1600  # about 60 ms of 8 kHz time, not a jump to the new source's clock
    fa.sendto(rtp(40001, 123616, 0xA2), (HOST, a.port))
    after = header(fb.recv(2048))
    assert after["seq"] == (new["seq"] + 1) & 0xFFFF and after["ts"] == (new["ts"] + 160) & 0xFFFFFFFF
    assert not after["marker"]
    assert wait_for(lambda: engine.stats(a).ssrc_changes == 1)
    assert any(e.kind == "ssrc_changed" for e in engine.events())


def test_engine_latches_to_the_real_source(engine):
    a, b = engine.create_leg(), engine.create_leg()
    fa, fb = far_end(), far_end()
    wrong = far_end()  # the SDP said this address; the phone actually sends from fa (a NAT, say)
    engine.set_remote(a, HOST, wrong.getsockname()[1])
    engine.set_remote(b, HOST, fb.getsockname()[1])
    engine.bridge(a, b)
    fa.sendto(rtp(1, 160, 0xCAFE), (HOST, a.port))
    fb.recv(2048)
    fb.sendto(rtp(1, 160, 0xBEEF), (HOST, b.port))
    assert header(fa.recv(2048))["seq"] == 1  # went to the latched address, not to the SDP one
    wrong.settimeout(0.2)
    with pytest.raises(TimeoutError):
        wrong.recv(2048)
    events = wait_for(engine.events)
    latched = [e for e in events if e.kind == "latched" and e.leg == a.id]
    assert latched and latched[0].remote == fa.getsockname()
    for s in (fa, fb, wrong):
        s.close()


def test_engine_ignores_other_sources_unless_a_new_stream_proves_itself(call):
    engine, a, b, fa, fb = call
    intruder = far_end()
    fa.sendto(rtp(10, 1600, 0x11), (HOST, a.port))
    fb.recv(2048)
    intruder.sendto(rtp(11, 1760, 0x11), (HOST, a.port))  # same SSRC, other address: ignored
    intruder.sendto(rtp(500, 1, 0x22), (HOST, a.port))  # a new SSRC: one packet is not enough
    fb.settimeout(0.2)
    with pytest.raises(TimeoutError):
        fb.recv(2048)
    assert wait_for(lambda: engine.stats(a).rx_foreign == 2)
    intruder.sendto(rtp(501, 161, 0x22), (HOST, a.port))  # second in sequence: it takes over
    fb.settimeout(2)
    assert header(fb.recv(2048))["seq"] == 11  # continues our stream: 10 then 11
    fb.sendto(rtp(1, 160, 0x33), (HOST, b.port))
    intruder.settimeout(2)
    assert header(intruder.recv(2048))["seq"] == 1  # replies now go to the new source
    assert any(e.kind == "relatched" for e in wait_for(engine.events))
    intruder.close()


def test_engine_loss_and_reordering_statistics(call):
    engine, a, b, fa, fb = call
    order = [1, 2, 3, 5, 4, 6, 9, 10, 10, 11, 15]  # 7, 8, 12, 13, 14 lost; 4 late; 10 duplicated
    for seq in order:
        fa.sendto(rtp(seq, seq * 160, 0x77), (HOST, a.port))
    stats = wait_for(lambda: (s := engine.stats(a)).rx_packets == len(order) and s)
    assert stats.expected == 15 and stats.rx_duplicates == 1 and stats.lost == 5
    assert stats.loss_pct == pytest.approx(100 * 5 / 15)


def test_engine_sequence_wrap_counts_cycles(call):
    engine, a, b, fa, fb = call
    for seq in [65533, 65534, 65535, 0, 1, 3]:
        fa.sendto(rtp(seq, seq * 160, 0x78), (HOST, a.port))
    stats = wait_for(lambda: (s := engine.stats(a)).rx_packets == 6 and s)
    assert stats.expected == 7 and stats.lost == 1


def test_engine_jitter_follows_arrival_irregularity(call):
    engine, a, b, fa, fb = call
    start = time.monotonic()
    for i in range(15):  # timestamps say 20 ms apart; arrivals alternate 0 and 40 ms
        target = start + (i // 2) * 0.040
        time.sleep(max(0.0, target - time.monotonic()))
        fa.sendto(rtp(i, i * 160, 0x79), (HOST, a.port))
    stats = wait_for(lambda: (s := engine.stats(a)).rx_packets == 15 and s)
    assert 5.0 < stats.jitter_ms < 25.0


def test_engine_counts_invalid_packets(call):
    engine, a, b, fa, fb = call
    fa.sendto(b"not rtp at all", (HOST, a.port))
    fa.sendto(rtp(1, 160, 0x80), (HOST, a.port))
    fb.recv(2048)
    assert wait_for(lambda: engine.stats(a).rx_invalid == 1)


def receiver_report(ssrc: int, about: int, fraction: int, cum_lost: int, lsr: int = 0, dlsr: int = 0) -> bytes:
    block = struct.pack("!IB3sIIII", about, fraction, cum_lost.to_bytes(3, "big"), 0, 0, lsr, dlsr)
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + block


def test_engine_rtcp_mux_is_terminated_and_read(call):
    engine, a, b, fa, fb = call
    fb.sendto(rtp(1, 160, 0x90), (HOST, b.port))
    ours = header(fa.recv(2048))["ssrc"]  # the SSRC we send to A's far end
    fa.sendto(receiver_report(0x80, ours, fraction=64, cum_lost=3), (HOST, a.port))
    stats = wait_for(lambda: (s := engine.stats(a)).rtcp_rx == 1 and s)
    assert stats.remote_loss_pct == 25.0
    fb.settimeout(0.2)
    with pytest.raises(TimeoutError):  # reports are per leg: not relayed to the other side
        fb.recv(2048)


def test_engine_sends_sender_reports_and_measures_round_trip(call):
    engine, a, b, fa, fb = call
    fa_rtcp = far_end()
    for i in range(20):  # both directions talk, with 2 of A's packets lost
        if i not in (5, 6):
            fa.sendto(rtp(i, 160 * i, 0xA0), (HOST, a.port))
        fb.sendto(rtp(i, 160 * i, 0xB0), (HOST, b.port))
    ours = header(fa.recv(2048))["ssrc"]
    fa_rtcp.sendto(receiver_report(0xA0, ours, 0, 0), (HOST, a.port + 1))  # latches A's RTCP address
    fa_rtcp.settimeout(8)
    report = fa_rtcp.recv(2048)  # our first report within about 5 s
    version_count, pt, length, ssrc = struct.unpack("!BBHI", report[:8])
    assert pt == 200 and ssrc == ours and version_count & 0x1F == 1
    ntp_hi, ntp_lo, _rtp_ts, packets, octets = struct.unpack("!IIIII", report[8:28])
    assert packets == 20 and octets == 20 * 160
    about, fraction, cum, highest, _jitter, _lsr, _dlsr = struct.unpack("!IB3sIIII", report[28:52])
    assert about == 0xA0 and int.from_bytes(cum, "big") == 2 and highest == 19
    assert report[4 * (length + 1) + 1] == 202  # an SDES (CNAME) follows in the compound packet
    lsr = ((ntp_hi & 0xFFFF) << 16) | (ntp_lo >> 16)
    time.sleep(0.1)
    fa_rtcp.sendto(receiver_report(0xA0, ours, 0, 0, lsr=lsr, dlsr=int(0.1 * 65536)), (HOST, a.port + 1))
    stats = wait_for(lambda: (s := engine.stats(a)).rtt_ms is not None and s)
    assert 0 <= stats.rtt_ms < 100
    fa_rtcp.close()


def test_engine_leg_closed_event_carries_final_stats(call):
    engine, a, b, fa, fb = call
    for i in range(3):
        fa.sendto(rtp(i, i * 160, 0x81), (HOST, a.port))
        fb.recv(2048)
    engine.events()
    engine.destroy_leg(a)
    closed = wait_for(lambda: [e for e in engine.events() if e.kind == "leg_closed"])
    assert closed[0].leg == a.id and closed[0].stats.rx_packets == 3
    fb.sendto(rtp(1, 160, 0x82), (HOST, b.port))  # the peer is gone: nothing is forwarded
    fa.settimeout(0.2)
    with pytest.raises(TimeoutError):
        fa.recv(2048)


@pytest.mark.parametrize("host", ["::1", "::1%lo", f"::1%{socket.if_nametoindex('lo')}"])
def test_engine_ipv6_legs(host: str):
    """IPv6 legs; a listen address may carry its zone (`fe80::1%eth0`, needed for a link-local one), by
    interface name or number: it becomes the sockets' scope id."""
    eng = MediaEngine((25000, 25099), host)
    try:
        a, b = eng.create_leg(), eng.create_leg()
        fa, fb = far_end("::1"), far_end("::1")
        eng.set_remote(a, "::1", fa.getsockname()[1])
        eng.set_remote(b, "::1", fb.getsockname()[1])
        eng.bridge(a, b)
        fa.sendto(rtp(5, 800, 0x66), ("::1", a.port))
        assert header(fb.recv(2048))["seq"] == 5
        fb.sendto(rtp(9, 800, 0x67), ("::1", b.port))
        assert header(fa.recv(2048))["seq"] == 9
        fa.close()
        fb.close()
    finally:
        eng.close()


def test_engine_ipv6_zone_of_no_interface_is_an_oserror_and_no_leg():
    eng = MediaEngine((25100, 25199), "fe80::1%nosuchif0")
    try:
        with pytest.raises(OSError):
            eng.create_leg()
        assert eng.leg_count == 0
    finally:
        eng.close()


def test_engine_create_leg_after_close_raises_and_keeps_no_descriptor():
    """Once the media thread has stopped nothing would adopt a new leg's sockets: create_leg says so and
    closes them (they used to stay open for the life of the process)."""
    eng = MediaEngine((25200, 25299), HOST)
    eng.close()
    before = fd_count()
    with pytest.raises(RuntimeError, match="stopped"):
        eng.create_leg()
    assert fd_count() == before


def test_engine_events_reach_asyncio(call):
    engine, a, b, fa, fb = call

    async def main():
        loop = asyncio.get_running_loop()
        got: asyncio.Queue = asyncio.Queue()
        engine.attach(loop, lambda batch: [got.put_nowait(e) for e in batch])
        await loop.run_in_executor(None, lambda: fa.sendto(rtp(1, 160, 0x90), (HOST, a.port)))
        event = await asyncio.wait_for(got.get(), 2)
        assert event.kind == "latched" and event.leg == a.id

    asyncio.run(main())
    engine._loop = None  # the loop is gone; close() must not touch it


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_engine_no_leak_after_100000_create_destroy_cycles():
    eng = MediaEngine((26000, 26199), HOST)
    try:
        free_before, fds_before = len(eng.ports), fd_count()
        for i in range(100_000):
            eng.destroy_leg(eng.create_leg())
            if i % 1000 == 0:
                eng.events()  # as the asyncio reader would
        wait_for(lambda: (eng.events() or True) and len(eng.ports) == free_before)
        assert eng.leg_count == 0
        assert fd_count() <= fds_before + 2
        legs = [eng.create_leg() for _ in range(50)]  # ports are reusable afterwards
        assert len({leg.port for leg in legs}) == 50
    finally:
        eng.close()


def test_engine_port_pool_even_ports_and_exhaustion():
    pool = PortPool(27001, 27010)
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held.bind((HOST, 27005))  # another process's: the pair 27004/27005 is skipped, and stays in the pool
    pairs = []

    def bind(port: int) -> None:
        rtp_sock, rtcp_sock = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
        pairs.extend((rtp_sock, rtcp_sock))
        rtp_sock.bind((HOST, port))
        rtcp_sock.bind((HOST, port + 1))

    try:
        ports = [pool.claim(bind) for _ in range(len(pool) - 1)]
        assert ports == [27002, 27006, 27008]
        with pytest.raises(OSError, match="no free RTP port"):
            pool.claim(bind)
        assert len(pool) == 1  # 27004, tried and put back
    finally:
        held.close()
        for sock in pairs:
            sock.close()


@pytest.mark.parametrize("error", [OSError(errno.EMFILE, "Too many open files"), RuntimeError("queue full")])
def test_engine_port_pool_raises_other_errors_at_once_and_keeps_the_port(error: Exception):
    """Only a port in use is passed over: out of descriptors (say) would fail on every port, so it is raised
    at the first, and no failure loses the port it was trying from the pool."""
    pool = PortPool(27100, 27106)
    tried = []

    def bind(port: int) -> None:
        tried.append(port)
        raise error

    with pytest.raises(type(error)):
        pool.claim(bind)
    assert tried == [27100] and len(pool) == 3
    assert pool.claim(lambda port: None) == 27100  # put back first: it was never really tried


def test_engine_leg_sockets_are_the_engines_own_and_a_taken_port_is_skipped():
    """The engine binds a leg's RTP and RTCP ports itself and the media thread owns the sockets: a pair another
    socket holds is passed over, and the process keeps no descriptor of a destroyed leg."""
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held.bind((HOST, 27201))  # the RTCP port of the first pair
    eng = MediaEngine(rtp_ports=(27200, 27210), host=HOST)
    try:
        fds_before = fd_count()
        leg = eng.create_leg()
        assert leg.port == 27202 and fd_count() == fds_before + 2
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(OSError):
            probe.bind((HOST, leg.port + 1))  # RTCP bound too
        probe.close()
        eng.destroy_leg(leg)
        assert wait_for(lambda: (eng.events() or True) and fd_count() == fds_before)
    finally:
        held.close()
        eng.close()


def test_engine_cpu_time_is_reported(call):
    engine, a, b, fa, fb = call
    before = engine.cpu_seconds()
    for i in range(200):
        fa.sendto(rtp(i, i * 160, 0x91), (HOST, a.port))
        fb.recv(2048)
    assert wait_for(lambda: engine.cpu_seconds() > before)


def test_quality_e_model_reference_points():
    assert r_factor(0, 0) == pytest.approx(93.2)
    assert mos(93.2) == pytest.approx(4.41, abs=0.01)
    assert mos(r_factor(5, 40)) < mos(r_factor(1, 40)) < mos(r_factor(0, 40))
    assert mos(r_factor(0, 300)) < mos(r_factor(0, 100))
    assert mos(0) == 1.0 and mos(100) == 4.5


def test_engine_srtp_leg_relayed_to_a_plain_one(call):
    """Leg a speaks SRTP (its far end holds the keys), leg b plain RTP: the engine unprotects what a's far
    end sends before relaying it, protects what it sends a's far end, and drops what does not authenticate."""
    from cext.srtp import Srtp

    engine, a, b, fa, fb = call
    theirs, ours = os.urandom(30), os.urandom(30)
    engine.set_srtp(a, ours, theirs)
    far_tx, far_rx = Srtp(theirs), Srtp(ours)  # the SRTP far end's two directions
    time.sleep(0.05)  # the command reaches the media thread before the first packet
    payload = bytes(range(160))
    for i in range(5):
        fa.sendto(far_tx.protect(rtp(100 + i, 160 * i, 0xA1, payload=payload)), (HOST, a.port))
        plain = fb.recv(2048)
        assert len(plain) == 172 and plain[12:] == payload
        fb.sendto(rtp(7 + i, 160 * i, 0xB1, payload=payload[::-1]), (HOST, b.port))
        secured = fa.recv(2048)
        assert len(secured) == 182 and secured[12:172] != payload[::-1]  # encrypted, with a 10-byte tag
        assert far_rx.unprotect(secured)[12:] == payload[::-1]
    forged = bytearray(far_tx.protect(rtp(105, 800, 0xA1, payload=payload)))
    forged[30] ^= 1
    fa.sendto(bytes(forged), (HOST, a.port))
    fa.sendto(rtp(106, 960, 0xA1, payload=payload), (HOST, a.port))  # plain RTP on an SRTP leg
    wait_for(lambda: engine.stats(a).rx_invalid == 2)
    fb.settimeout(0.2)
    with pytest.raises(TimeoutError):
        fb.recv(2048)  # neither reached the other side
    assert engine.stats(a).rx_packets == 5


def test_engine_deferred_commands_wake_the_media_thread_once_per_release(engine):
    """Attached to an event loop, the commands a callback pushes owe one wake-up, paid by `release()`
    when the callback returns: `owed` is called for the first command after each release only, and what
    was pushed runs once released."""
    owed = []
    engine._engine.defer_wakes(lambda: owed.append(1))
    try:
        a, b = engine.create_leg(), engine.create_leg()
        fa, fb = far_end(), far_end()
        engine.set_remote(a, HOST, fa.getsockname()[1])
        engine.set_remote(b, HOST, fb.getsockname()[1])
        engine.bridge(a, b)
        assert owed == [1]
        engine._engine.release()
        wait_for(lambda: engine._engine.leg_stats(b.id) is not None)
        fa.sendto(rtp(1, 160, 0xDEFE), (HOST, a.port))
        assert header(fb.recv(2048))["seq"] == 1
        engine.destroy_leg(a)
        engine.destroy_leg(b)
        assert owed == [1, 1]
    finally:
        engine._engine.defer_wakes(None)  # releases what the destroys owe
        fa.close()
        fb.close()
    wait_for(lambda: engine._engine.leg_stats(a.id) is None and engine._engine.leg_stats(b.id) is None)


async def test_engine_attached_to_a_loop_relays_what_a_callback_set_up():
    eng = MediaEngine((24000, 24999), HOST)
    eng.attach(asyncio.get_running_loop(), lambda events: None)
    fa, fb = far_end(), far_end()
    try:
        a, b = eng.create_leg(), eng.create_leg()
        eng.set_remote(a, HOST, fa.getsockname()[1])
        eng.set_remote(b, HOST, fb.getsockname()[1])
        eng.bridge(a, b)
        await asyncio.sleep(0)  # the callback returns: the media thread is woken once for all of it
        fa.sendto(rtp(7, 160, 0xA77A), (HOST, a.port))
        got = await asyncio.get_running_loop().run_in_executor(None, fb.recv, 2048)
        assert header(got)["seq"] == 7
    finally:
        fa.close()
        fb.close()
        eng.close()
