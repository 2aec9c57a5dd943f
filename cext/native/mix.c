/* The processed path: once per 20 ms tick, for every leg of a processed group, pop a frame from its
 * jitter buffer and decode it; then each party hears the sum of the others (saturating, per-party gain
 * and mute), or what is played to it; the group's recorder gets each party's audio (stereo) or the sum
 * (mono); the result is encoded in each leg's codec and sent on the leg's continuous stream.
 * Concealment: a missing frame repeats the last one at half level, twice, then silence.
 * A leg listening for in-band DTMF runs the detector on its decoded frame, before any mixing: a digit is
 * reported once, when its tone has ended, with its start on the media clock. A leg under answering
 * machine detection feeds the AMD kernel the same way, which reports segment boundaries (amd.c).
 * Media streams (streams.c) get each tapped leg's frame in and out, and a subscriber's audio is mixed into
 * what its leg sends.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "g711.h"

static inline int16_t sat16(int32_t v) { return (int16_t)(v > 32767 ? 32767 : v < -32768 ? -32768 : v); }

static uint32_t next_ts(engine_t *e, leg_t *l)
{
    if (!l->out_started)
        return (uint32_t)e->now_ns;
    uint64_t since = e->now_ns - l->last_out_ns;
    if (since < 30000000ull)
        return l->last_out_ts + FRAME;
    /* the stream paused (relay silence, a hold): keep its clock true to elapsed time, in whole frames */
    return l->last_out_ts + (uint32_t)((since / TICK_NS) * FRAME);
}

static void decode(const leg_t *l, const uint8_t *payload, int len, int16_t *out)
{
    int n = len < FRAME ? len : FRAME;
    if (l->codec == 8)
        for (int i = 0; i < n; i++)
            out[i] = g711_alaw2lin(payload[i]);
    else
        for (int i = 0; i < n; i++)
            out[i] = g711_ulaw2lin(payload[i]);
    for (int i = n; i < FRAME; i++)
        out[i] = 0;
}

static void pull(leg_t *l, uint64_t now_ns)
{
    uint8_t payload[JB_PAYLOAD_MAX];
    uint8_t pt;
    int r = jb_pop(&l->jb, payload, &pt, now_ns);
    if (r > 0) {
        decode(l, payload, r, l->in_pcm);
        memcpy(l->last_pcm, l->in_pcm, sizeof l->in_pcm);
        l->conceal = 0;
    } else if (r == 0 && l->conceal < 2) {
        for (int i = 0; i < FRAME; i++)
            l->in_pcm[i] = l->last_pcm[i] = (int16_t)(l->last_pcm[i] / 2);
        l->conceal++;
    } else {
        memset(l->in_pcm, 0, sizeof l->in_pcm);
    }
}

/* The RFC 4733 event code of a key (0-9 * # A-D are 0-15), so both sources report in one numbering. */
static int event_code(char key)
{
    if (key >= '0' && key <= '9')
        return key - '0';
    if (key == '*')
        return 10;
    if (key == '#')
        return 11;
    return 12 + (key - 'A');
}

/* The detector's state is about 6 kB, so a leg has one only while someone listens. */
void leg_inband(engine_t *e, int id, int on)
{
    leg_t *l = &e->legs[id];
    if (on && !l->inband) {
        l->inband = malloc(sizeof *l->inband);
        if (!l->inband)
            return;
        dtmf_init(l->inband);
        l->inband_samples = 0;
    } else if (!on && l->inband) {
        free(l->inband);
        l->inband = NULL;
    } else {
        return;
    }
    if (l->group >= 0)
        group_update_mode(e, l->group);
}

void leg_amd(engine_t *e, int id, const amd_params_t *params)
{
    leg_t *l = &e->legs[id];
    if (params) {
        if (!l->amd && !(l->amd = malloc(sizeof *l->amd)))
            return;
        amd_init(l->amd, params); /* a new start: its clock restarts */
        l->amd_samples = 0;
    } else if (l->amd) {
        free(l->amd);
        l->amd = NULL;
    } else {
        return;
    }
    if (l->group >= 0)
        group_update_mode(e, l->group);
}

static void detect_amd(engine_t *e, int id, leg_t *l)
{
    amd_event_t found[2 * (FRAME / AMD_FRAME + 1)];
    size_t n = amd_process(l->amd, l->in_pcm, FRAME, found);
    l->amd_samples += FRAME;
    for (size_t k = 0; k < n; k++) {
        eng_event_t ev;
        memset(&ev, 0, sizeof ev);
        ev.type = EV_AMD;
        ev.leg = id;
        ev.v[0] = found[k].kind;
        ev.v[1] = found[k].start;
        ev.v[2] = found[k].freq_hz;
        ev.v[3] = l->amd_samples;
        eng_emit(e, &ev);
    }
}

static void detect(engine_t *e, int id, leg_t *l)
{
    dtmf_event_t found[FRAME / DTMF_SUB + 1];
    size_t n = dtmf_process(l->inband, l->in_pcm, FRAME, found);
    l->inband_samples += FRAME;
    for (size_t k = 0; k < n; k++) {
        /* the frame's last sample is "now": 125 us a sample before it */
        int64_t start_ns = (int64_t)e->now_ns - (l->inband_samples - found[k].start) * 125000;
        int64_t ms = (found[k].end - found[k].start) / 8;
        l->st.dtmf_events++;
        eng_emit_values(e, EV_DTMF_INBAND, id, event_code(found[k].digit), start_ns, ms);
    }
}

