/*
 * Tests for src/ws/ws_frame.c: every framing rule with the exact close code
 * it must produce, all length encodings in both directions, masking,
 * fragmentation with interleaved control frames, UTF-8 failing fast,
 * compressed messages, and a mixed stream fed whole and split at random
 * points, which must yield exactly the same events.
 */
#include "ws/ws_frame.h"

#define ZLIB_CONST
#include <zlib.h>

#include <stdint.h>

#include "herald/alloc.h"
#include "test.h"

/* ------------------------------------------------------------ helpers */

/* Length encodings a test frame may use; MINIMAL is what RFC 6455 asks of senders. */
enum { MINIMAL, FORCE16, FORCE64 };

/* Appends a masked client frame with first byte b0 (FIN, RSV bits, opcode). */
static void put_frame_form(hd_strbuf *sb, uint8_t b0, const void *payload, size_t len, uint32_t key,
                           int form)
{
    uint8_t h[14];
    size_t n = 0;
    h[n++] = b0;
    if (form == MINIMAL && len < 126) {
        h[n++] = (uint8_t)(0x80 | len);
    } else if (form != FORCE64 && len <= 0xffff) {
        h[n++] = 0x80 | 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint8_t mask[4] = {(uint8_t)(key >> 24), (uint8_t)(key >> 16), (uint8_t)(key >> 8),
                       (uint8_t)key};
    memcpy(h + n, mask, 4);
    n += 4;
    hd_strbuf_append(sb, h, n);
    hd_strbuf_reserve(sb, len);
    const uint8_t *p = payload;
    for (size_t i = 0; i < len; i++)
        sb->data[sb->len + i] = (char)(p[i] ^ mask[i & 3]);
    sb->len += len;
}

static void put_frame(hd_strbuf *sb, uint8_t b0, const void *payload, size_t len)
{
    put_frame_form(sb, b0, payload, len, 0x37fa213d, MINIMAL);
}

static void put_str(hd_strbuf *sb, uint8_t b0, const char *s)
{
    put_frame(sb, b0, s, strlen(s));
}

/* A close frame payload: code (unless negative) then reason bytes. */
static void put_close(hd_strbuf *sb, int code, const void *reason, size_t reason_len)
{
    uint8_t payload[200];
    size_t n = 0;
    if (code >= 0) {
        payload[n++] = (uint8_t)(code >> 8);
        payload[n++] = (uint8_t)code;
    }
    memcpy(payload + n, reason, reason_len);
    put_frame(sb, 0x88, payload, n + reason_len);
}

/* Raw deflate with a sync flush and the 00 00 ff ff tail removed (RFC 7692 §7.2.1). */
static void compress_message(z_stream *zs, const void *data, size_t len, hd_strbuf *out)
{
    uint8_t buf[4096];
    zs->next_in = data;
    zs->avail_in = (uInt)len;
    do {
        zs->next_out = buf;
        zs->avail_out = sizeof(buf);
        deflate(zs, Z_SYNC_FLUSH);
        hd_strbuf_append(out, buf, sizeof(buf) - zs->avail_out);
    } while (zs->avail_out == 0);
    out->len -= 4;
}

static void compressor_init(z_stream *zs)
{
    memset(zs, 0, sizeof(*zs));
    deflateInit2(zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
}

/* Records events as text so that two runs can be compared byte for byte. */
typedef struct recorder {
    hd_strbuf log;
    int messages;
    int controls;
    uint16_t last_close;
} recorder;

static void on_message(void *ctx, hd_ws_opcode opcode, const char *data, size_t len)
{
    recorder *rec = ctx;
    rec->messages++;
    hd_strbuf_printf(&rec->log, "M%d[%zu]:", (int)opcode, len);
    hd_strbuf_append(&rec->log, data, len);
    hd_strbuf_append(&rec->log, "\n", 1);
}

static void on_control(void *ctx, hd_ws_opcode opcode, uint16_t code, const char *payload,
                       size_t len)
{
    recorder *rec = ctx;
    rec->controls++;
    if (opcode == HD_WS_CLOSE)
        rec->last_close = code;
    hd_strbuf_printf(&rec->log, "C%d/%u[%zu]:", (int)opcode, code, len);
    hd_strbuf_append(&rec->log, payload, len);
    hd_strbuf_append(&rec->log, "\n", 1);
}

static const hd_ws_reader_callbacks callbacks = {on_message, on_control};

static void recorder_init(recorder *rec)
{
    memset(rec, 0, sizeof(*rec));
    hd_strbuf_init(&rec->log);
}

/* Feeds bytes to a fresh reader in one call; returns the close code. */
static uint16_t run(const hd_strbuf *in, size_t max, hd_ws_inflater *inflater, recorder *rec)
{
    hd_ws_reader *r = hd_ws_reader_new(max, inflater);
    const char *reason = NULL;
    uint16_t code = hd_ws_reader_feed(r, in->data, in->len, &callbacks, rec, &reason);
    if (code)
        CHECK(reason != NULL && reason[0] != '\0');
    hd_ws_reader_free(r);
    return code;
}

/* The close code a stream of frames produces with no inflater. */
static uint16_t code_of(const hd_strbuf *in)
{
    recorder rec;
    recorder_init(&rec);
    uint16_t code = run(in, 1 << 20, NULL, &rec);
    hd_strbuf_free(&rec.log);
    return code;
}

static uint64_t rng_state;

static uint32_t rng(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}

/* ------------------------------------------------------------ lengths and masking */

static void test_rfc_masked_example(void)
{
    /* RFC 6455 §5.7: a single-frame masked text message "Hello". */
    static const uint8_t frame[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                    0x7f, 0x9f, 0x4d, 0x51, 0x58};
    hd_strbuf in;
    hd_strbuf_init(&in);
    hd_strbuf_append(&in, frame, sizeof(frame));
    recorder rec;
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 1024, NULL, &rec), 0);
    CHECK_EQ_MEM(rec.log.data, rec.log.len, "M1[5]:Hello\n", 12);
    hd_strbuf_free(&in);
    hd_strbuf_free(&rec.log);
}

