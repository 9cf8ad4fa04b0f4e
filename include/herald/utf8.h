/*
 * UTF-8 validation (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF). The incremental form carries state across calls so a
 * character split between two reads or two WebSocket fragments is accepted,
 * and invalid input is reported at the first byte that makes it invalid.
 */
#ifndef HERALD_UTF8_H
#define HERALD_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whole-buffer check. */
bool hd_utf8_valid(const void *bytes, size_t len);

/* Incremental validator; zero-initialise (or hd_utf8_reset) before use. */
typedef struct hd_utf8_state {
    uint32_t state;
} hd_utf8_state;

static inline void hd_utf8_reset(hd_utf8_state *st)
{
    st->state = 0;
}

/* Feeds more bytes; returns false as soon as the input cannot be valid UTF-8. */
bool hd_utf8_feed(hd_utf8_state *st, const void *bytes, size_t len);
/* True when the bytes fed so far end on a character boundary. */
bool hd_utf8_complete(const hd_utf8_state *st);

#endif
