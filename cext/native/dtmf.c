/* DTMF detector. Theory of operation.
 *
 * What a receiver must do (ITU-T Q.24 and the North American rules it tabulates, as in Bellcore/Telcordia
 * receivers): recognise the 16 keys of Q.23 (rows 697/770/852/941 Hz, columns 1209/1336/1477/1633 Hz)
 * when each tone is within 1.5 % of nominal and refuse them beyond 3.5 %; operate for tones of -25 to
 * -3 dBm0 each with up to 4 dB forward twist (high group louder) and 8 dB reverse twist; accept tones of
 * 40 ms and pauses of 40 ms, refuse tones of 20 ms or less, bridge breaks of 10 ms; keep working at 15 dB
 * SNR and through G.711; and not operate on speech, music or one tone of a pair (talk-off).
 *
 * Analysis. The input is cut into sub-blocks of DTMF_SUB = 20 samples (2.5 ms). For each sub-block and each
 * of 40 bins (every key frequency f at f*(1-5 %), f*(1-1.5 %), f, f*(1+1.5 %), f*(1+5 %)) a Goertzel
 * recursion gives the sub-block's complex correlation C = sum x[m] e^{-jwm}, plus the sub-block's energy
 * (the 8 nominal bins for every sub-block, the 32 off-nominal ones only when a window holding it is a
 * candidate, see Cost).
 * Every sub-block then closes a window of the last DTMF_K = 8 sub-blocks (N = 160 samples, 20 ms, so 50 Hz
 * resolution), whose DFT at each bin is the phase-aligned sum of the 8 correlations: sliding windows at a
 * 2.5 ms hop. Powers are mean squares: a sine of amplitude A exactly on a
 * bin gives |X|^2 = (AN/2)^2, reported as 2|X|^2/N^2 = A^2/2.
 *
 * A window is a "candidate" when (window_key, on the 8 nominal bins only) it passes the flatness test below,
 * each group's strongest nominal bin is >= -36 dBm0 (DTMF_CAND_LEVEL: P_min - 6 dB; a tone 1.5 % off keeps
 * at least -3.7 dB in its nominal bin) and the two hold >= 0.2 (DTMF_CAND_RATIO, -7 dB) of the window's
 * power (a valid pair holds >= 0.7, its nominal bins >= 0.42 of that). A candidate is a "hit" for a key
 * when (dtmf_classify):
 *   - in each group the strongest nominal bin names the tone; its power is the best of its nominal and
 *     +-1.5 % bins (so a tone 1.5 % off loses no level), and it must be >= -30 dBm0;
 *   - frequency: the nominal bin beats both +-5 % bins by DTMF_FREQ_MARGIN_DB = 1.5 dB, which puts the
 *     accept/reject boundary a little inside 2.5 % deviation (about 2.2 % at 697 Hz, nearer 2.5 % higher
 *     up): 1.5 % passes with about 1.6 dB to spare at 697 Hz and far more higher up, 3.5 % fails. Musical
 *     notes 2-3 % off a key frequency (D6 against 1209 Hz, G#5 against 852 Hz) fall outside;
 *   - twist: high/low power within +6 dB (forward) and -9 dB (reverse): Q.24 accepts 8 dB of reverse twist, a -11 dB pair is refused;
 *   - relative peak: the other three nominal bins of each group are 8 dB below its tone;
 *   - tone ratio: the two tones hold at least 0.7 (-1.5 dB) of the window's total power (speech,
 *     music, noise and a third tone fail this; a pair at 15 dB SNR holds about 0.97);
 *   - flatness: every sub-block holds at least a quarter of the window's mean sub-block energy. A window
 *     half over a tone edge would otherwise pass every spectral test (silence adds no energy), so this is
 *     what makes window positions mark tone edges to within a sub-block (about 2 ms) and keeps a 20 ms tone
 *     from looking like a 30 ms one;
 *   - harmonic: for keys 2, 6 and C (2 F_row - F_col = h = 58, 63, 71 Hz) a note whose second harmonic is
 *     on the column while the fundamental is on the row has d = dev_col - 2 dev_row = h (Hz), a key within
 *     1.5 % at most v = 1.5 % (F_col + 2 F_row) = 41, 45, 50 Hz. d comes from the phase advance of each
 *     nominal bin between the part-windows of sub-blocks 0..5 and 2..7 (40 samples apart, so d is
 *     unambiguous within +-100 Hz); the window fails when d > (v + h) / 2.
 *
 * Timing (state machine per detector). Hit windows of one key are merged into a tone spanning from the
 * first hit window's start to the last one's end. The tone ends when a window starts DTMF_MIN_PAUSE (25 ms)
 * after that end with no hit of the key in between; then the span is reported if it is at least
 * DTMF_MIN_TONE (30 ms): a 40 ms tone spans 40 ms +- 4, a 20 ms tone at most about 22 ms. Hits of another key
 * while a tone is still open count as misses: two keys need a pause between them (Q.23), and a noisy window
 * inside a long tone must not split it into two reports. A 40 ms pause leaves a gap of at least 36 ms
 * between hit windows and splits; a 10 ms break leaves at most about 15 ms and is bridged. Each digit is
 * reported once, when it ends, with its start and end in samples since the last reset.
 *
 * Cost: 8 multiply-adds per sample plus 8 x 8 complex multiply-adds per 20 samples for the nominal bins; only
 * candidate windows add the 32 off-nominal bins (Goertzel over the stored samples of each sub-block not yet
 * done, once per sub-block, plus 32 x 8 complex multiply-adds). No allocation; the state is one struct per
 * leg (about 6 KB).
 * Quiet sub-blocks skip the Goertzel work: a sub-block with less than P_min * SUB / 16 of energy cannot be
 * part of a hit window (a bin's power is at most twice the window's mean square by Cauchy-Schwarz, so a
 * window passing the level test has a mean sub-block energy of at least P_min * SUB / 2, and the flatness
 * test wants a quarter of that in every sub-block), so silence and speech pauses cost only the energy sum.
 * The gate changes no decision, which is why the numpy reference does not model it.
 */
