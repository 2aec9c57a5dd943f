/* Media I/O loop: legs, relay, commands, events, the tick timer. See engine.h for the design. */
#define _GNU_SOURCE
#include "engine_internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "g711.h"

#define EPOLL_BATCH 512

static uint8_t U2A[256], A2U[256];

static void build_tables(void)
{
    for (int i = 0; i < 256; i++) {
        U2A[i] = g711_lin2alaw(g711_ulaw2lin((uint8_t)i));
        A2U[i] = g711_lin2ulaw(g711_alaw2lin((uint8_t)i));
    }
}

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

static inline uint32_t rd32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }
static inline void wr32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }

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
void eng_emit(engine_t *e, const eng_event_t *ev)
{
    pthread_mutex_lock(&e->ev_lock);
    if (e->ev_count == e->ev_cap) {
        e->ev_dropped++;
    } else {
        e->evs[(e->ev_head + e->ev_count) % e->ev_cap] = *ev;
        e->ev_count++;
        e->ev_pending = 1;
    }
    pthread_mutex_unlock(&e->ev_lock);
}

void eng_emit_values(engine_t *e, int type, int leg, int64_t v0, int64_t v1, int64_t v2)
{
    eng_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.leg = leg;
    ev.v[0] = v0;
    ev.v[1] = v1;
    ev.v[2] = v2;
    eng_emit(e, &ev);
}

void eng_emit_leg(engine_t *e, int type, int leg_id)
{
    leg_t *l = &e->legs[leg_id];
    eng_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.leg = leg_id;
    ev.addr = l->remote;
    ev.addr_len = l->remote_len;
    ev.stats = l->st;
    eng_emit(e, &ev);
}

