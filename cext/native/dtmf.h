/* DTMF (Q.23 keys, Q.24 receiver) detector on 8 kHz PCM16: sliding Goertzel windows and a duration/pause
 * state machine. The theory of operation is at the top of dtmf.c; the numpy reference in media/dtmf.py
 * implements the same arithmetic and the tests compare the two. */
#ifndef SOFTSWITCH_DTMF_H
#define SOFTSWITCH_DTMF_H

#include <stddef.h>
#include <stdint.h>

#define DTMF_RATE 8000
#define DTMF_SUB 20                    /* samples per sub-block: the hop and the time resolution (2.5 ms) */
#define DTMF_K 8                       /* sub-blocks per analysis window */
#define DTMF_N (DTMF_SUB * DTMF_K)     /* analysis window: 160 samples, 20 ms, 50 Hz resolution */
#define DTMF_NFREQ 8                   /* 4 row (low group) + 4 column (high group) frequencies */
#define DTMF_NOFF 5                    /* bins per frequency: -5 %, -1.5 %, nominal, +1.5 %, +5 % */
#define DTMF_NBINS (DTMF_NFREQ * DTMF_NOFF)

/* Reference level: a sine of peak amplitude DTMF_DBM0_AMPLITUDE is 0 dBm0, i.e. the G.711 full-scale sine
 * (32768 peak) is +3.14 dBm0 (G.711 A-law overload point; mu-law is +3.17, the same within 0.03 dB). */
#define DTMF_DBM0_OVERLOAD 3.14
#define DTMF_MIN_LEVEL_DBM0 (-30.0)    /* per tone; Q.24 operate range ends at -25 (5 dB margin) */
#define DTMF_FWD_TWIST_DB 6.0          /* high group louder: accept 4 dB, reject beyond 6 */
#define DTMF_REV_TWIST_DB 9.0          /* low group louder: accept 8 dB, reject beyond 9 */
#define DTMF_FREQ_MARGIN_DB 1.5        /* the nominal bin beats both +-5 % bins by this much */
#define DTMF_REL_PEAK_DB 8.0           /* other tones of the same group at least this far below */
#define DTMF_TONE_RATIO 0.7            /* the two tones hold at least 0.7 (-1.5 dB) of the window's power */
#define DTMF_FLAT_RATIO 0.25           /* every sub-block holds at least -6 dB of the window's mean power */
#define DTMF_CAND_LEVEL 0.25           /* candidate: each group's best nominal bin >= -36 dBm0 (P_min - 6 dB) */
#define DTMF_CAND_RATIO 0.2            /* candidate: the two nominal peaks hold >= 0.2 (-7 dB) of the power */
#define DTMF_HARM_LAG 2                /* sub-blocks between the early and late part-windows (40 samples) */
#define DTMF_MIN_TONE (30 * DTMF_RATE / 1000)   /* 240 samples: accept 40 ms, reject 20 ms */
#define DTMF_MIN_PAUSE (25 * DTMF_RATE / 1000)  /* 200 samples: 40 ms pauses split, 10 ms breaks bridge */

typedef struct {
    char digit;        /* one of 0123456789*#ABCD */
    int64_t start;     /* first sample of the tone (samples since the last reset) */
    int64_t end;       /* one past its last sample */
} dtmf_event_t;

typedef struct {
    int16_t buf[DTMF_SUB];                     /* the sub-block being filled */
    int fill;                                  /* samples in it */
    /* the last DTMF_K finished sub-blocks, ring indexed by sub-block number % DTMF_K */
    int16_t hist[DTMF_K][DTMF_SUB];            /* their samples (for the off-nominal bins, on demand) */
    double cre[DTMF_K][DTMF_NFREQ], cim[DTMF_K][DTMF_NFREQ];            /* nominal bins, always */
    double ore[DTMF_K][DTMF_NFREQ * 4], oim[DTMF_K][DTMF_NFREQ * 4];    /* off-nominal bins, lazily */
    uint8_t off_done[DTMF_K];                  /* ore/oim of that slot are computed */
    double sub_energy[DTMF_K];
    uint8_t quiet[DTMF_K];                     /* below the gate: no window holding it can hit */
    int64_t nsub;                              /* sub-blocks finished since reset */
    /* duration / pause state machine */
    int cur;                                   /* digit index being tracked, -1 when none */
    int64_t first_start, last_end;             /* span of its hit windows, in samples */
} dtmf_state_t;

void dtmf_init(dtmf_state_t *st);

/* Worst-case number of events dtmf_process() may return for n samples (sizes the caller's buffer). */
static inline size_t dtmf_max_events(size_t n) { return n / DTMF_SUB + 1; }

/* Consumes n samples; writes finished digits to out (at most dtmf_max_events(n)) and returns their count.
 * No allocation, no locking: one state per leg, one thread at a time. */
size_t dtmf_process(dtmf_state_t *st, const int16_t *x, size_t n, dtmf_event_t *out);

/* End of input: reports the digit still sounding, if it is long enough (0 or 1 events), and forgets it. */
size_t dtmf_flush(dtmf_state_t *st, dtmf_event_t *out);

/* The per-window classifier, exposed for tests: digit index 0..15 (into DTMF_KEYS) or -1.
 * power[f * DTMF_NOFF + o] is the mean-square power of bin o of frequency f, total the window's mean square,
 * sub[] the sub-blocks' energies, (zr[f], zi[f]) the nominal bin's late part-window times the conjugate of its
 * early one (its phase advance over DTMF_HARM_LAG sub-blocks, for the harmonic test). */
int dtmf_classify(const double *power, double total, const double *sub, const double *zr, const double *zi);

extern const char DTMF_KEYS[17];

#endif
