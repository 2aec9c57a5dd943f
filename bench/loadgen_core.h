/* RTP load generator core for bench/media_load.py: plays the far ends of N calls on loopback.
 *
 * Why C: 1,000 calls are 100,000 packets/s in and out of the generator, about 10 us of budget per packet
 * including the kernel's UDP path; Python cannot come near it. bench/loadgen.pyx wraps this file and
 * calls lg_run() with the GIL released.
 *
 * Each call owns two UDP sockets bound on 127.0.0.1: socket 2c is the far end of leg A, socket 2c+1 the
 * far end of leg B. Every 20 ms each socket sends one 172-byte PCMU packet (12-byte RTP header + 160
 * bytes) to the relay's port for its leg; the relay must forward A's packets to B's socket and back.
 * Sends run on absolute CLOCK_MONOTONIC deadlines, call c offset by c * 20 ms / N so the load is spread
 * over the period; the loop turns on a fixed tick (default 0.5 ms) and each turn sends what is due and
 * reads what has arrived (see lg_run).
 *
 * The payload carries what the receiver checks, independent of any header rewriting by the relay:
 *   send time   CLOCK_REALTIME ns, 64 bits (realtime because SO_TIMESTAMPNS stamps arrivals with it,
 *               which keeps the generator's own scheduling delay out of the latency figure)
 *   magic       "LGv1"
 *   from        index of the sending socket (the receiver checks the packet crossed to the right leg)
 *   k           send cycle (0, 1, 2 ...; the measurement window is a range of cycles)
 * written a nibble per byte as 0xF0 | nibble: quiet mu-law codes that survive a decode and re-encode
 * exactly (a relay that records or mixes may do that; 0x7F, mu-law's negative zero, would come back
 * as 0xFF and garble raw binary). The rest of the 160 bytes is 0xFF, mu-law silence.
 * On receipt: the packet must be RTP v2 and, when it carries our fields, come from the peer socket of the
 * receiving one (RTP without them is the relay's own, counted as foreign); the RTP sequence must
 * continue (gaps, reordering counted), the timestamp must advance 160 per sequence step, the SSRC must
 * not change mid-stream. Loss is exact: a per-stream bitmap of the window's cycles counts each sent
 * packet at most once (and catches duplicates).
 */
#ifndef LOADGEN_CORE_H
#define LOADGEN_CORE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LG_PKT_LEN 172
#define LG_PERIOD_NS 20000000LL
#define LG_HIST_US 10                     /* latency histogram bin width */
#define LG_HIST_BINS 20000                /* 0 .. 200 ms, then one overflow bin */
#define LG_MAGIC 0x3176474cu              /* "LGv1" little-endian */
#define LG_BATCH 8                        /* recvmmsg batch per ready socket */
#define LG_EVENTS 512

typedef struct {
    /* send side of the stream leaving this socket */
    uint32_t tx_ssrc;
    uint16_t tx_seq;
    uint32_t tx_ts;
    /* receive side of the stream arriving at this socket */
    int rx_started;
    uint32_t rx_ssrc;
    uint16_t rx_seq;                      /* highest sequence seen */
    uint32_t rx_ts;                       /* timestamp of that packet */
} lg_stream_t;

typedef struct {
    uint64_t sent, sent_window, send_errors;
    uint64_t received, received_window, duplicates, reordered, seq_gaps, ts_errors, ssrc_changes;
    uint64_t misrouted, malformed, foreign;  /* foreign: RTP from the relay itself, not from our far ends */
    uint64_t late;                        /* window packets arriving after the drain deadline */
    uint64_t lat_max_ns, lat_sum_ns, lat_count;
    int64_t lag_max_ns;                   /* worst lateness of a send against its deadline */
    uint64_t lag_over_1ms;                /* sends more than 1 ms late */
    double window_wall_s, gen_cpu_s;      /* the generator thread's CPU over the measurement window */
    double gen_busy_s;                    /* wall time awake (not sleeping to the next tick) in the window:
                                           * the duty cycle, whatever the kernel's CPU accounting counts */
    int64_t window_start_ns, window_end_ns;
} lg_result_t;