static void flush_events(engine_t *e)
{
    if (e->ev_pending) {
        uint64_t one = 1;
        e->ev_pending = 0;
        if (write(e->evfd, &one, sizeof one) < 0 && errno != EAGAIN) {
            /* Python finds the events on its next read anyway */
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
    l->jb_seq_skip = 0;
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
    uint32_t arrival = (uint32_t)(e->now_ns / 125000u); /* 8 kHz units */
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

/* -- sending ------------------------------------------------------------------------------------------ */
const uint8_t *leg_protect(leg_t *l, const uint8_t *pkt, size_t *n, int is_rtcp, uint8_t *buf)
{
    if (l->srtp_failed)
        return NULL;
    if (!l->srtp_tx)
        return pkt;
    if (*n > PKT_MAX)
        return NULL;
    memcpy(buf, pkt, *n);
    int cap = PKT_MAX + SRTP_MAX_TRAILER;
    int m = is_rtcp ? srtcp_protect(l->srtp_tx, buf, (int)*n, cap) : srtp_protect(l->srtp_tx, buf, (int)*n, cap);
    if (m < 0)
        return NULL;
    *n = (size_t)m;
    return buf;
}

int leg_sendto(leg_t *l, const uint8_t *pkt, size_t n, int is_rtcp)
{
    uint8_t buf[PKT_MAX + SRTP_MAX_TRAILER];
    if (!l->has_remote)
        return -1;
    if (!(pkt = leg_protect(l, pkt, &n, is_rtcp, buf))) {
        l->st.tx_errors++;
        return -1;
    }
    if (sendto(l->fd, pkt, n, MSG_DONTWAIT, (const struct sockaddr *)&l->remote, l->remote_len) == (ssize_t)n) {
        l->st.tx_packets++;
        l->st.tx_bytes += n;
        return 0;
    }
    l->st.tx_errors++;
    return -1;
}

/* A packet of our own making (processed audio, generated events) on the leg's continuous stream. */
void leg_send_frame(engine_t *e, leg_t *l, int pt, int marker, const uint8_t *payload, int len, uint32_t ts)
{
    uint8_t pkt[12 + PKT_MAX];
    if (!l->has_remote || len > PKT_MAX)
        return;
    uint16_t seq = l->out_started ? (uint16_t)(l->last_out_seq + 1) : (uint16_t)next_rand(e);
    pkt[0] = 0x80;
    pkt[1] = (uint8_t)((marker ? 0x80 : 0) | (pt & 0x7f));
    pkt[2] = (uint8_t)(seq >> 8);
    pkt[3] = (uint8_t)seq;
    wr32(pkt + 4, ts);
    wr32(pkt + 8, l->out_ssrc);
    memcpy(pkt + 12, payload, (size_t)len);
    l->last_out_seq = seq;
    l->last_out_ts = ts;
    l->last_out_ns = e->now_ns;
    l->out_started = 1;
    l->resync = 1; /* relayed packets, if they come back, re-anchor after ours */
    leg_sendto(l, pkt, (size_t)(12 + len), 0);
}

static void forward(engine_t *e, leg_t *from, leg_t *to, uint8_t *pkt, ssize_t n, int is_rtcp)
{
    if (!to->has_remote)
        return;
    if (!is_rtcp) {
        int pt = pkt[1] & 0x7f;
        if (pt == from->te_pt && from->te_pt >= 0) {
            if (to->te_pt < 0)
                return; /* the other side takes no RFC 4733; in-band generation is the DTMF issue's */
            pkt[1] = (uint8_t)((pkt[1] & 0x80) | to->te_pt);
        } else if (pt == from->pt) {
            if (te_busy(to))
                return; /* we are sending a digit on this stream: it owns the sequence for now */
            if (from->codec != to->codec) {
                const uint8_t *map = to->codec == 8 ? U2A : A2U;
                for (ssize_t i = 12; i < n; i++)
                    pkt[i] = map[pkt[i]];
            }
            pkt[1] = (uint8_t)((pkt[1] & 0x80) | to->pt);
        }
        uint16_t seq = (uint16_t)((pkt[2] << 8) | pkt[3]);
        uint32_t ts = rd32(pkt + 4), ssrc = rd32(pkt + 8);
        if (!to->out_started || ssrc != to->src_ssrc || to->resync) {
            if (to->out_started) {
                /* a new source: continue the far end's view of sequence and time where it left off */
                uint64_t gap = (e->now_ns - to->last_out_ns) / 125000u;
                if (gap < 1)
                    gap = 1;
                to->seq_off = (uint16_t)(to->last_out_seq + 1 - seq);
                to->ts_off = to->last_out_ts + (uint32_t)gap - ts;
                pkt[1] |= 0x80;
            } else {
                to->seq_off = 0;
                to->ts_off = 0;
            }
            to->src_ssrc = ssrc;
            to->out_started = 1;
            to->resync = 0;
        }
        uint16_t out_seq = (uint16_t)(seq + to->seq_off);
        uint32_t out_ts = ts + to->ts_off;
        pkt[2] = (uint8_t)(out_seq >> 8);
        pkt[3] = (uint8_t)out_seq;
        wr32(pkt + 4, out_ts);
        wr32(pkt + 8, to->out_ssrc);
        if ((int16_t)(out_seq - to->last_out_seq) > 0 || to->st.tx_packets == 0) {
            to->last_out_seq = out_seq;
            to->last_out_ts = out_ts;
        }
        to->last_out_ns = e->now_ns;
    }
    leg_sendto(to, pkt, (size_t)n, is_rtcp);
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
        eng_emit_leg(e, EV_LATCHED, id);
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
                eng_emit_leg(e, EV_RELATCHED, id);
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

/* The receive headers, allocated with their iovecs behind them, each pointing at its buffer and address. */
static struct mmsghdr *rx_alloc(engine_t *e)
{
    struct mmsghdr *msgs = calloc(MAX_BURST, sizeof(struct mmsghdr) + sizeof(struct iovec));
    if (!msgs)
        return NULL;
    struct iovec *iov = (struct iovec *)(msgs + MAX_BURST);
    for (int k = 0; k < MAX_BURST; k++) {
        iov[k].iov_base = e->rx[k];
        iov[k].iov_len = PKT_MAX;
        msgs[k].msg_hdr.msg_name = &e->rx_from[k];
        msgs[k].msg_hdr.msg_iov = &iov[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
    }
    return msgs;
}

/* What the socket holds, up to MAX_BURST datagrams, in one system call: a loop of recvfrom until EAGAIN made
 * two calls for the one packet a leg usually has per wake-up. More left queued: epoll (level-triggered)
 * reports the socket again. -1: EAGAIN, or an ICMP error reported on the socket. */
static int receive_burst(engine_t *e, int fd)
{
    for (int k = 0; k < MAX_BURST; k++) /* value-result: the last call left each its address's length */
        e->rx_msgs[k].msg_hdr.msg_namelen = sizeof e->rx_from[k];
    return recvmmsg(fd, e->rx_msgs, MAX_BURST, MSG_DONTWAIT, NULL);
}

static void on_readable(engine_t *e, int id)
{
    leg_t *l = &e->legs[id];
    int got = receive_burst(e, l->fd);
    for (int k = 0; k < got && l->used; k++) {
        uint8_t *pkt = e->rx[k];
        const struct sockaddr_storage *from = &e->rx_from[k];
        socklen_t from_len = e->rx_msgs[k].msg_hdr.msg_namelen;
        ssize_t n = (ssize_t)e->rx_msgs[k].msg_len;
        if (n < 12 || (pkt[0] >> 6) != 2) {
            l->st.rx_invalid++;
            continue;
        }
        uint8_t pt = pkt[1] & 0x7f;
        int is_rtcp = pt >= 72 && pt <= 76; /* RTCP multiplexed on the RTP port (RFC 5761) */
        if (l->srtp_failed) {
            l->st.rx_invalid++;
            continue;
        }
        if (l->srtp_rx) { /* nothing unauthenticated goes further: not even to latch the leg */
            int m = is_rtcp ? srtcp_unprotect(l->srtp_rx, pkt, (int)n) : srtp_unprotect(l->srtp_rx, pkt, (int)n);
            if (m < (is_rtcp ? 8 : 12)) {
                l->st.rx_invalid++;
                continue;
            }
            n = m;
        }
        uint16_t seq = (uint16_t)((pkt[2] << 8) | pkt[3]);
        uint32_t ssrc = rd32(pkt + 8);
        int hdr = 12 + 4 * (pkt[0] & 0x0f);
        if (is_rtcp) {
            if (l->latched && !same_addr(from, &l->remote)) {
                l->st.rx_foreign++;
                continue;
            }
            l->rtcp_mux = 1; /* the far end multiplexes: our reports go to its RTP port too */
            rtcp_receive(e, l, pkt, (int)n);
            continue;
        } else {
            if (!accept_source(e, id, l, from, from_len, ssrc, seq))
                continue;
            if (ssrc != l->st.rx_ssrc) {
                if (l->st.rx_packets) {
                    l->st.ssrc_changes++;
                    eng_emit_leg(e, EV_SSRC_CHANGED, id);
                }
                reset_rx(l);
                l->st.rx_ssrc = ssrc;
            }
            rx_sequence(l, seq);
            rx_jitter(e, l, rd32(pkt + 4));
            l->st.last_seq = seq;
            l->st.last_pt = pt;
        }
        l->st.rx_packets++;
        l->st.rx_bytes += (uint64_t)n;
        update_counts(l);
        if (!is_rtcp && (pkt[0] & 0x10)) { /* header extension: skip it to reach the payload */
            if (n < hdr + 4)
                continue;
            hdr += 4 + 4 * ((pkt[hdr + 2] << 8) | pkt[hdr + 3]);
        }
        int len = (int)n - hdr;
        if (!is_rtcp && (pkt[0] & 0x20) && len > 0) /* padding */
            len -= pkt[n - 1];
        if (!is_rtcp && len < 0)
            continue;
        if (!is_rtcp && pt == l->te_pt && l->te_pt >= 0)
            te_receive(e, id, l, pkt + hdr, len, rd32(pkt + 4));
        /* a processed leg's audio only goes into its jitter buffer; a tapped one (recorded while relayed)
         * goes there as a copy and is forwarded at once as well. The buffer plays out one frame per
         * sequence number, so the numbers other payloads (telephone events, comfort noise) took from the
         * stream are taken out: a phone sending events alongside its audio must not read as lost frames. */
        if (l->jb_on && !is_rtcp && pt == l->pt)
            jb_push(&l->jb, (uint16_t)(seq - l->jb_seq_skip), rd32(pkt + 4), pt, (pkt[1] & 0x80) != 0, pkt + hdr,
                    len, e->now_ns);
        else if (!is_rtcp && pt != l->pt)
            l->jb_seq_skip++;
        if (l->peer >= 0 && e->legs[l->peer].used) {
            if (!is_rtcp && pt == l->pt) { /* media streams of a relayed call: the payload as it passes */
                if (l->stream_tap & 1)
                    stream_packet(e, id, 0, l->codec, pkt + hdr, len);
                if (e->legs[l->peer].stream_tap & 2)
                    stream_packet(e, l->peer, 1, l->codec, pkt + hdr, len);
            }
            forward(e, l, &e->legs[l->peer], pkt, n, is_rtcp);
        }
    }
}

static void on_rtcp(engine_t *e, int id)
{
    leg_t *l = &e->legs[id];
    uint8_t pkt[PKT_MAX];
    for (int burst = 0; burst < MAX_BURST && l->used; burst++) {
        struct sockaddr_storage from;
        socklen_t from_len = sizeof from;
        ssize_t n = recvfrom(l->rtcp_fd, pkt, sizeof pkt, MSG_DONTWAIT, (struct sockaddr *)&from, &from_len);
        if (n < 0)
            return;
        if (n < 8 || (pkt[0] >> 6) != 2 || pkt[1] < 200 || pkt[1] > 204) {
            l->st.rx_invalid++;
            continue;
        }
        if (l->srtp_failed || (l->srtp_rx && (n = srtcp_unprotect(l->srtp_rx, pkt, (int)n)) < 8)) {
            l->st.rx_invalid++;
            continue;
        }
        if (!l->rtcp_latched) {
            l->rtcp_remote = from;
            l->rtcp_remote_len = from_len;
            l->rtcp_latched = 1;
        } else if (!same_addr(&from, &l->rtcp_remote)) {
            l->st.rx_foreign++;
            continue;
        }
        rtcp_receive(e, l, pkt, (int)n);
    }
}

/* -- commands (Python -> media thread) -------------------------------------------------------------- */
/* keys: our master key||salt, then the far end's (60 bytes); NULL goes back to plain RTP */
static void leg_srtp(leg_t *l, const uint8_t *keys, int tag_len)
{
    l->srtp_failed = 0;
    for (int k = 0; k < 2; k++) {
        srtp_t **slot = k ? &l->srtp_rx : &l->srtp_tx;
        if (*slot) {
            srtp_free(*slot);
            free(*slot);
            *slot = NULL;
        }
        if (!keys)
            continue;
        srtp_t *s = malloc(sizeof *s);
        if (s && srtp_init(s, keys + SRTP_MASTER_LEN * k, tag_len) == 0) {
            *slot = s;
        } else {
            free(s);
            l->srtp_failed = 1; /* unusable keys: the leg sends and takes nothing rather than clear RTP */
        }
    }
}

static void leg_close(engine_t *e, int id)
{
    leg_t *l = &e->legs[id];
    if (!l->used)
        return;
    leg_play_stop(e, id, 1);
    leg_inband(e, id, 0);
    leg_amd(e, id, NULL);
    leg_stream_play(e, id, 0);
    leg_stream_tap(e, id, 0);
    group_leave(e, id);
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, l->fd, NULL);
    close(l->fd);
    if (l->rtcp_fd >= 0) {
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, l->rtcp_fd, NULL);
        close(l->rtcp_fd);
    }
    leg_srtp(l, NULL, 0);
    update_counts(l);
    eng_emit_leg(e, EV_LEG_CLOSED, id);
    l->used = 0;
}

static void apply(engine_t *e, const eng_cmd_t *c)
{
    if (c->type == CMD_STOP) {
        e->stopping = 1;
        return;
    }
    int gid = c->other;
    int has_group = gid >= 0 && gid < e->max_legs;
    if (c->type == CMD_GROUP_MODE || c->type == CMD_REC_START || c->type == CMD_REC_STOP || c->type == CMD_REC_PAUSE) {
        if (!has_group) {
            if (c->type == CMD_REC_START) /* nowhere to record: do not leak the open file */
                wav_close((wav_writer_t *)c->ptr, NULL, NULL);
            return;
        }
        group_t *g = &e->groups[gid];
        if (c->type == CMD_GROUP_MODE) {
            g->forced = c->flags;
        } else if (c->type == CMD_REC_START) {
            group_rec_start(e, gid, (wav_writer_t *)c->ptr, c->flags, (int)c->len);
        } else if (c->type == CMD_REC_STOP) {
            group_rec_stop(e, gid);
        } else {
            g->rec_paused = c->flags;
        }
        group_update_mode(e, gid);
        return;
    }
    if (c->leg < 0 || c->leg >= e->max_legs)
        return;
    leg_t *l = &e->legs[c->leg];
    if (c->type == CMD_LEG_ADD) {
        if (l->used)
            leg_close(e, c->leg);
        memset(l, 0, sizeof *l);
        l->fd = c->other;
        l->rtcp_fd = (int)c->len;
        l->used = 1;
        l->peer = l->group = -1;
        l->pt = 0;
        l->te_pt = -1;
        l->gain = 1.0f;
        l->out_ssrc = next_rand(e);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)c->leg};
        epoll_ctl(e->epfd, EPOLL_CTL_ADD, l->fd, &ev);
        if (l->rtcp_fd >= 0) {
            ev.data.u32 = (uint32_t)(e->max_legs + 2 + c->leg);
            epoll_ctl(e->epfd, EPOLL_CTL_ADD, l->rtcp_fd, &ev);
        }
        return;
    }
    if (!l->used)
        return;
    switch (c->type) {
    case CMD_LEG_DEL:
        leg_close(e, c->leg);
        break;
    case CMD_LEG_REMOTE:
        l->remote = c->addr;
        l->remote_len = c->addr_len;
        l->has_remote = 1;
        l->latched = 0; /* a new SDP address: learn the real source again (symmetric RTP) */
        l->rtcp_latched = 0;
        break;
    case CMD_LEG_CODEC:
        l->codec = c->flags == 8 ? 8 : 0;
        l->pt = c->other;
        l->te_pt = (int)c->value;
        break;
    case CMD_JOIN:
        if (has_group)
            group_join(e, c->leg, gid);
        break;
    case CMD_LEAVE:
        group_leave(e, c->leg);
        break;
    case CMD_GAIN:
        l->gain = (float)c->value;
        l->muted = c->flags;
        if (l->group >= 0)
            group_update_mode(e, l->group);
        break;
    case CMD_PLAY:
        leg_play_stop(e, c->leg, 1);
        l->play = (const int16_t *)c->ptr;
        l->play_len = c->len;
        l->play_pos = 0;
        l->play_loop = c->flags;
        l->play_id = c->other;
        if (l->group >= 0)
            group_update_mode(e, l->group);
        break;
    case CMD_PLAY_STOP:
        leg_play_stop(e, c->leg, 1);
        break;
    case CMD_DTMF:
        te_queue(l, c->flags, c->other);
        arm_timer(e);
        break;
    case CMD_INBAND:
        leg_inband(e, c->leg, c->flags);
        break;
    case CMD_AMD:
        leg_amd(e, c->leg, c->flags ? (const amd_params_t *)c->ptr : NULL);
        free((void *)c->ptr);
        break;
    case CMD_STREAM_TAP:
        leg_stream_tap(e, c->leg, c->flags);
        break;
    case CMD_STREAM_PLAY:
        leg_stream_play(e, c->leg, c->flags);
        break;
    case CMD_STREAM_PUSH:
        leg_stream_push(e, c->leg, c->ptr, c->len);
        free((void *)c->ptr);
        break;
    case CMD_SRTP:
        leg_srtp(l, c->ptr, c->flags);
        free((void *)c->ptr);
        break;
    case CMD_STREAM_MARK:
        leg_stream_mark(e, c->leg, c->other);
        break;
    case CMD_STREAM_CLEAR:
        leg_stream_clear(e, c->leg);
        break;
    }
}

static void drain_commands(engine_t *e)
{
    uint64_t count;
    if (read(e->cmdfd, &count, sizeof count) < 0 && errno != EAGAIN) {
        /* the ring below is the truth */
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

static void on_tick(engine_t *e)
{
    uint64_t expirations = 0;
    if (read(e->timerfd, &expirations, sizeof expirations) < 0)
        return;
    if (expirations > 1)
        e->late_ticks += expirations - 1; /* one tick runs per wake-up: we fell behind, not ahead */
    for (int gid = 0; gid < e->max_legs; gid++)
        if (e->groups[gid].used && (e->groups[gid].processed || e->groups[gid].tapped))
            group_tick(e, gid);
    int busy = 0;
    for (int id = 0; id < e->max_legs; id++) {
        leg_t *l = &e->legs[id];
        if (l->used && te_busy(l)) {
            if (l->group < 0 || !e->groups[l->group].processed)
                te_tick(e, l); /* processed legs send their events from group_tick */
            busy = 1;
        }
    }
    if (e->fr_count > 0)
        e->ev_pending = 1; /* the streams' frames of this tick go to Python in one batch */
    if (!busy && e->processed_groups == 0 && e->stream_taps == 0)
        arm_timer(e);
}

static void *run(void *arg)
{
    engine_t *e = arg;
    struct epoll_event evs[EPOLL_BATCH];
    while (!e->stopping) {
        int n = epoll_wait(e->epfd, evs, EPOLL_BATCH, 1000);
        e->now_ns = mono_ns();
        if (n == 0)
            drain_commands(e); /* a backstop: a command whose wake-up write failed (see eng_push) */
        for (int i = 0; i < n; i++) {
            uint32_t id = evs[i].data.u32;
            if (id == (uint32_t)e->max_legs)
                drain_commands(e);
            else if (id == (uint32_t)e->max_legs + 1)
                on_tick(e);
            else if (id >= (uint32_t)e->max_legs + 2)
                on_rtcp(e, (int)(id - (uint32_t)e->max_legs - 2));
            else if (e->legs[id].used)
                on_readable(e, (int)id);
        }
        if (e->now_ns >= e->rtcp_check_ns) {
            rtcp_tick(e);
            e->rtcp_check_ns = e->now_ns + 1000000000ull;
        }
        flush_events(e);
    }
    for (int id = 0; id < e->max_legs; id++)
        leg_close(e, id);
    for (int gid = 0; gid < e->max_legs; gid++)
        group_rec_stop(e, gid);
    flush_events(e);
    return NULL;
}

/* -- the API Python calls ------------------------------------------------------------------------------ */
engine_t *eng_new(int max_legs, int cmd_capacity, int event_capacity)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build_tables);
    engine_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->max_legs = max_legs;
    e->legs = calloc((size_t)max_legs, sizeof(leg_t));
    e->groups = calloc((size_t)max_legs, sizeof(group_t));
    e->cmds = calloc((size_t)cmd_capacity, sizeof(eng_cmd_t));
    e->evs = calloc((size_t)event_capacity, sizeof(eng_event_t));
    e->fr_cap = FRAME_RING;
    e->frs = calloc((size_t)e->fr_cap, sizeof(eng_frame_t));
    e->cmd_cap = cmd_capacity;
    e->ev_cap = event_capacity;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->cmdfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    e->rng = (uint32_t)mono_ns() | 1u;
    e->rx_msgs = rx_alloc(e);
    pthread_mutex_init(&e->cmd_lock, NULL);
    pthread_mutex_init(&e->ev_lock, NULL);
    pthread_mutex_init(&e->fr_lock, NULL);
    if (!e->legs || !e->groups || !e->cmds || !e->evs || !e->frs || !e->rx_msgs || e->epfd < 0 || e->cmdfd < 0 || e->evfd < 0 || e->timerfd < 0) {
        eng_free(e);
        return NULL;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)max_legs};
    epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->cmdfd, &ev);
    ev.data.u32 = (uint32_t)max_legs + 1;
    epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->timerfd, &ev);
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

