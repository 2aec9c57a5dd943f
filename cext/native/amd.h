/* Answering machine detection, the compiled half: per 10 ms frame features (energy against a tracked noise
 * floor, a narrowband tone tracker) turned into a few segment boundaries a second, which the decision logic
 * (media/amd.py, per segment, in Python) reads. Theory of operation at the top of amd.c. */
#ifndef SOFTSWITCH_AMD_H
#define SOFTSWITCH_AMD_H

#include <stddef.h>
#include <stdint.h>

#define AMD_RATE 8000
#define AMD_FRAME 80                   /* 10 ms */
#define AMD_WINDOW (2 * AMD_FRAME)     /* the tone tracker looks at the last 20 ms */
#define AMD_MAX_SINES 3                /* a beep of up to three simultaneous sines */

enum { AMD_SILENCE = 0, AMD_VOICE = 1, AMD_TONE = 2 };

typedef struct {
    double silence_dbm0;      /* a frame quieter than this is silence, whatever the noise floor */
    double margin_db;         /* voice: this far above the tracked noise floor */
    int voice_on_ms;          /* activity that long starts voice (shorter clicks are ignored) */
    int voice_off_ms;         /* silence that long ends it (the between-words silence) */
    int tone_min_hz, tone_max_hz;
    int tone_min_ms;          /* a steady tone this long is a tone segment (a beep) */
    double tone_residual;     /* tonal window: the sines' recursion leaves at most this share of its power */
    double tone_drift;        /* window to window frequency change allowed within one tone (relative) */
} amd_params_t;

typedef struct {
    int kind;                 /* AMD_SILENCE, AMD_VOICE or AMD_TONE: what starts here */
    int64_t start;            /* at this sample (since init); a tone's start may lie before the voice
                                 boundary reported just before it, which it then replaces */
    int freq_hz;              /* a tone's mean frequency, else 0 */
} amd_event_t;

typedef struct {
    amd_params_t p;
    int16_t frame[AMD_WINDOW];  /* the previous frame, then the one being filled */
    int fill;
    int64_t frames;             /* finished frames */
    double floor;               /* noise floor, mean square */
    double steady_db, steady_min; /* the run of steady frames: its first level (dB), its least mean square */
    int steady_frames;
    int kind;                   /* the segment being reported */
    int run;                    /* frames of the other state in a row (toward a voice/silence change) */
    int64_t run_start;
    int tone_frames, tone_gap;  /* steady tonal frames so far, non-tonal ones since the last */
    int tone_k;                 /* sines in the tone */
    double tone_hz[AMD_MAX_SINES]; /* their running mean frequencies, lowest first */
    int64_t tone_start;
    /* thresholds in the units the loop uses */
    double silence_ms2, margin, cos_lo, cos_hi;
    int on_frames, off_frames, tone_min_frames;
} amd_state_t;

void amd_defaults(amd_params_t *p);
void amd_init(amd_state_t *st, const amd_params_t *p);

/* At most this many events per call of amd_process on n samples. */
static inline size_t amd_max_events(size_t n) { return 2 * (n / AMD_FRAME + 1); }

/* Consumes n samples, writes segment boundaries to out, returns their count. No allocation, no locks. */
size_t amd_process(amd_state_t *st, const int16_t *x, size_t n, amd_event_t *out);

/* The per-frame measures, exposed for tests: mean square of the frame, and over the 20 ms window the
 * tone tracker's cos(w) estimate and the share of power the prediction leaves (1 when undefined). */
void amd_measure(const int16_t *window, double *frame_ms2, double *cos_w, double *residual);

#endif