#include "dtmf.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

const char DTMF_KEYS[17] = "123A456B789C*0#D";

static const double FREQS[DTMF_NFREQ] = {697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0};
static const double OFFSETS[DTMF_NOFF] = {-0.05, -0.015, 0.0, 0.015, 0.05};

static struct {
    double coef[DTMF_NBINS];                 /* 2 cos w */
    double cw[DTMF_NBINS], sw[DTMF_NBINS];   /* cos w, sin w */
    double rre[DTMF_NBINS], rim[DTMF_NBINS]; /* e^{-jw(SUB-1)}: Goertzel output -> correlation at m = 0 */
    double pre[DTMF_K][DTMF_NBINS], pim[DTMF_K][DTMF_NBINS]; /* e^{-jw SUB i}: sub-block i within a window */
    double min_power;                        /* -30 dBm0, mean square */
    double gate;                             /* sub-block energy below which Goertzel is skipped */
    double fwd, rev, rel, tone_ratio, flat, freq; /* linear power ratios */
    double harm[4][4];                       /* harmonic test threshold (radians of phase advance), 0: none */
    /* the same per bin, split into the 8 nominal bins and the 32 off-nominal ones */
    double ncoef[DTMF_NFREQ], ncw[DTMF_NFREQ], nsw[DTMF_NFREQ], nrre[DTMF_NFREQ], nrim[DTMF_NFREQ];
    double npre[DTMF_K][DTMF_NFREQ], npim[DTMF_K][DTMF_NFREQ];
    double ocoef[DTMF_NFREQ * 4], ocw[DTMF_NFREQ * 4], osw[DTMF_NFREQ * 4], orre[DTMF_NFREQ * 4];
    double orim[DTMF_NFREQ * 4], opre[DTMF_K][DTMF_NFREQ * 4], opim[DTMF_K][DTMF_NFREQ * 4];
} T;