/* Wake the media thread to drain its command ring. */
static void wake_for_commands(engine_t *e)
{
    uint64_t one = 1;
    (void)!write(e->cmdfd, &one, sizeof one);
}

int eng_push(engine_t *e, const eng_cmd_t *cmd)
{
    pthread_mutex_lock(&e->cmd_lock);
    if (e->stopped || e->cmd_count == e->cmd_cap) { /* stopped: no thread would ever take it (open_leg's fds) */
        int rc = e->stopped ? -2 : -1;
        pthread_mutex_unlock(&e->cmd_lock);
        return rc;
    }
    e->cmds[(e->cmd_head + e->cmd_count) % e->cmd_cap] = *cmd;
    int wake = e->cmd_count++ == 0, owed_now = 0;
    if (wake && e->defer_wake && cmd->type != CMD_STOP) {
        owed_now = !e->wake_owed;
        e->wake_owed = 1;
        wake = 0;
    }
    pthread_mutex_unlock(&e->cmd_lock);
    /* Only the first of a run of commands wakes the media thread: it drains until it finds the ring empty
       under the lock, so a command pushed onto a non-empty ring is taken in the same drain (a call set up
       pushes a dozen in a row, and each write was a system call and, often, a wake-up). Deferred
       (eng_defer: Python's event loop), that first one does not write either: eng_release does, once for
       every command one callback pushed (a call's messages pushed 15 a call, most of them first of a run).
       Queued: the media thread runs it even if this write fails (an eventfd write fails only at a counter
       overflow): then at the latest when its epoll_wait times out, within a second, as it drains the ring
       there too. -1 would tell the caller the command was not taken, and the caller would free what it hands
       over (open_leg's sockets) while the thread adopts them. */
    if (wake)
        wake_for_commands(e);
    return owed_now; /* 1: the first deferred wake-up since the last release: schedule eng_release */
}

