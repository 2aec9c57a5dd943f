/* SRTP and SRTCP, RFC 3711 with the AES-CM / HMAC-SHA1 transforms (see srtp.h). */
#include "srtp.h"

#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

/* -- libcrypto, opened at run time --------------------------------------------------------------------- */
static struct {
    void *(*ctx_new)(void);
    void (*ctx_free)(void *);
    const void *(*aes_128_ctr)(void);
    int (*init)(void *ctx, const void *cipher, void *engine, const uint8_t *key, const uint8_t *iv);
    int (*update)(void *ctx, uint8_t *out, int *outl, const uint8_t *in, int inl);
} C;
static const char *load_error = "libcrypto not loaded";
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load(void)
{
    static const char *names[] = {"libcrypto.so.3", "libcrypto.so"};
    void *h = NULL;
    for (unsigned i = 0; i < sizeof names / sizeof *names && !h; i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        load_error = "cannot open libcrypto.so.3 (OpenSSL 3)";
        return;
    }
    *(void **)&C.ctx_new = dlsym(h, "EVP_CIPHER_CTX_new");
    *(void **)&C.ctx_free = dlsym(h, "EVP_CIPHER_CTX_free");
    *(void **)&C.aes_128_ctr = dlsym(h, "EVP_aes_128_ctr");
    *(void **)&C.init = dlsym(h, "EVP_EncryptInit_ex");
    *(void **)&C.update = dlsym(h, "EVP_EncryptUpdate");
    load_error = C.ctx_new && C.ctx_free && C.aes_128_ctr && C.init && C.update ? NULL : "libcrypto lacks EVP AES-CTR";
}

const char *srtp_error(void)
{
    pthread_once(&load_once, load);
    return load_error;
}

/* XOR `n` bytes at `p` with the AES-CTR keystream starting at counter block `iv` (the key is the ctx's) */
static int ctr_xor(void *ctx, const uint8_t iv[16], uint8_t *p, int n)
{
    int out = 0;
    if (C.init(ctx, NULL, NULL, NULL, iv) != 1)
        return -1;
    return n == 0 || C.update(ctx, p, &out, p, n) == 1 ? 0 : -1;
}

/* -- SHA-1 and HMAC-SHA1 ------------------------------------------------------------------------------------ */
typedef struct {
    uint32_t h[5];
    uint8_t buf[64];
    int n;
    uint64_t total;
} sha1_ctx_t;

static inline uint32_t rol(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }
static inline uint32_t be32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }
static inline void put32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = be32(p + 4 * i);
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

static void sha1_update(sha1_ctx_t *c, const uint8_t *p, int n)
{
    c->total += (uint64_t)n;
    while (n > 0) {
        if (c->n == 0 && n >= 64) {
            sha1_block(c->h, p);
            p += 64;
            n -= 64;
            continue;
        }
        int take = 64 - c->n < n ? 64 - c->n : n;
        memcpy(c->buf + c->n, p, (size_t)take);
        c->n += take;
        p += take;
        n -= take;
        if (c->n == 64) {
            sha1_block(c->h, c->buf);
            c->n = 0;
        }
    }
}

