/*
 * Tests for src/util/utf8.c: Markus Kuhn's UTF-8 decoder stress test, every
 * split of each case across feeds, the exact byte at which the incremental
 * validator fails, exhaustive short inputs and long random buffers, all
 * against a slow reference validator that works on code points rather
 * than byte ranges, so that it shares no logic with the automaton.
 */
#include "herald/utf8.h"

#include <stdbool.h>
#include <stdint.h>

#include "test.h"

/* ------------------------------------------------------------ reference */

/* Whether some Unicode scalar value lies in [lo, hi] at or above min (the overlong bound). */
static bool ref_can_be_scalar(uint32_t lo, uint32_t hi, uint32_t min)
{
    uint32_t a = lo > min ? lo : min;
    uint32_t b = hi < 0x10ffff ? hi : 0x10ffff;
    if (a > b)
        return false;
    return !(a >= 0xd800 && b <= 0xdfff);
}

/*
 * The index of the first byte after which no continuation could make s
 * valid, or n when there is none; *complete then says whether s ends on a
 * character boundary. Decodes one sequence at a time and, after each byte,
 * asks which code points the sequence could still become.
 */
static size_t ref_first_error(const uint8_t *s, size_t n, bool *complete)
{
    static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t len;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xc0 && b < 0xe0) {
            len = 2;
            cp = b & 0x1f;
        } else if (b >= 0xe0 && b < 0xf0) {
            len = 3;
            cp = b & 0x0f;
        } else if (b >= 0xf0 && b < 0xf8) {
            len = 4;
            cp = b & 0x07;
        } else {
            return i;
        }
        for (size_t k = 0; k < len; k++) {
            if (k > 0) {
                if (i + k == n) {
                    *complete = false;
                    return n;
                }
                if ((s[i + k] & 0xc0) != 0x80)
                    return i + k;
                cp = (cp << 6) | (s[i + k] & 0x3f);
            }
            unsigned rest = 6 * (unsigned)(len - 1 - k);
            uint32_t lo = cp << rest, hi = lo | ((UINT32_C(1) << rest) - 1);
            if (!ref_can_be_scalar(lo, hi, min_for_len[len]))
                return i + k;
        }
        i += len;
    }
    *complete = true;
    return n;
}

/* ---------------------------------------------------------------- cases */

enum { VALID = -1, TRUNCATED = -2 };

typedef struct utf8_case {
    const char *bytes;
    size_t len;
    /* VALID, TRUNCATED (a valid prefix that ends inside a character) or the failing index. */
    int fail_at;
} utf8_case;

#define OK(s)                                                                                      \
    {                                                                                              \
        s, sizeof(s) - 1, VALID                                                                    \
    }
#define CUT(s)                                                                                     \
    {                                                                                              \
        s, sizeof(s) - 1, TRUNCATED                                                                \
    }
#define BAD(s, at)                                                                                 \
    {                                                                                              \
        s, sizeof(s) - 1, at                                                                       \
    }

