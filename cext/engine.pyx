# cython: language_level=3
"""Binding of the C media loop (native/engine.c): commands in, events and counters out.

Python never touches a packet: it adds sockets (the engine takes a duplicate of the descriptor and
closes it when the leg is deleted), sets remote addresses, bridges legs, and reads events in batches.
"""

import os
import socket

from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from libc.errno cimport errno
from posix.unistd cimport close


cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    cdef struct sockaddr_storage:
        sa_family_t ss_family
    cdef struct sockaddr:
        sa_family_t sa_family
    int c_socket "socket"(int domain, int type, int protocol)
    int c_bind "bind"(int fd, const sockaddr* addr, socklen_t addr_len)
    enum:
        SOCK_DGRAM
        SOCK_NONBLOCK
        SOCK_CLOEXEC


cdef extern from "<netinet/in.h>":
    cdef struct in_addr:
        unsigned int s_addr
    cdef struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr
    cdef struct in6_addr:
        unsigned char s6_addr[16]
    cdef struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short htons(unsigned short)
    unsigned short ntohs(unsigned short)


cdef extern from "native/engine.h" nogil:
    enum:
        CMD_LEG_ADD, CMD_LEG_DEL, CMD_LEG_REMOTE, CMD_LEG_CODEC, CMD_JOIN, CMD_LEAVE, CMD_GROUP_MODE, CMD_GAIN
        CMD_REC_START, CMD_REC_STOP, CMD_REC_PAUSE, CMD_PLAY, CMD_PLAY_STOP, CMD_DTMF, CMD_INBAND, CMD_AMD
        CMD_STREAM_TAP, CMD_STREAM_PLAY, CMD_STREAM_PUSH, CMD_STREAM_MARK, CMD_STREAM_CLEAR, CMD_SRTP
        EV_LATCHED, EV_RELATCHED, EV_LEG_CLOSED, EV_SSRC_CHANGED, EV_DTMF, EV_REC_DONE, EV_PLAY_DONE, EV_DTMF_SENT
        EV_DTMF_INBAND, EV_AMD, EV_STREAM_MARK
    ctypedef struct eng_cmd_t:
        int type
        int leg
        int other
        int flags
        double value
        const void *ptr
        long long len
        sockaddr_storage addr
        socklen_t addr_len
    ctypedef struct eng_stats_t:
        unsigned long long rx_packets, rx_bytes, tx_packets, tx_bytes
        unsigned long long rx_invalid, rx_foreign, rx_duplicates, tx_errors
        unsigned long long expected, dtmf_events
        long long lost
        unsigned long long jb_concealed, jb_late, jb_skipped
        unsigned int rx_ssrc, jitter_ts, ssrc_changes, latches, jb_target_frames, processed
        unsigned long long rtcp_rx, rtcp_tx
        long long rtcp_cum_lost
        unsigned int rtcp_fraction_lost, rtcp_jitter_ts, rtt_us
        unsigned short last_seq
        unsigned char last_pt, latched
    ctypedef struct eng_event_t:
        int type
        int leg
        long long v[4]
        sockaddr_storage addr
        socklen_t addr_len
        eng_stats_t stats
    ctypedef struct eng_frame_t:
        int leg, track, len
        long long ns
        unsigned char ulaw[320]
    ctypedef struct engine_t:
        pass
    engine_t *eng_new(int max_legs, int cmd_capacity, int event_capacity)
    int eng_start(engine_t *e)
    void eng_stop(engine_t *e)
    void eng_free(engine_t *e)
    int eng_event_fd(engine_t *e)
    int eng_push(engine_t *e, const eng_cmd_t *cmd)
    void eng_defer(engine_t *e, int on)
    void eng_release(engine_t *e)
    int eng_pop_events(engine_t *e, eng_event_t *out, int max)
    int eng_leg_stats(engine_t *e, int leg, eng_stats_t *out)
    double eng_cpu_seconds(engine_t *e)
    unsigned long long eng_dropped_events(engine_t *e)
    unsigned long long eng_late_ticks(engine_t *e)
    int eng_pop_frames(engine_t *e, eng_frame_t *out, int max)
    unsigned long long eng_dropped_frames(engine_t *e)


