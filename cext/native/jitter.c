/* Adaptive jitter buffer: theory of operation.
 *
 * Model. One RTP packet is one 20 ms frame (the processed path negotiates ptime 20; telephone-events are
 * taken out before the buffer), so playout runs on sequence numbers: each pop plays the frame at the
 * playout point `next_seq` and moves it on by one. Timestamps serve only the jitter estimate, at the
 * 8 kHz RTP clock of G.711 (and G.722, whose RTP clock is 8 kHz too). Sequence arithmetic is modulo 2^16
 * (RFC 3550 A.1): a packet is d = (int16)(seq - next_seq) frames ahead of the playout point. Frames are
 * held in JB_SLOTS slots indexed by seq % JB_SLOTS, so the buffer spans at most JB_SLOTS frames.
 *
 * Arrivals (jb_push).
 *   - 0 <= d < JB_SLOTS: stored; a second copy is a duplicate.
 *   - d < 0: older than the playout point, dropped. A 64-bit history of which of the last 64 frames were
 *     played tells a duplicate (played already) from a late packet (its frame was concealed or skipped).
 *   - d >= JB_SLOTS: beyond the slots. Resync: flush, re-anchor on this packet, buffer again (counted in
 *     overflows and resets). A packet more than JB_MISORDER frames behind is dropped as late, unless the
 *     next one continues from it while nothing is held: two in sequence, once the current stream has run
 *     dry, are a restarted sender, and resync too (RFC 3550 A.1's probation, reduced to two packets; the
 *     run-dry condition keeps stragglers from before a forward jump from pulling the stream back).
 *   - While buffering the anchor follows the stream: an earlier frame that arrives (reordering at start)
 *     moves the playout point back to it, but never behind `floor`, the point where playing last stopped,
 *     so nothing is played twice; and a packet reaching an empty buffer becomes the new anchor (the frames
 *     before it are gone: a new talk spurt after silence starts where it starts).
 *
 * Jitter (RFC 3550 6.4.1, A.8). For every packet stored or dropped as late, D = (R_i - R_j) - (S_i - S_j)
 * over consecutive arrivals, with R from now_ns and S from the timestamp (125 us per unit), in microseconds,
 * |D| capped at 1 s; J += (|D| - J) / 16, kept x16 in fixed point exactly as A.8 does.
 *
 * Target delay, in frames: want = clamp(1 + ceil(3 * J / 20 ms), min, max). For Gaussian delays J is about
 * 1.13 sigma, so 3 J covers about 3.4 sigma of lateness; the + 1 is the frame being played. The target rises
 * to `want` at once; it falls only after `want` stayed below it for JB_TARGET_HOLD (50) updates in a row,
 * about a second of calm, and then to the largest `want` of that second.
 *
 * Playout (jb_pop, once per 20 ms tick). The level is the frames from the playout point to the newest held,
 * inclusive: the delay, in frames, that the newest packet will wait.
 *   - Buffering: -1 (play silence) until the level reaches the target, or the first frame has waited target
 *     x 20 ms (a short spurt must not sit forever); then playing.
 *   - The frame at the playout point is held: play it.
 *   - It is missing and later ones are held: lost (or too late); 0 (conceal) and move on. If it comes
 *     after all, it is late.
 *   - Nothing is held: underrun. 0 (conceal) without moving on, so the frame plays when it arrives and the
 *     delay has grown by a frame: growth is driven by underruns. After JB_GAP_POPS (10) such pops in a row
 *     the stream is taken as paused (silence suppression, hold): back to buffering (counted in resets).
 *   - Talk-spurt start (marker bit on the frame at the playout point, unless it merely continues the frame
 *     just played, 160 timestamp units on: some senders mark every packet) with the level below the
 *     target: buffer again before it, i.e. stretch the silence rather than the speech.
 *   - Shrink: when the level is above the target, drop (skip) the frame at the playout point and play the
 *     next one, at once if that frame starts a talk spurt (an onset after silence hides the splice best),
 *     otherwise once the level has not dropped below the target for JB_SHRINK_POPS (25) pops (half a
 *     second; a pop at the target neither adds nor clears). One frame per decision, so the delay eases down.
 *
 * Trade-off. Every frame of delay buys 20 ms of lateness that is still played instead of concealed. The
 * target follows the measured jitter (3 J, so rare spikes beyond it are lost, not waited for); delay is
 * added only when the network shows it is needed (underruns, a higher target at a talk-spurt start) and is
 * given back slowly (a second of calm before the target falls, half a second above it per skipped frame),
 * so a bursty link settles at a delay that covers its bursts rather than oscillating between loss and delay.
 * The bounds min_frames..max_frames cap both ends: max caps the mouth-to-ear cost, min keeps a floor for
 * links whose jitter is bursty but rare.
 *
 * Accounting. pushed = played + skipped + late + duplicates + flushed + invalid + frames still held; every
 * pop returns exactly one of a frame (played), 0 (concealed) or -1.
 */
