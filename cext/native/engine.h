/* The media engine's I/O loop: one native thread, epoll over every RTP socket, no Python.
 *
 * Python (cext/engine.pyx) owns the policy: it binds sockets, allocates leg ids and says what to do with
 * them through a command ring; the thread owns the legs' state and reports through an event ring and an
 * eventfd that asyncio watches. Relayed packets are forwarded the moment they arrive (SSRC, sequence and
 * timestamp rewritten so the far end sees one continuous stream), so relay adds no tick of latency.
 */
#ifndef SOFTSWITCH_ENGINE_H
#define SOFTSWITCH_ENGINE_H

#include <stdint.h>
#include <sys/socket.h>

enum { CMD_LEG_ADD = 1, CMD_LEG_DEL, CMD_LEG_REMOTE, CMD_BRIDGE, CMD_UNBRIDGE, CMD_STOP };
enum { EV_LATCHED = 1, EV_RELATCHED, EV_LEG_CLOSED, EV_SSRC_CHANGED };

typedef struct {
    int type;
    int leg;
    int other;                       /* CMD_BRIDGE: the peer leg; CMD_LEG_ADD: the socket fd */
    int flags;
    struct sockaddr_storage addr;    /* CMD_LEG_REMOTE */
    socklen_t addr_len;
} eng_cmd_t;

/* Per-leg counters, written only by the media thread, readable at any time (each field is a single
 * aligned word, so a reader sees each value whole; the set may be a packet apart). RFC 3550 A.1, A.8. */
typedef struct {
    uint64_t rx_packets, rx_bytes, tx_packets, tx_bytes;
    uint64_t rx_invalid, rx_foreign, rx_duplicates, tx_errors;
    uint64_t expected, lost_negative_guard;
    int64_t lost;                    /* expected - received, may be negative with duplicates */
    uint32_t rx_ssrc, jitter_ts;     /* interarrival jitter in timestamp units (RFC 3550 6.4.1) */
    uint32_t ssrc_changes, latches;
    uint16_t last_seq;
    uint8_t last_pt, latched;
} eng_stats_t;

typedef struct {
    int type;
    int leg;
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
int eng_push(engine_t *e, const eng_cmd_t *cmd);      /* 0, or -1 when the ring is full */
int eng_pop_events(engine_t *e, eng_event_t *out, int max);
int eng_leg_stats(engine_t *e, int leg, eng_stats_t *out);
double eng_cpu_seconds(engine_t *e);        /* CPU time of the media thread */
uint64_t eng_dropped_events(engine_t *e);
int eng_max_legs(engine_t *e);

#endif
