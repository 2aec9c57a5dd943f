/* G.711 mu-law and A-law, as the ITU-T G.191 reference software (STL g711.c) defines them for 16-bit
 * linear input: negative samples take the one's complement before truncation to 14 bits (mu-law) or
 * 12 bits (A-law), so the quantiser is symmetric about -0.5.  Shared by every kernel that touches audio
 * (codec, transcoder, mixer, detectors) so there is one definition of the law. */
#ifndef SOFTSWITCH_G711_H
#define SOFTSWITCH_G711_H

#include <stdint.h>

static inline int g711_top_bit(unsigned int v) { return 31 - __builtin_clz(v); }

static inline uint8_t g711_lin2ulaw(int16_t x)
{
    int v, mask, seg;
    if (x < 0) { v = ~x; mask = 0x7F; } else { v = x; mask = 0xFF; }
    v = (v >> 2) + 33;              /* 14-bit magnitude, biased so segments start at powers of two */
    if (v > 0x1FFF) v = 0x1FFF;
    seg = g711_top_bit((unsigned int)v) - 5;
    return (uint8_t)(((seg << 4) | ((v >> (seg + 1)) & 0x0F)) ^ mask);
}

static inline int16_t g711_ulaw2lin(uint8_t code)
{
    int c = (~code) & 0xFF;
    int e = (c >> 4) & 0x07, m = c & 0x0F;
    int y = ((((m << 1) + 33) << e) - 33) << 2;
    return (int16_t)((c & 0x80) ? -y : y);
}

static inline uint8_t g711_lin2alaw(int16_t x)
{
    int v, mask, seg, ix;
    if (x < 0) { v = ~x; mask = 0x55; } else { v = x; mask = 0xD5; }
    ix = v >> 4;                     /* 11-bit magnitude in steps of 16 */
    if (ix > 15) {
        seg = g711_top_bit((unsigned int)ix) - 3;
        ix = (seg << 4) | ((ix >> (seg - 1)) & 0x0F);
    }
    return (uint8_t)(ix ^ mask);
}

static inline int16_t g711_alaw2lin(uint8_t code)
{
    int c = code ^ 0x55;
    int e = (c >> 4) & 0x07, m = c & 0x0F;
    int y = (e == 0) ? ((m << 4) + 8) : ((((m + 16) << 4) + 8) << (e - 1));
    return (int16_t)((c & 0x80) ? y : -y);
}

#endif