#include "jitter.h"

#include <string.h>

#define JB_GAP_POPS 10
#define JB_MISORDER 100
#define JB_SHRINK_POPS 25
#define JB_TARGET_HOLD 50
#define JB_JITTER_K 3
#define JB_FRAME_US 20000
#define JB_D_CAP_US 1000000
#define JB_DT_CLAMP_NS ((int64_t)1 << 40)
#define JB_TS_NS 125000 /* one 8 kHz timestamp unit */
#define JB_FRAME_TS 160

static uint64_t shl(uint64_t m, int k) { return k >= 64 ? 0 : m << k; }
static uint64_t shr(uint64_t m, int k) { return k >= 64 ? 0 : m >> k; }

static int level(const jb_t *jb)
{
    return jb->count ? (int)(uint16_t)(jb->max_seq - jb->next_seq) + 1 : 0;
}

static jb_slot_t *held(jb_t *jb, uint16_t seq)
{
    jb_slot_t *s = &jb->slots[seq % JB_SLOTS];
    return s->len && s->seq == seq ? s : NULL;
}

static void store(jb_t *jb, uint16_t seq, uint32_t ts, uint8_t pt, int marker, const uint8_t *payload, int len,
                  uint64_t now_ns)
{
    jb_slot_t *s = &jb->slots[seq % JB_SLOTS];
    if (s->len) { /* unreachable while the window invariant holds; keep the books right regardless */
        s->len = 0;
        jb->count--;
        jb->flushed++;
    }
    s->seq = seq;
    s->ts = ts;
    s->len = (uint16_t)len;
    s->pt = pt;
    s->marker = marker != 0;
    memcpy(s->payload, payload, (size_t)len);
    if (jb->count == 0) {
        jb->max_seq = seq;
        if (!jb->playing)
            jb->since_ns = now_ns;
    } else if ((int16_t)(seq - jb->max_seq) > 0) {
        jb->max_seq = seq;
    }
    jb->count++;
}

static void advance(jb_t *jb, int played)
{
    jb->played_mask = (jb->played_mask << 1) | (uint64_t)(played != 0);
    jb->next_seq++;
}

static void retarget(jb_t *jb)
{
    int64_t j_us = jb->jitter_q4 >> 4;
    int64_t want64 = 1 + (JB_JITTER_K * j_us + JB_FRAME_US - 1) / JB_FRAME_US;
    int want = want64 > jb->max_frames ? jb->max_frames : want64 < jb->min_frames ? jb->min_frames : (int)want64;
    if (want > jb->target) {
        jb->target = want;
        jb->hold_run = 0;
    } else if (want < jb->target) {
        jb->hold_max = jb->hold_run == 0 || want > jb->hold_max ? want : jb->hold_max;
        if (++jb->hold_run >= JB_TARGET_HOLD) {
            jb->target = jb->hold_max;
            jb->hold_run = 0;
        }
    } else {
        jb->hold_run = 0;
    }
}