static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void)
{
    for (int f = 0; f < DTMF_NFREQ; f++) {
        for (int o = 0; o < DTMF_NOFF; o++) {
            int b = f * DTMF_NOFF + o;
            double w = 2.0 * M_PI * FREQS[f] * (1.0 + OFFSETS[o]) / DTMF_RATE;
            T.coef[b] = 2.0 * cos(w);
            T.cw[b] = cos(w);
            T.sw[b] = sin(w);
            T.rre[b] = cos(w * (DTMF_SUB - 1));
            T.rim[b] = -sin(w * (DTMF_SUB - 1));
            for (int i = 0; i < DTMF_K; i++) {
                T.pre[i][b] = cos(w * DTMF_SUB * i);
                T.pim[i][b] = -sin(w * DTMF_SUB * i);
            }
        }
    }
    for (int f = 0; f < DTMF_NFREQ; f++) {
        for (int o = 0; o < DTMF_NOFF; o++) {
            int b = f * DTMF_NOFF + o;
            if (o == 2) {
                T.ncoef[f] = T.coef[b], T.ncw[f] = T.cw[b], T.nsw[f] = T.sw[b];
                T.nrre[f] = T.rre[b], T.nrim[f] = T.rim[b];
                for (int i = 0; i < DTMF_K; i++)
                    T.npre[i][f] = T.pre[i][b], T.npim[i][f] = T.pim[i][b];
            } else {
                int q = f * 4 + (o < 2 ? o : o - 1);
                T.ocoef[q] = T.coef[b], T.ocw[q] = T.cw[b], T.osw[q] = T.sw[b];
                T.orre[q] = T.rre[b], T.orim[q] = T.rim[b];
                for (int i = 0; i < DTMF_K; i++)
                    T.opre[i][q] = T.pre[i][b], T.opim[i][q] = T.pim[i][b];
            }
        }
    }
    double a0 = 32768.0 * pow(10.0, -DTMF_DBM0_OVERLOAD / 20.0);
    T.min_power = a0 * a0 / 2.0 * pow(10.0, DTMF_MIN_LEVEL_DBM0 / 10.0);
    T.gate = T.min_power * DTMF_SUB / 16.0;
    T.fwd = pow(10.0, DTMF_FWD_TWIST_DB / 10.0);
    T.rev = pow(10.0, DTMF_REV_TWIST_DB / 10.0);
    T.rel = pow(10.0, -DTMF_REL_PEAK_DB / 10.0);
    T.freq = pow(10.0, DTMF_FREQ_MARGIN_DB / 10.0);
    T.tone_ratio = DTMF_TONE_RATIO;
    T.flat = DTMF_FLAT_RATIO;
    /* Harmonic test. A sound whose second harmonic sits on a column while its fundamental sits on a row
     * (2 F_row - F_col = h between 0 and 100 Hz: keys 2, 6 and C, h = 58, 63, 71 Hz) has d = dev_col -
     * 2 dev_row = h (deviations in Hz). A key within 1.5 % has d <= v = 1.5 % (F_col + 2 F_row) (41, 45, 50
     * Hz); the threshold is halfway, (v + h) / 2. d is measured from phase advances over the lag (40
     * samples, so d is unambiguous within +-100 Hz): angle = 2 pi d lag / rate. */
    for (int r = 0; r < 4; r++) {
        for (int c = 0; c < 4; c++) {
            double h = 2.0 * FREQS[r] - FREQS[4 + c];
            double v = 0.015 * (FREQS[4 + c] + 2.0 * FREQS[r]);
            T.harm[r][c] = (h > 0.0 && h < 100.0) ? 2.0 * M_PI * 0.5 * (v + h) * DTMF_SUB * DTMF_HARM_LAG / DTMF_RATE : 0.0;
        }
    }
}

void dtmf_init(dtmf_state_t *st)
{
    pthread_once(&tables_once, build_tables);
    memset(st, 0, sizeof(*st));
    st->cur = -1;
}

/* Strongest nominal bin of a group (4 frequencies from f0); its power (best of nominal and +-1.5 %) in *tone.
 * Returns -1 when the group fails its own tests (level, frequency, relative peak). */
static int pick_tone(const double *power, int f0, double *tone)
{
    int best = f0;
    for (int f = f0 + 1; f < f0 + 4; f++)
        if (power[f * DTMF_NOFF + 2] > power[best * DTMF_NOFF + 2])
            best = f;
    const double *p = power + best * DTMF_NOFF;
    double level = p[2];
    if (p[1] > level)
        level = p[1];
    if (p[3] > level)
        level = p[3];
    *tone = level;
    if (level < T.min_power)
        return -1;
    if (!(p[2] > p[0] * T.freq && p[2] > p[4] * T.freq))
        return -1;
    for (int f = f0; f < f0 + 4; f++)
        if (f != best && power[f * DTMF_NOFF + 2] > level * T.rel)
            return -1;
    return best - f0;
}