typedef struct {
    int n_calls, n_socks, epfd;
    int *fds;
    int *ports;
    struct sockaddr_in *dst;
    int connected;
    lg_stream_t *st;
    uint8_t *seen;                        /* n_socks * seen_stride bytes: window bitmap per receiving socket */
    size_t seen_stride;
    uint64_t *hist;                       /* LG_HIST_BINS + 1 */
    int warm, meas;
    lg_result_t r;
} lg_t;

static inline int64_t lg_clock(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int64_t lg_now_mono(void) { return lg_clock(CLOCK_MONOTONIC); }

static void lg_free(lg_t *g) {
    if (!g) return;
    if (g->fds) {
        for (int i = 0; i < g->n_socks; i++)
            if (g->fds[i] >= 0) close(g->fds[i]);
    }
    if (g->epfd >= 0) close(g->epfd);
    free(g->fds);
    free(g->ports);
    free(g->dst);
    free(g->st);
    free(g->seen);
    free(g->hist);
    free(g);
}

/* Binds 2 * n_calls sockets on host, ports from port_min upward (ports in use are skipped). Returns NULL
 * with *err set to an errno value on failure. */
static lg_t *lg_new(int n_calls, const char *host, int port_min, int port_max, int *err) {
    lg_t *g = calloc(1, sizeof(lg_t));
    if (!g) { *err = ENOMEM; return NULL; }
    g->epfd = -1;
    g->n_calls = n_calls;
    g->n_socks = 2 * n_calls;
    g->fds = malloc(sizeof(int) * g->n_socks);
    g->ports = calloc(g->n_socks, sizeof(int));
    g->dst = calloc(g->n_socks, sizeof(struct sockaddr_in));
    g->st = calloc(g->n_socks, sizeof(lg_stream_t));
    g->hist = calloc(LG_HIST_BINS + 1, sizeof(uint64_t));
    if (!g->fds || !g->ports || !g->dst || !g->st || !g->hist) { *err = ENOMEM; lg_free(g); return NULL; }
    for (int i = 0; i < g->n_socks; i++) g->fds[i] = -1;
    g->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g->epfd < 0) { *err = errno; lg_free(g); return NULL; }
    struct in_addr addr;
    if (inet_pton(AF_INET, host, &addr) != 1) { *err = EINVAL; lg_free(g); return NULL; }
    int port = port_min;
    for (int i = 0; i < g->n_socks; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) { *err = errno; lg_free(g); return NULL; }
        g->fds[i] = fd;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
        for (;; port++) {
            if (port > port_max) { *err = EADDRINUSE; lg_free(g); return NULL; }
            struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = addr};
            if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) break;
            if (errno != EADDRINUSE && errno != EACCES) { *err = errno; lg_free(g); return NULL; }
        }
        g->ports[i] = port++;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) { *err = errno; lg_free(g); return NULL; }
        /* distinct, deterministic SSRC and starting points per stream (RFC 3550 wants random; any will do) */
        uint32_t h = (uint32_t)i * 2654435761u + 0x9e3779b9u;
        g->st[i].tx_ssrc = h;
        g->st[i].tx_seq = (uint16_t)(h >> 7);
        g->st[i].tx_ts = h * 7u;
    }
    return g;
}

/* The relay's address for socket i's stream; with connect, the socket also only accepts packets from it
 * (symmetric RTP, RFC 4961) and sends skip the per-packet route lookup. */
static int lg_set_target(lg_t *g, int i, const char *host, int port, int do_connect) {
    struct sockaddr_in *sa = &g->dst[i];
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) return -EINVAL;
    if (do_connect) {
        if (connect(g->fds[i], (struct sockaddr *)sa, sizeof(*sa)) != 0) return -errno;
        g->connected = 1;
    }
    return 0;
}

#define LG_F_TIME 0                       /* payload offsets of the nibble-coded fields */
#define LG_F_MAGIC 16
#define LG_F_FROM 24
#define LG_F_K 32
#define LG_F_END 40

static inline void lg_put(uint8_t *p, uint64_t v, int nibbles) {
    for (int j = 0; j < nibbles; j++) p[j] = (uint8_t)(0xf0 | ((v >> (4 * j)) & 0xf));
}

