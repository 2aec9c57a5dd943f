/* Media I/O loop; see engine.h for the division of labour with Python. */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_BURST 32        /* packets read from one socket per wake-up, for fairness */
#define EPOLL_BATCH 512
#define PKT_MAX 2048

typedef struct {
    int fd, used, peer, has_remote, latched;
    struct sockaddr_storage remote;
    socklen_t remote_len;
    /* a new source trying to take over the leg (RFC 3550 8.2 style probation: 2 packets in sequence) */
    struct sockaddr_storage cand;
    socklen_t cand_len;
    uint32_t cand_ssrc;
    uint16_t cand_seq;
    int cand_count;
    /* receive side, RFC 3550 A.1 and A.8 */
    int seq_init, transit_init;
    uint16_t max_seq;
    uint32_t cycles, base_seq, clock_rate;
    uint64_t received, acc_expected, acc_received;
    int32_t transit;
    double jitter;
    /* send side: what this leg emits, rewritten into one continuous stream */
    int out_started;
    uint32_t out_ssrc, src_ssrc, ts_off, last_out_ts;
    uint16_t seq_off, last_out_seq;
    uint64_t last_out_ns;
    eng_stats_t st;
} leg_t;

struct engine {
    int max_legs;
    leg_t *legs;
    int epfd, cmdfd, evfd;
    pthread_t thread;
    int started, stopping;
    clockid_t cpu_clock;
    pthread_mutex_t cmd_lock;
    eng_cmd_t *cmds;
    int cmd_cap, cmd_head, cmd_count;
    pthread_mutex_t ev_lock;
    eng_event_t *evs;
    int ev_cap, ev_head, ev_count, ev_pending;
    uint64_t ev_dropped;
    uint64_t now_ns;
    uint32_t rng;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t next_rand(engine_t *e)
{
    e->rng ^= e->rng << 13;
    e->rng ^= e->rng >> 17;
    e->rng ^= e->rng << 5;
    return e->rng;
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
    }
    return 0;
}

/* -- events (media thread -> Python) ------------------------------------------------------------- */
static void emit(engine_t *e, int type, int leg_id)
{
    leg_t *l = &e->legs[leg_id];
    pthread_mutex_lock(&e->ev_lock);
    if (e->ev_count == e->ev_cap) {
        e->ev_dropped++;
    } else {
        eng_event_t *ev = &e->evs[(e->ev_head + e->ev_count) % e->ev_cap];
        ev->type = type;
        ev->leg = leg_id;
        ev->addr = l->remote;
        ev->addr_len = l->remote_len;
        ev->stats = l->st;
        e->ev_count++;
        e->ev_pending = 1;
    }
    pthread_mutex_unlock(&e->ev_lock);
}

static void flush_events(engine_t *e)
{
    if (e->ev_pending) {
        uint64_t one = 1;
        e->ev_pending = 0;
        if (write(e->evfd, &one, sizeof one) < 0 && errno != EAGAIN) {
            /* nothing to do: Python will find the events on its next read */
        }
    }
}

/* -- receive statistics --------------------------------------------------------------------------- */
static void reset_rx(leg_t *l)
{
    if (l->seq_init) {
        l->acc_expected += l->cycles + l->max_seq - l->base_seq + 1;
        l->acc_received += l->received;
    }
    l->seq_init = 0;
    l->transit_init = 0;
}

static void update_counts(leg_t *l)
{
    uint64_t expected = l->acc_expected, received = l->acc_received + l->received;
    if (l->seq_init)
        expected += l->cycles + l->max_seq - l->base_seq + 1;
    l->st.expected = expected;
    l->st.lost = (int64_t)expected - (int64_t)received;
}

static void rx_sequence(leg_t *l, uint16_t seq)
{
    if (!l->seq_init) {
        l->seq_init = 1;
        l->base_seq = l->max_seq = seq;
        l->cycles = 0;
        l->received = 1;
        return;
    }
    uint16_t delta = (uint16_t)(seq - l->max_seq);
    if (delta == 0) {
        l->st.rx_duplicates++;
        return;
    }
    if (delta < 3000) {
        if (seq < l->max_seq)
            l->cycles += 65536;
        l->max_seq = seq;
    } else if (delta <= 65536 - 100) {
        /* a jump too large to be loss: the sender restarted; start counting again */
        reset_rx(l);
        l->seq_init = 1;
        l->base_seq = l->max_seq = seq;
        l->cycles = 0;
        l->received = 0;
    }
    l->received++;
}

static void rx_jitter(engine_t *e, leg_t *l, uint32_t rtp_ts)
{
    uint32_t arrival = (uint32_t)((e->now_ns / 1000) * l->clock_rate / 1000000u);
    int32_t transit = (int32_t)(arrival - rtp_ts);
    if (l->transit_init) {
        int32_t d = transit - l->transit;
        if (d < 0)
            d = -d;
        l->jitter += ((double)d - l->jitter) / 16.0;
        l->st.jitter_ts = (uint32_t)l->jitter;
    }
    l->transit = transit;
    l->transit_init = 1;
}

