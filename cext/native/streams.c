/* Media streams on the media thread: frames copied out for WebSocket subscribers, and a subscriber's audio
 * played into a leg.
 *
 * Out: a leg tapped for streams (CMD_STREAM_TAP) puts what its far end sent (rx) and what the leg sends it
 * (tx) into one ring as mu-law. Relayed, that is each packet's payload as it arrives (engine.c: a tap adds
 * no delay, not even a jitter buffer's, which a voice bot would hear as latency); processed, each tick's
 * frame after the jitter buffer and the mix (mix.c). The ring's frames wake Python once per 20 ms tick,
 * so the frames of every stream leave in one batch a tick (at most 20 ms after a packet passed). A full ring drops frames and
 * counts them: Python falling behind never stalls the media thread.
 *
 * In: a leg with a stream playout (CMD_STREAM_PLAY) queues subscriber audio (CMD_STREAM_PUSH, mu-law) in a
 * ring of 65 s and mixes 20 ms of it into what the leg sends per tick. Jitter tolerance: after the queue
 * ran dry, playing starts again once 60 ms are queued or the first queued sample has waited 60 ms, so a
 * subscriber sending in real time with some jitter is heard without gaps, and one sending faster than
 * real time (text-to-speech in bursts) is paced. Marks (CMD_STREAM_MARK) sit at the queue's write position
 * and are reported when playing reaches it; clearing drops the queue and reports the waiting marks.
 */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "g711.h"

#define SP_CAP (1u << 19) /* samples queued at most: 65.5 s */
#define SP_PREBUFFER 480  /* samples (60 ms) queued before playing starts again */
#define SP_PREBUFFER_NS 60000000ull
#define SP_MARKS 256

struct sp {
    uint64_t rd, wr; /* samples played and queued since the playout started (ring index: & (SP_CAP - 1)) */
    uint64_t first_ns, dropped;
    int playing, mark_head, n_marks;
    int mark_id[SP_MARKS];
    uint64_t mark_pos[SP_MARKS];
    int16_t buf[SP_CAP];
};

/* The next free slot of the frame ring, locked (or NULL, counted, when Python fell behind). */
static eng_frame_t *frame_slot(engine_t *e, int leg, int track)
{
    pthread_mutex_lock(&e->fr_lock);
    if (e->fr_count == e->fr_cap) {
        e->fr_dropped++;
        pthread_mutex_unlock(&e->fr_lock);
        return NULL;
    }
    eng_frame_t *f = &e->frs[(e->fr_head + e->fr_count) % e->fr_cap];
    f->leg = leg;
    f->track = track;
    f->ns = (int64_t)e->now_ns;
    return f;
}

static void frame_done(engine_t *e)
{
    e->fr_count++;
    pthread_mutex_unlock(&e->fr_lock); /* Python is woken for them on the next tick (engine.c on_tick) */
}

void stream_frame(engine_t *e, int leg, int track, const int16_t *pcm)
{
    eng_frame_t *f = frame_slot(e, leg, track);
    if (!f)
        return;
    f->len = FRAME;
    for (int i = 0; i < FRAME; i++)
        f->ulaw[i] = g711_lin2ulaw(pcm[i]);
    frame_done(e);
}

void stream_packet(engine_t *e, int leg, int track, int codec, const uint8_t *payload, int len)
{
    if (len <= 0)
        return;
    eng_frame_t *f = frame_slot(e, leg, track);
    if (!f)
        return;
    f->len = len < ENG_FRAME_MAX ? len : ENG_FRAME_MAX;
    if (codec == 8)
        for (int i = 0; i < f->len; i++)
            f->ulaw[i] = g711_lin2ulaw(g711_alaw2lin(payload[i]));
    else
        memcpy(f->ulaw, payload, (size_t)f->len);
    frame_done(e);
}

/* No mode change: relayed, the tap copies packets as they pass; processed, the tick copies its frames.
 * Either way the tick runs while any leg is tapped: it is what hands the frames over, once per 20 ms. */