/* Returns 0 when a byte is not a coded nibble. */
static inline int lg_get(const uint8_t *p, uint64_t *out, int nibbles) {
    uint64_t v = 0;
    for (int j = 0; j < nibbles; j++) {
        if ((p[j] & 0xf0) != 0xf0) return 0;
        v |= (uint64_t)(p[j] & 0xf) << (4 * j);
    }
    *out = v;
    return 1;
}

static void lg_send(lg_t *g, int i, uint32_t k) {
    uint8_t pkt[LG_PKT_LEN];
    lg_stream_t *s = &g->st[i];
    pkt[0] = 0x80;
    pkt[1] = (uint8_t)(k == 0 ? 0x80 : 0x00);   /* PT 0 (PCMU), marker on the first packet */
    uint16_t seq = htons(s->tx_seq);
    uint32_t ts = htonl(s->tx_ts), ssrc = htonl(s->tx_ssrc);
    memcpy(pkt + 2, &seq, 2);
    memcpy(pkt + 4, &ts, 4);
    memcpy(pkt + 8, &ssrc, 4);
    uint8_t *pl = pkt + 12;
    memset(pl + LG_F_END, 0xff, LG_PKT_LEN - 12 - LG_F_END);
    lg_put(pl + LG_F_MAGIC, LG_MAGIC, 8);
    lg_put(pl + LG_F_FROM, (uint32_t)i, 8);
    lg_put(pl + LG_F_K, k, 8);
    int64_t now = lg_clock(CLOCK_REALTIME);
    lg_put(pl + LG_F_TIME, (uint64_t)now, 16);
    ssize_t n;
    if (g->connected)
        n = send(g->fds[i], pkt, LG_PKT_LEN, 0);
    else
        n = sendto(g->fds[i], pkt, LG_PKT_LEN, 0, (struct sockaddr *)&g->dst[i], sizeof(g->dst[i]));
    if (n != LG_PKT_LEN) g->r.send_errors++;
    g->r.sent++;
    if ((int)k >= g->warm) g->r.sent_window++;
    s->tx_seq++;
    s->tx_ts += 160;
}

static void lg_check(lg_t *g, int i, const uint8_t *p, ssize_t len, int64_t rx_ns, int64_t drain_deadline_mono) {
    g->r.received++;
    const uint8_t *pl = p + 12;
    uint64_t magic = 0, from = 0, k64 = 0, sent = 0;
    if (len < 12 || (p[0] & 0xc0) != 0x80) { g->r.malformed++; return; }
    /* A valid RTP packet without our fields is the relay's own (silence, concealment from a jitter
     * buffer): counted, and followed for sequence continuity, since it is part of the stream it sends. */
    int ours = len == LG_PKT_LEN && lg_get(pl + LG_F_MAGIC, &magic, 8) && magic == LG_MAGIC &&
               lg_get(pl + LG_F_FROM, &from, 8) && lg_get(pl + LG_F_K, &k64, 8) && lg_get(pl + LG_F_TIME, &sent, 16);
    if (!ours) g->r.foreign++;
    if (ours && from != (uint64_t)(i ^ 1)) { g->r.misrouted++; return; }
    uint32_t k = (uint32_t)k64;
    int in_window = ours && (int)k >= g->warm && (int)k < g->warm + g->meas;
    if (in_window) {
        size_t bit = (size_t)(k - (uint32_t)g->warm);
        uint8_t *seen = g->seen + (size_t)i * g->seen_stride;
        if (seen[bit >> 3] & (1u << (bit & 7))) { g->r.duplicates++; return; }
        if (drain_deadline_mono && lg_now_mono() > drain_deadline_mono) { g->r.late++; return; }
        seen[bit >> 3] |= (uint8_t)(1u << (bit & 7));
        g->r.received_window++;
        int64_t lat = rx_ns - (int64_t)sent;
        if (lat < 0) lat = 0;
        uint64_t bin = (uint64_t)lat / (LG_HIST_US * 1000);
        g->hist[bin < LG_HIST_BINS ? bin : LG_HIST_BINS]++;
        if ((uint64_t)lat > g->r.lat_max_ns) g->r.lat_max_ns = (uint64_t)lat;
        g->r.lat_sum_ns += (uint64_t)lat;
        g->r.lat_count++;
    }
    lg_stream_t *s = &g->st[i];
    uint16_t seq = (uint16_t)((p[2] << 8) | p[3]);
    uint32_t ts = ((uint32_t)p[4] << 24) | ((uint32_t)p[5] << 16) | ((uint32_t)p[6] << 8) | p[7];
    uint32_t ssrc = ((uint32_t)p[8] << 24) | ((uint32_t)p[9] << 16) | ((uint32_t)p[10] << 8) | p[11];
    if (!s->rx_started) {
        s->rx_started = 1;
        s->rx_ssrc = ssrc;
        s->rx_seq = seq;
        s->rx_ts = ts;
        return;
    }
    if (ssrc != s->rx_ssrc) {             /* a new stream: resynchronise, count it */
        if (in_window) g->r.ssrc_changes++;
        s->rx_ssrc = ssrc;
        s->rx_seq = seq;
        s->rx_ts = ts;
        return;
    }
    uint16_t d = (uint16_t)(seq - s->rx_seq);
    if (d == 0 || d >= 0x8000) {          /* behind the highest: reordered (duplicates caught above) */
        if (in_window && d != 0) g->r.reordered++;
        return;
    }
    if (in_window) {
        if (d > 1) g->r.seq_gaps += (uint64_t)(d - 1);
        if ((uint32_t)(ts - s->rx_ts) != 160u * d) g->r.ts_errors++;
    }
    s->rx_seq = seq;
    s->rx_ts = ts;
}