/* -- the packet path ------------------------------------------------------------------------------- */
static int accept_source(engine_t *e, int id, leg_t *l, const struct sockaddr_storage *from, socklen_t from_len,
                         uint32_t ssrc, uint16_t seq)
{
    if (!l->latched) {
        l->remote = *from;
        l->remote_len = from_len;
        l->has_remote = l->latched = 1;
        l->st.latched = 1;
        l->st.latches++;
        emit(e, EV_LATCHED, id);
        return 1;
    }
    if (same_addr(from, &l->remote))
        return 1;
    /* another address: only a new stream (new SSRC) proving itself with packets in sequence takes over */
    if (ssrc != l->st.rx_ssrc) {
        if (l->cand_count && ssrc == l->cand_ssrc && same_addr(from, &l->cand) && seq == (uint16_t)(l->cand_seq + 1)) {
            l->cand_seq = seq;
            if (++l->cand_count >= 2) {
                l->remote = *from;
                l->remote_len = from_len;
                l->cand_count = 0;
                l->st.latches++;
                emit(e, EV_RELATCHED, id);
                return 1;
            }
        } else {
            l->cand = *from;
            l->cand_len = from_len;
            l->cand_ssrc = ssrc;
            l->cand_seq = seq;
            l->cand_count = 1;
        }
    }
    l->st.rx_foreign++;
    return 0;
}

static void forward(engine_t *e, leg_t *to, uint8_t *pkt, ssize_t n, int is_rtcp)
{
    if (!to->has_remote)
        return;
    if (!is_rtcp) {
        uint16_t seq = (uint16_t)((pkt[2] << 8) | pkt[3]);
        uint32_t ts = ((uint32_t)pkt[4] << 24) | ((uint32_t)pkt[5] << 16) | ((uint32_t)pkt[6] << 8) | pkt[7];
        uint32_t ssrc = ((uint32_t)pkt[8] << 24) | ((uint32_t)pkt[9] << 16) | ((uint32_t)pkt[10] << 8) | pkt[11];
        if (!to->out_started || ssrc != to->src_ssrc) {
            if (to->out_started) {
                /* a new source: continue the far end's view of sequence and time where it left off */
                uint64_t gap = (e->now_ns - to->last_out_ns) / 125000u; /* 8 kHz units */
                if (gap < 1)
                    gap = 1;
                to->seq_off = (uint16_t)(to->last_out_seq + 1 - seq);
                to->ts_off = to->last_out_ts + (uint32_t)gap - ts;
                pkt[1] |= 0x80; /* marker: a new talk spurt as far as the receiver can tell */
            } else {
                to->seq_off = 0;
                to->ts_off = 0;
            }
            to->src_ssrc = ssrc;
            to->out_started = 1;
        }
        uint16_t out_seq = (uint16_t)(seq + to->seq_off);
        uint32_t out_ts = ts + to->ts_off;
        pkt[2] = (uint8_t)(out_seq >> 8);
        pkt[3] = (uint8_t)out_seq;
        pkt[4] = (uint8_t)(out_ts >> 24);
        pkt[5] = (uint8_t)(out_ts >> 16);
        pkt[6] = (uint8_t)(out_ts >> 8);
        pkt[7] = (uint8_t)out_ts;
        pkt[8] = (uint8_t)(to->out_ssrc >> 24);
        pkt[9] = (uint8_t)(to->out_ssrc >> 16);
        pkt[10] = (uint8_t)(to->out_ssrc >> 8);
        pkt[11] = (uint8_t)to->out_ssrc;
        if ((int16_t)(out_seq - to->last_out_seq) > 0 || to->st.tx_packets == 0) {
            to->last_out_seq = out_seq;
            to->last_out_ts = out_ts;
        }
        to->last_out_ns = e->now_ns;
    }
    if (sendto(to->fd, pkt, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&to->remote, to->remote_len) == n) {
        to->st.tx_packets++;
        to->st.tx_bytes += (uint64_t)n;
    } else {
        to->st.tx_errors++;
    }
}