static void sha1_final(sha1_ctx_t *c, uint8_t out[20])
{
    uint64_t bits = c->total * 8;
    uint8_t pad = 0x80;
    sha1_update(c, &pad, 1);
    uint8_t zero = 0;
    while (c->n != 56)
        sha1_update(c, &zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_update(c, len, 8);
    for (int i = 0; i < 5; i++)
        put32(out + 4 * i, c->h[i]);
}

static const uint32_t SHA1_IV[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};

static void hmac_prepare(srtp_keys_t *k, const uint8_t *key, int key_len)
{
    uint8_t pad[64];
    for (int which = 0; which < 2; which++) {
        memset(pad, which ? 0x5c : 0x36, sizeof pad);
        for (int i = 0; i < key_len && i < 64; i++)
            pad[i] ^= key[i];
        sha1_state_t *st = which ? &k->outer : &k->inner;
        memcpy(st->h, SHA1_IV, sizeof SHA1_IV);
        sha1_block(st->h, pad);
    }
}

/* HMAC over a || b with a prepared key */
static void hmac_two(const srtp_keys_t *k, const uint8_t *a, int na, const uint8_t *b, int nb, uint8_t out[20])
{
    sha1_ctx_t c = {.n = 0, .total = 64};
    memcpy(c.h, k->inner.h, sizeof c.h);
    sha1_update(&c, a, na);
    sha1_update(&c, b, nb);
    uint8_t inner[20];
    sha1_final(&c, inner);
    sha1_ctx_t o = {.n = 0, .total = 64};
    memcpy(o.h, k->outer.h, sizeof o.h);
    sha1_update(&o, inner, 20);
    sha1_final(&o, out);
}

void srtp_hmac_sha1(const uint8_t *key, int key_len, const uint8_t *data, int n, uint8_t out[20])
{
    srtp_keys_t k;
    hmac_prepare(&k, key, key_len);
    hmac_two(&k, data, n, NULL, 0, out);
}

static int same_tag(const uint8_t *a, const uint8_t *b, int n)
{
    uint8_t d = 0;
    for (int i = 0; i < n; i++)
        d |= (uint8_t)(a[i] ^ b[i]);
    return d == 0;
}

/* -- key derivation (RFC 3711 4.3.1, key derivation rate 0) ----------------------------------------------- */
int srtp_derive(const uint8_t master[SRTP_MASTER_LEN], int label, uint8_t *out, int n)
{
    if (srtp_error() || n > 64)
        return -1;
    uint8_t iv[16] = {0};
    memcpy(iv, master + 16, 14);
    iv[7] ^= (uint8_t)label;
    void *ctx = C.ctx_new();
    if (!ctx)
        return -1;
    memset(out, 0, (size_t)n);
    int rc = C.init(ctx, C.aes_128_ctr(), NULL, master, iv) == 1 ? ctr_xor(ctx, iv, out, n) : -1;
    C.ctx_free(ctx);
    return rc;
}

static int session(srtp_keys_t *k, void **ctx, const uint8_t master[SRTP_MASTER_LEN], int base_label)
{
    uint8_t auth[20];
    if (srtp_derive(master, base_label, k->enc, 16) || srtp_derive(master, base_label + 1, auth, 20) ||
        srtp_derive(master, base_label + 2, k->salt, 14))
        return -1;
    hmac_prepare(k, auth, 20);
    memset(auth, 0, sizeof auth);
    *ctx = C.ctx_new();
    uint8_t zero[16] = {0};
    return *ctx && C.init(*ctx, C.aes_128_ctr(), NULL, k->enc, zero) == 1 ? 0 : -1;
}

int srtp_init(srtp_t *s, const uint8_t master[SRTP_MASTER_LEN], int tag_len)
{
    memset(s, 0, sizeof *s);
    if (tag_len != 10 && tag_len != 4)
        return -1;
    s->tag_len = tag_len;
    if (session(&s->rtp, &s->aes_rtp, master, 0) || session(&s->rtcp, &s->aes_rtcp, master, 3)) {
        srtp_free(s);
        return -1;
    }
    return 0;
}

void srtp_free(srtp_t *s)
{
    if (s->aes_rtp)
        C.ctx_free(s->aes_rtp);
    if (s->aes_rtcp)
        C.ctx_free(s->aes_rtcp);
    memset(s, 0, sizeof *s);
}

/* the counter block: salt * 2^16 XOR SSRC * 2^64 XOR index * 2^16 (RFC 3711 4.1.1) */
static void counter_block(uint8_t iv[16], const uint8_t salt[14], const uint8_t *ssrc, uint64_t index)
{
    memcpy(iv, salt, 14);
    iv[14] = iv[15] = 0;
    for (int i = 0; i < 4; i++)
        iv[4 + i] ^= ssrc[i];
    for (int i = 0; i < 6; i++)
        iv[8 + i] ^= (uint8_t)(index >> (40 - 8 * i));
}

static int rtp_header_len(const uint8_t *pkt, int len)
{
    if (len < 12 || (pkt[0] >> 6) != 2)
        return -1;
    int hdr = 12 + 4 * (pkt[0] & 0x0f);
    if (pkt[0] & 0x10) {
        if (len < hdr + 4)
            return -1;
        hdr += 4 + 4 * ((pkt[hdr + 2] << 8) | pkt[hdr + 3]);
    }
    return hdr <= len ? hdr : -1;
}

/* -- SRTP ------------------------------------------------------------------------------------------------ */
int srtp_protect(srtp_t *s, uint8_t *pkt, int len, int cap)
{
    int hdr = rtp_header_len(pkt, len);
    if (hdr < 0 || len + s->tag_len > cap)
        return -1;
    uint16_t seq = (uint16_t)((pkt[2] << 8) | pkt[3]);
    uint32_t roc = s->tx_roc;
    if (!s->tx_started) {
        s->tx_started = 1;
        s->tx_last_seq = seq;
    } else if ((uint16_t)(seq - s->tx_last_seq) < 0x8000) {
        if (seq < s->tx_last_seq)
            roc = ++s->tx_roc; /* the sequence wrapped */
        s->tx_last_seq = seq;
    } else if (seq > s->tx_last_seq && roc > 0) {
        roc--; /* a late packet from before the last wrap */
    }
    uint8_t iv[16], tag[20], roc_be[4];
    counter_block(iv, s->rtp.salt, pkt + 8, ((uint64_t)roc << 16) | seq);
    if (ctr_xor(s->aes_rtp, iv, pkt + hdr, len - hdr))
        return -1;
    put32(roc_be, roc);
    hmac_two(&s->rtp, pkt, len, roc_be, 4, tag);
    memcpy(pkt + len, tag, (size_t)s->tag_len);
    return len + s->tag_len;
}

/* a 64-entry replay window over `delta` = index - highest seen (0: the highest itself) */
static int replayed(uint64_t window, int64_t delta)
{
    if (delta > 0)
        return 0;
    if (-delta >= 64)
        return 1;
    return (int)((window >> (-delta)) & 1);
}

static uint64_t slide(uint64_t window, int64_t delta)
{
    if (delta > 0)
        return delta >= 64 ? 1 : (window << delta) | 1;
    return window | (1ull << (-delta));
}

int srtp_unprotect(srtp_t *s, uint8_t *pkt, int len)
{
    int hdr = rtp_header_len(pkt, len - s->tag_len);
    if (hdr < 0)
        return -1;
    int body = len - s->tag_len;
    uint16_t seq = (uint16_t)((pkt[2] << 8) | pkt[3]);
    uint32_t v = 0;
    if (s->rx_started) { /* which rollover count this packet belongs to (RFC 3711 3.3.1) */
        v = s->rx_roc;
        if (s->rx_s_l < 32768) {
            if ((int)seq - (int)s->rx_s_l > 32768 && v > 0)
                v--;
        } else if ((int)s->rx_s_l - 32768 > (int)seq) {
            v++;
        }
    }
    uint64_t index = ((uint64_t)v << 16) | seq;
    uint64_t highest = ((uint64_t)s->rx_roc << 16) | s->rx_s_l;
    int64_t delta = (int64_t)index - (int64_t)highest;
    if (s->rx_started && replayed(s->rx_window, delta))
        return -2;
    uint8_t tag[20], roc_be[4];
    put32(roc_be, v);
    hmac_two(&s->rtp, pkt, body, roc_be, 4, tag);
    if (!same_tag(tag, pkt + body, s->tag_len))
        return -1;
    uint8_t iv[16];
    counter_block(iv, s->rtp.salt, pkt + 8, index);
    if (ctr_xor(s->aes_rtp, iv, pkt + hdr, body - hdr))
        return -1;
    if (!s->rx_started) {
        s->rx_started = 1;
        s->rx_roc = v;
        s->rx_s_l = seq;
        s->rx_window = 1;
    } else {
        s->rx_window = slide(s->rx_window, delta);
        if (delta > 0) {
            s->rx_roc = v;
            s->rx_s_l = seq;
        }
    }
    return body;
}

/* -- SRTCP (RFC 3711 3.4): encrypted after the first 8 bytes, then E flag | 31-bit index, then an 80-bit tag */
#define RTCP_TAG 10

int srtcp_protect(srtp_t *s, uint8_t *pkt, int len, int cap)
{
    if (len < 8 || len + 4 + RTCP_TAG > cap)
        return -1;
    uint32_t index = s->tx_rtcp_index++ & 0x7fffffff;
    uint8_t iv[16], tag[20];
    counter_block(iv, s->rtcp.salt, pkt + 4, index);
    if (ctr_xor(s->aes_rtcp, iv, pkt + 8, len - 8))
        return -1;
    put32(pkt + len, 0x80000000u | index);
    hmac_two(&s->rtcp, pkt, len + 4, NULL, 0, tag);
    memcpy(pkt + len + 4, tag, RTCP_TAG);
    return len + 4 + RTCP_TAG;
}

int srtcp_unprotect(srtp_t *s, uint8_t *pkt, int len)
{
    if (len < 8 + 4 + RTCP_TAG)
        return -1;
    int body = len - 4 - RTCP_TAG;
    uint32_t e_index = be32(pkt + body);
    uint32_t index = e_index & 0x7fffffff;
    int64_t delta = (int64_t)index - (int64_t)s->rtcp_rx_max;
    if (s->rtcp_rx_started && replayed(s->rtcp_rx_window, delta))
        return -2;
    uint8_t tag[20];
    hmac_two(&s->rtcp, pkt, body + 4, NULL, 0, tag);
    if (!same_tag(tag, pkt + body + 4, RTCP_TAG))
        return -1;
    if (e_index & 0x80000000u) {
        uint8_t iv[16];
        counter_block(iv, s->rtcp.salt, pkt + 4, index);
        if (ctr_xor(s->aes_rtcp, iv, pkt + 8, body - 8))
            return -1;
    }
    if (!s->rtcp_rx_started) {
        s->rtcp_rx_started = 1;
        s->rtcp_rx_max = index;
        s->rtcp_rx_window = 1;
    } else {
        s->rtcp_rx_window = slide(s->rtcp_rx_window, delta);
        if (delta > 0)
            s->rtcp_rx_max = index;
    }
    return body;
}