static void test_lengths_read(void)
{
    static const size_t lens[] = {0, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 100000};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        for (int form = MINIMAL; form <= FORCE64; form++) {
            if (form == FORCE16 && lens[i] > 0xffff)
                continue;
            char *payload = hd_alloc(lens[i] + 1);
            for (size_t j = 0; j < lens[i]; j++)
                payload[j] = (char)('a' + j % 26);
            hd_strbuf in;
            hd_strbuf_init(&in);
            put_frame_form(&in, 0x82, payload, lens[i], 0x01020304u * (uint32_t)(i + 1), form);
            recorder rec;
            recorder_init(&rec);
            /* Non-minimal encodings (FORCE16/FORCE64 of short lengths) are accepted. */
            CHECK_EQ_INT(run(&in, 1 << 20, NULL, &rec), 0);
            CHECK_EQ_INT(rec.messages, 1);
            hd_strbuf expect;
            hd_strbuf_init(&expect);
            hd_strbuf_printf(&expect, "M2[%zu]:", lens[i]);
            hd_strbuf_append(&expect, payload, lens[i]);
            hd_strbuf_append(&expect, "\n", 1);
            CHECK(rec.log.len == expect.len && memcmp(rec.log.data, expect.data, expect.len) == 0);
            hd_strbuf_free(&expect);
            hd_strbuf_free(&rec.log);
            hd_strbuf_free(&in);
            free(payload);
        }
    }
}

