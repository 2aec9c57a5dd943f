/* The media engine's I/O loop: one native thread, epoll over every RTP socket, no Python.
 *
 * Python (cext/engine.pyx) owns the policy: it binds sockets, allocates leg and group ids and says what
 * to do with them through a command ring; the thread owns the legs' state and reports through an event
 * ring and an eventfd that asyncio watches. Two paths share one loop:
 *  - relay: a packet is forwarded the moment it arrives (SSRC, sequence and timestamp rewritten so the far
 *    end sees one continuous stream; PCMU<->PCMA mapped per byte when the legs differ), no added tick;
 *  - processed: packets of legs in a processed group go into a jitter buffer, and every 20 ms tick
 *    (timerfd, absolute deadlines) decodes, mixes, plays, records, encodes and sends (mix.c).
 * RFC 4733 events are parsed on arrival on both paths and relayed or generated (rfc4733.c); legs told
 * to listen for in-band DTMF or answering machines run those detectors (dtmf.c, amd.c) on their decoded
 * audio in the tick (mix.c).
 */
#ifndef SOFTSWITCH_ENGINE_H
#define SOFTSWITCH_ENGINE_H

#include <stdint.h>
#include <sys/socket.h>

enum {
    CMD_LEG_ADD = 1,   /* leg, other = RTP socket fd, len = RTCP socket fd (or -1) */
    CMD_LEG_DEL,       /* leg */
    CMD_LEG_REMOTE,    /* leg, addr */
    CMD_LEG_CODEC,     /* leg, flags = codec (0 PCMU, 8 PCMA), other = audio PT, value = te PT or -1 */
    CMD_JOIN,          /* leg, other = group */
    CMD_LEAVE,         /* leg */
    CMD_GROUP_MODE,    /* other = group, flags = 1 force processed, 0 automatic */
    CMD_GAIN,          /* leg, value = linear gain, flags = muted */
    CMD_REC_START,     /* other = group, ptr = wav_writer_t* opened by Python, flags = channels, len = id */
    CMD_REC_STOP,      /* other = group */
    CMD_REC_PAUSE,     /* other = group, flags = 1 pause, 0 resume */
    CMD_PLAY,          /* leg, ptr = PCM16 8 kHz mono, len = samples, flags = loop, other = play id */
    CMD_PLAY_STOP,     /* leg */
    CMD_DTMF,          /* leg, flags = event code (0-15), other = duration ms */
    CMD_INBAND,        /* leg, flags = 1 detect in-band DTMF in what the far end sends, 0 stop */
    CMD_AMD,           /* leg, flags = 1 start answering machine detection (ptr = malloc'd amd_params_t,
                          freed by the media thread), 0 stop */
    CMD_STREAM_TAP,    /* leg, flags = 1 copy what the far end sends (rx) | 2 what we send it (tx); 0 stops */
    CMD_STREAM_PLAY,   /* leg, flags = 1 start the leg's stream playout (audio from a subscriber), 0 stop */
    CMD_STREAM_PUSH,   /* leg, ptr = malloc'd mu-law bytes (freed by the media thread), len = their count */
    CMD_STREAM_MARK,   /* leg, other = mark id: reported once the audio pushed before it has played */
    CMD_STREAM_CLEAR,  /* leg: drop the audio not yet played; marks waiting are reported as cleared */
    CMD_SRTP,          /* leg, ptr = malloc'd 60 bytes: the master key||salt we send with, then the far end's
                          (freed by the media thread), flags = SRTP tag length (10 or 4); ptr NULL: plain RTP */
    CMD_STOP
};

