/*
 * UTF-8 validation as a deterministic automaton over byte classes.
 *
 * RFC 3629's table of well-formed sequences (section 4) is what the states
 * encode: after E0 the next byte must be A0..BF (no overlong 3-byte forms),
 * after ED 80..9F (no surrogates), after F0 90..BF (no overlong 4-byte
 * forms), after F4 80..8F (nothing above U+10FFFF); C0, C1 and F5..FF never
 * occur. Because each state knows the exact range allowed for the next byte,
 * invalid input is rejected at the first byte that makes it invalid, which
 * the incremental form promises.
 *
 * Validation runs on every inbound text byte, and most of them are ASCII, so
 * between characters the loop skips eight ASCII bytes per step.
 */
#include "herald/utf8.h"

#include <string.h>

/* Byte classes: bytes that every state treats alike share a class. */
enum {
    CL_ASCII,    /* 00..7F */
    CL_CONT_LO,  /* 80..8F: continuation, the only one allowed after F4 */
    CL_CONT_MID, /* 90..9F: continuation, also allowed after ED and F0 */
    CL_CONT_HI,  /* A0..BF: continuation, also allowed after E0 and F0 */
    CL_BAD,      /* C0, C1, F5..FF: never valid */
    CL_LEAD2,    /* C2..DF */
    CL_E0,       /* E0: next A0..BF */
    CL_LEAD3,    /* E1..EC, EE, EF */
    CL_ED,       /* ED: next 80..9F */
    CL_F0,       /* F0: next 90..BF */
    CL_LEAD4,    /* F1..F3 */
    CL_F4,       /* F4: next 80..8F */
    N_CLASSES
};

/* States. ACCEPT is 0 so that a zeroed hd_utf8_state is ready; REJECT absorbs. */
enum {
    ACCEPT, /* on a character boundary */
    REJECT, /* invalid; stays so */
    NEED1,  /* one continuation byte to go */
    NEED2,  /* two continuation bytes to go */
    IN_E0,  /* after E0: A0..BF, then one more */
    IN_ED,  /* after ED: 80..9F, then one more */
    NEED3,  /* three continuation bytes to go */
    IN_F0,  /* after F0: 90..BF, then two more */
    IN_F4,  /* after F4: 80..8F, then two more */
    N_STATES
};

/* Laid out by hand so the tables read as tables. */
/* clang-format off */
static const uint8_t byte_class[256] = {
    [0x00 ... 0x7f] = CL_ASCII,
    [0x80 ... 0x8f] = CL_CONT_LO,
    [0x90 ... 0x9f] = CL_CONT_MID,
    [0xa0 ... 0xbf] = CL_CONT_HI,
    [0xc0 ... 0xc1] = CL_BAD,
    [0xc2 ... 0xdf] = CL_LEAD2,
    [0xe0]          = CL_E0,
    [0xe1 ... 0xec] = CL_LEAD3,
    [0xed]          = CL_ED,
    [0xee ... 0xef] = CL_LEAD3,
    [0xf0]          = CL_F0,
    [0xf1 ... 0xf3] = CL_LEAD4,
    [0xf4]          = CL_F4,
    [0xf5 ... 0xff] = CL_BAD,
};

/*
 * A "shift DFA": per byte class, one 64-bit word holds the next state for
 * every current state, six bits each, and a state is its own bit offset in
 * that word. A step is then a shift and a mask; the only loads depend on the
 * input byte, not on the previous state, so the per-byte dependency chain is
 * two ALU operations instead of a table load (about three times faster on
 * non-ASCII text than a two-dimensional table).
 */
#define NEXT(from, to) ((uint64_t)((to) * 6) << ((from) * 6))
#define ROW(acc, rej, n1, n2, e0, ed, n3, f0, f4)                                                  \
    (NEXT(ACCEPT, acc) | NEXT(REJECT, rej) | NEXT(NEED1, n1) | NEXT(NEED2, n2) |                 \
     NEXT(IN_E0, e0) | NEXT(IN_ED, ed) | NEXT(NEED3, n3) | NEXT(IN_F0, f0) | NEXT(IN_F4, f4))
#define R REJECT
static const uint64_t transition[N_CLASSES] = {
    /* R is REJECT.  from: ACCEPT  R  NEED1   NEED2  IN_E0  IN_ED  NEED3  IN_F0  IN_F4 */
    [CL_ASCII]    = ROW(ACCEPT, R, R,      R,     R,     R,     R,     R,     R),
    [CL_CONT_LO]  = ROW(R,      R, ACCEPT, NEED1, R,     NEED1, NEED2, R,     NEED2),
    [CL_CONT_MID] = ROW(R,      R, ACCEPT, NEED1, R,     NEED1, NEED2, NEED2, R),
    [CL_CONT_HI]  = ROW(R,      R, ACCEPT, NEED1, NEED1, R,     NEED2, NEED2, R),
    [CL_BAD]      = ROW(R,      R, R,      R,     R,     R,     R,     R,     R),
    [CL_LEAD2]    = ROW(NEED1,  R, R,      R,     R,     R,     R,     R,     R),
    [CL_E0]       = ROW(IN_E0,  R, R,      R,     R,     R,     R,     R,     R),
    [CL_LEAD3]    = ROW(NEED2,  R, R,      R,     R,     R,     R,     R,     R),
    [CL_ED]       = ROW(IN_ED,  R, R,      R,     R,     R,     R,     R,     R),
    [CL_F0]       = ROW(IN_F0,  R, R,      R,     R,     R,     R,     R,     R),
    [CL_LEAD4]    = ROW(NEED3,  R, R,      R,     R,     R,     R,     R,     R),
    [CL_F4]       = ROW(IN_F4,  R, R,      R,     R,     R,     R,     R,     R),
};
#undef R
/* clang-format on */

/* The representation of a state in hd_utf8_state and in run(). */
#define STATE(s) (UINT32_C(6) * (s))

#define HIGH_BITS UINT64_C(0x8080808080808080)

/* Runs the automaton from state over [p, end) and returns the final state. */
static uint32_t run(uint32_t state, const uint8_t *p, const uint8_t *end)
{
    while (p < end) {
        if (state == STATE(ACCEPT) && end - p >= 8) {
            uint64_t word;
            memcpy(&word, p, sizeof(word)); /* unaligned-safe; compiles to one load */
            if ((word & HIGH_BITS) == 0) {
                p += 8;
                continue;
            }
        }
        /*
         * A non-ASCII byte is among the next eight, or a character is open:
         * step them all through the automaton, then try the fast path
         * again. REJECT absorbs, so checking for it once per block suffices.
         */
        const uint8_t *stop = end - p > 8 ? p + 8 : end;
        while (p < stop)
            state = (uint32_t)(transition[byte_class[*p++]] >> state) & 63;
        if (state == STATE(REJECT))
            return state;
    }
    return state;
}

bool hd_utf8_valid(const void *bytes, size_t len)
{
    if (len == 0)
        return true;
    const uint8_t *p = bytes;
    return run(STATE(ACCEPT), p, p + len) == STATE(ACCEPT);
}

bool hd_utf8_feed(hd_utf8_state *st, const void *bytes, size_t len)
{
    if (st->state == STATE(REJECT))
        return false;
    if (len == 0)
        return true;
    const uint8_t *p = bytes;
    st->state = run(st->state, p, p + len);
    return st->state != STATE(REJECT);
}

bool hd_utf8_complete(const hd_utf8_state *st)
{
    return st->state == STATE(ACCEPT);
}