static void test_lengths_write(void)
{
    static const struct {
        size_t len;
        size_t header_size;
        uint8_t header[10];
    } cases[] = {
        {0, 2, {0x82, 0x00}},
        {125, 2, {0x82, 125}},
        {126, 4, {0x82, 126, 0x00, 126}},
        {65535, 4, {0x82, 126, 0xff, 0xff}},
        {65536, 10, {0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = cases[i].len;
        CHECK_EQ_INT(hd_ws_frame_header_size(len), cases[i].header_size);
        char *payload = hd_alloc(len + 1);
        memset(payload, 'x', len);
        hd_buf *b = hd_ws_frame_build(HD_WS_BINARY, false, payload, len);
        CHECK_EQ_INT(b->len, cases[i].header_size + len);
        CHECK_EQ_MEM(b->data, cases[i].header_size, cases[i].header, cases[i].header_size);
        CHECK(len == 0 || memcmp(b->data + cases[i].header_size, payload, len) == 0);
        hd_buf_release(b);
        free(payload);
    }
}

static void test_writer_small(void)
{
    hd_buf *b = hd_ws_frame_build(HD_WS_TEXT, false, "Hello", 5);
    CHECK_EQ_MEM(b->data, b->len, "\x81\x05Hello", 7);
    hd_buf_release(b);
    b = hd_ws_frame_build(HD_WS_TEXT, true, "\x00", 1);
    CHECK_EQ_MEM(b->data, b->len, "\xc1\x01\x00", 3);
    hd_buf_release(b);
    b = hd_ws_frame_build(HD_WS_PONG, false, NULL, 0);
    CHECK_EQ_MEM(b->data, b->len, "\x8a\x00", 2);
    hd_buf_release(b);
    char header[10];
    CHECK_EQ_INT(hd_ws_frame_write_header(header, HD_WS_BINARY, true, 300), 4);
    CHECK_EQ_MEM(header, 4, "\xc2\x7e\x01\x2c", 4);
}

static void test_writer_close(void)
{
    hd_buf *b = hd_ws_frame_build_close(1000, "");
    CHECK_EQ_MEM(b->data, b->len, "\x88\x02\x03\xe8", 4);
    hd_buf_release(b);
    b = hd_ws_frame_build_close(1001, "bye");
    CHECK_EQ_MEM(b->data, b->len,
                 "\x88\x05\x03\xe9"
                 "bye",
                 7);
    hd_buf_release(b);
    b = hd_ws_frame_build_close(1000, NULL);
    CHECK_EQ_MEM(b->data, b->len, "\x88\x02\x03\xe8", 4);
    hd_buf_release(b);
    /* 1005 means "no status code": an empty close frame. */
    b = hd_ws_frame_build_close(HD_WS_CLOSE_NO_STATUS, "ignored");
    CHECK_EQ_MEM(b->data, b->len, "\x88\x00", 2);
    hd_buf_release(b);

    /* A long ASCII reason is cut to 123 bytes: payload exactly 125. */
    char reason[300];
    memset(reason, 'r', 200);
    reason[200] = '\0';
    b = hd_ws_frame_build_close(1011, reason);
    CHECK_EQ_INT(b->len, 2 + 125);
    CHECK_EQ_INT((uint8_t)b->data[1], 125);
    CHECK_EQ_MEM(b->data + 4, 123, reason, 123);
    hd_buf_release(b);

    /* 122 ASCII bytes then a 3-byte character: the character is dropped whole. */
    memset(reason, 'r', 122);
    strcpy(reason + 122, "\xe2\x82\xac tail");
    b = hd_ws_frame_build_close(1000, reason);
    CHECK_EQ_INT((uint8_t)b->data[1], 2 + 122);
    CHECK(hd_utf8_valid(b->data + 4, b->len - 4));
    hd_buf_release(b);

    /* 121 ASCII bytes then a 2-byte character fits exactly (123 bytes). */
    memset(reason, 'r', 121);
    strcpy(reason + 121, "\xc3\xa9\xc3\xa9");
    b = hd_ws_frame_build_close(1000, reason);
    CHECK_EQ_INT((uint8_t)b->data[1], 125);
    CHECK(hd_utf8_valid(b->data + 4, b->len - 4));
    hd_buf_release(b);

    /* What the writer builds, masked, the reader accepts. */
    b = hd_ws_frame_build_close(4000, "caf\xc3\xa9");
    hd_strbuf in;
    hd_strbuf_init(&in);
    put_frame(&in, (uint8_t)b->data[0], b->data + 2, b->len - 2);
    recorder rec;
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 1024, NULL, &rec), 0);
    CHECK_EQ_MEM(rec.log.data, rec.log.len, "C8/4000[5]:caf\xc3\xa9\n", 17);
    hd_buf_release(b);
    hd_strbuf_free(&in);
    hd_strbuf_free(&rec.log);
}

/* ------------------------------------------------------------ framing rules */

static void test_unmasked_frame(void)
{
    hd_strbuf in;
    hd_strbuf_init(&in);
    hd_buf *b = hd_ws_frame_build(HD_WS_TEXT, false, "hi", 2);
    hd_strbuf_append(&in, b->data, b->len);
    CHECK_EQ_INT(code_of(&in), 1002);
    hd_buf_release(b);
    hd_strbuf_free(&in);
}

static void test_reserved_bits(void)
{
    static const uint8_t firsts[] = {0xc1, 0xa1, 0x91, 0xf1, 0xa9, 0x92};
    for (size_t i = 0; i < sizeof(firsts); i++) {
        hd_strbuf in;
        hd_strbuf_init(&in);
        put_str(&in, firsts[i], "x");
        CHECK_EQ_INT(code_of(&in), 1002);
        hd_strbuf_free(&in);
    }

    /* With an inflater, RSV1 is still wrong on continuations and control frames. */
    hd_ws_deflate_params params = {true, true, 15, 15};
    hd_ws_inflater *inf = hd_ws_inflater_new(&params);
    static const uint8_t after_first[] = {0xc0, 0xc9, 0xca, 0xc8, 0xa0};
    for (size_t i = 0; i < sizeof(after_first); i++) {
        hd_strbuf in;
        hd_strbuf_init(&in);
        put_str(&in, 0x01, "ab"); /* uncompressed first fragment */
        put_str(&in, after_first[i], "");
        recorder rec;
        recorder_init(&rec);
        CHECK_EQ_INT(run(&in, 1024, inf, &rec), 1002);
        hd_strbuf_free(&rec.log);
        hd_strbuf_free(&in);
    }
    hd_ws_inflater_free(inf);
}

static void test_reserved_opcodes(void)
{
    static const uint8_t opcodes[] = {3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf};
    for (size_t i = 0; i < sizeof(opcodes); i++) {
        hd_strbuf in;
        hd_strbuf_init(&in);
        put_str(&in, (uint8_t)(0x80 | opcodes[i]), "");
        CHECK_EQ_INT(code_of(&in), 1002);
        hd_strbuf_free(&in);
    }
}