EVENT_NAMES = {EV_LATCHED: "latched", EV_RELATCHED: "relatched", EV_LEG_CLOSED: "leg_closed",
               EV_SSRC_CHANGED: "ssrc_changed", EV_DTMF: "dtmf", EV_REC_DONE: "recording_done",
               EV_PLAY_DONE: "play_done", EV_DTMF_SENT: "dtmf_sent", EV_DTMF_INBAND: "dtmf_inband",
               EV_AMD: "amd", EV_STREAM_MARK: "stream_mark"}


cdef object _address(const sockaddr_storage* addr):
    cdef const sockaddr_in* v4
    cdef const sockaddr_in6* v6
    if addr.ss_family == socket.AF_INET:
        v4 = <const sockaddr_in*>addr
        return (socket.inet_ntop(socket.AF_INET, (<const char*>&v4.sin_addr)[:4]), ntohs(v4.sin_port))
    if addr.ss_family == socket.AF_INET6:
        v6 = <const sockaddr_in6*>addr
        return (socket.inet_ntop(socket.AF_INET6, (<const char*>&v6.sin6_addr)[:16]), ntohs(v6.sin6_port))
    return None


cdef dict _stats(const eng_stats_t* s):
    return {
        "rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes, "tx_packets": s.tx_packets, "tx_bytes": s.tx_bytes,
        "rx_invalid": s.rx_invalid, "rx_foreign": s.rx_foreign, "rx_duplicates": s.rx_duplicates,
        "tx_errors": s.tx_errors, "expected": s.expected, "lost": s.lost, "rx_ssrc": s.rx_ssrc,
        "jitter_ts": s.jitter_ts, "ssrc_changes": s.ssrc_changes, "latches": s.latches,
        "last_seq": s.last_seq, "last_pt": s.last_pt, "latched": bool(s.latched),
        "dtmf_events": s.dtmf_events, "jb_concealed": s.jb_concealed, "jb_late": s.jb_late,
        "jb_skipped": s.jb_skipped, "jb_target_frames": s.jb_target_frames, "processed": bool(s.processed),
        "rtcp_rx": s.rtcp_rx, "rtcp_tx": s.rtcp_tx, "rtcp_cum_lost": s.rtcp_cum_lost,
        "rtcp_fraction_lost": s.rtcp_fraction_lost, "rtcp_jitter_ts": s.rtcp_jitter_ts, "rtt_us": s.rtt_us,
    }


include "amd_params.pxi"


cdef extern from "native/wav.h" nogil:
    ctypedef struct wav_writer_t:
        pass
    int wav_close(wav_writer_t *w, uint64_t *frames_written, uint64_t *frames_dropped)
    wav_writer_t *wav_open(const char *path, int channels, int sample_rate, int *err)


def open_recording(bytes path, int channels):
    """Create the WAV file and its recorder (this touches the disk, so not on the media thread)."""
    cdef int err = 0
    cdef wav_writer_t* w
    cdef const char* c_path = path
    with nogil:
        w = wav_open(c_path, channels, 8000, &err)
    if w == NULL:
        raise OSError(err, f"cannot record to {path.decode(errors='replace')}: {os.strerror(err)}")
    return <long long><size_t>w


def close_recording(long long writer):
    """Flush, finish and close a recorder the media thread handed over: (errno or 0, frames, dropped).
    Blocks on the disk (with the GIL released): call it from a worker thread."""
    cdef uint64_t written = 0, dropped = 0
    cdef int rc
    if writer == 0:
        return (0, 0, 0)
    with nogil:
        rc = wav_close(<wav_writer_t*><size_t>writer, &written, &dropped)
    return (-rc, written, dropped)