void eng_release(engine_t *e)
{
    pthread_mutex_lock(&e->cmd_lock);
    int owed = e->wake_owed;
    e->wake_owed = 0;
    pthread_mutex_unlock(&e->cmd_lock);
    if (owed)
        wake_for_commands(e);
}

void eng_defer(engine_t *e, int on)
{
    pthread_mutex_lock(&e->cmd_lock);
    e->defer_wake = on;
    pthread_mutex_unlock(&e->cmd_lock);
    if (!on)
        eng_release(e);
}

void eng_stop(engine_t *e)
{
    if (!e->started)
        return;
    eng_cmd_t c;
    memset(&c, 0, sizeof c);
    c.type = CMD_STOP;
    while (eng_push(e, &c) != 0)
        usleep(1000);
    pthread_join(e->thread, NULL);
    e->started = 0;
    pthread_mutex_lock(&e->cmd_lock);
    e->stopped = 1;
    pthread_mutex_unlock(&e->cmd_lock);
}

void eng_free(engine_t *e)
{
    if (!e)
        return;
    eng_stop(e);
    for (int id = 0; e->legs && id < e->max_legs; id++) {
        if (e->legs[id].used) {
            close(e->legs[id].fd);
            if (e->legs[id].rtcp_fd >= 0)
                close(e->legs[id].rtcp_fd);
        }
    }
    for (int gid = 0; e->groups && gid < e->max_legs; gid++)
        if (e->groups[gid].rec) /* never started, or stopped without draining events: close here */
            wav_close(e->groups[gid].rec, NULL, NULL);
    if (e->epfd >= 0)
        close(e->epfd);
    if (e->cmdfd >= 0)
        close(e->cmdfd);
    if (e->evfd >= 0)
        close(e->evfd);
    if (e->timerfd >= 0)
        close(e->timerfd);
    pthread_mutex_destroy(&e->cmd_lock);
    pthread_mutex_destroy(&e->ev_lock);
    pthread_mutex_destroy(&e->fr_lock);
    free(e->frs);
    free(e->rx_msgs);
    free(e->legs);
    free(e->groups);
    free(e->cmds);
    free(e->evs);
    free(e);
}

