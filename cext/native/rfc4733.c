/* RFC 4733 telephone events: received events become one DTMF event each (end-packet retransmissions
 * and lost ends handled), and digits we are told to send go out as events on the leg's own stream.
 *
 * Receive: packets of one event share an RTP timestamp (RFC 4733 2.5.1.1); the first end-bit packet
 * reports the digit, its two retransmissions are ignored; a new timestamp while an event has no end yet
 * (its end packets were all lost) reports the old one with the longest duration seen.
 * Send: one packet per 20 ms tick, the first with the marker bit, duration growing by 160; the end packet
 * is sent three times (2.5.1.4); then a 60 ms gap before the next queued digit. While a leg sends an
 * event its relayed audio is held back so the event owns the stream's sequence numbers.
 */
#include <string.h>

#include "engine_internal.h"

#define END_REPEATS 3
#define GAP_TICKS 3

static void report(engine_t *e, int id, leg_t *l)
{
    l->te_rx_reported = 1;
    l->st.dtmf_events++;
    /* duration: 8 kHz timestamp units -> ms */
    eng_emit_values(e, EV_DTMF, id, l->te_rx_event, (int64_t)l->te_rx_start_ns, l->te_rx_duration / 8);
    /* on the processed path packets are not forwarded: regenerate the digit on the other party */
    if (l->group >= 0 && e->groups[l->group].processed && e->groups[l->group].n == 2) {
        group_t *g = &e->groups[l->group];
        leg_t *other = &e->legs[g->members[g->members[0] == id ? 1 : 0]];
        te_queue(other, l->te_rx_event, l->te_rx_duration / 8 > 40 ? l->te_rx_duration / 8 : 40);
    }
}

void te_receive(engine_t *e, int id, leg_t *l, const uint8_t *p, int len, uint32_t ts)
{
    if (len < 4 || p[0] > 16)
        return; /* not a DTMF event (RFC 4733 3.2 codes 0-16) */
    int end = (p[1] & 0x80) != 0;
    uint16_t duration = (uint16_t)((p[2] << 8) | p[3]);
    if (!l->te_rx_active || ts != l->te_rx_ts) {
        if (l->te_rx_active && !l->te_rx_reported)
            report(e, id, l);
        l->te_rx_active = 1;
        l->te_rx_reported = 0;
        l->te_rx_ts = ts;
        l->te_rx_event = p[0];
        l->te_rx_duration = duration;
        l->te_rx_start_ns = e->now_ns;
    } else if (duration > l->te_rx_duration) {
        l->te_rx_duration = duration;
    }
    if (end && !l->te_rx_reported)
        report(e, id, l);
}

void te_queue(leg_t *l, int event, int duration_ms)
{
    te_tx_t *t = &l->te_tx;
    if (l->te_pt < 0 || t->count == DTMF_QUEUE || event < 0 || event > 16)
        return;
    int at = (t->head + t->count) % DTMF_QUEUE;
    t->queue[at] = (uint8_t)event;
    t->queue_ms[at] = (uint16_t)(duration_ms < 40 ? 40 : duration_ms > 5000 ? 5000 : duration_ms);
    t->count++;
}

int te_busy(const leg_t *l)
{
    const te_tx_t *t = &l->te_tx;
    return t->active || t->count > 0;
}

int te_tick(engine_t *e, leg_t *l)
{
    te_tx_t *t = &l->te_tx;
    int marker = 0;
    if (t->active < 0) { /* the gap after an event */
        t->active++;
        return 1;
    }
    if (!t->active) {
        if (!t->count)
            return 0;
        t->event = t->queue[t->head];
        t->total = (uint32_t)t->queue_ms[t->head] * 8u;
        t->head = (t->head + 1) % DTMF_QUEUE;
        t->count--;
        t->active = 1;
        t->duration = 0;
        t->end_sent = 0;
        t->ts = l->out_started ? l->last_out_ts + 160 : 0;
        marker = 1;
    }
    if (t->duration < t->total)
        t->duration = t->duration + 160 > t->total ? t->total : t->duration + 160;
    int end = t->duration >= t->total;
    uint8_t payload[4] = {(uint8_t)t->event, (uint8_t)((end ? 0x80 : 0) | 10), (uint8_t)(t->duration >> 8),
                          (uint8_t)t->duration};
    leg_send_frame(e, l, l->te_pt, marker, payload, 4, t->ts);
    if (end && ++t->end_sent >= END_REPEATS) {
        eng_emit_values(e, EV_DTMF_SENT, (int)(l - e->legs), t->event, 0, 0);
        /* the next audio continues the stream's clock after the event's span */
        l->last_out_ts = t->ts + t->duration;
        t->active = -GAP_TICKS;
    }
    return 1;
}