cdef socklen_t _pack(str host, int port, sockaddr_storage* out) except 0:
    """`host` (an IPv4 or IPv6 literal, a link-local one with its zone: `fe80::1%eth0` or `fe80::1%2`) and
    `port` as a socket address in `out`; returns its length. OSError for an unknown zone."""
    cdef sockaddr_in* v4
    cdef sockaddr_in6* v6
    cdef bytes packed
    cdef unsigned int scope = 0
    if ":" in host:
        if "%" in host:
            host, zone = host.split("%", 1)
            scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
        packed = socket.inet_pton(socket.AF_INET6, host)
        v6 = <sockaddr_in6*>out
        v6.sin6_family = socket.AF_INET6
        v6.sin6_port = htons(port)
        memcpy(&v6.sin6_addr, <const char*>packed, 16)
        v6.sin6_scope_id = scope
        return sizeof(sockaddr_in6)
    packed = socket.inet_pton(socket.AF_INET, host)
    v4 = <sockaddr_in*>out
    v4.sin_family = socket.AF_INET
    v4.sin_port = htons(port)
    memcpy(&v4.sin_addr, <const char*>packed, 4)
    return sizeof(sockaddr_in)


cdef void _set_port(sockaddr_storage* addr, int port) noexcept:
    """The port of a socket address `_pack` made (the RTCP port beside the RTP one, without parsing again)."""
    if addr.ss_family == socket.AF_INET6:
        (<sockaddr_in6*>addr).sin6_port = htons(port)
    else:
        (<sockaddr_in*>addr).sin_port = htons(port)


