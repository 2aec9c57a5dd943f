/* Answering machine detection features: voice, silence and tone segments from 8 kHz PCM16.
 *
 * Theory of operation. The decision between a person and a voicemail greeting rests on the shape of what
 * the far end says (a short "Hello?" then a wait, or a long monologue, and a beep at its end), so the
 * compiled part only has to say, every 10 ms frame, whether there is voice, silence or a steady tone, and
 * report where one kind of segment gives way to another: a few events a second, which the decision logic
 * (media/amd.py) reads per segment.
 *
 * Voice. A frame is active when its mean square is above both the absolute silence threshold and the
 * tracked noise floor by `margin_db`. The floor follows the frame energy down at once and up at 3 dB a
 * second at most (minimum statistics, simplified), so a line's hiss, hum or comfort noise, whatever its
 * level, stays silence while speech, whose energy dips between syllables, keeps the floor down. Noise
 * that steps up (comfort noise switched on, a noisier line after a transfer) would take seconds to be
 * learnt that way and read as voice meanwhile; but noise is steady and speech is not, so 300 ms of frames
 * within +-3 dB of the first (not counting tonal ones: a long beep is steady too) set the floor to
 * their minimum at once. Voice
 * starts after `voice_on_ms` of activity (a click does not) and ends after `voice_off_ms` of silence (the
 * pauses inside and between words do not), each boundary placed at the first frame of the run.
 *
 * Tones. A beep is one sine, sometimes two or three, held steady. A sum of k sines obeys a palindromic
 * linear recursion of order 2k (x[n] + x[n-2k] = a_1 (x[n-1] + x[n-2k+1]) + ... + a_k x[n-k]) whose
 * characteristic roots are its frequencies; over the last 20 ms the tracker fits k = 1, 2, 3 by least
 * squares and takes the first that predicts the window: the prediction leaves at most `tone_residual` of
 * the power, or no more than three times what the tracked noise floor alone would leave (the noise comes
 * through amplified by the sum of the squared coefficients), so a beep at 15 dB SNR still counts. Its k
 * frequencies must all lie in [tone_min_hz, tone_max_hz] (k sign changes of the recursion's polynomial in
 * u = 2 cos w across the band). Speech and noise are not predicted by so few coefficients. A tone goes on
 * while its recursion (refitted every window, to follow a slow drift) keeps predicting the new windows:
 * a sine that changes pitch, or a beep that gives way to another, breaks it. After `tone_min_ms` the tone
 * is reported, starting where it started, so it may replace a voice boundary the first frames of the beep
 * had already produced. One non-tonal window inside a tone is forgiven (a lost packet, a codec glitch);
 * two end it, and what follows is voice or silence.
 */
#include "amd.h"

#include <math.h>
#include <string.h>

#define DBM0_OVERLOAD 3.14
#define FLOOR_RISE 1.00693          /* per frame: 3 dB a second */
#define FLOOR_MIN 1.0               /* mean square of about -87 dBm0: digital silence is not a floor of 0 */
#define STEADY_DB 3.0               /* frames within this of the run's first are steady */
#define STEADY_FRAMES 30            /* 300 ms of steady frames: that is the noise floor */

void amd_defaults(amd_params_t *p)
{
    p->silence_dbm0 = -50.0;
    p->margin_db = 9.0;
    p->voice_on_ms = 30;
    p->voice_off_ms = 100;
    p->tone_min_hz = 300;
    p->tone_max_hz = 2000;
    p->tone_min_ms = 100;
    /* 0.02 lost 8 of bench/amd.py's 22 beeps of two or three sines, 0.03 loses 5; 0.05 reads speech as tones */
    p->tone_drift = 0.03;
    p->tone_residual = 0.05;
}

static double dbm0_ms2(double dbm0)
{
    double peak = 32768.0 * pow(10.0, -DBM0_OVERLOAD / 20.0);
    return peak * peak / 2.0 * pow(10.0, dbm0 / 10.0);
}