static void lg_recv(lg_t *g, int i, int64_t drain_deadline_mono) {
    struct mmsghdr msgs[LG_BATCH];
    struct iovec iov[LG_BATCH];
    uint8_t bufs[LG_BATCH][LG_PKT_LEN + 64];
    union { char buf[CMSG_SPACE(sizeof(struct timespec))]; struct cmsghdr align; } ctl[LG_BATCH];
    for (int j = 0; j < LG_BATCH; j++) {
        iov[j].iov_base = bufs[j];
        iov[j].iov_len = sizeof(bufs[j]);
        memset(&msgs[j].msg_hdr, 0, sizeof(struct msghdr));
        msgs[j].msg_hdr.msg_iov = &iov[j];
        msgs[j].msg_hdr.msg_iovlen = 1;
        msgs[j].msg_hdr.msg_control = ctl[j].buf;
        msgs[j].msg_hdr.msg_controllen = sizeof(ctl[j].buf);
    }
    int n = recvmmsg(g->fds[i], msgs, LG_BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) return;
    int64_t fallback = 0;
    for (int j = 0; j < n; j++) {
        int64_t rx_ns = 0;
        struct msghdr *mh = &msgs[j].msg_hdr;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof(ts));
                rx_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
            }
        }
        if (!rx_ns) {
            if (!fallback) fallback = lg_clock(CLOCK_REALTIME);
            rx_ns = fallback;
        }
        lg_check(g, i, bufs[j], (ssize_t)msgs[j].msg_len, rx_ns, drain_deadline_mono);
    }
}

/* Runs warm + meas cycles of 20 ms from t0 (CLOCK_MONOTONIC ns), then receives for drain_ns more. The
 * window is cycles [warm, warm + meas). The loop runs on a fixed tick (tick_ns): each turn sends every
 * packet now due, collects every ready socket with one epoll_wait(0), then sleeps to the next tick on
 * an absolute deadline. It never sleeps inside epoll, so the relay's packets do not wake it one by one:
 * a wake-up would cost both processes a cross-core IPI and a context switch per packet, as much as the
 * packet itself. Arrival times come from the kernel (SO_TIMESTAMPNS), so polling adds no latency to the
 * figures. hard_stop_ns bounds the whole run whatever happens. Returns 0, or -errno. Call without the GIL. */