/* RFC 3550 A.8, in microseconds instead of timestamp units. */
static void arrival(jb_t *jb, uint32_t ts, uint64_t now_ns)
{
    if (jb->have_ref) {
        int64_t dt = (int64_t)(now_ns - jb->ref_arrival_ns);
        dt = dt > JB_DT_CLAMP_NS ? JB_DT_CLAMP_NS : dt < -JB_DT_CLAMP_NS ? -JB_DT_CLAMP_NS : dt;
        int64_t d = dt - (int64_t)(int32_t)(ts - jb->ref_ts) * JB_TS_NS;
        int64_t us = (d < 0 ? -d : d) / 1000;
        if (us > JB_D_CAP_US)
            us = JB_D_CAP_US;
        jb->jitter_q4 += us - ((jb->jitter_q4 + 8) >> 4);
        retarget(jb);
    }
    jb->have_ref = 1;
    jb->ref_arrival_ns = now_ns;
    jb->ref_ts = ts;
}

/* Start over on a new sequence space: everything held is flushed, the jitter reference restarts. */
static void resync(jb_t *jb, uint16_t seq, uint32_t ts, uint64_t now_ns)
{
    for (int i = 0; i < JB_SLOTS; i++)
        jb->slots[i].len = 0;
    jb->flushed += (uint64_t)jb->count;
    jb->count = 0;
    jb->overflows++;
    jb->resets++;
    jb->playing = 0;
    jb->has_floor = 0;
    jb->bad_valid = 0;
    jb->next_seq = jb->max_seq = seq;
    jb->played_mask = 0;
    jb->above = jb->empty_run = 0;
    jb->have_ref = 1;
    jb->ref_arrival_ns = now_ns;
    jb->ref_ts = ts;
}

static void stop_playing(jb_t *jb, uint64_t now_ns)
{
    jb->playing = 0;
    jb->has_floor = 1;
    jb->floor = jb->next_seq;
    jb->since_ns = now_ns;
    jb->above = jb->empty_run = 0;
}

void jb_init(jb_t *jb, int min_frames, int max_frames)
{
    memset(jb, 0, sizeof *jb);
    if (max_frames > JB_SLOTS - 4)
        max_frames = JB_SLOTS - 4;
    if (max_frames < 1)
        max_frames = 1;
    if (min_frames > max_frames)
        min_frames = max_frames;
    if (min_frames < 1)
        min_frames = 1;
    jb->min_frames = min_frames;
    jb->max_frames = max_frames;
    jb->target = min_frames;
}

void jb_push(jb_t *jb, uint16_t seq, uint32_t ts, uint8_t pt, int marker, const uint8_t *payload, int len,
             uint64_t now_ns)
{
    jb->pushed++;
    if (!payload || len <= 0 || len > JB_PAYLOAD_MAX) {
        jb->invalid++;
        return;
    }
    if (!jb->active) {
        jb->active = 1;
        jb->next_seq = jb->max_seq = seq;
        store(jb, seq, ts, pt, marker, payload, len, now_ns);
        arrival(jb, ts, now_ns);
        return;
    }
    int d = (int16_t)(seq - jb->next_seq);
    if (!jb->playing) {
        if (d < 0 && (!jb->has_floor || (int16_t)(seq - jb->floor) >= 0) &&
            (jb->count == 0 || (uint16_t)(jb->max_seq - seq) < JB_SLOTS)) {
            jb->played_mask = shr(jb->played_mask, -d); /* an earlier frame: move the anchor back */
            jb->next_seq = seq;
            store(jb, seq, ts, pt, marker, payload, len, now_ns);
            arrival(jb, ts, now_ns);
            return;
        }
        if (d > 0 && d < JB_SLOTS && jb->count == 0) {
            jb->played_mask = shl(jb->played_mask, d); /* an empty buffer: anchor on this frame */
            jb->next_seq = seq;
            store(jb, seq, ts, pt, marker, payload, len, now_ns);
            arrival(jb, ts, now_ns);
            return;
        }
    }
    if (d < 0) {
        if (d < -JB_MISORDER) {
            if (jb->count == 0 && jb->bad_valid && seq == jb->bad_seq) {
                resync(jb, seq, ts, now_ns);
                store(jb, seq, ts, pt, marker, payload, len, now_ns);
                return;
            }
            jb->bad_valid = 1;
            jb->bad_seq = (uint16_t)(seq + 1);
            jb->late++;
            return;
        }
        if (-d <= 64 && (jb->played_mask >> (-d - 1)) & 1) {
            jb->duplicates++;
        } else {
            jb->late++;
            arrival(jb, ts, now_ns);
        }
        return;
    }
    if (d >= JB_SLOTS) {
        resync(jb, seq, ts, now_ns);
        store(jb, seq, ts, pt, marker, payload, len, now_ns);
        return;
    }
    if (held(jb, seq)) {
        jb->duplicates++;
        return;
    }
    store(jb, seq, ts, pt, marker, payload, len, now_ns);
    arrival(jb, ts, now_ns);
}