static void test_control_rules(void)
{
    char big[200];
    memset(big, 'p', sizeof(big));
    hd_strbuf in;

    /* A 125-byte ping is fine; 126 is not, whatever the encoding. */
    hd_strbuf_init(&in);
    put_frame(&in, 0x89, big, 125);
    recorder rec;
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 1024, NULL, &rec), 0);
    CHECK_EQ_INT(rec.controls, 1);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);

    hd_strbuf_init(&in);
    put_frame(&in, 0x89, big, 126);
    CHECK_EQ_INT(code_of(&in), 1002);
    hd_strbuf_free(&in);

    hd_strbuf_init(&in);
    put_frame_form(&in, 0x8a, big, 5, 1, FORCE16); /* non-minimal but 5 bytes: accepted */
    CHECK_EQ_INT(code_of(&in), 0);
    hd_strbuf_free(&in);

    /* Fragmented control frames. */
    static const uint8_t unfinished[] = {0x09, 0x0a, 0x08};
    for (size_t i = 0; i < sizeof(unfinished); i++) {
        hd_strbuf_init(&in);
        put_str(&in, unfinished[i], "");
        CHECK_EQ_INT(code_of(&in), 1002);
        hd_strbuf_free(&in);
    }
}

static void test_fragmentation_rules(void)
{
    hd_strbuf in;

    /* Continuation without a message. */
    hd_strbuf_init(&in);
    put_str(&in, 0x80, "x");
    CHECK_EQ_INT(code_of(&in), 1002);
    hd_strbuf_free(&in);

    /* Continuation after a complete message. */
    hd_strbuf_init(&in);
    put_str(&in, 0x81, "done");
    put_str(&in, 0x80, "x");
    CHECK_EQ_INT(code_of(&in), 1002);
    hd_strbuf_free(&in);

    /* A new data message while one is in progress. */
    static const uint8_t news[] = {0x81, 0x01, 0x82, 0x02};
    for (size_t i = 0; i < sizeof(news); i++) {
        hd_strbuf_init(&in);
        put_str(&in, 0x01, "a");
        put_str(&in, news[i], "b");
        CHECK_EQ_INT(code_of(&in), 1002);
        hd_strbuf_free(&in);
    }

    /* Control frames between fragments are delivered first, in order. */
    hd_strbuf_init(&in);
    put_str(&in, 0x01, "frag");
    put_str(&in, 0x89, "p1");
    put_str(&in, 0x00, "men");
    put_str(&in, 0x8a, "p2");
    put_str(&in, 0x80, "ted");
    recorder rec;
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 1024, NULL, &rec), 0);
    static const char expect[] = "C9/0[2]:p1\nC10/0[2]:p2\nM1[10]:fragmented\n";
    CHECK_EQ_MEM(rec.log.data, rec.log.len, expect, sizeof(expect) - 1);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);

    /* Empty fragments are fine. */
    hd_strbuf_init(&in);
    put_str(&in, 0x02, "");
    put_str(&in, 0x00, "");
    put_str(&in, 0x80, "");
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 1024, NULL, &rec), 0);
    CHECK_EQ_MEM(rec.log.data, rec.log.len, "M2[0]:\n", 7);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);
}

/* A reader fed only the header of a huge frame refuses it there. */
static void test_too_big_at_header(void)
{
    static const struct {
        uint64_t len;
        uint16_t code;
    } cases[] = {
        {1000, 0},
        {1001, 1009},
        {65536, 1009},
        {UINT64_C(1) << 40, 1009},
        {UINT64_C(1) << 63, 1002}, /* the top bit must be 0 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t h[14] = {0x82, 0x80 | 127};
        for (int j = 0; j < 8; j++)
            h[2 + j] = (uint8_t)(cases[i].len >> (56 - 8 * j));
        memcpy(h + 10, "\x01\x02\x03\x04", 4);
        hd_ws_reader *r = hd_ws_reader_new(1000, NULL);
        recorder rec;
        recorder_init(&rec);
        const char *reason = NULL;
        CHECK_EQ_INT(hd_ws_reader_feed(r, h, sizeof(h), &callbacks, &rec, &reason), cases[i].code);
        hd_ws_reader_free(r);
        hd_strbuf_free(&rec.log);
    }

    /* The limit is on the reassembled message: 600 + 600 fails at the second header. */
    hd_strbuf in;
    hd_strbuf_init(&in);
    char part[600];
    memset(part, 'z', sizeof(part));
    put_frame(&in, 0x02, part, sizeof(part));
    put_frame(&in, 0x80, part, sizeof(part));
    size_t second_header = 2 + 2 + 4 + 600;
    hd_ws_reader *r = hd_ws_reader_new(1000, NULL);
    recorder rec;
    recorder_init(&rec);
    const char *reason = NULL;
    CHECK_EQ_INT(hd_ws_reader_feed(r, in.data, second_header + 8, &callbacks, &rec, &reason), 1009);
    CHECK_EQ_STR(reason, "message too big");
    /* A failed reader keeps answering the same. */
    CHECK_EQ_INT(hd_ws_reader_feed(r, "x", 1, &callbacks, &rec, &reason), 1009);
    hd_ws_reader_free(r);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);

    /* Exactly the limit, in two fragments, passes. */
    hd_strbuf_init(&in);
    put_frame(&in, 0x02, part, 500);
    put_frame(&in, 0x80, part, 500);
    CHECK_EQ_INT(code_of(&in), 0);
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 1000, NULL, &rec), 0);
    CHECK_EQ_INT(rec.messages, 1);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);
}