enum {
    EV_LATCHED = 1,    /* leg: first packet from the far end; addr */
    EV_RELATCHED,      /* leg: a new source took over; addr */
    EV_LEG_CLOSED,     /* leg: final stats */
    EV_SSRC_CHANGED,   /* leg */
    EV_DTMF,           /* leg: v[0] event code, v[1] start (ns, CLOCK_MONOTONIC), v[2] duration ms */
    EV_REC_DONE,       /* leg = group: v[0] recording id, v[1] the wav_writer_t* to close off-thread */
    EV_PLAY_DONE,      /* leg: v[0] play id, v[1] 1 if stopped before the end */
    EV_DTMF_SENT,      /* leg: v[0] event code */
    EV_DTMF_INBAND,    /* leg: as EV_DTMF, heard in the audio (start from the first sample of the tone) */
    EV_AMD,            /* leg: v[0] segment kind, v[1] its start, v[3] now (samples since detection
                          started), v[2] a tone's frequency in Hz */
    EV_STREAM_MARK,    /* leg: v[0] mark id, v[1] 1 if cleared (or the playout stopped) before it played */
};

/* A frame of a tapped leg for media streams, as mu-law: track 0 is what the far end sent (rx), 1 what we
 * sent it (tx); `ns` when (CLOCK_MONOTONIC). A relayed leg's frames are its packets' payloads, copied as they
 * arrive (no added delay; up to 40 ms each); a processed leg's are its 20 ms ticks, after the jitter buffer
 * and the mix. Every frame of a loop turn leaves in one batch. */
#define ENG_FRAME_MAX 320
typedef struct {
    int32_t leg, track, len, pad;
    int64_t ns;
    uint8_t ulaw[ENG_FRAME_MAX];
} eng_frame_t;

typedef struct {
    int type;
    int leg;
    int other;
    int flags;
    double value;
    const void *ptr;
    int64_t len;
    struct sockaddr_storage addr;
    socklen_t addr_len;
} eng_cmd_t;

/* Per-leg counters, written only by the media thread, readable at any time (each field is a single
 * aligned word, so a reader sees each value whole; the set may be a packet apart). RFC 3550 A.1, A.8. */
typedef struct {
    uint64_t rx_packets, rx_bytes, tx_packets, tx_bytes;
    uint64_t rx_invalid, rx_foreign, rx_duplicates, tx_errors;
    uint64_t expected, dtmf_events;
    int64_t lost;                    /* expected - received, may be negative with duplicates */
    uint64_t jb_concealed, jb_late, jb_skipped;
    uint32_t rx_ssrc, jitter_ts;     /* interarrival jitter in timestamp units (RFC 3550 6.4.1) */
    uint32_t ssrc_changes, latches, jb_target_frames, processed;
    uint64_t rtcp_rx, rtcp_tx;
    int64_t rtcp_cum_lost;           /* from the far end's reports: what it lost of our stream */
    uint32_t rtcp_fraction_lost, rtcp_jitter_ts, rtt_us;
    uint16_t last_seq;
    uint8_t last_pt, latched;
} eng_stats_t;

typedef struct {
    int type;
    int leg;
    int64_t v[4];
    struct sockaddr_storage addr;
    socklen_t addr_len;
    eng_stats_t stats;
} eng_event_t;

typedef struct engine engine_t;

engine_t *eng_new(int max_legs, int cmd_capacity, int event_capacity);
int eng_start(engine_t *e);                  /* 0, or -errno */
void eng_stop(engine_t *e);                  /* joins the thread; idempotent */
void eng_free(engine_t *e);
int eng_event_fd(engine_t *e);
int eng_push(engine_t *e, const eng_cmd_t *cmd);      /* 0; 1: a deferred wake-up newly owed; -1: ring full;
                                                        -2: stopped (the caller keeps what it hands over) */
void eng_defer(engine_t *e, int on);         /* eng_push leaves the wake-up to eng_release (off: released) */
void eng_release(engine_t *e);               /* wake the media thread if a deferred push left commands */
int eng_pop_events(engine_t *e, eng_event_t *out, int max);
int eng_leg_stats(engine_t *e, int leg, eng_stats_t *out);
double eng_cpu_seconds(engine_t *e);        /* CPU time of the media thread */
uint64_t eng_dropped_events(engine_t *e);
uint64_t eng_late_ticks(engine_t *e);       /* ticks that ran more than one period late */
int eng_max_legs(engine_t *e);
int eng_pop_frames(engine_t *e, eng_frame_t *out, int max);
uint64_t eng_dropped_frames(engine_t *e);  /* tapped frames lost because Python fell behind */

#endif
