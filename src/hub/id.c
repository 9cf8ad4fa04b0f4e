#include "herald/id.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

size_t hd_id_format(uint32_t epoch, uint64_t seq, char out[HD_ID_MAX])
{
    int n = snprintf(out, HD_ID_MAX, "%08" PRIx32 "-%" PRIu64, epoch, seq);
    assert(n > 0 && n < HD_ID_MAX);
    return (size_t)n;
}

/* Lowercase only: herald never issues uppercase, so such a text is not one of its ids. */
static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool hd_id_parse(const char *text, size_t len, uint32_t *epoch, uint64_t *seq)
{
    if (len < 10 || text[8] != '-')
        return false;
    uint32_t e = 0;
    for (size_t i = 0; i < 8; i++) {
        int d = hex_digit(text[i]);
        if (d < 0)
            return false;
        e = e << 4 | (uint32_t)d;
    }
    const char *digits = text + 9;
    size_t n = len - 9;
    if (n > 1 && digits[0] == '0')
        return false;
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) {
        if (digits[i] < '0' || digits[i] > '9')
            return false;
        unsigned d = (unsigned)(digits[i] - '0');
        if (s > (UINT64_MAX - d) / 10)
            return false;
        s = s * 10 + d;
    }
    *epoch = e;
    *seq = s;
    return true;
}

bool hd_cursor_parse(const char *text, size_t len, uint32_t epoch, hd_cursor *out)
{
    static const char earliest[] = "earliest";
    *out = (hd_cursor){.text = text, .text_len = len};
    if (len == 0)
        return true;
    if (len == sizeof(earliest) - 1 && memcmp(text, earliest, len) == 0) {
        out->present = true;
        out->earliest = true;
        return true;
    }
    uint32_t id_epoch;
    if (!hd_id_parse(text, len, &id_epoch, &out->seq))
        return false;
    out->present = true;
    out->foreign = id_epoch != epoch;
    return true;
}

bool hd_cursor_beyond(const hd_cursor *cursor, uint32_t epoch, uint64_t newest)
{
    uint32_t cursor_epoch;
    uint64_t seq;
    return cursor->present && !cursor->earliest &&
           hd_id_parse(cursor->text, cursor->text_len, &cursor_epoch, &seq) &&
           cursor_epoch == epoch && seq > newest;
}
