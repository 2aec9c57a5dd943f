/* Bridges as the media thread sees them: groups of legs, whether each relays, is processed or tapped,
 * and the tick timer that runs while any group needs it. */
#include <string.h>
#include <sys/timerfd.h>

#include "engine_internal.h"

void arm_timer(engine_t *e)
{
    int want = e->processed_groups > 0 || e->stream_taps > 0;
    for (int i = 0; !want && i < e->max_legs; i++)
        want = e->legs[i].used && te_busy(&e->legs[i]);
    if (want == e->timer_armed)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (want) {
        uint64_t first = e->now_ns + TICK_NS;
        its.it_value.tv_sec = (time_t)(first / 1000000000ull);
        its.it_value.tv_nsec = (long)(first % 1000000000ull);
        its.it_interval.tv_nsec = (long)TICK_NS;
    }
    timerfd_settime(e->timerfd, want ? TFD_TIMER_ABSTIME : 0, &its, NULL);
    e->timer_armed = want;
}

/* Relay needs exactly two legs and nothing to change in their audio (no player, gain, mute or stream
 * playout); anything else is processed. A relayed group that is recorded, or has a leg listening (in-band
 * DTMF, AMD, a media stream), is "tapped": packets are still
 * forwarded on arrival (no added latency) and a copy goes through each leg's jitter buffer to the
 * recorder and the detectors on the tick. */
void group_update_mode(engine_t *e, int gid)
{
    group_t *g = &e->groups[gid];
    int processed = 0, tapped = 0;
    if (g->used) {
        processed = g->forced || g->n != 2;
        for (int i = 0; !processed && i < g->n; i++) {
            leg_t *m = &e->legs[g->members[i]];
            processed = m->play != NULL || m->muted || m->gain != 1.0f || m->sp != NULL;
        }
        tapped = !processed && g->rec != NULL;
        for (int i = 0; !processed && !tapped && i < g->n; i++)
            tapped = leg_listens(&e->legs[g->members[i]]);
    }
    int ticking = processed || tapped;
    if (ticking != (g->processed || g->tapped))
        e->processed_groups += ticking ? 1 : -1;
    g->processed = processed;
    g->tapped = tapped;
    for (int i = 0; i < g->n; i++) {
        leg_t *m = &e->legs[g->members[i]];
        if (ticking && !m->jb_on) {
            jb_init(&m->jb, 2, 10);
            m->jb_on = 1;
            m->conceal = 0;
        } else if (!ticking) {
            m->jb_on = 0;
        }
        m->st.processed = (uint32_t)processed;
        m->peer = (!processed && g->n == 2) ? g->members[1 - i] : -1;
    }
    arm_timer(e);
}

void group_leave(engine_t *e, int id)
{
    leg_t *l = &e->legs[id];
    if (l->group < 0)
        return;
    int gid = l->group;
    group_t *g = &e->groups[gid];
    for (int i = 0; i < g->n; i++) {
        if (g->members[i] == id) {
            g->members[i] = g->members[--g->n];
            break;
        }
    }
    l->group = -1;
    l->peer = -1;
    l->jb_on = 0;
    l->st.processed = 0;
    if (g->n == 0) {
        group_rec_stop(e, gid);
        g->used = 0;
        g->forced = 0;
    }
    group_update_mode(e, gid);
}

void group_join(engine_t *e, int id, int gid)
{
    leg_t *l = &e->legs[id];
    if (l->group == gid)
        return;
    group_leave(e, id);
    group_t *g = &e->groups[gid];
    if (g->n == MAX_MEMBERS)
        return;
    g->used = 1;
    g->members[g->n++] = id;
    l->group = gid;
    group_update_mode(e, gid);
}