int eng_event_fd(engine_t *e) { return e->evfd; }
uint64_t eng_dropped_frames(engine_t *e) { return e->fr_dropped; }

int eng_pop_frames(engine_t *e, eng_frame_t *out, int max)
{
    pthread_mutex_lock(&e->fr_lock);
    int n = e->fr_count < max ? e->fr_count : max;
    for (int i = 0; i < n; i++)
        out[i] = e->frs[(e->fr_head + i) % e->fr_cap];
    e->fr_head = (e->fr_head + n) % e->fr_cap;
    e->fr_count -= n;
    pthread_mutex_unlock(&e->fr_lock);
    return n;
}
int eng_max_legs(engine_t *e) { return e->max_legs; }
uint64_t eng_dropped_events(engine_t *e) { return e->ev_dropped; }
uint64_t eng_late_ticks(engine_t *e) { return e->late_ticks; }

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
    if (e->legs[leg].jb_on) {
        jb_stats_t js;
        jb_get_stats(&e->legs[leg].jb, &js);
        out->jb_concealed = js.concealed;
        out->jb_late = js.late;
        out->jb_skipped = js.skipped;
        out->jb_target_frames = js.target_frames;
    }
    return 0;
}

double eng_cpu_seconds(engine_t *e)
{
    struct timespec ts;
    if (!e->started || clock_gettime(e->cpu_clock, &ts) != 0)
        return 0.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
