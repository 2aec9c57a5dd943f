/* SRTP and SRTCP (RFC 3711) with the SDES suites (RFC 4568): AES_CM_128_HMAC_SHA1_80 and _32.
 *
 * One srtp_t per leg and direction, keyed from a 30-byte master key||salt: protect what a leg sends,
 * unprotect what it receives, in the media thread, in place. AES comes from the process's libcrypto (the
 * one Python's ssl module loads; opened at run time, so building needs no OpenSSL headers), HMAC-SHA1 is
 * here. Key derivation rate 0, no MKI: what SDES peers use. */
#ifndef SOFTSWITCH_SRTP_H
#define SOFTSWITCH_SRTP_H

#include <stdint.h>

#define SRTP_MASTER_LEN 30   /* 16-byte key, 14-byte salt */
#define SRTP_MAX_TRAILER 14  /* what protect may add: SRTCP's 4-byte index and a 10-byte tag */

typedef struct {
    uint32_t h[5];
} sha1_state_t;

typedef struct {
    uint8_t enc[16], salt[14];
    sha1_state_t inner, outer;   /* HMAC-SHA1 with the session auth key, its pads already hashed */
} srtp_keys_t;

typedef struct {
    void *aes_rtp, *aes_rtcp;    /* EVP_CIPHER_CTX of AES-128-CTR with the session keys */
    srtp_keys_t rtp, rtcp;
    int tag_len;                 /* SRTP tag: 10 (_80) or 4 (_32); SRTCP's is always 10 */
    /* sending: the rollover counter of our own sequence numbers, SRTCP's next index */
    uint32_t tx_roc, tx_rtcp_index;
    uint16_t tx_last_seq;
    int tx_started;
    /* receiving (RFC 3711 3.3.1 and Appendix A): highest index seen, and a 64-packet replay window */
    uint32_t rx_roc;
    uint16_t rx_s_l;
    int rx_started;
    uint64_t rx_window;
    uint32_t rtcp_rx_max;
    uint64_t rtcp_rx_window;
    int rtcp_rx_started;
} srtp_t;

/* 0, or -1 when libcrypto cannot be used (srtp_error says why). tag_len 10 or 4. */
int srtp_init(srtp_t *s, const uint8_t master[SRTP_MASTER_LEN], int tag_len);
void srtp_free(srtp_t *s);
const char *srtp_error(void);

/* In place; `cap` is the buffer's size. The new length, or -1 (too short, no room, or crypto failure). */
int srtp_protect(srtp_t *s, uint8_t *pkt, int len, int cap);
int srtcp_protect(srtp_t *s, uint8_t *pkt, int len, int cap);
/* In place. The plain length, -1 when the tag does not verify (or too short), -2 for a replay. */
int srtp_unprotect(srtp_t *s, uint8_t *pkt, int len);
int srtcp_unprotect(srtp_t *s, uint8_t *pkt, int len);

/* For tests: the session keys RFC 3711 4.3 derives (label 0-5), n bytes of them. */
int srtp_derive(const uint8_t master[SRTP_MASTER_LEN], int label, uint8_t *out, int n);
void srtp_hmac_sha1(const uint8_t *key, int key_len, const uint8_t *data, int n, uint8_t out[20]);

#endif