/* Numbered as in https://www.cl.cam.ac.uk/~mgk25/ucs/examples/UTF-8-test.txt */
static const utf8_case kuhn_cases[] = {
    /* 1: some correct UTF-8 text, "κόσμε" */
    OK("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"),
    /* 2.1: first possible sequence of each length (U+0000 is a valid character) */
    OK("\x00"),
    OK("\xc2\x80"),
    OK("\xe0\xa0\x80"),
    OK("\xf0\x90\x80\x80"),
    BAD("\xf8\x88\x80\x80\x80", 0),
    BAD("\xfc\x84\x80\x80\x80\x80", 0),
    /* 2.2: last possible sequence of each length; RFC 3629 ends at U+10FFFF */
    OK("\x7f"),
    OK("\xdf\xbf"),
    OK("\xef\xbf\xbf"),
    BAD("\xf7\xbf\xbf\xbf", 0),
    BAD("\xfb\xbf\xbf\xbf\xbf", 0),
    BAD("\xfd\xbf\xbf\xbf\xbf\xbf", 0),
    /* 2.3: other boundaries */
    OK("\xed\x9f\xbf"),
    OK("\xee\x80\x80"),
    OK("\xef\xbf\xbd"),
    OK("\xf4\x8f\xbf\xbf"),
    BAD("\xf4\x90\x80\x80", 1),
    /* 3.1: unexpected continuation bytes */
    BAD("\x80", 0),
    BAD("\xbf", 0),
    BAD("\x80\xbf", 0),
    BAD("\x80\xbf\x80", 0),
    BAD("\x80\xbf\x80\xbf", 0),
    BAD("\x80\xbf\x80\xbf\x80", 0),
    BAD("\x80\xbf\x80\xbf\x80\xbf", 0),
    BAD("\x80\xbf\x80\xbf\x80\xbf\x80", 0),
    BAD("a\x80", 1),
    BAD("\xc2\x80\x80", 2),
    BAD("\xe2\x82\xac\xbf", 3),
    /* 3.3: sequences with the last continuation byte missing */
    BAD("\xc0", 0),
    BAD("\xe0\x80", 1),
    BAD("\xf0\x80\x80", 1),
    BAD("\xf8\x80\x80\x80", 0),
    BAD("\xfc\x80\x80\x80\x80", 0),
    CUT("\xdf"),
    CUT("\xef\xbf"),
    BAD("\xf7\xbf\xbf", 0),
    BAD("\xfb\xbf\xbf\xbf", 0),
    BAD("\xfd\xbf\xbf\xbf\xbf", 0),
    /* 3.3 with valid leads: a prefix that a later feed may complete */
    CUT("\xc2"),
    CUT("\xe0\xa0"),
    CUT("\xe1"),
    CUT("\xed\x9f"),
    CUT("\xf0\x90\x80"),
    CUT("\xf1\x80"),
    CUT("\xf4\x8f\xbf"),
    CUT("abc\xe2\x82"),
    /* 3.4: concatenation of incomplete sequences */
    BAD("\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80\xfc\x80\x80\x80\x80"
        "\xdf\xef\xbf\xf7\xbf\xbf\xfb\xbf\xbf\xbf\xfd\xbf\xbf\xbf\xbf",
        0),
    BAD("\xdf\xef\xbf", 1),
    BAD("\xc2\xe0\xa0\xf0\x90\x80", 1),
    /* 3.5: impossible bytes */
    BAD("\xfe", 0),
    BAD("\xff", 0),
    BAD("\xfe\xfe\xff\xff", 0),
    BAD("ab\xff", 2),
    /* 4.1: overlong ASCII '/' */
    BAD("\xc0\xaf", 0),
    BAD("\xe0\x80\xaf", 1),
    BAD("\xf0\x80\x80\xaf", 1),
    BAD("\xf8\x80\x80\x80\xaf", 0),
    BAD("\xfc\x80\x80\x80\x80\xaf", 0),
    /* 4.2: maximum overlong sequences */
    BAD("\xc1\xbf", 0),
    BAD("\xe0\x9f\xbf", 1),
    BAD("\xf0\x8f\xbf\xbf", 1),
    BAD("\xf8\x87\xbf\xbf\xbf", 0),
    BAD("\xfc\x83\xbf\xbf\xbf\xbf", 0),
    /* 4.3: overlong NUL */
    BAD("\xc0\x80", 0),
    BAD("\xe0\x80\x80", 1),
    BAD("\xf0\x80\x80\x80", 1),
    BAD("\xf8\x80\x80\x80\x80", 0),
    BAD("\xfc\x80\x80\x80\x80\x80", 0),
    /* 5.1: single UTF-16 surrogates */
    BAD("\xed\xa0\x80", 1),
    BAD("\xed\xad\xbf", 1),
    BAD("\xed\xae\x80", 1),
    BAD("\xed\xaf\xbf", 1),
    BAD("\xed\xb0\x80", 1),
    BAD("\xed\xbe\x80", 1),
    BAD("\xed\xbf\xbf", 1),
    /* 5.2: paired UTF-16 surrogates */
    BAD("\xed\xa0\x80\xed\xb0\x80", 1),
    BAD("\xed\xa0\x80\xed\xbf\xbf", 1),
    BAD("\xed\xad\xbf\xed\xb0\x80", 1),
    BAD("\xed\xad\xbf\xed\xbf\xbf", 1),
    BAD("\xed\xae\x80\xed\xb0\x80", 1),
    BAD("\xed\xae\x80\xed\xbf\xbf", 1),
    BAD("\xed\xaf\xbf\xed\xb0\x80", 1),
    BAD("\xed\xaf\xbf\xed\xbf\xbf", 1),
    /* 5.3: noncharacters are valid UTF-8 */
    OK("\xef\xbf\xbe"),
    OK("\xef\xbf\xbf"),
    OK("\xef\xb7\x90"),
    OK("\xef\xb7\xaf"),
    OK("\xf0\x9f\xbf\xbe"),
    OK("\xf4\x8f\xbf\xbe"),
    /* Beyond the stress test: mixed text, an embedded NUL, the fail-fast examples */
    OK(""),
    OK("hello, world"),
    OK("a\x00"
       "b"),
    OK("\xce\xa9\xe2\x89\x88\xc3\xa7\xe2\x88\x9a \xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac"),
    BAD("\xf4\x90", 1),
    BAD("\xed\xa0", 1),
    BAD("\xf5", 0),
    BAD("\xe0\x9f", 1),
    BAD("\xf0\x8f", 1),
};

