/* RTCP per leg (RFC 3550 6.4): the engine terminates RTCP on each leg rather than passing it through,
 * because it rewrites SSRCs and so a far end's reports would name streams the other side never saw.
 *
 * Receive: SR and RR compound packets on the RTCP port (or multiplexed on the RTP port, RFC 5761). A
 * report block about our own SSRC gives the far end's view of our stream (fraction and cumulative lost,
 * jitter) and, with LSR/DLSR, the round-trip time: RTT = arrival - LSR - DLSR in 1/65536 s (6.4.1).
 * Send: every 5 s per leg (offset by leg id so reports spread), an SR when we sent RTP since the last
 * report, else an RR, each with one report block about the stream we receive, plus an SDES CNAME.
 * The report goes back the way reports came: to the RTCP port's latched source, else RTP port + 1, or
 * on the RTP port when the far end multiplexes.
 */
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "engine_internal.h"

#define RTCP_INTERVAL_NS 5000000000ull
#define NTP_UNIX_OFFSET 2208988800ull

static inline uint32_t rd32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }
static inline void wr32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }

/* NTP time as 32.32 fixed point, from the wall clock (SR timestamps are absolute). */
static uint64_t ntp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec + NTP_UNIX_OFFSET) << 32 | (uint64_t)(((uint64_t)ts.tv_nsec << 32) / 1000000000ull);
}

static void report_block(const uint8_t *b, leg_t *l, uint32_t arrival_mid)
{
    l->st.rtcp_fraction_lost = b[4];
    int32_t cum = (int32_t)((b[5] << 16) | (b[6] << 8) | b[7]);
    if (cum & 0x800000)
        cum -= 0x1000000; /* 24-bit signed */
    l->st.rtcp_cum_lost = cum;
    l->st.rtcp_jitter_ts = rd32(b + 12);
    uint32_t lsr = rd32(b + 16), dlsr = rd32(b + 20);
    if (lsr) {
        uint32_t rtt = arrival_mid - lsr - dlsr; /* 1/65536 s */
        if (rtt < 65536u * 10)
            l->st.rtt_us = (uint32_t)(((uint64_t)rtt * 1000000u) >> 16);
    }
}

void rtcp_receive(engine_t *e, leg_t *l, const uint8_t *p, int n)
{
    uint64_t ntp = ntp_now();
    uint32_t arrival_mid = (uint32_t)(ntp >> 16);
    l->st.rtcp_rx++;
    while (n >= 8 && (p[0] >> 6) == 2) {
        int len = 4 * (((p[2] << 8) | p[3]) + 1);
        if (len > n)
            return;
        int count = p[0] & 0x1f, pt = p[1];
        const uint8_t *blocks = NULL;
        if (pt == 200 && len >= 28) { /* SR: remember its NTP middle for our LSR/DLSR */
            l->rtcp_lsr = (uint32_t)(((uint64_t)rd32(p + 8) << 16) | (rd32(p + 12) >> 16));
            l->rtcp_lsr_at_ns = e->now_ns;
            blocks = p + 28;
        } else if (pt == 201 && len >= 8) {
            blocks = p + 8;
        }
        for (int i = 0; blocks && i < count && blocks + 24 <= p + len; i++, blocks += 24)
            if (rd32(blocks) == l->out_ssrc)
                report_block(blocks, l, arrival_mid);
        p += len;
        n -= len;
    }
}

static int put_report_block(uint8_t *b, engine_t *e, leg_t *l)
{
    if (!l->st.rx_packets)
        return 0;
    uint64_t expected = l->st.expected, received = expected - (uint64_t)(l->st.lost > 0 ? l->st.lost : 0);
    uint64_t exp_int = expected - l->rtcp_prior_expected, rec_int = received - l->rtcp_prior_received;
    l->rtcp_prior_expected = expected;
    l->rtcp_prior_received = received;
    int64_t lost_int = (int64_t)exp_int - (int64_t)rec_int;
    uint8_t fraction = (exp_int == 0 || lost_int <= 0) ? 0 : (uint8_t)((lost_int << 8) / (int64_t)exp_int);
    int64_t cum = l->st.lost > 0x7fffff ? 0x7fffff : l->st.lost < -0x800000 ? -0x800000 : l->st.lost;
    wr32(b, l->st.rx_ssrc);
    b[4] = fraction;
    b[5] = (uint8_t)(cum >> 16);
    b[6] = (uint8_t)(cum >> 8);
    b[7] = (uint8_t)cum;
    wr32(b + 8, (uint32_t)(l->cycles + l->max_seq));
    wr32(b + 12, l->st.jitter_ts);
    uint32_t dlsr = 0;
    if (l->rtcp_lsr)
        dlsr = (uint32_t)(((e->now_ns - l->rtcp_lsr_at_ns) << 16) / 1000000000ull);
    wr32(b + 16, l->rtcp_lsr);
    wr32(b + 20, dlsr);
    return 24;
}

