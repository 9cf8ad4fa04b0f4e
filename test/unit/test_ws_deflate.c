/*
 * Tests for src/ws/ws_deflate.c: the Sec-WebSocket-Extensions negotiation
 * table, inflation of what zlib produces with every window size and of the
 * RFC 7692 examples, context takeover, the inflated-size limit against a
 * zip bomb, corrupt input, and the deflater's frames inflated back.
 */
#include "ws/ws_deflate.h"

#define ZLIB_CONST
#include <zlib.h>

#include <stdint.h>

#include "herald/alloc.h"
#include "ws/ws_frame.h"
#include "test.h"

/* ------------------------------------------------------------ negotiation */

#define BASE "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

static void test_negotiation_table(void)
{
    static const struct {
        const char *header;
        const char *response; /* NULL: declined */
        int client_bits;
        int server_bits;
    } cases[] = {
        {"permessage-deflate", BASE, 15, 15},
        {"permessage-deflate; client_max_window_bits", BASE, 15, 15},
        {"permessage-deflate; client_max_window_bits=10", BASE, 10, 15},
        {"permessage-deflate; server_max_window_bits=10", BASE "; server_max_window_bits=10", 15,
         10},
        {"permessage-deflate; server_no_context_takeover", BASE, 15, 15},
        {"permessage-deflate; client_no_context_takeover", BASE, 15, 15},
        /* What Autobahn 13.5.x offers. */
        {"permessage-deflate; client_no_context_takeover; client_max_window_bits; "
         "server_no_context_takeover; server_max_window_bits=8",
         BASE "; server_max_window_bits=8", 15, 8},
        /* Invalid values, missing or forbidden values, repeats, unknown parameters. */
        {"permessage-deflate; server_max_window_bits", NULL, 0, 0},
        {"permessage-deflate; server_max_window_bits=16", NULL, 0, 0},
        {"permessage-deflate; server_max_window_bits=7", NULL, 0, 0},
        {"permessage-deflate; server_max_window_bits=08", NULL, 0, 0},
        {"permessage-deflate; client_max_window_bits=abc", NULL, 0, 0},
        {"permessage-deflate; client_max_window_bits=", NULL, 0, 0},
        {"permessage-deflate; client_max_window_bits=123456789012", NULL, 0, 0},
        {"permessage-deflate; server_no_context_takeover=1", NULL, 0, 0},
        {"permessage-deflate; client_no_context_takeover; client_no_context_takeover", NULL, 0, 0},
        {"permessage-deflate; server_max_window_bits=9; server_max_window_bits=9", NULL, 0, 0},
        {"permessage-deflate; x-unknown", NULL, 0, 0},
        /* A declined offer lets the next one be accepted. */
        {"permessage-deflate; x-unknown, permessage-deflate; client_max_window_bits=12", BASE, 12,
         15},
        {"permessage-deflate; server_max_window_bits=16, permessage-deflate", BASE, 15, 15},
        /* Other extensions are skipped, with their parameters. */
        {"x-webkit-deflate-frame, permessage-deflate", BASE, 15, 15},
        {"foo; bar=\"a, b; c\", permessage-deflate; client_max_window_bits=9", BASE, 9, 15},
        {"foo, bar; baz=1", NULL, 0, 0},
        /* Quoted values are unescaped and must then be tokens. */
        {"permessage-deflate; client_max_window_bits=\"12\"", BASE, 12, 15},
        {"permessage-deflate; server_max_window_bits=\"1\\3\"", BASE "; server_max_window_bits=13",
         15, 13},
        {"permessage-deflate; client_max_window_bits=\"1 2\", permessage-deflate", BASE, 15, 15},
        /* Whitespace, case and empty list elements. */
        {"  permessage-deflate ;\tclient_max_window_bits = 9 ,foo", BASE, 9, 15},
        {"PerMessage-Deflate; Client_Max_Window_Bits", BASE, 15, 15},
        {", ,permessage-deflate", BASE, 15, 15},
        /* Nothing offered, or a header that does not parse. */
        {"", NULL, 0, 0},
        {"permessage-deflate; client_max_window_bits=\"12", NULL, 0, 0},
        {"permessage-deflate;", NULL, 0, 0},
        {"permessage-deflate garbage", NULL, 0, 0},
        {"x; =1, permessage-deflate", NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        hd_ws_deflate_params params;
        memset(&params, 0xa5, sizeof(params));
        char response[256];
        const char *h = cases[i].header;
        CHECK_EQ_INT(hd_ws_deflate_negotiate(h, strlen(h), &params, response, sizeof(response)), 0);
        if (cases[i].response == NULL) {
            if (params.enabled)
                fprintf(stderr, "  case %zu accepted: %s\n", i, h);
            CHECK(!params.enabled);
            CHECK_EQ_STR(response, "");
            continue;
        }
        if (!params.enabled)
            fprintf(stderr, "  case %zu declined: %s\n", i, h);
        CHECK(params.enabled);
        CHECK_EQ_STR(response, cases[i].response);
        CHECK(params.client_no_context_takeover);
        CHECK_EQ_INT(params.client_max_window_bits, cases[i].client_bits);
        CHECK_EQ_INT(params.server_max_window_bits, cases[i].server_bits);
    }
}

static void test_negotiation_small_response(void)
{
    hd_ws_deflate_params params;
    char response[20];
    hd_ws_deflate_negotiate("permessage-deflate", 18, &params, response, sizeof(response));
    CHECK(!params.enabled);
    CHECK_EQ_STR(response, "");

    /* The length bounds the header: it need not be NUL-terminated. */
    char big[128];
    hd_ws_deflate_negotiate("permessage-deflate; x-unknown", 18, &params, big, sizeof(big));
    CHECK(params.enabled);
}

/* ------------------------------------------------------------ inflation */

/* Raw deflate with a sync flush, tail stripped; the stream carries on for takeover. */
static void compress_message(z_stream *zs, const void *data, size_t len, hd_strbuf *out)
{
    uint8_t buf[16384];
    zs->next_in = data;
    zs->avail_in = (uInt)len;
    do {
        zs->next_out = buf;
        zs->avail_out = sizeof(buf);
        deflate(zs, Z_SYNC_FLUSH);
        hd_strbuf_append(out, buf, sizeof(buf) - zs->avail_out);
    } while (zs->avail_out == 0);
    bool tail = out->len >= 4 && memcmp(out->data + out->len - 4, "\x00\x00\xff\xff", 4) == 0;
    CHECK(tail);
    out->len -= tail ? 4 : 0;
}

static char *sample_text(size_t len)
{
    static const char *const words[] = {"notification ", "topic ",           "herald ",
                                        "subscriber ",   "{\"id\":\"17\"} ", "\xe2\x82\xac "};
    char *s = hd_alloc(len + 1);
    uint32_t x = 12345;
    size_t at = 0;
    while (at < len) {
        x = x * 1103515245 + 12345;
        const char *w = words[(x >> 16) % 6];
        size_t n = strlen(w);
        n = n < len - at ? n : len - at;
        memcpy(s + at, w, n);
        at += n;
    }
    s[len] = '\0';
    return s;
}

static void test_inflate_window_sizes(void)
{
    size_t len = 100000;
    char *text = sample_text(len);
    /* zlib refuses 8 for raw deflate (it would need a 9-bit window), so 9..15. */
    for (int bits = 9; bits <= 15; bits++) {
        z_stream zs;
        memset(&zs, 0, sizeof(zs));
        CHECK_EQ_INT(deflateInit2(&zs, 9, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
        hd_strbuf z, out;
        hd_strbuf_init(&z);
        hd_strbuf_init(&out);
        compress_message(&zs, text, len, &z);
        deflateEnd(&zs);

        hd_ws_deflate_params params = {true, true, bits, 15};
        hd_ws_inflater *inf = hd_ws_inflater_new(&params);
        /* Fed in uneven chunks, the tail only with the last. */
        size_t at = 0, step = 1;
        while (at < z.len) {
            size_t n = step < z.len - at ? step : z.len - at;
            CHECK_EQ_INT(hd_ws_inflate(inf, z.data + at, n, at + n == z.len, &out, len), 0);
            at += n;
            step = step * 3 + 1;
        }
        CHECK_EQ_MEM(out.data, out.len, text, len);
        hd_ws_inflater_free(inf);
        hd_strbuf_free(&z);
        hd_strbuf_free(&out);
    }
    free(text);
}

static void inflate_expect(hd_ws_inflater *inf, const char *in, size_t len, const char *expect)
{
    hd_strbuf out;
    hd_strbuf_init(&out);
    CHECK_EQ_INT(hd_ws_inflate(inf, in, len, true, &out, 1024), 0);
    CHECK_EQ_MEM(out.data ? out.data : "", out.len, expect, strlen(expect));
    hd_strbuf_free(&out);
}

/* The examples of RFC 7692 §7.2.3. */
static void test_inflate_rfc_examples(void)
{
    hd_ws_deflate_params takeover = {true, false, 15, 15};
    hd_ws_inflater *inf = hd_ws_inflater_new(&takeover);
    /* §7.2.3.1 "Hello"; §7.2.3.2 the same again, referencing the first. */
    inflate_expect(inf, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, "Hello");
    inflate_expect(inf, "\xf2\x00\x11\x00\x00", 5, "Hello");
    /* §7.2.3.3 a stored block; §7.2.3.4 a block with BFINAL set, then a new message. */
    inflate_expect(inf, "\x00\x05\x00\xfa\xff\x48\x65\x6c\x6c\x6f\x00", 11, "Hello");
    inflate_expect(inf, "\xf3\x48\xcd\xc9\xc9\x07\x00\x00", 8, "Hello");
    inflate_expect(inf, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, "Hello");
    /* §7.2.3.5 two blocks in one message; §7.2.3.6 an empty message. */
    inflate_expect(inf, "\xf2\x48\x05\x00\x00\x00\xff\xff\xca\xc9\xc9\x07\x00", 13, "Hello");
    inflate_expect(inf, "\x00", 1, "");
    hd_ws_inflater_free(inf);
}

static void test_context_takeover(void)
{
    const char *first = "{\"type\":\"message\",\"topic\":\"orders\",\"data\":\"created order 1\"}";
    const char *second = "{\"type\":\"message\",\"topic\":\"orders\",\"data\":\"created order 2\"}";
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    hd_strbuf z1, z2;
    hd_strbuf_init(&z1);
    hd_strbuf_init(&z2);
    compress_message(&zs, first, strlen(first), &z1);
    compress_message(&zs, second, strlen(second), &z2);
    deflateEnd(&zs);
    CHECK(z2.len < z1.len / 2); /* the second message is mostly a back-reference */

    hd_ws_deflate_params takeover = {true, false, 15, 15};
    hd_ws_inflater *inf = hd_ws_inflater_new(&takeover);
    hd_strbuf out;
    hd_strbuf_init(&out);
    CHECK_EQ_INT(hd_ws_inflate(inf, z1.data, z1.len, true, &out, 4096), 0);
    CHECK_EQ_MEM(out.data, out.len, first, strlen(first));
    out.len = 0;
    CHECK_EQ_INT(hd_ws_inflate(inf, z2.data, z2.len, true, &out, 4096), 0);
    CHECK_EQ_MEM(out.data, out.len, second, strlen(second));
    hd_ws_inflater_free(inf);

    /* Without takeover the window is gone: the reference cannot be resolved. */
    hd_ws_deflate_params no_takeover = {true, true, 15, 15};
    inf = hd_ws_inflater_new(&no_takeover);
    out.len = 0;
    CHECK_EQ_INT(hd_ws_inflate(inf, z1.data, z1.len, true, &out, 4096), 0);
    out.len = 0;
    CHECK_EQ_INT(hd_ws_inflate(inf, z2.data, z2.len, true, &out, 4096), -1);
    hd_ws_inflater_free(inf);

    hd_strbuf_free(&out);
    hd_strbuf_free(&z1);
    hd_strbuf_free(&z2);
}

static void test_zip_bomb(void)
{
    size_t bomb_len = 10 << 20;
    char *zeros = hd_calloc(1, bomb_len);
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    deflateInit2(&zs, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    hd_strbuf z;
    hd_strbuf_init(&z);
    compress_message(&zs, zeros, bomb_len, &z);
    deflateEnd(&zs);
    free(zeros);
    CHECK(z.len < 20000);

    size_t limit = 1 << 20;
    hd_ws_deflate_params params = {true, true, 15, 15};
    hd_ws_inflater *inf = hd_ws_inflater_new(&params);
    hd_strbuf out;
    hd_strbuf_init(&out);
    int rc = 0;
    for (size_t at = 0; at < z.len && rc == 0; at += 4096) {
        size_t n = z.len - at < 4096 ? z.len - at : 4096;
        rc = hd_ws_inflate(inf, z.data + at, n, at + n == z.len, &out, limit);
    }
    CHECK_EQ_INT(rc, -2);
    CHECK(out.len <= limit);
    CHECK(out.cap <= 2 * limit); /* growth stopped at the limit, not at 10 MB */

    /* A message of exactly the limit is fine; one byte over is not. */
    out.len = 0;
    CHECK_EQ_INT(hd_ws_inflate(inf, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, true, &out, 5), 0);
    CHECK_EQ_MEM(out.data, out.len, "Hello", 5);
    out.len = 0;
    CHECK_EQ_INT(hd_ws_inflate(inf, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, true, &out, 4), -2);

    hd_ws_inflater_free(inf);
    hd_strbuf_free(&out);
    hd_strbuf_free(&z);
}

static void test_corrupt(void)
{
    hd_ws_deflate_params params = {true, false, 15, 15};
    hd_ws_inflater *inf = hd_ws_inflater_new(&params);
    hd_strbuf out;
    hd_strbuf_init(&out);
    /* BTYPE 11 is reserved. */
    CHECK_EQ_INT(hd_ws_inflate(inf, "\xff\xff\xff", 3, false, &out, 1024), -1);
    /* A stored block whose NLEN is not the complement of LEN. */
    out.len = 0;
    CHECK_EQ_INT(hd_ws_inflate(inf, "\x00\x05\x00\x00\x00hello", 10, true, &out, 1024), -1);
    /* A distance past the start of the (empty) window. */
    out.len = 0;
    CHECK_EQ_INT(hd_ws_inflate(inf, "\xf2\x00\x11\x00\x00", 5, true, &out, 1024), -1);
    /* After a failure the inflater starts afresh. */
    out.len = 0;
    CHECK_EQ_INT(hd_ws_inflate(inf, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, true, &out, 1024), 0);
    CHECK_EQ_MEM(out.data, out.len, "Hello", 5);
    hd_ws_inflater_free(inf);
    hd_strbuf_free(&out);

    /* An inflater freed mid-message releases its stream. */
    inf = hd_ws_inflater_new(&params);
    hd_strbuf_init(&out);
    CHECK_EQ_INT(hd_ws_inflate(inf, "\xf2\x48", 2, false, &out, 1024), 0);
    hd_ws_inflater_free(inf);
    hd_strbuf_free(&out);
}

/* ------------------------------------------------------------ deflater */

/* Splits a server frame into its first byte and payload. */
static void parse_frame(const hd_buf *b, uint8_t *first, const char **payload, size_t *len)
{
    const uint8_t *d = (const uint8_t *)b->data;
    *first = d[0];
    size_t n = d[1] & 0x7f, at = 2;
    if (n == 126) {
        n = (size_t)d[2] << 8 | d[3];
        at = 4;
    } else if (n == 127) {
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | d[2 + i];
        at = 10;
    }
    CHECK(!(d[1] & 0x80)); /* server frames are not masked */
    CHECK_EQ_INT(at + n, b->len);
    *payload = b->data + at;
    *len = n;
}

static void test_deflater_round_trip(void)
{
    hd_ws_deflater *d = hd_ws_deflater_new();
    static const size_t lens[] = {0, 1, 5, 125, 200, 5000, 70000, 400000};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        char *text = sample_text(lens[i]);
        int opcode = i % 2 ? HD_WS_BINARY : HD_WS_TEXT;
        hd_buf *b = hd_ws_deflate_frame(d, opcode, text, lens[i]);
        uint8_t first;
        const char *payload;
        size_t len;
        parse_frame(b, &first, &payload, &len);
        CHECK_EQ_INT(first, 0xc0 | opcode);
        CHECK(len < 600 || len < lens[i] / 2);

        /* Each message inflates on its own (no context takeover). */
        hd_ws_deflate_params params = {true, true, 15, 15};
        hd_ws_inflater *inf = hd_ws_inflater_new(&params);
        hd_strbuf out;
        hd_strbuf_init(&out);
        CHECK_EQ_INT(hd_ws_inflate(inf, payload, len, true, &out, lens[i]), 0);
        CHECK_EQ_MEM(out.data ? out.data : "", out.len, text, lens[i]);
        hd_strbuf_free(&out);
        hd_ws_inflater_free(inf);

        /* The same message compresses to the same bytes. */
        hd_buf *again = hd_ws_deflate_frame(d, opcode, text, lens[i]);
        CHECK_EQ_MEM(again->data, again->len, b->data, b->len);
        hd_buf_release(again);
        hd_buf_release(b);
        free(text);
    }
    hd_ws_deflater_free(d);
}

static void test_deflater_empty(void)
{
    hd_ws_deflater *d = hd_ws_deflater_new();
    hd_buf *b = hd_ws_deflate_frame(d, HD_WS_TEXT, NULL, 0);
    /* RFC 7692 §7.2.3.6: an empty message is the single byte 0x00. */
    CHECK_EQ_MEM(b->data, b->len, "\xc1\x01\x00", 3);
    hd_buf_release(b);
    b = hd_ws_deflate_frame(d, HD_WS_BINARY, "", 0);
    CHECK_EQ_MEM(b->data, b->len, "\xc2\x01\x00", 3);
    hd_buf_release(b);
    hd_ws_deflater_free(d);
}

int main(void)
{
    RUN_TEST(test_negotiation_table);
    RUN_TEST(test_negotiation_small_response);
    RUN_TEST(test_inflate_window_sizes);
    RUN_TEST(test_inflate_rfc_examples);
    RUN_TEST(test_context_takeover);
    RUN_TEST(test_zip_bomb);
    RUN_TEST(test_corrupt);
    RUN_TEST(test_deflater_round_trip);
    RUN_TEST(test_deflater_empty);
    return test_summary();
}