/* ------------------------------------------------------------ UTF-8 */

static void test_utf8(void)
{
    hd_strbuf in;
    recorder rec;

    /* A character split across fragments (and a ping between them). */
    hd_strbuf_init(&in);
    put_str(&in, 0x01, "price: \xe2");
    put_str(&in, 0x89, "");
    put_str(&in, 0x00, "\x82");
    put_str(&in, 0x80, "\xac!");
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 1024, NULL, &rec), 0);
    static const char split_char[] = "C9/0[0]:\nM1[11]:price: \xe2\x82\xac!\n";
    CHECK_EQ_MEM(rec.log.data, rec.log.len, split_char, sizeof(split_char) - 1);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);

    /* Invalid in the first fragment: fails before any further frame arrives. */
    hd_strbuf_init(&in);
    put_str(&in, 0x01, "ok \xc0\xaf");
    CHECK_EQ_INT(code_of(&in), 1007);
    hd_strbuf_free(&in);

    /* Invalid within a frame whose payload has only partly arrived. */
    hd_strbuf_init(&in);
    char text[1000];
    memset(text, 'a', sizeof(text));
    text[10] = '\xff';
    put_frame(&in, 0x81, text, sizeof(text));
    hd_ws_reader *r = hd_ws_reader_new(4096, NULL);
    recorder_init(&rec);
    const char *reason = NULL;
    CHECK_EQ_INT(hd_ws_reader_feed(r, in.data, 4 + 4 + 20, &callbacks, &rec, &reason), 1007);
    hd_ws_reader_free(r);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);

    /* A surrogate (ED A0 80) and a code point above U+10FFFF (F4 90 80 80). */
    hd_strbuf_init(&in);
    put_str(&in, 0x81, "\xed\xa0\x80");
    CHECK_EQ_INT(code_of(&in), 1007);
    hd_strbuf_free(&in);
    hd_strbuf_init(&in);
    put_str(&in, 0x81, "\xf4\x90\x80\x80");
    CHECK_EQ_INT(code_of(&in), 1007);
    hd_strbuf_free(&in);

    /* Ends inside a character. */
    hd_strbuf_init(&in);
    put_str(&in, 0x01, "a\xe2\x82");
    put_str(&in, 0x80, "");
    CHECK_EQ_INT(code_of(&in), 1007);
    hd_strbuf_free(&in);

    /* Binary messages are not checked. */
    hd_strbuf_init(&in);
    put_str(&in, 0x82, "\xff\xfe");
    CHECK_EQ_INT(code_of(&in), 0);
    hd_strbuf_free(&in);
}

/* ------------------------------------------------------------ close frames */

static void test_close_frames(void)
{
    hd_strbuf in;
    recorder rec;

    hd_strbuf_init(&in);
    put_close(&in, -1, "", 0);
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 1024, NULL, &rec), 0);
    CHECK_EQ_INT(rec.last_close, HD_WS_CLOSE_NO_STATUS);
    CHECK_EQ_MEM(rec.log.data, rec.log.len, "C8/1005[0]:\n", 12);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);

    hd_strbuf_init(&in);
    put_frame(&in, 0x88, "\x03", 1);
    CHECK_EQ_INT(code_of(&in), 1002);
    hd_strbuf_free(&in);

    hd_strbuf_init(&in);
    put_close(&in, 1000, "bye", 3);
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 1024, NULL, &rec), 0);
    CHECK_EQ_MEM(rec.log.data, rec.log.len, "C8/1000[3]:bye\n", 15);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);

    /* Autobahn 7.7.x (valid) plus the IANA-registered 1012-1014. */
    static const int valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        CHECK(hd_ws_close_code_valid((uint16_t)valid[i]));
        hd_strbuf_init(&in);
        put_close(&in, valid[i], "", 0);
        recorder_init(&rec);
        CHECK_EQ_INT(run(&in, 1024, NULL, &rec), 0);
        CHECK_EQ_INT(rec.last_close, valid[i]);
        hd_strbuf_free(&rec.log);
        hd_strbuf_free(&in);
    }
    /* Autobahn 7.9.x (invalid) plus 1015 (never on the wire) and the edges. */
    static const int invalid[] = {0,    999,  1004, 1005, 1006, 1015,
                                  1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        CHECK(!hd_ws_close_code_valid((uint16_t)invalid[i]));
        hd_strbuf_init(&in);
        put_close(&in, invalid[i], "", 0);
        CHECK_EQ_INT(code_of(&in), 1002);
        hd_strbuf_free(&in);
    }

    /* Autobahn 7.5.1: a reason that is not UTF-8. */
    hd_strbuf_init(&in);
    put_close(&in, 1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", 14);
    CHECK_EQ_INT(code_of(&in), 1007);
    hd_strbuf_free(&in);

    /* Autobahn 7.3.5/7.3.6: a 123-byte reason is fine, 124 is too long. */
    char reason[124];
    memset(reason, 'r', sizeof(reason));
    hd_strbuf_init(&in);
    put_close(&in, 1000, reason, 123);
    CHECK_EQ_INT(code_of(&in), 0);
    hd_strbuf_free(&in);
    hd_strbuf_init(&in);
    put_close(&in, 1000, reason, 124);
    CHECK_EQ_INT(code_of(&in), 1002);
    hd_strbuf_free(&in);
}