#define N_CASES (sizeof(kuhn_cases) / sizeof(kuhn_cases[0]))

/* What feeding a chunk that ends at byte `end` must return. */
static bool expect_feed(int fail_at, size_t end)
{
    return !(fail_at >= 0 && (size_t)fail_at < end);
}

/* Checks one input every way: whole, byte by byte, and split into two and three feeds. */
static void check_case(const uint8_t *s, size_t len, int fail_at)
{
    CHECK_EQ_INT(hd_utf8_valid(s, len), fail_at == VALID);

    hd_utf8_state st = {0};
    CHECK_EQ_INT(hd_utf8_feed(&st, s, len), fail_at < 0);
    CHECK_EQ_INT(hd_utf8_complete(&st), fail_at == VALID);

    hd_utf8_reset(&st);
    int first_false = VALID;
    for (size_t i = 0; i < len; i++) {
        if (!hd_utf8_feed(&st, s + i, 1) && first_false == VALID)
            first_false = (int)i;
    }
    CHECK_EQ_INT(first_false, fail_at < 0 ? VALID : fail_at);
    CHECK_EQ_INT(hd_utf8_complete(&st), fail_at == VALID);

    for (size_t i = 0; i <= len; i++) {
        hd_utf8_reset(&st);
        CHECK_EQ_INT(hd_utf8_feed(&st, s, i), expect_feed(fail_at, i));
        CHECK_EQ_INT(hd_utf8_feed(&st, s + i, len - i), expect_feed(fail_at, len));
        CHECK_EQ_INT(hd_utf8_complete(&st), fail_at == VALID);
        for (size_t j = i; j <= len; j++) {
            hd_utf8_reset(&st);
            CHECK_EQ_INT(hd_utf8_feed(&st, s, i), expect_feed(fail_at, i));
            CHECK_EQ_INT(hd_utf8_feed(&st, s + i, j - i), expect_feed(fail_at, j));
            CHECK_EQ_INT(hd_utf8_feed(&st, s + j, len - j), expect_feed(fail_at, len));
            CHECK_EQ_INT(hd_utf8_complete(&st), fail_at == VALID);
        }
    }
}

static void test_kuhn_cases(void)
{
    for (size_t i = 0; i < N_CASES; i++) {
        const utf8_case *c = &kuhn_cases[i];
        int before = test_failures;
        check_case((const uint8_t *)c->bytes, c->len, c->fail_at);
        bool complete;
        size_t ref = ref_first_error((const uint8_t *)c->bytes, c->len, &complete);
        int ref_fail = ref < c->len ? (int)ref : complete ? VALID : TRUNCATED;
        CHECK_EQ_INT(ref_fail, c->fail_at);
        if (test_failures != before)
            fprintf(stderr, "  in case %zu (%zu bytes)\n", i, c->len);
    }
}

/*
 * Each case again behind 0..17 ASCII bytes and before 9 more, so that it
 * meets the eight-byte fast path at every alignment and block boundary.
 */
static void test_cases_in_ascii(void)
{
    uint8_t buf[64];
    for (size_t i = 0; i < N_CASES; i++) {
        const utf8_case *c = &kuhn_cases[i];
        for (size_t pad = 0; pad < 18; pad++) {
            memset(buf, 'x', sizeof(buf));
            memcpy(buf + pad, c->bytes, c->len);
            size_t len = pad + c->len + 9;
            int fail_at = c->fail_at >= 0       ? (int)pad + c->fail_at
                          : c->fail_at == VALID ? VALID
                                                : (int)(pad + c->len);
            CHECK_EQ_INT(hd_utf8_valid(buf, len), fail_at == VALID);
            hd_utf8_state st = {0};
            int first_false = VALID;
            for (size_t k = 0; k < len; k++) {
                if (!hd_utf8_feed(&st, buf + k, 1) && first_false == VALID)
                    first_false = (int)k;
            }
            CHECK_EQ_INT(first_false, fail_at);
        }
    }
}