static int lg_run(lg_t *g, int64_t t0, int warm, int meas, int64_t tick_ns, int64_t drain_ns, int64_t hard_stop_ns) {
    memset(&g->r, 0, sizeof(g->r));
    memset(g->hist, 0, sizeof(uint64_t) * (LG_HIST_BINS + 1));
    g->warm = warm;
    g->meas = meas;
    g->seen_stride = ((size_t)meas + 7) / 8;
    free(g->seen);
    g->seen = calloc((size_t)g->n_socks, g->seen_stride ? g->seen_stride : 1);
    if (!g->seen) return -ENOMEM;
    if (tick_ns <= 0) tick_ns = 500000;
    int total = warm + meas, n = g->n_calls, ptr = 0, sending = 1;
    uint32_t k = 0;
    int64_t stop_at = 0, cpu0 = 0, wall0 = 0, tick = t0;
    struct epoll_event evs[LG_EVENTS];
    int64_t busy = 0, busy0 = 0, woke = lg_now_mono();
    if (warm == 0) { cpu0 = lg_clock(CLOCK_THREAD_CPUTIME_ID); wall0 = t0; }
    for (;;) {
        int64_t now = lg_now_mono();
        if (now > hard_stop_ns) return -ETIMEDOUT;
        if (sending) {
            while ((int)k < total) {
                int64_t deadline = t0 + (int64_t)k * LG_PERIOD_NS + (int64_t)ptr * LG_PERIOD_NS / n;
                if (deadline > now) break;
                if (ptr == 0 && (int)k == warm && warm > 0) {
                    cpu0 = lg_clock(CLOCK_THREAD_CPUTIME_ID);
                    busy0 = busy + (now - woke);
                    wall0 = now;
                }
                int64_t lag = now - deadline;
                if (lag > g->r.lag_max_ns) g->r.lag_max_ns = lag;
                if (lag > 1000000) g->r.lag_over_1ms++;
                lg_send(g, 2 * ptr, k);
                lg_send(g, 2 * ptr + 1, k);
                if (++ptr == n) { ptr = 0; k++; }
                if ((ptr & 63) == 0) now = lg_now_mono();
            }
            if ((int)k == total) {
                int64_t end = lg_now_mono();
                g->r.gen_cpu_s = (double)(lg_clock(CLOCK_THREAD_CPUTIME_ID) - cpu0) / 1e9;
                g->r.gen_busy_s = (double)(busy + (end - woke) - busy0) / 1e9;
                g->r.window_wall_s = (double)(end - wall0) / 1e9;
                g->r.window_start_ns = wall0;
                g->r.window_end_ns = end;
                sending = 0;
                stop_at = end + drain_ns;
            }
        }
        int64_t drain_deadline = sending ? 0 : stop_at;
        int ne;
        do {
            ne = epoll_wait(g->epfd, evs, LG_EVENTS, 0);
            if (ne < 0 && errno != EINTR) return -errno;
            for (int e = 0; e < ne; e++) lg_recv(g, (int)evs[e].data.u32, drain_deadline);
        } while (ne == LG_EVENTS);
        now = lg_now_mono();
        if (!sending && now >= stop_at) break;
        while (tick <= now) tick += tick_ns;
        struct timespec to = {.tv_sec = tick / 1000000000LL, .tv_nsec = tick % 1000000000LL};
        busy += lg_now_mono() - woke;
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &to, NULL) == EINTR) {}
        woke = lg_now_mono();
    }
    return 0;
}

/* Latency at quantile q (0..1) of the window's received packets, in ns (bin upper edge). */
static int64_t lg_quantile_ns(lg_t *g, double q) {
    uint64_t total = 0;
    for (int b = 0; b <= LG_HIST_BINS; b++) total += g->hist[b];
    if (!total) return 0;
    uint64_t want = (uint64_t)(q * (double)total);
    if (want >= total) want = total - 1;
    uint64_t acc = 0;
    for (int b = 0; b <= LG_HIST_BINS; b++) {
        acc += g->hist[b];
        if (acc > want) {
            if (b == LG_HIST_BINS) return (int64_t)g->r.lat_max_ns;
            return (int64_t)(b + 1) * LG_HIST_US * 1000;
        }
    }
    return (int64_t)g->r.lat_max_ns;
}

#endif