void leg_play_stop(engine_t *e, int id, int interrupted)
{
    leg_t *l = &e->legs[id];
    if (!l->play)
        return;
    eng_emit_values(e, EV_PLAY_DONE, id, l->play_id, interrupted, 0);
    l->play = NULL;
}

/* The next frame of what is played to a leg; 0 when the prompt ended (and was not looped). */
static int play_frame(leg_t *l, int16_t *out)
{
    for (int i = 0; i < FRAME; i++) {
        if (l->play_pos >= l->play_len) {
            if (!l->play_loop || l->play_len == 0) {
                memset(out + i, 0, (size_t)(FRAME - i) * sizeof *out);
                return i > 0;
            }
            l->play_pos = 0;
        }
        out[i] = l->play[l->play_pos++];
    }
    return 1;
}

void group_tick(engine_t *e, int gid)
{
    group_t *g = &e->groups[gid];
    int32_t sum[FRAME];
    memset(sum, 0, sizeof sum);
    for (int k = 0; k < g->n; k++) {
        leg_t *l = &e->legs[g->members[k]];
        pull(l, e->now_ns);
        if ((l->stream_tap & 1) && g->processed) /* relayed: tapped as the packets arrive (engine.c) */
            stream_frame(e, g->members[k], 0, l->in_pcm);
        if (l->inband)
            detect(e, g->members[k], l);
        if (l->amd)
            detect_amd(e, g->members[k], l);
        if (l->muted)
            continue;
        if (l->gain == 1.0f) {
            for (int i = 0; i < FRAME; i++)
                sum[i] += l->in_pcm[i];
        } else {
            for (int i = 0; i < FRAME; i++)
                sum[i] += (int32_t)((float)l->in_pcm[i] * l->gain);
        }
    }
    if (g->rec && !g->rec_paused) {
        int16_t frames[2 * FRAME];
        if (g->rec_channels == 2) {
            const int16_t *left = g->n > 0 ? e->legs[g->members[0]].in_pcm : NULL;
            const int16_t *right = g->n > 1 ? e->legs[g->members[1]].in_pcm : NULL;
            for (int i = 0; i < FRAME; i++) {
                frames[2 * i] = left ? left[i] : 0;
                frames[2 * i + 1] = right ? right[i] : 0;
            }
        } else {
            for (int i = 0; i < FRAME; i++)
                frames[i] = sat16(sum[i]);
        }
        wav_write(g->rec, frames, FRAME);
    }
    if (!g->processed)
        return; /* tapped: the packets were relayed on arrival; the tick only fed the recorder and detectors */
    int ended[MAX_MEMBERS];
    int n_ended = 0;
    for (int k = 0; k < g->n; k++) {
        int id = g->members[k];
        leg_t *l = &e->legs[id];
        if (te_busy(l)) {
            te_tick(e, l);
            if (l->stream_tap & 2) {
                static const int16_t quiet[FRAME];
                stream_frame(e, id, 1, quiet); /* the frame's time passes for the stream too */
            }
            continue;
        }
        int16_t out[FRAME];
        if (l->play) {
            if (!play_frame(l, out))
                ended[n_ended++] = id;
        } else if (l->muted) {
            for (int i = 0; i < FRAME; i++)
                out[i] = sat16(sum[i]);
        } else if (l->gain == 1.0f) {
            for (int i = 0; i < FRAME; i++)
                out[i] = sat16(sum[i] - l->in_pcm[i]);
        } else {
            for (int i = 0; i < FRAME; i++)
                out[i] = sat16(sum[i] - (int32_t)((float)l->in_pcm[i] * l->gain));
        }
        if (l->sp)
            stream_take(e, id, out);
        if (l->stream_tap & 2)
            stream_frame(e, id, 1, out);
        uint8_t payload[FRAME];
        if (l->codec == 8)
            for (int i = 0; i < FRAME; i++)
                payload[i] = g711_lin2alaw(out[i]);
        else
            for (int i = 0; i < FRAME; i++)
                payload[i] = g711_lin2ulaw(out[i]);
        int marker = !l->out_started || e->now_ns - l->last_out_ns > 30000000ull;
        leg_send_frame(e, l, l->pt, marker, payload, FRAME, next_ts(e, l));
    }
    for (int k = 0; k < n_ended; k++) {
        leg_play_stop(e, ended[k], 0);
        group_update_mode(e, gid);
    }
}

/* The writer was opened by Python (opening touches the disk); from here the media thread only feeds it. */
void group_rec_start(engine_t *e, int gid, wav_writer_t *writer, int channels, int rec_id)
{
    group_t *g = &e->groups[gid];
    group_rec_stop(e, gid);
    g->rec = writer;
    g->rec_channels = channels == 2 ? 2 : 1;
    g->rec_paused = 0;
    g->rec_id = rec_id;
}

/* The writer leaves the media thread with the event: closing flushes and syncs the file, which may
 * take a disk's time, so Python closes it from a worker thread (MediaEngine._recording_done). */
void group_rec_stop(engine_t *e, int gid)
{
    group_t *g = &e->groups[gid];
    if (!g->rec)
        return;
    eng_emit_values(e, EV_REC_DONE, gid, g->rec_id, (int64_t)(intptr_t)g->rec, 0);
    g->rec = NULL;
}