int dtmf_classify(const double *power, double total, const double *sub, const double *zr, const double *zi)
{
    double lo, hi;
    int row = pick_tone(power, 0, &lo);
    if (row < 0)
        return -1;
    int col = pick_tone(power, 4, &hi);
    if (col < 0)
        return -1;
    if (hi > lo * T.fwd || lo > hi * T.rev)
        return -1;
    if (lo + hi < T.tone_ratio * total)
        return -1;
    double mean = total * DTMF_N / DTMF_K; /* mean sub-block energy */
    for (int i = 0; i < DTMF_K; i++)
        if (sub[i] < T.flat * mean)
            return -1;
    if (T.harm[row][col] > 0.0) {
        /* w = z_col conj(z_row)^2: its angle is 2 pi (dev_col - 2 dev_row) lag / rate */
        double ar = zr[row] * zr[row] - zi[row] * zi[row], ai = -2.0 * zr[row] * zi[row];
        double hr = zr[4 + col], hi2 = zi[4 + col];
        double wr = hr * ar - hi2 * ai, wi = hr * ai + hi2 * ar;
        if (atan2(wi, wr) > T.harm[row][col])
            return -1;
    }
    return row * 4 + col;
}

/* Ends the tone being tracked; reports it when long enough. */
static size_t finish(dtmf_state_t *st, dtmf_event_t *out)
{
    size_t n = 0;
    if (st->cur >= 0 && st->last_end - st->first_start >= DTMF_MIN_TONE) {
        out->digit = DTMF_KEYS[st->cur];
        out->start = st->first_start;
        out->end = st->last_end;
        n = 1;
    }
    st->cur = -1;
    return n;
}

/* Goertzel over one sub-block's samples for nb bins: correlations with phase at the sub-block's first sample. */
static inline void goertzel(const int16_t *x, int nb, const double *coef, const double *cw, const double *sw,
                            const double *rre, const double *rim, double *cre, double *cim)
{
    double s1[DTMF_NFREQ * 4] = {0}, s2[DTMF_NFREQ * 4] = {0};
    for (int m = 0; m < DTMF_SUB; m++) {
        double v = x[m];
        for (int b = 0; b < nb; b++) {
            double s0 = v + coef[b] * s1[b] - s2[b];
            s2[b] = s1[b];
            s1[b] = s0;
        }
    }
    for (int b = 0; b < nb; b++) {
        /* y = s1 - e^{-jw} s2 = sum x[m] e^{jw(SUB-1-m)}; rotate to the sub-block's first sample */
        double yr = s1[b] - cw[b] * s2[b], yi = sw[b] * s2[b];
        cre[b] = yr * rre[b] - yi * rim[b];
        cim[b] = yr * rim[b] + yi * rre[b];
    }
}

/* The window made of the last DTMF_K sub-blocks is complete: classify it and run the state machine.
 * The 8 nominal bins come first; the 32 off-nominal ones only for a candidate window (dtmf.c top). */
