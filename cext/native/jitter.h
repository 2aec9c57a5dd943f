/* Adaptive jitter buffer for the processed media path: RTP packets in as they arrive, one 20 ms frame out
 * per tick. Plain C, fixed size (embedded in the engine's per-leg state), no allocation, no locks, no clock
 * reads: every call takes `now_ns` (CLOCK_MONOTONIC nanoseconds). The policy is described in jitter.c, and
 * tests/cext/jitter_model.py is its pure-Python twin, which the tests hold this code to.
 */
#ifndef SOFTSWITCH_JITTER_H
#define SOFTSWITCH_JITTER_H

#include <stdint.h>

#define JB_SLOTS 32             /* 640 ms of 20 ms frames: the window of sequence numbers held */
#define JB_PAYLOAD_MAX 320      /* bytes per frame (20 ms of G.711 is 160) */
#define JB_FRAME_NS 20000000ull /* one frame, one packet, one tick */

typedef struct {
    uint16_t seq;
    uint16_t len;               /* 0: empty slot */
    uint32_t ts;
    uint8_t pt, marker;
    uint8_t payload[JB_PAYLOAD_MAX];
} jb_slot_t;

typedef struct {
    jb_slot_t slots[JB_SLOTS];  /* frame seq lives in slots[seq % JB_SLOTS] */
    /* playout */
    uint8_t active;             /* a packet has been seen since jb_init */
    uint8_t playing;            /* 0: buffering (pop answers -1), 1: one frame per pop */
    uint8_t has_floor;          /* while buffering: frames before `floor` were already consumed */
    uint8_t bad_valid;          /* a far-behind packet is on probation (RFC 3550 A.1) */
    uint16_t next_seq;          /* the playout point: the frame the next pop plays */
    uint16_t max_seq;           /* highest sequence number buffered (meaningful while count > 0) */
    uint16_t floor;
    uint16_t bad_seq;           /* the sequence number that would confirm a restart */
    uint64_t played_mask;       /* bit i: frame next_seq-1-i was played (tells duplicates from late) */
    uint32_t last_ts;           /* timestamp of the last frame played */
    uint64_t since_ns;          /* when the current buffering period got its first frame */
    int count;                  /* frames held */
    int min_frames, max_frames, target;
    int above;                  /* pops the level has stayed above target (reset below it) */
    int empty_run;              /* consecutive pops with nothing buffered */
    /* RFC 3550 interarrival jitter, in microseconds x 16 (A.8 fixed point) */
    uint8_t have_ref;
    uint64_t ref_arrival_ns;
    uint32_t ref_ts;
    int64_t jitter_q4;
    int hold_run, hold_max;     /* target decrease: updates the wanted target stayed below it */
    /* counters */
    uint64_t pushed, played, concealed, late, duplicates, overflows, resets, skipped, flushed, invalid;
} jb_t;

typedef struct {
    uint64_t pushed;            /* every jb_push call */
    uint64_t played;            /* pops that returned a frame */
    uint64_t concealed;         /* pops that returned 0: the caller concealed a missing frame */
    uint64_t late;              /* dropped: older than the playout point and not played before */
    uint64_t duplicates;        /* dropped: already held, or already played */
    uint64_t overflows;         /* sequence jumps that forced a resync (beyond the slots, or a restart) */
    uint64_t resets;            /* returns to buffering: resyncs and long underruns */
    uint64_t skipped;           /* frames discarded to shrink the delay toward the target */
    uint64_t flushed;           /* frames discarded by a resync */
    uint64_t invalid;           /* dropped: empty or longer than JB_PAYLOAD_MAX */
    uint32_t target_frames;     /* delay wanted, in frames */
    uint32_t level_frames;      /* frames from the playout point to the newest held, inclusive */
    uint32_t buffered_frames;   /* frames held */
    uint32_t jitter_us;         /* RFC 3550 interarrival jitter estimate */
    uint32_t playing;           /* 0 while buffering */
} jb_stats_t;

/* Target delay bounds in frames; clamped to 1 <= min <= max <= JB_SLOTS - 4. */
void jb_init(jb_t *jb, int min_frames, int max_frames);
void jb_push(jb_t *jb, uint16_t seq, uint32_t ts, uint8_t pt, int marker, const uint8_t *payload, int len,
             uint64_t now_ns);
/* >0: bytes of the frame to play (copied to out, JB_PAYLOAD_MAX bytes of room; *pt set);
 * 0: this frame is missing (the caller conceals); -1: buffering (the caller plays silence). */
int jb_pop(jb_t *jb, uint8_t *out, uint8_t *pt, uint64_t now_ns);
void jb_get_stats(const jb_t *jb, jb_stats_t *out);

#endif