/* ------------------------------------------------------------ stop */

typedef struct stopper {
    recorder rec;
    hd_ws_reader *reader;
} stopper;

static void stop_on_message(void *ctx, hd_ws_opcode opcode, const char *data, size_t len)
{
    stopper *s = ctx;
    on_message(&s->rec, opcode, data, len);
    hd_ws_reader_stop(s->reader);
}

static void stop_on_control(void *ctx, hd_ws_opcode opcode, uint16_t code, const char *payload,
                            size_t len)
{
    stopper *s = ctx;
    on_control(&s->rec, opcode, code, payload, len);
    if (opcode == HD_WS_CLOSE)
        hd_ws_reader_stop(s->reader);
}

static void test_stop(void)
{
    static const hd_ws_reader_callbacks stopping = {stop_on_message, stop_on_control};
    hd_strbuf in;
    hd_strbuf_init(&in);
    put_str(&in, 0x81, "first");
    put_str(&in, 0x81, "second");
    put_frame(&in, 0xff, "garbage", 7); /* would be a 1002 if it were read */

    stopper s;
    recorder_init(&s.rec);
    s.reader = hd_ws_reader_new(1024, NULL);
    const char *reason = NULL;
    CHECK_EQ_INT(hd_ws_reader_feed(s.reader, in.data, in.len, &stopping, &s, &reason), 0);
    CHECK_EQ_INT(s.rec.messages, 1);
    CHECK_EQ_INT(hd_ws_reader_feed(s.reader, in.data, in.len, &stopping, &s, &reason), 0);
    CHECK_EQ_INT(s.rec.messages, 1);
    hd_ws_reader_free(s.reader);
    hd_strbuf_free(&s.rec.log);

    /* Stopping at a close frame leaves whatever follows it unread. */
    hd_strbuf_free(&in);
    hd_strbuf_init(&in);
    put_str(&in, 0x89, "ping");
    put_close(&in, 1000, "", 0);
    put_str(&in, 0x81, "after");
    recorder_init(&s.rec);
    s.reader = hd_ws_reader_new(1024, NULL);
    CHECK_EQ_INT(hd_ws_reader_feed(s.reader, in.data, in.len, &stopping, &s, &reason), 0);
    CHECK_EQ_INT(s.rec.controls, 2);
    CHECK_EQ_INT(s.rec.messages, 0);
    hd_ws_reader_free(s.reader);
    hd_strbuf_free(&s.rec.log);
    hd_strbuf_free(&in);
}

/* ------------------------------------------------------------ compression */