static void rtcp_send(engine_t *e, int id, leg_t *l)
{
    uint8_t pkt[128];
    int off, blocks;
    int sender = l->st.tx_packets != l->rtcp_prior_tx;
    l->rtcp_prior_tx = l->st.tx_packets;
    if (sender) {
        uint64_t ntp = ntp_now();
        uint32_t rtp_ts = l->last_out_ts + (uint32_t)((e->now_ns - l->last_out_ns) / 125000u);
        pkt[1] = 200;
        wr32(pkt + 4, l->out_ssrc);
        wr32(pkt + 8, (uint32_t)(ntp >> 32));
        wr32(pkt + 12, (uint32_t)ntp);
        wr32(pkt + 16, rtp_ts);
        wr32(pkt + 20, (uint32_t)l->st.tx_packets);
        wr32(pkt + 24, (uint32_t)(l->st.tx_bytes - 12 * l->st.tx_packets));
        off = 28;
    } else {
        pkt[1] = 201;
        wr32(pkt + 4, l->out_ssrc);
        off = 8;
    }
    blocks = put_report_block(pkt + off, e, l) ? 1 : 0;
    off += 24 * blocks;
    pkt[0] = (uint8_t)(0x80 | blocks);
    pkt[2] = 0;
    pkt[3] = (uint8_t)(off / 4 - 1);
    /* SDES with a CNAME (mandatory in a compound packet, 6.1): "sw-<leg>" padded to a word */
    uint8_t *s = pkt + off;
    int name_len = 3 + (id >= 10000 ? 5 : id >= 1000 ? 4 : id >= 100 ? 3 : id >= 10 ? 2 : 1);
    int item = 2 + name_len, chunk = 4 + item + 1;
    chunk = (chunk + 3) & ~3;
    memset(s, 0, (size_t)(4 + chunk));
    s[0] = 0x81;
    s[1] = 202;
    s[2] = 0;
    s[3] = (uint8_t)(chunk / 4);
    wr32(s + 4, l->out_ssrc);
    s[8] = 1;
    s[9] = (uint8_t)name_len;
    memcpy(s + 10, "sw-", 3);
    for (int k = name_len - 1, v = id; k >= 3; k--, v /= 10)
        s[10 + k] = (uint8_t)('0' + v % 10);
    off += 4 + chunk;
    const struct sockaddr_storage *to = l->rtcp_latched ? &l->rtcp_remote : &l->remote;
    socklen_t to_len = l->rtcp_latched ? l->rtcp_remote_len : l->remote_len;
    int fd = l->rtcp_mux ? l->fd : l->rtcp_fd;
    struct sockaddr_storage dest = *to;
    if (!l->rtcp_latched && !l->rtcp_mux) { /* RTP port + 1 */
        if (dest.ss_family == AF_INET)
            ((struct sockaddr_in *)&dest)->sin_port = htons((uint16_t)(ntohs(((struct sockaddr_in *)&dest)->sin_port) + 1));
        else
            ((struct sockaddr_in6 *)&dest)->sin6_port = htons((uint16_t)(ntohs(((struct sockaddr_in6 *)&dest)->sin6_port) + 1));
    }
    uint8_t buf[PKT_MAX + SRTP_MAX_TRAILER];
    size_t n = (size_t)off;
    const uint8_t *out = leg_protect(l, pkt, &n, 1, buf);
    if (fd >= 0 && out && sendto(fd, out, n, MSG_DONTWAIT, (struct sockaddr *)&dest, to_len) == (ssize_t)n)
        l->st.rtcp_tx++;
}

void rtcp_tick(engine_t *e)
{
    for (int id = 0; id < e->max_legs; id++) {
        leg_t *l = &e->legs[id];
        if (!l->used || !l->has_remote)
            continue;
        if (!l->rtcp_due_ns)
            l->rtcp_due_ns = e->now_ns + RTCP_INTERVAL_NS / 2 + (uint64_t)(id % 100) * (RTCP_INTERVAL_NS / 100);
        if (e->now_ns >= l->rtcp_due_ns) {
            rtcp_send(e, id, l);
            l->rtcp_due_ns = e->now_ns + RTCP_INTERVAL_NS;
        }
    }
}