/* 3.1.9 and 3.2: all 64 continuation bytes in a row; each lead byte followed by a space. */
static void test_generated_kuhn_cases(void)
{
    uint8_t buf[128];
    for (int i = 0; i < 64; i++)
        buf[i] = (uint8_t)(0x80 + i);
    check_case(buf, 64, 0);

    for (int lead = 0xc0; lead <= 0xfd; lead++) {
        buf[0] = (uint8_t)lead;
        buf[1] = ' ';
        bool good_lead = lead >= 0xc2 && lead <= 0xf4;
        check_case(buf, 2, good_lead ? 1 : 0);
    }
    /* Every lead byte of one range followed by spaces, as in Kuhn's 3.2.1 line. */
    for (int lead = 0xc2; lead <= 0xdf; lead++) {
        buf[2 * (lead - 0xc2)] = (uint8_t)lead;
        buf[2 * (lead - 0xc2) + 1] = ' ';
    }
    check_case(buf, 2 * (0xdf - 0xc2 + 1), 1);
}

/* Every input of one to three bytes, compared with the reference. */
static void test_exhaustive_short(void)
{
    int mismatches = 0;
    for (uint32_t v = 0; v < (UINT32_C(1) << 24); v++) {
        uint8_t s[3] = {(uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
        for (size_t len = 1; len <= 3; len++) {
            /* Shorter inputs repeat for every value of the unused bytes; check each once. */
            if ((len == 1 && (v & 0xffff) != 0) || (len == 2 && (v & 0xff) != 0))
                continue;
            bool complete;
            size_t ref = ref_first_error(s, len, &complete);
            if (hd_utf8_valid(s, len) != (ref == len && complete))
                mismatches++;
            hd_utf8_state st = {0};
            size_t first_false = len;
            for (size_t k = 0; k < len; k++) {
                if (!hd_utf8_feed(&st, s + k, 1) && first_false == len)
                    first_false = k;
            }
            if (first_false != ref || (ref == len && hd_utf8_complete(&st) != complete))
                mismatches++;
        }
    }
    CHECK_EQ_INT(mismatches, 0);
}

/* Four-byte inputs: every lead from E0 up with continuation bytes at each class boundary. */
static void test_four_byte_boundaries(void)
{
    static const uint8_t probes[] = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0,
                                     0xbf, 0xc0, 0xc2, 0xe0, 0xf0, 0xf4, 0xff};
    int mismatches = 0;
    for (int lead = 0xe0; lead <= 0xff; lead++) {
        for (size_t a = 0; a < sizeof(probes); a++) {
            for (size_t b = 0; b < sizeof(probes); b++) {
                for (size_t c = 0; c < sizeof(probes); c++) {
                    uint8_t s[4] = {(uint8_t)lead, probes[a], probes[b], probes[c]};
                    bool complete = false;
                    size_t ref = ref_first_error(s, 4, &complete);
                    if (hd_utf8_valid(s, 4) != (ref == 4 && complete))
                        mismatches++;
                    hd_utf8_state st = {0};
                    size_t first_false = 4;
                    for (size_t k = 0; k < 4; k++) {
                        if (!hd_utf8_feed(&st, s + k, 1) && first_false == 4)
                            first_false = k;
                    }
                    if (first_false != ref)
                        mismatches++;
                }
            }
        }
    }
    CHECK_EQ_INT(mismatches, 0);
}

/* ------------------------------------------------------- random buffers */

/* xorshift64*: the same sequence on every platform, unlike rand(). */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static uint32_t rng_below(uint32_t n)
{
    return (uint32_t)(rng_next() % n);
}

static size_t encode(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    } else if (cp < 0x800) {
        out[0] = (uint8_t)(0xc0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    } else if (cp < 0x10000) {
        out[0] = (uint8_t)(0xe0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (uint8_t)(0xf0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/* A random scalar value, weighted towards the edges of each encoding length. */
static uint32_t random_scalar(void)
{
    static const uint32_t edges[] = {0x7f,   0x80,   0x7ff,   0x800,    0xd7ff, 0xe000,
                                     0xfffd, 0xffff, 0x10000, 0x10ffff, 0xfeff, 0x1f600};
    switch (rng_below(4)) {
    case 0:
        return edges[rng_below(sizeof(edges) / sizeof(edges[0]))];
    case 1:
        return 0x80 + rng_below(0x800 - 0x80);
    case 2: {
        uint32_t cp = 0x800 + rng_below(0x10000 - 0x800);
        return cp >= 0xd800 && cp <= 0xdfff ? cp - 0x800 : cp;
    }
    default:
        return 0x10000 + rng_below(0x110000 - 0x10000);
    }
}

/* Mostly ASCII runs and valid characters; with errors on, an occasional random byte. */
static size_t random_text(uint8_t *buf, size_t cap, bool errors)
{
    size_t len = 0;
    while (len + 64 < cap) {
        uint32_t pick = rng_below(100);
        if (pick < 50) {
            size_t run = rng_below(40);
            for (size_t i = 0; i < run; i++)
                buf[len++] = (uint8_t)(0x20 + rng_below(0x5f));
        } else if (pick < 98 || !errors) {
            len += encode(random_scalar(), buf + len);
        } else {
            buf[len++] = (uint8_t)rng_below(256);
        }
    }
    return len;
}

/* Feeds s in random chunks and checks the first failing chunk is the one holding the error. */
static bool random_feeds_agree(const uint8_t *s, size_t len, size_t ref, bool complete)
{
    hd_utf8_state st = {0};
    size_t pos = 0;
    while (pos < len) {
        size_t chunk = 1 + rng_below(rng_below(2) ? 7 : 300);
        if (chunk > len - pos)
            chunk = len - pos;
        bool ok = hd_utf8_feed(&st, s + pos, chunk);
        pos += chunk;
        if (ok != !(ref < pos))
            return false;
    }
    return ref < len || hd_utf8_complete(&st) == complete;
}

static void test_random_against_reference(void)
{
    static uint8_t buf[4096];
    rng_state = UINT64_C(0x9e3779b97f4a7c15);
    int mismatches = 0, invalid = 0;
    for (int round = 0; round < 3000; round++) {
        size_t len = random_text(buf, 64 + rng_below(sizeof(buf) - 64), round % 2 == 1);
        /* Cut some inputs mid-character so truncation at the end is covered too. */
        if (round % 5 == 0 && len > 0)
            len -= rng_below(4) % len;
        size_t start = rng_below(8); /* vary alignment for the eight-byte loads */
        if (start > len)
            start = len;
        bool complete;
        size_t ref = ref_first_error(buf + start, len - start, &complete);
        bool ref_valid = ref == len - start && complete;
        invalid += !ref_valid;
        if (hd_utf8_valid(buf + start, len - start) != ref_valid)
            mismatches++;
        if (!random_feeds_agree(buf + start, len - start, ref, complete))
            mismatches++;
    }
    CHECK_EQ_INT(mismatches, 0);
    /* The generator must produce both outcomes, or the comparison proves little. */
    CHECK(invalid > 500 && invalid < 2500);
}

/* One long valid buffer, then the same with a single corrupted byte at random places. */
static void test_long_buffer(void)
{
    enum { LONG_LEN = 1 << 20 };
    static uint8_t buf[LONG_LEN];
    rng_state = UINT64_C(0x243f6a8885a308d3);
    size_t len = random_text(buf, sizeof(buf), false);
    bool complete;
    CHECK_EQ_INT(ref_first_error(buf, len, &complete), len);
    CHECK(complete);
    CHECK(hd_utf8_valid(buf, len));
    CHECK(random_feeds_agree(buf, len, len, true));

    for (int round = 0; round < 40; round++) {
        size_t at = rng_below((uint32_t)len);
        uint8_t saved = buf[at];
        buf[at] = (uint8_t)(0x80 | rng_below(0x80));
        size_t ref = ref_first_error(buf, len, &complete);
        CHECK_EQ_INT(hd_utf8_valid(buf, len), ref == len && complete);
        CHECK(random_feeds_agree(buf, len, ref, complete));
        buf[at] = saved;
    }
}

static void test_state_after_failure(void)
{
    hd_utf8_state st = {0};
    CHECK(hd_utf8_feed(&st, "ok", 2));
    CHECK(!hd_utf8_feed(&st, "\xff", 1));
    /* Once invalid, always invalid: even valid bytes or nothing at all. */
    CHECK(!hd_utf8_feed(&st, "a", 1));
    CHECK(!hd_utf8_feed(&st, "", 0));
    CHECK(!hd_utf8_complete(&st));
    hd_utf8_reset(&st);
    CHECK(hd_utf8_complete(&st));
    CHECK(hd_utf8_feed(&st, "a", 1));
    CHECK(hd_utf8_feed(&st, NULL, 0));
    CHECK(hd_utf8_valid(NULL, 0));
}

int main(void)
{
    RUN_TEST(test_kuhn_cases);
    RUN_TEST(test_cases_in_ascii);
    RUN_TEST(test_generated_kuhn_cases);
    RUN_TEST(test_exhaustive_short);
    RUN_TEST(test_four_byte_boundaries);
    RUN_TEST(test_random_against_reference);
    RUN_TEST(test_long_buffer);
    RUN_TEST(test_state_after_failure);
    return test_summary();
}