void amd_init(amd_state_t *st, const amd_params_t *p)
{
    memset(st, 0, sizeof *st);
    st->p = *p;
    st->fill = AMD_FRAME; /* the "previous frame" of the first one is silence */
    st->floor = -1.0;
    st->kind = AMD_SILENCE;
    st->silence_ms2 = dbm0_ms2(p->silence_dbm0);
    st->margin = pow(10.0, p->margin_db / 10.0);
    /* the band with 3 % to spare: a beep right at an edge must not flicker in and out with estimation noise */
    st->cos_lo = cos(2.0 * M_PI * p->tone_min_hz * 0.97 / AMD_RATE);
    st->cos_hi = cos(2.0 * M_PI * p->tone_max_hz * 1.03 / AMD_RATE);
    int ms_per_frame = 1000 * AMD_FRAME / AMD_RATE;
    st->on_frames = (p->voice_on_ms + ms_per_frame - 1) / ms_per_frame;
    st->off_frames = (p->voice_off_ms + ms_per_frame - 1) / ms_per_frame;
    st->tone_min_frames = (p->tone_min_ms + ms_per_frame - 1) / ms_per_frame;
}

static double residual(const double *x, int n, int k, const double *a);

/* A sum of k sines satisfies the palindromic recursion
 *   x[n] + x[n-2k] = sum_{j<k} a_j (x[n-j] + x[n-2k+j]) + a_k x[n-k]
 * whose characteristic roots are the k frequencies. Least squares over the window gives a[0..k-1]; the
 * return value is the residual energy (INFINITY when the fit is undetermined: fewer sines than k). */
static double fit(const double *x, int n, int k, double *a)
{
    double m[AMD_MAX_SINES][AMD_MAX_SINES + 1];
    memset(m, 0, sizeof m);
    for (int i = 2 * k; i < n; i++) {
        double r[AMD_MAX_SINES], y = x[i] + x[i - 2 * k];
        for (int j = 1; j <= k; j++)
            r[j - 1] = j < k ? x[i - j] + x[i - 2 * k + j] : x[i - k];
        for (int p = 0; p < k; p++) {
            for (int q = 0; q < k; q++)
                m[p][q] += r[p] * r[q];
            m[p][k] += r[p] * y;
        }
    }
    double scale = 0;
    for (int p = 0; p < k; p++)
        scale = fmax(scale, m[p][p]);
    for (int c = 0; c < k; c++) { /* Gaussian elimination, partial pivoting */
        int best = c;
        for (int p = c + 1; p < k; p++)
            if (fabs(m[p][c]) > fabs(m[best][c]))
                best = p;
        if (fabs(m[best][c]) <= 1e-9 * scale || scale <= 0)
            return INFINITY;
        for (int q = 0; q <= k; q++) {
            double t = m[c][q];
            m[c][q] = m[best][q];
            m[best][q] = t;
        }
        for (int p = 0; p < k; p++) {
            if (p == c)
                continue;
            double f = m[p][c] / m[c][c];
            for (int q = c; q <= k; q++)
                m[p][q] -= f * m[c][q];
        }
    }
    for (int p = 0; p < k; p++)
        a[p] = m[p][k] / m[p][p];
    return residual(x, n, k, a);
}

/* The energy a recursion's prediction leaves over the window. */
static double residual(const double *x, int n, int k, const double *a)
{
    double e = 0;
    for (int i = 2 * k; i < n; i++) {
        double pred = -x[i - 2 * k];
        for (int j = 1; j <= k; j++)
            pred += a[j - 1] * (j < k ? x[i - j] + x[i - 2 * k + j] : x[i - k]);
        double r = x[i] - pred;
        e += r * r;
    }
    return e;
}

/* How much a recursion amplifies white noise: the sum of its squared coefficients. */
static double noise_gain(int k, const double *a)
{
    double g = 2.0;
    for (int j = 1; j <= k; j++)
        g += (j < k ? 2.0 : 1.0) * a[j - 1] * a[j - 1];
    return g;
}