cdef int _bound_udp(sockaddr_storage* addr, socklen_t addr_len) noexcept:
    """A UDP socket bound to `addr`, or -errno."""
    cdef int fd = c_socket(addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    cdef int err
    if fd < 0:
        return -errno
    if c_bind(fd, <sockaddr*>addr, addr_len) != 0:
        err = errno
        close(fd)
        return -err
    return fd


cdef class Engine:
    """One media thread and the legs it serves."""

    cdef engine_t* _e
    cdef readonly int max_legs
    cdef object _owed

    def __cinit__(self, int max_legs, int cmd_capacity=65536, int event_capacity=65536):
        self._e = eng_new(max_legs, cmd_capacity, event_capacity)
        if self._e == NULL:
            raise MemoryError("cannot create the media engine")
        self.max_legs = max_legs

    def __dealloc__(self):
        if self._e != NULL:
            with nogil:
                eng_free(self._e)
            self._e = NULL

    def start(self):
        cdef int rc = eng_start(self._e)
        if rc:
            raise OSError(-rc, "cannot start the media thread")

    def stop(self):
        """Stop and join the media thread; every leg is closed (and reported) first."""
        with nogil:
            eng_stop(self._e)

    @property
    def event_fd(self):
        return eng_event_fd(self._e)

    cdef _push(self, eng_cmd_t* c):
        cdef int rc = eng_push(self._e, c)
        if rc == -2:
            raise RuntimeError("the media engine has stopped")
        if rc < 0:
            raise RuntimeError("media command queue is full")
        if rc == 1:  # deferred (defer_wakes): the first command since the last release
            self._owed()

    def defer_wakes(self, owed):
        """Commands no longer wake the media thread each: `owed()` is called at the first one after each
        `release()`, which the caller is to call soon (at the end of its event loop's callback, say) to wake it
        once for all of them. None: each run of commands wakes it again (what is owed is released)."""
        self._owed = owed
        eng_defer(self._e, owed is not None)

    def release(self):
        """Wake the media thread for the commands pushed since the last release (nothing if none)."""
        eng_release(self._e)

    def open_leg(self, int leg, str host, int port):
        """Bind `host`:`port` (RTP) and `port + 1` (RTCP) on sockets the engine owns from then on (closed with
        the leg): non-blocking and close-on-exec from their creation, no Python socket objects and no
        duplicates, four system calls where the Python sockets took fourteen. OSError (EADDRINUSE, say) when
        either port cannot be bound, and then nothing is left open."""
        cdef eng_cmd_t c
        cdef int rtp, rtcp
        memset(&c, 0, sizeof(c))
        c.type = CMD_LEG_ADD
        c.leg = self._check(leg)
        c.addr_len = _pack(host, port, &c.addr)
        rtp = _bound_udp(&c.addr, c.addr_len)
        if rtp < 0:
            raise OSError(-rtp, f"{os.strerror(-rtp)}: RTP port {port} on {host}")
        _set_port(&c.addr, port + 1)
        rtcp = _bound_udp(&c.addr, c.addr_len)
        if rtcp < 0:
            close(rtp)
            raise OSError(-rtcp, f"{os.strerror(-rtcp)}: RTCP port {port + 1} on {host}")
        c.other, c.len = rtp, rtcp
        try:
            self._push(&c)
        except BaseException:
            close(rtp)
            close(rtcp)
            raise

    def del_leg(self, int leg):
        cdef eng_cmd_t c
        memset(&c, 0, sizeof(c))
        c.type = CMD_LEG_DEL
        c.leg = self._check(leg)
        self._push(&c)

    def set_remote(self, int leg, str host, int port):
        cdef eng_cmd_t c
        memset(&c, 0, sizeof(c))
        c.type = CMD_LEG_REMOTE
        c.leg = self._check(leg)
        c.addr_len = _pack(host, port, &c.addr)
        self._push(&c)

    cdef _simple(self, int type, int leg=0, int other=0, int flags=0, double value=0.0):
        cdef eng_cmd_t c
        memset(&c, 0, sizeof(c))
        c.type = type
        c.leg = leg
        c.other = other
        c.flags = flags
        c.value = value
        self._push(&c)

    def set_codec(self, int leg, int codec, int pt, int te_pt):
        """codec 0 (PCMU) or 8 (PCMA); pt: its payload type; te_pt: telephone-event PT or -1."""
        self._simple(CMD_LEG_CODEC, self._check(leg), pt, codec, te_pt)

    def join(self, int leg, int group):
        self._simple(CMD_JOIN, self._check(leg), self._check(group))

    def leave(self, int leg):
        self._simple(CMD_LEAVE, self._check(leg))

    def group_mode(self, int group, bint processed):
        self._simple(CMD_GROUP_MODE, 0, self._check(group), processed)

    def gain(self, int leg, double gain, bint muted):
        self._simple(CMD_GAIN, self._check(leg), 0, muted, gain)

    def rec_start(self, int group, long long writer, int channels, int rec_id):
        """Hand an open recorder (from `open_recording`) to the media thread for `group`."""
        cdef eng_cmd_t c
        memset(&c, 0, sizeof(c))
        c.type = CMD_REC_START
        c.other = self._check(group)
        c.flags = channels
        c.ptr = <const void*><size_t>writer
        c.len = rec_id
        self._push(&c)

    def rec_stop(self, int group):
        self._simple(CMD_REC_STOP, 0, self._check(group))

    def rec_pause(self, int group, bint paused):
        self._simple(CMD_REC_PAUSE, 0, self._check(group), paused)

    def play(self, int leg, bytes pcm, bint loop, int play_id):
        """8 kHz mono native PCM16; `pcm` must stay alive until the play_done event."""
        cdef eng_cmd_t c
        memset(&c, 0, sizeof(c))
        c.type = CMD_PLAY
        c.leg = self._check(leg)
        c.other = play_id
        c.flags = loop
        c.ptr = <const char*>pcm
        c.len = len(pcm) // 2
        self._push(&c)

    def play_stop(self, int leg):
        self._simple(CMD_PLAY_STOP, self._check(leg))

    def dtmf(self, int leg, int event, int duration_ms):
        self._simple(CMD_DTMF, self._check(leg), duration_ms, event)

    def inband(self, int leg, bint on):
        self._simple(CMD_INBAND, self._check(leg), 0, on)

    def amd(self, int leg, dict params):
        """Start (params: the AMD kernel's, by name, over its defaults) or, with None, stop detection."""
        cdef eng_cmd_t c
        cdef amd_params_t *p = NULL
        memset(&c, 0, sizeof(c))
        c.type = CMD_AMD
        c.leg = self._check(leg)
        if params is not None:
            p = <amd_params_t *>malloc(sizeof(amd_params_t))
            if p == NULL:
                raise MemoryError()
            amd_defaults(p)
            values = <dict>p[0]
            values.update(params)
            p[0] = values
            c.flags = 1
            c.ptr = <const void *>p
        try:
            self._push(&c)
        except BaseException:
            free(p)
            raise

    def stream_tap(self, int leg, int tracks):
        """Copy the leg's frames out for media streams: 1 what its far end sends, 2 what it is sent, 3 both."""
        self._simple(CMD_STREAM_TAP, self._check(leg), 0, tracks)

    def stream_play(self, int leg, bint on):
        self._simple(CMD_STREAM_PLAY, self._check(leg), 0, on)

    def stream_push(self, int leg, const unsigned char[:] ulaw):
        """Queue mu-law audio to play into the leg (copied: the media thread frees its copy)."""
        cdef eng_cmd_t c
        cdef Py_ssize_t n = ulaw.shape[0]
        cdef unsigned char *copy
        if n == 0:
            return
        copy = <unsigned char *>malloc(n)
        if copy == NULL:
            raise MemoryError()
        memcpy(copy, &ulaw[0], n)
        memset(&c, 0, sizeof(c))
        c.type = CMD_STREAM_PUSH
        c.leg = self._check(leg)
        c.ptr = <const void *>copy
        c.len = n
        try:
            self._push(&c)
        except BaseException:
            free(copy)
            raise

    def srtp(self, int leg, bytes tx_master, bytes rx_master, int tag_len=10):
        """SRTP on the leg: what we send protected with `tx_master` (30 bytes: key and salt, ours), what
        arrives checked and decrypted with `rx_master` (the far end's); both None: plain RTP again."""
        cdef eng_cmd_t c
        cdef unsigned char *keys = NULL
        memset(&c, 0, sizeof(c))
        c.type = CMD_SRTP
        c.leg = self._check(leg)
        if tx_master is not None or rx_master is not None:
            if len(tx_master) != 30 or len(rx_master) != 30 or tag_len not in (4, 10):
                raise ValueError("SRTP masters are 30 bytes each, the tag 10 or 4 bytes")
            keys = <unsigned char *>malloc(60)
            if keys == NULL:
                raise MemoryError()
            memcpy(keys, <const unsigned char *>tx_master, 30)
            memcpy(keys + 30, <const unsigned char *>rx_master, 30)
        c.ptr = <const void *>keys
        c.flags = tag_len
        try:
            self._push(&c)
        except BaseException:
            free(keys)
            raise

    def stream_mark(self, int leg, int mark):
        self._simple(CMD_STREAM_MARK, self._check(leg), mark)

    def stream_clear(self, int leg):
        self._simple(CMD_STREAM_CLEAR, self._check(leg))

    def frames(self):
        """Every tapped stream frame queued since the last call: a list of (leg, track, ns, mu-law bytes)."""
        cdef eng_frame_t buf[128]
        cdef int n, i
        out = []
        while True:
            n = eng_pop_frames(self._e, buf, 128)
            for i in range(n):
                out.append((buf[i].leg, buf[i].track, buf[i].ns, (<char *>buf[i].ulaw)[:buf[i].len]))
            if n < 128:
                return out

    @property
    def dropped_frames(self):
        return eng_dropped_frames(self._e)

    def events(self, int max_events=1024):
        """Every event queued since the last call, as (name, leg, remote address, stats)."""
        cdef eng_event_t buf[64]
        cdef int n, i
        out = []
        while len(out) < max_events:
            n = eng_pop_events(self._e, buf, 64)
            for i in range(n):
                out.append((EVENT_NAMES.get(buf[i].type, str(buf[i].type)), buf[i].leg, _address(&buf[i].addr),
                            _stats(&buf[i].stats), (buf[i].v[0], buf[i].v[1], buf[i].v[2], buf[i].v[3])))
            if n < 64:
                break
        return out

    def leg_stats(self, int leg):
        cdef eng_stats_t s
        if eng_leg_stats(self._e, self._check(leg), &s) != 0:
            return None
        return _stats(&s)

    def cpu_seconds(self):
        return eng_cpu_seconds(self._e)

    @property
    def dropped_events(self):
        return eng_dropped_events(self._e)

    @property
    def late_ticks(self):
        return eng_late_ticks(self._e)

    cdef int _check(self, int leg) except -1:
        if not 0 <= leg < self.max_legs:
            raise ValueError(f"leg id {leg} out of range")
        return leg
