/* State shared by the media thread's parts (engine.c: loop, legs, relay; mix.c: processed ticks;
 * rfc4733.c: telephone events). Only the media thread touches any of it after start, except the
 * command and event rings, which have their own locks. */
#ifndef SOFTSWITCH_ENGINE_INTERNAL_H
#define SOFTSWITCH_ENGINE_INTERNAL_H

#include <netinet/in.h>
#include <pthread.h>
#include <time.h>

#include "amd.h"
#include "dtmf.h"
#include "engine.h"
#include "jitter.h"
#include "srtp.h"
#include "wav.h"

#define FRAME 160            /* samples per 20 ms tick at 8 kHz */
#define TICK_NS 20000000ull
#define MAX_MEMBERS 32       /* parties in one mix group */
#define PKT_MAX 2048
#define MAX_BURST 32         /* packets read from one socket per wake-up, in one recvmmsg, for fairness */
#define DTMF_QUEUE 64
#define FRAME_RING 16384     /* tapped stream frames waiting for Python: 5.5 MB, 0.3 s of 1,000 tracks */

typedef struct {
    /* a digit being sent as RFC 4733 events (or queued) */
    uint8_t queue[DTMF_QUEUE];
    uint16_t queue_ms[DTMF_QUEUE];
    int head, count;
    int active, event, end_sent;
    uint32_t ts, duration, total;
} te_tx_t;

typedef struct sp sp_t; /* a leg's stream playout (streams.c) */

typedef struct {
    int fd, used, peer, group, has_remote, latched;
    struct sockaddr_storage remote;
    socklen_t remote_len;
    /* a new source trying to take over the leg (2 packets in sequence, as RFC 3550 probation) */
    struct sockaddr_storage cand;
    socklen_t cand_len;
    uint32_t cand_ssrc;
    uint16_t cand_seq;
    int cand_count;
    /* what the far end speaks */
    int codec;               /* 0 PCMU, 8 PCMA */
    int pt, te_pt;           /* audio and telephone-event payload types; te_pt -1 when not negotiated */
    /* receive side, RFC 3550 A.1 and A.8 */
    int seq_init, transit_init;
    uint16_t max_seq;
    uint32_t cycles, base_seq;
    uint64_t received, acc_expected, acc_received;
    int32_t transit;
    double jitter;
    /* RFC 4733 receive: one event at a time, identified by its timestamp */
    int te_rx_active, te_rx_reported;
    uint8_t te_rx_event;
    uint32_t te_rx_ts;
    uint16_t te_rx_duration;
    uint64_t te_rx_start_ns;
    te_tx_t te_tx;
    /* send side: what this leg emits, rewritten into one continuous stream */
    int out_started, resync;
    uint32_t out_ssrc, src_ssrc, ts_off, last_out_ts;
    uint16_t seq_off, last_out_seq;
    uint64_t last_out_ns;
    /* processed path */
    jb_t jb;
    uint16_t jb_seq_skip;    /* packets of other payload types seen in this stream (see on_rtp) */
    int jb_on, has_in, conceal;
    float gain;
    int muted;
    int16_t in_pcm[FRAME], last_pcm[FRAME];
    /* RTCP (rtcp.c) */
    int rtcp_fd, rtcp_mux, rtcp_latched;
    struct sockaddr_storage rtcp_remote;
    socklen_t rtcp_remote_len;
    uint32_t rtcp_lsr;
    uint64_t rtcp_lsr_at_ns, rtcp_due_ns, rtcp_prior_expected, rtcp_prior_received, rtcp_prior_tx;
    /* in-band DTMF detector (allocated while asked for) and the samples it has heard */
    dtmf_state_t *inband;
    int64_t inband_samples;
    /* answering machine detection, the same way */
    amd_state_t *amd;
    int64_t amd_samples;
    /* media streams: frames copied out (1 rx, 2 tx), and audio from a subscriber played in */
    int stream_tap;
    sp_t *sp;
    /* SRTP (srtp.c): what we send is protected with tx, what arrives must authenticate with rx */
    srtp_t *srtp_tx, *srtp_rx;
    int srtp_failed;         /* keys were given but could not be used: nothing is sent or taken, never clear RTP */
    /* player */
    const int16_t *play;
    int64_t play_len, play_pos;
    int play_loop, play_id;
    eng_stats_t st;
} leg_t;

typedef struct {
    int used, forced, processed, tapped, n;
    int members[MAX_MEMBERS];
    wav_writer_t *rec;
    int rec_channels, rec_paused, rec_id;
} group_t;