/* The recursion's polynomial in u = z + 1/z = 2 cos w (degree k), at u. */
static double poly_u(int k, const double *a, double u)
{
    if (k == 1)
        return u - a[0];
    if (k == 2)
        return u * u - a[0] * u - (a[1] + 2.0);
    return u * u * u - a[0] * u * u - (3.0 + a[1]) * u + (2.0 * a[0] - a[2]);
}

/* Whether all k frequencies lie in the band (k sign changes of the polynomial across it); they go to hz[],
 * lowest first. */
static int in_band(const amd_state_t *st, int k, const double *a, double *hz)
{
    const int steps = 240;
    double lo = 2.0 * st->cos_hi, hi = 2.0 * st->cos_lo; /* u falls as frequency rises */
    double prev_u = hi, prev = poly_u(k, a, hi);
    int found = 0;
    for (int i = 1; i <= steps; i++) {
        double u = hi - (hi - lo) * i / steps, v = poly_u(k, a, u);
        if ((prev <= 0) != (v <= 0)) {
            if (found == k)
                return 0;
            double root = prev_u + (u - prev_u) * prev / (prev - v);
            hz[found++] = acos(fmax(-1.0, fmin(1.0, root / 2.0))) * AMD_RATE / (2.0 * M_PI);
        }
        prev_u = u;
        prev = v;
    }
    return found == k;
}

void amd_measure(const int16_t *window, double *frame_ms2, double *cos_w, double *residual_share)
{
    double x[AMD_WINDOW], e = 0, pw = 0, a[AMD_MAX_SINES];
    for (int i = 0; i < AMD_WINDOW; i++)
        x[i] = window[i];
    for (int i = AMD_FRAME; i < AMD_WINDOW; i++)
        e += x[i] * x[i];
    for (int i = 2; i < AMD_WINDOW; i++)
        pw += x[i] * x[i];
    *frame_ms2 = e / AMD_FRAME;
    double left = fit(x, AMD_WINDOW, 1, a);
    *cos_w = isfinite(left) ? a[0] / 2.0 : 2.0;
    *residual_share = pw > 0 && isfinite(left) ? left / pw : 1.0;
}

/* Whether a residual is what k steady sines leave: a small share of the power, or no more than the noise
 * floor alone would (so beeps at a low SNR count). */
static int small(const amd_state_t *st, double left, double pw, int k, const double *a)
{
    double noise = st->floor * (AMD_WINDOW - 2 * k);
    return left <= fmax(st->p.tone_residual * pw, 3.0 * noise_gain(k, a) * noise);
}

/* The tone tracker for one window: the fewest sines, up to AMD_MAX_SINES, that predict it, all in the
 * band; their number, with their frequencies in hz[] (0 when the window is not tonal). */
static int tonal(const amd_state_t *st, const int16_t *window, double *hz)
{
    double x[AMD_WINDOW], pw = 0;
    for (int i = 0; i < AMD_WINDOW; i++)
        x[i] = window[i];
    for (int i = 2; i < AMD_WINDOW; i++)
        pw += x[i] * x[i];
    if (pw <= 0)
        return 0;
    for (int k = 1; k <= AMD_MAX_SINES; k++) {
        double a[AMD_MAX_SINES];
        double left = fit(x, AMD_WINDOW, k, a);
        if (isfinite(left) && small(st, left, pw, k, a) && in_band(st, k, a, hz))
            return k;
    }
    return 0;
}

/* Whether a tonal window continues the tone: as many sines, each within tone_drift of the tone's. */
static int same_tone(const amd_state_t *st, int k, const double *hz)
{
    if (k != st->tone_k)
        return 0;
    for (int j = 0; j < k; j++)
        if (fabs(hz[j] - st->tone_hz[j]) > st->p.tone_drift * st->tone_hz[j])
            return 0;
    return 1;
}