static void test_compressed_messages(void)
{
    hd_ws_deflate_params params = {true, false, 15, 15};
    hd_ws_inflater *inf = hd_ws_inflater_new(&params);
    z_stream zs;
    compressor_init(&zs);

    hd_strbuf in, z;
    hd_strbuf_init(&in);
    hd_strbuf_init(&z);
    /* One frame. */
    compress_message(&zs, "Hello, compressed world", 23, &z);
    put_frame(&in, 0xc1, z.data, z.len);
    /* Three fragments with a ping between them; the message references the first one. */
    z.len = 0;
    compress_message(&zs, "Hello, compressed world, again", 30, &z);
    size_t third = z.len / 3;
    put_frame(&in, 0x41, z.data, third);
    put_str(&in, 0x89, "mid");
    put_frame(&in, 0x00, z.data + third, third);
    put_frame(&in, 0x80, z.data + 2 * third, z.len - 2 * third);
    /* An uncompressed message between compressed ones. */
    put_str(&in, 0x82, "plain");
    /* An empty compressed message: RFC 7692 §7.2.3.6, a single 0x00. */
    put_frame(&in, 0xc2, "\x00", 1);

    recorder rec;
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 1024, inf, &rec), 0);
    static const char expect[] = "M1[23]:Hello, compressed world\n"
                                 "C9/0[3]:mid\n"
                                 "M1[30]:Hello, compressed world, again\n"
                                 "M2[5]:plain\n"
                                 "M2[0]:\n";
    CHECK_EQ_MEM(rec.log.data, rec.log.len, expect, sizeof(expect) - 1);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);

    /* Invalid UTF-8 inside compressed text. */
    hd_strbuf_init(&in);
    z.len = 0;
    compress_message(&zs, "bad \xc0\xaf text", 11, &z);
    put_frame(&in, 0xc1, z.data, z.len);
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 1024, inf, &rec), 1007);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);

    /* Corrupt deflate data (BTYPE 11). */
    hd_strbuf_init(&in);
    put_frame(&in, 0xc2, "\xff\xff\xff", 3);
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 1024, inf, &rec), 1007);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);

    /* A small frame that inflates past the limit. */
    char *zeros = hd_calloc(1, 1 << 20);
    deflateReset(&zs);
    z.len = 0;
    compress_message(&zs, zeros, 1 << 20, &z);
    hd_strbuf_init(&in);
    put_frame(&in, 0xc2, z.data, z.len);
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 65536, inf, &rec), 1009);
    CHECK_EQ_INT(rec.messages, 0);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);
    free(zeros);

    /* A compressed frame declaring far more wire bytes than the limit allows. */
    hd_strbuf_init(&in);
    uint8_t h[14] = {0xc2, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4};
    hd_strbuf_append(&in, h, sizeof(h));
    recorder_init(&rec);
    CHECK_EQ_INT(run(&in, 65536, inf, &rec), 1009);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);

    hd_strbuf_free(&z);
    deflateEnd(&zs);
    hd_ws_inflater_free(inf);
}

/* ------------------------------------------------------------ random splits */

/*
 * A stream exercising most paths: text and binary of many sizes, fragments
 * with interleaved pings, UTF-8 split across fragments, compressed
 * messages (fragmented too) when compress is set, and a final close.
 */
static void build_mixed_stream(hd_strbuf *in, bool compress, bool takeover, z_stream *zs)
{
    uint64_t saved = rng_state;
    rng_state = 42;
    char *buf = hd_alloc(70000);
    for (int m = 0; m < 40; m++) {
        size_t len = rng() % 5 == 0 ? 126 + rng() % 66000 : rng() % 300;
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)('A' + rng() % 26);
        if (len >= 3 && m % 3 == 0)
            memcpy(buf + len / 2, "\xe2\x82\xac", 3); /* a character to split */
        uint8_t op = m % 2 ? 0x2 : 0x1;
        bool deflated = compress && m % 4 == 1;
        hd_strbuf z;
        hd_strbuf_init(&z);
        const char *payload = buf;
        size_t payload_len = len;
        if (deflated) {
            if (!takeover)
                deflateReset(zs);
            compress_message(zs, buf, len, &z);
            payload = z.data;
            payload_len = z.len;
        }
        size_t pieces = 1 + rng() % 4;
        size_t at = 0;
        for (size_t p = 0; p < pieces; p++) {
            size_t n = p + 1 == pieces ? payload_len - at : rng() % (payload_len - at + 1);
            uint8_t b0 = (uint8_t)((p == 0 ? op : 0) | (p + 1 == pieces ? 0x80 : 0) |
                                   (p == 0 && deflated ? 0x40 : 0));
            put_frame_form(in, b0, payload + at, n, rng(), (int)(rng() % 3 == 0) * FORCE64);
            at += n;
            if (rng() % 2)
                put_str(in, 0x89, "ping");
        }
        hd_strbuf_free(&z);
    }
    put_close(in, 1000, "done", 4);
    free(buf);
    rng_state = saved;
}