/* A talk spurt starts here: marker bit, and not the plain continuation of the frame just played (some
 * senders mark every packet; a spurt after silence has its timestamp jump, RFC 3551 4.1). */
static int spurt(const jb_t *jb, const jb_slot_t *s)
{
    return s->marker && !((jb->played_mask & 1) && s->ts - jb->last_ts == JB_FRAME_TS);
}

static int emit(jb_t *jb, jb_slot_t *s, uint8_t *out, uint8_t *pt)
{
    int len = s->len;
    memcpy(out, s->payload, (size_t)len);
    *pt = s->pt;
    jb->last_ts = s->ts;
    s->len = 0;
    jb->count--;
    jb->played++;
    jb->empty_run = 0;
    advance(jb, 1);
    return len;
}

int jb_pop(jb_t *jb, uint8_t *out, uint8_t *pt, uint64_t now_ns)
{
    int started = 0;
    if (!jb->active)
        return -1;
    if (!jb->playing) {
        if (jb->count == 0)
            return -1;
        int waited = now_ns >= jb->since_ns && now_ns - jb->since_ns >= (uint64_t)jb->target * JB_FRAME_NS;
        if (level(jb) < jb->target && !waited)
            return -1;
        jb->playing = 1;
        jb->above = jb->empty_run = 0;
        started = 1;
    }
    int lvl = level(jb);
    if (lvl > jb->target)
        jb->above++;
    else if (lvl < jb->target)
        jb->above = 0;
    jb_slot_t *head = held(jb, jb->next_seq);
    if (!head) {
        if (jb->count > 0) { /* lost, or later than the delay we keep */
            jb->concealed++;
            jb->empty_run = 0;
            advance(jb, 0);
            return 0;
        }
        if (++jb->empty_run > JB_GAP_POPS) {
            stop_playing(jb, now_ns);
            jb->resets++;
            return -1;
        }
        jb->concealed++; /* underrun: wait for this frame, one frame more delay */
        return 0;
    }
    if (!started && spurt(jb, head) && lvl < jb->target) {
        stop_playing(jb, now_ns); /* talk-spurt start short of the target: lengthen the silence */
        return -1;
    }
    if (!started && lvl > jb->target && (spurt(jb, head) || jb->above >= JB_SHRINK_POPS)) {
        jb_slot_t *next = held(jb, (uint16_t)(jb->next_seq + 1));
        if (next) {
            head->len = 0;
            jb->count--;
            jb->skipped++;
            jb->above = 0;
            advance(jb, 0);
            head = next;
        }
    }
    return emit(jb, head, out, pt);
}

void jb_get_stats(const jb_t *jb, jb_stats_t *out)
{
    out->pushed = jb->pushed;
    out->played = jb->played;
    out->concealed = jb->concealed;
    out->late = jb->late;
    out->duplicates = jb->duplicates;
    out->overflows = jb->overflows;
    out->resets = jb->resets;
    out->skipped = jb->skipped;
    out->flushed = jb->flushed;
    out->invalid = jb->invalid;
    out->target_frames = (uint32_t)jb->target;
    out->level_frames = (uint32_t)level(jb);
    out->buffered_frames = (uint32_t)jb->count;
    out->jitter_us = (uint32_t)(jb->jitter_q4 >> 4);
    out->playing = jb->playing;
}