static size_t emit(amd_state_t *st, amd_event_t *out, size_t k, int kind, int64_t start, int freq)
{
    st->kind = kind;
    st->run = 0;
    out[k].kind = kind;
    out[k].start = start < 0 ? 0 : start;
    out[k].freq_hz = freq;
    return k + 1;
}

static size_t frame_done(amd_state_t *st, amd_event_t *out, size_t k)
{
    int64_t t0 = st->frames * AMD_FRAME; /* first sample of this frame */
    double e = 0;
    for (int i = AMD_FRAME; i < AMD_WINDOW; i++)
        e += (double)st->frame[i] * st->frame[i];
    double ms2 = e / AMD_FRAME;
    if (st->floor < 0)
        st->floor = fmax(ms2, FLOOR_MIN);
    int active = ms2 > st->silence_ms2 && ms2 > st->floor * st->margin;

    double hz[AMD_MAX_SINES];
    int sines = active ? tonal(st, st->frame, hz) : 0;
    if (sines) {
        if (st->tone_frames > 0 && same_tone(st, sines, hz)) {
            st->tone_frames++;
            for (int j = 0; j < sines; j++) /* the running mean: a slow drift is followed */
                st->tone_hz[j] += (hz[j] - st->tone_hz[j]) / st->tone_frames;
        } else {
            if (st->kind == AMD_TONE) /* another tone right after: the first one ended here */
                k = emit(st, out, k, AMD_VOICE, t0, 0);
            st->tone_frames = 1;
            st->tone_k = sines;
            memcpy(st->tone_hz, hz, sizeof hz);
            st->tone_start = t0 - AMD_FRAME / 2; /* the window reaches half a frame further back */
        }
        st->tone_gap = 0;
        if (st->tone_frames == st->tone_min_frames && st->kind != AMD_TONE)
            k = emit(st, out, k, AMD_TONE, st->tone_start, (int)lround(st->tone_hz[0]));
    } else if (st->tone_frames > 0 && ++st->tone_gap >= 2) {
        if (st->kind == AMD_TONE) /* it ended where the first non-tonal frame began */
            k = emit(st, out, k, active ? AMD_VOICE : AMD_SILENCE, t0 - AMD_FRAME, 0);
        st->tone_frames = 0;
    }

    if (st->kind != AMD_TONE) {
        int want = active ? AMD_VOICE : AMD_SILENCE;
        if (want == st->kind) {
            st->run = 0;
        } else {
            if (st->run++ == 0)
                st->run_start = t0;
            if (st->run >= (want == AMD_VOICE ? st->on_frames : st->off_frames))
                k = emit(st, out, k, want, st->run_start, 0);
        }
    }

    if (ms2 < st->floor)
        st->floor = fmax(ms2, FLOOR_MIN);
    else
        st->floor = fmin(ms2, st->floor * FLOOR_RISE);
    double db = 10.0 * log10(fmax(ms2, FLOOR_MIN));
    if (!sines && fabs(db - st->steady_db) <= STEADY_DB) {
        st->steady_min = fmin(st->steady_min, ms2);
        if (++st->steady_frames >= STEADY_FRAMES && st->steady_min > st->floor)
            st->floor = st->steady_min;
    } else {
        st->steady_frames = 1;
        st->steady_db = db;
        st->steady_min = ms2;
    }
    st->frames++;
    return k;
}

size_t amd_process(amd_state_t *st, const int16_t *x, size_t n, amd_event_t *out)
{
    size_t k = 0;
    while (n > 0) {
        size_t take = (size_t)(AMD_WINDOW - st->fill);
        if (take > n)
            take = n;
        memcpy(st->frame + st->fill, x, take * sizeof *x);
        st->fill += (int)take;
        x += take;
        n -= take;
        if (st->fill == AMD_WINDOW) {
            k = frame_done(st, out, k);
            memmove(st->frame, st->frame + AMD_FRAME, AMD_FRAME * sizeof *st->frame);
            st->fill = AMD_FRAME;
        }
    }
    return k;
}