static void check_random_splits(bool compress, bool takeover)
{
    hd_ws_deflate_params params = {true, !takeover, 15, 15};
    z_stream zs;
    compressor_init(&zs);
    hd_strbuf in;
    hd_strbuf_init(&in);
    build_mixed_stream(&in, compress, takeover, &zs);
    deflateEnd(&zs);

    hd_ws_inflater *inf = compress ? hd_ws_inflater_new(&params) : NULL;
    recorder whole;
    recorder_init(&whole);
    CHECK_EQ_INT(run(&in, 1 << 20, inf, &whole), 0);
    CHECK(whole.messages == 40);
    hd_ws_inflater_free(inf);

    for (uint64_t seed = 1; seed <= 150; seed++) {
        rng_state = seed;
        inf = compress ? hd_ws_inflater_new(&params) : NULL;
        hd_ws_reader *r = hd_ws_reader_new(1 << 20, inf);
        recorder split;
        recorder_init(&split);
        size_t max_read = seed % 3 == 0 ? 3 : seed % 3 == 1 ? 40 : 5000;
        uint16_t code = 0;
        for (size_t at = 0; at < in.len && code == 0;) {
            size_t n = 1 + rng() % max_read;
            n = n < in.len - at ? n : in.len - at;
            const char *reason;
            code = hd_ws_reader_feed(r, in.data + at, n, &callbacks, &split, &reason);
            at += n;
        }
        CHECK_EQ_INT(code, 0);
        CHECK(split.log.len == whole.log.len &&
              memcmp(split.log.data, whole.log.data, whole.log.len) == 0);
        hd_ws_reader_free(r);
        hd_ws_inflater_free(inf);
        hd_strbuf_free(&split.log);
    }
    hd_strbuf_free(&whole.log);
    hd_strbuf_free(&in);
}

static void test_random_splits_plain(void)
{
    check_random_splits(false, false);
}

static void test_random_splits_compressed(void)
{
    check_random_splits(true, true);
}

static void test_random_splits_compressed_no_takeover(void)
{
    check_random_splits(true, false);
}

static void test_in_message_tracks_partial_messages(void)
{
    hd_strbuf in;
    hd_strbuf_init(&in);
    put_frame(&in, 0x01, "ab", 2); /* text, FIN clear */
    put_frame(&in, 0x89, "p", 1);  /* an interleaved ping */
    put_frame(&in, 0x80, "cd", 2); /* the final continuation */
    hd_ws_reader *r = hd_ws_reader_new(1000, NULL);
    recorder rec;
    recorder_init(&rec);
    const char *reason = NULL;
    CHECK(!hd_ws_reader_in_message(r));
    CHECK_EQ_INT(hd_ws_reader_held_bytes(r), 0);
    /* Half of the first frame's payload. */
    CHECK_EQ_INT(hd_ws_reader_feed(r, in.data, 7, &callbacks, &rec, &reason), 0);
    CHECK(hd_ws_reader_in_message(r));
    CHECK(hd_ws_reader_held_bytes(r) >= 1);
    /* The rest of the first frame and the ping: the message is still open. */
    size_t first_two = 8 + 7;
    CHECK_EQ_INT(hd_ws_reader_feed(r, in.data + 7, first_two - 7, &callbacks, &rec, &reason), 0);
    CHECK(hd_ws_reader_in_message(r));
    CHECK(hd_ws_reader_held_bytes(r) >= 2);
    CHECK_EQ_INT(
        hd_ws_reader_feed(r, in.data + first_two, in.len - first_two, &callbacks, &rec, &reason),
        0);
    CHECK(!hd_ws_reader_in_message(r));
    hd_ws_reader_free(r);

    /* A large message's buffer is what it holds, and is given back when it ends. */
    hd_strbuf big;
    hd_strbuf_init(&big);
    char payload[5000];
    memset(payload, 'x', sizeof(payload));
    put_frame(&big, 0x01, payload, sizeof(payload));
    put_frame(&big, 0x80, "", 0);
    r = hd_ws_reader_new(10000, NULL);
    size_t first = big.len - 6; /* the empty final frame is 6 bytes */
    CHECK_EQ_INT(hd_ws_reader_feed(r, big.data, first, &callbacks, &rec, &reason), 0);
    CHECK(hd_ws_reader_held_bytes(r) >= sizeof(payload));
    CHECK_EQ_INT(hd_ws_reader_feed(r, big.data + first, 6, &callbacks, &rec, &reason), 0);
    CHECK_EQ_INT(hd_ws_reader_held_bytes(r), 0);
    hd_ws_reader_free(r);
    hd_strbuf_free(&big);
    hd_strbuf_free(&rec.log);
    hd_strbuf_free(&in);
}

int main(void)
{
    RUN_TEST(test_in_message_tracks_partial_messages);
    RUN_TEST(test_rfc_masked_example);
    RUN_TEST(test_lengths_read);
    RUN_TEST(test_lengths_write);
    RUN_TEST(test_writer_small);
    RUN_TEST(test_writer_close);
    RUN_TEST(test_unmasked_frame);
    RUN_TEST(test_reserved_bits);
    RUN_TEST(test_reserved_opcodes);
    RUN_TEST(test_control_rules);
    RUN_TEST(test_fragmentation_rules);
    RUN_TEST(test_too_big_at_header);
    RUN_TEST(test_utf8);
    RUN_TEST(test_close_frames);
    RUN_TEST(test_stop);
    RUN_TEST(test_compressed_messages);
    RUN_TEST(test_random_splits_plain);
    RUN_TEST(test_random_splits_compressed);
    RUN_TEST(test_random_splits_compressed_no_takeover);
    return test_summary();
}