struct engine {
    int max_legs;
    leg_t *legs;
    group_t *groups;
    int epfd, cmdfd, evfd, timerfd;
    int timer_armed, processed_groups; /* groups that tick: processed or tapped */
    pthread_t thread;
    int started, stopping;
    int stopped; /* eng_stop has joined the thread: no command is taken any more (under cmd_lock) */
    clockid_t cpu_clock;
    pthread_mutex_t cmd_lock;
    eng_cmd_t *cmds;
    int cmd_cap, cmd_head, cmd_count;
    int defer_wake, wake_owed; /* eng_defer: wake-ups owed until eng_release (under cmd_lock) */
    pthread_mutex_t ev_lock;
    eng_event_t *evs;
    int ev_cap, ev_head, ev_count, ev_pending;
    uint64_t ev_dropped, late_ticks;
    pthread_mutex_t fr_lock;
    eng_frame_t *frs;
    int fr_cap, fr_head, fr_count;
    uint64_t fr_dropped;
    int stream_taps;         /* legs tapped for streams: the tick hands their frames to Python */
    uint64_t now_ns, rtcp_check_ns;
    uint32_t rng;
    uint8_t rx[MAX_BURST][PKT_MAX]; /* the media thread's receive buffers, read by one recvmmsg */
    struct sockaddr_storage rx_from[MAX_BURST];
    struct mmsghdr *rx_msgs; /* MAX_BURST of them, pointing at the above once and for all (engine.c) */
};

/* engine.c */
void eng_emit(engine_t *e, const eng_event_t *ev);
void eng_emit_leg(engine_t *e, int type, int leg_id);   /* with the leg's address and statistics */
void eng_emit_values(engine_t *e, int type, int leg, int64_t v0, int64_t v1, int64_t v2);
int leg_sendto(leg_t *l, const uint8_t *pkt, size_t n, int is_rtcp);
/* SRTP legs: `pkt` protected into `buf` (PKT_MAX + SRTP_MAX_TRAILER bytes), *n updated; plain legs: pkt itself.
 * NULL when it cannot be protected. */
const uint8_t *leg_protect(leg_t *l, const uint8_t *pkt, size_t *n, int is_rtcp, uint8_t *buf);
void leg_send_frame(engine_t *e, leg_t *l, int pt, int marker, const uint8_t *payload, int len, uint32_t ts);

/* groups.c */
void arm_timer(engine_t *e);   /* arm or disarm the 20 ms tick as groups and digit senders need it */
void group_update_mode(engine_t *e, int gid);
void group_join(engine_t *e, int id, int gid);
void group_leave(engine_t *e, int id);

/* mix.c */
void group_tick(engine_t *e, int gid);
void group_rec_start(engine_t *e, int gid, wav_writer_t *writer, int channels, int rec_id);
void group_rec_stop(engine_t *e, int gid);
void leg_play_stop(engine_t *e, int id, int interrupted);
void leg_inband(engine_t *e, int id, int on);
void leg_amd(engine_t *e, int id, const amd_params_t *params);   /* NULL stops it */
static inline int leg_listens(const leg_t *l) { return l->inband != NULL || l->amd != NULL; }

/* streams.c */
void stream_frame(engine_t *e, int leg, int track, const int16_t *pcm);     /* a processed tick's */
void stream_packet(engine_t *e, int leg, int track, int codec, const uint8_t *payload, int len); /* relayed */
void leg_stream_tap(engine_t *e, int id, int tracks);
void leg_stream_play(engine_t *e, int id, int on);
void leg_stream_push(engine_t *e, int id, const uint8_t *ulaw, int64_t n);
void leg_stream_mark(engine_t *e, int id, int mark);
void leg_stream_clear(engine_t *e, int id);
int stream_take(engine_t *e, int id, int16_t *out);   /* mixes this tick's subscriber audio into out */

/* rtcp.c */
void rtcp_receive(engine_t *e, leg_t *l, const uint8_t *p, int n);
void rtcp_tick(engine_t *e);   /* sends the reports that are due; call about once a second */

/* rfc4733.c */
void te_receive(engine_t *e, int id, leg_t *l, const uint8_t *payload, int len, uint32_t ts);
int te_tick(engine_t *e, leg_t *l);   /* sends this tick's event packet; 1 while an event is being sent */
void te_queue(leg_t *l, int event, int duration_ms);
int te_busy(const leg_t *l);

#endif