static void on_readable(engine_t *e, int id)
{
    leg_t *l = &e->legs[id];
    uint8_t pkt[PKT_MAX];
    for (int burst = 0; burst < MAX_BURST && l->used; burst++) {
        struct sockaddr_storage from;
        socklen_t from_len = sizeof from;
        ssize_t n = recvfrom(l->fd, pkt, sizeof pkt, MSG_DONTWAIT, (struct sockaddr *)&from, &from_len);
        if (n < 0)
            return; /* EAGAIN, or an ICMP error reported on the socket: nothing more to read now */
        if (n < 12 || (pkt[0] >> 6) != 2) {
            l->st.rx_invalid++;
            continue;
        }
        uint8_t pt = pkt[1] & 0x7f;
        int is_rtcp = pt >= 72 && pt <= 76; /* RTCP multiplexed on the RTP port (RFC 5761) */
        uint16_t seq = (uint16_t)((pkt[2] << 8) | pkt[3]);
        uint32_t ssrc = ((uint32_t)pkt[8] << 24) | ((uint32_t)pkt[9] << 16) | ((uint32_t)pkt[10] << 8) | pkt[11];
        if (is_rtcp) {
            ssrc = ((uint32_t)pkt[4] << 24) | ((uint32_t)pkt[5] << 16) | ((uint32_t)pkt[6] << 8) | pkt[7];
            if (l->latched && !same_addr(&from, &l->remote)) {
                l->st.rx_foreign++;
                continue;
            }
        } else {
            if (!accept_source(e, id, l, &from, from_len, ssrc, seq))
                continue;
            if (ssrc != l->st.rx_ssrc) {
                if (l->st.rx_packets) {
                    l->st.ssrc_changes++;
                    emit(e, EV_SSRC_CHANGED, id);
                }
                reset_rx(l);
                l->st.rx_ssrc = ssrc;
            }
            rx_sequence(l, seq);
            rx_jitter(e, l, ((uint32_t)pkt[4] << 24) | ((uint32_t)pkt[5] << 16) | ((uint32_t)pkt[6] << 8) | pkt[7]);
            l->st.last_seq = seq;
            l->st.last_pt = pt;
        }
        l->st.rx_packets++;
        l->st.rx_bytes += (uint64_t)n;
        update_counts(l);
        if (l->peer >= 0 && e->legs[l->peer].used)
            forward(e, &e->legs[l->peer], pkt, n, is_rtcp);
    }
}

/* -- commands (Python -> media thread) -------------------------------------------------------------- */
static void leg_close(engine_t *e, int id)
{
    leg_t *l = &e->legs[id];
    if (!l->used)
        return;
    if (l->peer >= 0 && e->legs[l->peer].peer == id)
        e->legs[l->peer].peer = -1;
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, l->fd, NULL);
    close(l->fd);
    update_counts(l);
    emit(e, EV_LEG_CLOSED, id);
    l->used = 0;
}

static void apply(engine_t *e, const eng_cmd_t *c)
{
    if (c->type == CMD_STOP) {
        e->stopping = 1;
        return;
    }
    if (c->leg < 0 || c->leg >= e->max_legs)
        return;
    leg_t *l = &e->legs[c->leg];
    switch (c->type) {
    case CMD_LEG_ADD: {
        if (l->used)
            leg_close(e, c->leg);
        memset(l, 0, sizeof *l);
        l->fd = c->other;
        l->used = 1;
        l->peer = -1;
        l->clock_rate = 8000;
        l->out_ssrc = next_rand(e);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)c->leg};
        epoll_ctl(e->epfd, EPOLL_CTL_ADD, l->fd, &ev);
        break;
    }
    case CMD_LEG_DEL:
        leg_close(e, c->leg);
        break;
    case CMD_LEG_REMOTE:
        if (l->used) {
            l->remote = c->addr;
            l->remote_len = c->addr_len;
            l->has_remote = 1;
            l->latched = 0; /* a new SDP address: learn the real source again (symmetric RTP) */
        }
        break;
    case CMD_BRIDGE:
        if (l->used && c->other >= 0 && c->other < e->max_legs && e->legs[c->other].used) {
            l->peer = c->other;
            e->legs[c->other].peer = c->leg;
        }
        break;
    case CMD_UNBRIDGE:
        if (l->used && l->peer >= 0) {
            if (e->legs[l->peer].peer == c->leg)
                e->legs[l->peer].peer = -1;
            l->peer = -1;
        }
        break;
    }
}

static void drain_commands(engine_t *e)
{
    uint64_t count;
    if (read(e->cmdfd, &count, sizeof count) < 0 && errno != EAGAIN) {
        /* the eventfd cannot fail to read but for EAGAIN; the ring below is the truth anyway */
    }
    for (;;) {
        eng_cmd_t c;
        pthread_mutex_lock(&e->cmd_lock);
        if (e->cmd_count == 0) {
            pthread_mutex_unlock(&e->cmd_lock);
            return;
        }
        c = e->cmds[e->cmd_head];
        e->cmd_head = (e->cmd_head + 1) % e->cmd_cap;
        e->cmd_count--;
        pthread_mutex_unlock(&e->cmd_lock);
        apply(e, &c);
    }
}

