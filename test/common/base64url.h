/*
 * Unpadded base64url encoding (RFC 7515 §2), for tests and fuzz targets that
 * build tokens. out must hold 4 * ceil(len / 3) + 1 bytes; it is
 * NUL-terminated.
 */
#ifndef HERALD_TEST_BASE64URL_H
#define HERALD_TEST_BASE64URL_H

#include <stddef.h>
#include <stdint.h>

static inline void test_base64url(const unsigned char *in, size_t len, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    uint32_t bits = 0;
    int held = 0;
    for (size_t i = 0; i < len; i++) {
        bits = bits << 8 | in[i];
        held += 8;
        while (held >= 6) {
            held -= 6;
            out[o++] = alphabet[(bits >> held) & 63];
        }
    }
    if (held > 0)
        out[o++] = alphabet[(bits << (6 - held)) & 63];
    out[o] = '\0';
}

#endif