void leg_stream_tap(engine_t *e, int id, int tracks)
{
    leg_t *l = &e->legs[id];
    e->stream_taps += (tracks != 0) - (l->stream_tap != 0);
    l->stream_tap = tracks;
    arm_timer(e);
}

static void report_marks(engine_t *e, int id, sp_t *sp, uint64_t upto, int cleared)
{
    while (sp->n_marks > 0 && (cleared || sp->mark_pos[sp->mark_head] <= upto)) {
        eng_emit_values(e, EV_STREAM_MARK, id, sp->mark_id[sp->mark_head], cleared, 0);
        sp->mark_head = (sp->mark_head + 1) % SP_MARKS;
        sp->n_marks--;
    }
}

/* 1 MB while a subscriber may play into the leg; freed when it stops. */
void leg_stream_play(engine_t *e, int id, int on)
{
    leg_t *l = &e->legs[id];
    if (on && !l->sp) {
        l->sp = malloc(sizeof *l->sp);
        if (!l->sp)
            return;
        l->sp->rd = l->sp->wr = l->sp->first_ns = l->sp->dropped = 0;
        l->sp->playing = l->sp->mark_head = l->sp->n_marks = 0;
    } else if (!on && l->sp) {
        report_marks(e, id, l->sp, 0, 1);
        free(l->sp);
        l->sp = NULL;
    } else {
        return;
    }
    if (l->group >= 0)
        group_update_mode(e, l->group);
}

void leg_stream_push(engine_t *e, int id, const uint8_t *ulaw, int64_t n)
{
    sp_t *sp = e->legs[id].sp;
    if (!sp)
        return;
    if (!sp->playing && sp->rd == sp->wr)
        sp->first_ns = e->now_ns;
    int64_t room = (int64_t)SP_CAP - (int64_t)(sp->wr - sp->rd);
    if (n > room) {
        sp->dropped += (uint64_t)(n - room);
        n = room;
    }
    for (int64_t i = 0; i < n; i++)
        sp->buf[(sp->wr + (uint64_t)i) & (SP_CAP - 1)] = g711_ulaw2lin(ulaw[i]);
    sp->wr += (uint64_t)n;
}

void leg_stream_mark(engine_t *e, int id, int mark)
{
    sp_t *sp = e->legs[id].sp;
    if (!sp || sp->n_marks == SP_MARKS) { /* nothing plays (or too many marks wait): it has "played" */
        eng_emit_values(e, EV_STREAM_MARK, id, mark, 0, 0);
        return;
    }
    int k = (sp->mark_head + sp->n_marks) % SP_MARKS;
    sp->mark_id[k] = mark;
    sp->mark_pos[k] = sp->wr;
    sp->n_marks++;
}

void leg_stream_clear(engine_t *e, int id)
{
    sp_t *sp = e->legs[id].sp;
    if (!sp)
        return;
    sp->rd = sp->wr;
    sp->playing = 0;
    report_marks(e, id, sp, 0, 1);
}

int stream_take(engine_t *e, int id, int16_t *out)
{
    sp_t *sp = e->legs[id].sp;
    if (!sp)
        return 0;
    uint64_t queued = sp->wr - sp->rd;
    if (!sp->playing && queued > 0 &&
        (queued >= SP_PREBUFFER || e->now_ns - sp->first_ns >= SP_PREBUFFER_NS))
        sp->playing = 1;
    int took = 0;
    if (sp->playing) {
        uint64_t n = queued < FRAME ? queued : FRAME;
        for (uint64_t i = 0; i < n; i++) {
            int32_t v = out[i] + sp->buf[(sp->rd + i) & (SP_CAP - 1)];
            out[i] = (int16_t)(v > 32767 ? 32767 : v < -32768 ? -32768 : v);
        }
        sp->rd += n;
        took = n > 0;
        if (sp->rd == sp->wr)
            sp->playing = 0; /* ran dry: the next audio is buffered again first */
    }
    report_marks(e, id, sp, sp->rd, 0);
    return took;
}