static void *run(void *arg)
{
    engine_t *e = arg;
    struct epoll_event evs[EPOLL_BATCH];
    while (!e->stopping) {
        int n = epoll_wait(e->epfd, evs, EPOLL_BATCH, 1000);
        e->now_ns = mono_ns();
        for (int i = 0; i < n; i++) {
            uint32_t id = evs[i].data.u32;
            if (id == (uint32_t)e->max_legs)
                drain_commands(e);
            else if (e->legs[id].used)
                on_readable(e, (int)id);
        }
        flush_events(e);
    }
    for (int id = 0; id < e->max_legs; id++)
        leg_close(e, id);
    flush_events(e);
    return NULL;
}

/* -- the API Python calls ------------------------------------------------------------------------------ */
engine_t *eng_new(int max_legs, int cmd_capacity, int event_capacity)
{
    engine_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->max_legs = max_legs;
    e->legs = calloc((size_t)max_legs, sizeof(leg_t));
    e->cmds = calloc((size_t)cmd_capacity, sizeof(eng_cmd_t));
    e->evs = calloc((size_t)event_capacity, sizeof(eng_event_t));
    e->cmd_cap = cmd_capacity;
    e->ev_cap = event_capacity;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->cmdfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->rng = (uint32_t)mono_ns() | 1u;
    pthread_mutex_init(&e->cmd_lock, NULL);
    pthread_mutex_init(&e->ev_lock, NULL);
    if (!e->legs || !e->cmds || !e->evs || e->epfd < 0 || e->cmdfd < 0 || e->evfd < 0) {
        eng_free(e);
        return NULL;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)max_legs};
    epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->cmdfd, &ev);
    return e;
}

int eng_start(engine_t *e)
{
    if (e->started)
        return 0;
    int rc = pthread_create(&e->thread, NULL, run, e);
    if (rc)
        return -rc;
    e->started = 1;
    if (pthread_getcpuclockid(e->thread, &e->cpu_clock) != 0)
        e->cpu_clock = CLOCK_THREAD_CPUTIME_ID;
    return 0;
}

int eng_push(engine_t *e, const eng_cmd_t *cmd)
{
    pthread_mutex_lock(&e->cmd_lock);
    if (e->cmd_count == e->cmd_cap) {
        pthread_mutex_unlock(&e->cmd_lock);
        return -1;
    }
    e->cmds[(e->cmd_head + e->cmd_count) % e->cmd_cap] = *cmd;
    e->cmd_count++;
    pthread_mutex_unlock(&e->cmd_lock);
    uint64_t one = 1;
    if (write(e->cmdfd, &one, sizeof one) < 0 && errno != EAGAIN)
        return -1;
    return 0;
}

void eng_stop(engine_t *e)
{
    if (!e->started)
        return;
    eng_cmd_t c = {.type = CMD_STOP};
    while (eng_push(e, &c) != 0)
        usleep(1000);
    pthread_join(e->thread, NULL);
    e->started = 0;
}

void eng_free(engine_t *e)
{
    if (!e)
        return;
    eng_stop(e);
    for (int id = 0; e->legs && id < e->max_legs; id++)
        if (e->legs[id].used)
            close(e->legs[id].fd);
    if (e->epfd >= 0)
        close(e->epfd);
    if (e->cmdfd >= 0)
        close(e->cmdfd);
    if (e->evfd >= 0)
        close(e->evfd);
    pthread_mutex_destroy(&e->cmd_lock);
    pthread_mutex_destroy(&e->ev_lock);
    free(e->legs);
    free(e->cmds);
    free(e->evs);
    free(e);
}

int eng_event_fd(engine_t *e) { return e->evfd; }
int eng_max_legs(engine_t *e) { return e->max_legs; }

int eng_pop_events(engine_t *e, eng_event_t *out, int max)
{
    uint64_t count;
    if (read(e->evfd, &count, sizeof count) < 0 && errno != EAGAIN) {
        /* see flush_events */
    }
    pthread_mutex_lock(&e->ev_lock);
    int n = e->ev_count < max ? e->ev_count : max;
    for (int i = 0; i < n; i++)
        out[i] = e->evs[(e->ev_head + i) % e->ev_cap];
    e->ev_head = (e->ev_head + n) % e->ev_cap;
    e->ev_count -= n;
    pthread_mutex_unlock(&e->ev_lock);
    return n;
}

int eng_leg_stats(engine_t *e, int leg, eng_stats_t *out)
{
    if (leg < 0 || leg >= e->max_legs || !e->legs[leg].used)
        return -1;
    *out = e->legs[leg].st;
    return 0;
}

double eng_cpu_seconds(engine_t *e)
{
    struct timespec ts;
    if (!e->started || clock_gettime(e->cpu_clock, &ts) != 0)
        return 0.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t eng_dropped_events(engine_t *e) { return e->ev_dropped; }