static int window_key(dtmf_state_t *st)
{
    double power[DTMF_NBINS], sub[DTMF_K], total = 0.0;
    int64_t oldest = st->nsub - DTMF_K;
    int slots[DTMF_K];
    for (int i = 0; i < DTMF_K; i++) {
        slots[i] = (int)((oldest + i) % DTMF_K);
        if (st->quiet[slots[i]])
            return -1;
        sub[i] = st->sub_energy[slots[i]];
        total += sub[i];
    }
    total /= DTMF_N;
    double mean = total * DTMF_N / DTMF_K;
    for (int i = 0; i < DTMF_K; i++)
        if (sub[i] < T.flat * mean)
            return -1;
    double pn[DTMF_NFREQ], zr[DTMF_NFREQ], zi[DTMF_NFREQ];
    for (int f = 0; f < DTMF_NFREQ; f++) {
        double er = 0.0, ei = 0.0, mr = 0.0, mi = 0.0, lr = 0.0, li = 0.0;
        for (int i = 0; i < DTMF_K; i++) {
            double cr = st->cre[slots[i]][f], ci = st->cim[slots[i]][f];
            double re = cr * T.npre[i][f] - ci * T.npim[i][f];
            double im = cr * T.npim[i][f] + ci * T.npre[i][f];
            if (i < DTMF_HARM_LAG)
                er += re, ei += im;
            else if (i < DTMF_K - DTMF_HARM_LAG)
                mr += re, mi += im;
            else
                lr += re, li += im;
        }
        double re = er + mr + lr, im = ei + mi + li;
        pn[f] = 2.0 * (re * re + im * im) / ((double)DTMF_N * DTMF_N);
        power[f * DTMF_NOFF + 2] = pn[f];
        double ar = er + mr, ai = ei + mi, br = mr + lr, bi = mi + li; /* early, late */
        zr[f] = br * ar + bi * ai;
        zi[f] = bi * ar - br * ai;
    }
    double plo = pn[0], phi = pn[4];
    for (int f = 1; f < 4; f++) {
        if (pn[f] > plo)
            plo = pn[f];
        if (pn[4 + f] > phi)
            phi = pn[4 + f];
    }
    double cand = T.min_power * DTMF_CAND_LEVEL;
    if (plo < cand || phi < cand || plo + phi < DTMF_CAND_RATIO * total)
        return -1;
    for (int i = 0; i < DTMF_K; i++) {
        int s = slots[i];
        if (!st->off_done[s]) {
            goertzel(st->hist[s], DTMF_NFREQ * 4, T.ocoef, T.ocw, T.osw, T.orre, T.orim, st->ore[s], st->oim[s]);
            st->off_done[s] = 1;
        }
    }
    for (int q = 0; q < DTMF_NFREQ * 4; q++) {
        double re = 0.0, im = 0.0;
        for (int i = 0; i < DTMF_K; i++) {
            double cr = st->ore[slots[i]][q], ci = st->oim[slots[i]][q];
            re += cr * T.opre[i][q] - ci * T.opim[i][q];
            im += cr * T.opim[i][q] + ci * T.opre[i][q];
        }
        int o = q % 4, f = q / 4;
        power[f * DTMF_NOFF + (o < 2 ? o : o + 1)] = 2.0 * (re * re + im * im) / ((double)DTMF_N * DTMF_N);
    }
    return dtmf_classify(power, total, sub, zr, zi);
}

static size_t close_window(dtmf_state_t *st, dtmf_event_t *out)
{
    int key = window_key(st);
    int64_t start = (st->nsub - DTMF_K) * DTMF_SUB;
    size_t n = 0;
    if (st->cur >= 0 && start >= st->last_end + DTMF_MIN_PAUSE)
        n = finish(st, out);
    if (key >= 0) {
        if (st->cur < 0) {
            st->cur = key;
            st->first_start = start;
            st->last_end = start + DTMF_N;
        } else if (key == st->cur) {
            st->last_end = start + DTMF_N;
        }
    }
    return n;
}

/* A full sub-block: its energy, and unless it is quiet its 8 nominal Goertzel correlations, into the ring. */
static void close_sub_block(dtmf_state_t *st)
{
    int slot = (int)(st->nsub % DTMF_K);
    double energy = 0.0;
    for (int m = 0; m < DTMF_SUB; m++)
        energy += (double)st->buf[m] * st->buf[m];
    st->sub_energy[slot] = energy;
    st->quiet[slot] = energy < T.gate;
    st->off_done[slot] = 0;
    if (!st->quiet[slot]) {
        memcpy(st->hist[slot], st->buf, sizeof(st->buf));
        goertzel(st->buf, DTMF_NFREQ, T.ncoef, T.ncw, T.nsw, T.nrre, T.nrim, st->cre[slot], st->cim[slot]);
    }
    st->fill = 0;
    st->nsub++;
}

size_t dtmf_process(dtmf_state_t *st, const int16_t *x, size_t n, dtmf_event_t *out)
{
    size_t events = 0;
    while (n) {
        size_t take = (size_t)(DTMF_SUB - st->fill);
        if (take > n)
            take = n;
        memcpy(st->buf + st->fill, x, take * sizeof(int16_t));
        st->fill += (int)take;
        x += take;
        n -= take;
        if (st->fill < DTMF_SUB)
            break;
        close_sub_block(st);
        if (st->nsub >= DTMF_K)
            events += close_window(st, out + events);
    }
    return events;
}

size_t dtmf_flush(dtmf_state_t *st, dtmf_event_t *out)
{
    return finish(st, out);
}
