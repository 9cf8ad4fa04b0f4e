#include "herald/message.h"
#include "test.h"
#include "transport/sse.h"

static hd_message *make(const char *event, const char *data)
{
    return hd_message_new("orders", 6, event, event ? strlen(event) : 0, data, strlen(data), 42,
                          0xabcdef01, 1764000000000);
}

static void check_encoding(hd_buf *(*encode)(const hd_message *, void *), const char *event,
                           const char *data, const char *expected)
{
    hd_message *msg = make(event, data);
    hd_buf *buf = encode(msg, NULL);
    CHECK_EQ_MEM(buf->data, buf->len, expected, strlen(expected));
    hd_buf_release(buf);
    hd_message_release(msg);
}

static void test_single_line(void)
{
    check_encoding(hd_sse_encode_message, NULL, "hello", "id: abcdef01-42\ndata: hello\n\n");
    check_encoding(hd_sse_encode_message, "created", "hello",
                   "id: abcdef01-42\nevent: created\ndata: hello\n\n");
}

static void test_line_breaks_become_data_lines(void)
{
    check_encoding(hd_sse_encode_message, NULL, "a\nb", "id: abcdef01-42\ndata: a\ndata: b\n\n");
    check_encoding(hd_sse_encode_message, NULL, "a\r\nb\rc",
                   "id: abcdef01-42\ndata: a\ndata: b\ndata: c\n\n");
    /* Leading, trailing and doubled breaks are kept as empty data lines. */
    check_encoding(hd_sse_encode_message, NULL, "\na\n\n",
                   "id: abcdef01-42\ndata: \ndata: a\ndata: \ndata: \n\n");
    check_encoding(hd_sse_encode_message, NULL, "", "id: abcdef01-42\ndata: \n\n");
}

static void test_unicode_passes_through(void)
{
    check_encoding(hd_sse_encode_message, NULL, "h\xc3\xa9llo \xf0\x9f\x8e\x89",
                   "id: abcdef01-42\ndata: h\xc3\xa9llo \xf0\x9f\x8e\x89\n\n");
}

static void test_envelope_is_one_data_line(void)
{
    check_encoding(hd_sse_encode_envelope, "x", "a\nb\"",
                   "id: abcdef01-42\nevent: x\ndata: "
                   "{\"type\":\"message\",\"topic\":\"orders\",\"id\":\"abcdef01-42\","
                   "\"event\":\"x\",\"data\":\"a\\nb\\\"\",\"time\":1764000000000}\n\n");
}

static void test_gap_event(void)
{
    hd_gap gap = {.topic = "orders", .topic_len = 6, .from = "abcdef01-3", .from_len = 10};
    strcpy(gap.to, "abcdef01-9");
    gap.to_len = 10;
    hd_buf *buf = hd_sse_encode_gap(&gap);
    const char *expected =
        "event: herald-gap\ndata: "
        "{\"topic\":\"orders\",\"from\":\"abcdef01-3\",\"to\":\"abcdef01-9\"}\n\n";
    CHECK_EQ_MEM(buf->data, buf->len, expected, strlen(expected));
    hd_buf_release(buf);
}

static void test_encoding_is_cached_per_message(void)
{
    hd_message *msg = make(NULL, "x");
    hd_buf *first = hd_message_encoded(msg, HD_WIRE_SSE, hd_sse_encode_message, NULL);
    hd_buf *second = hd_message_encoded(msg, HD_WIRE_SSE, hd_sse_encode_message, NULL);
    CHECK(first == second);
    CHECK(hd_message_encoded(msg, HD_WIRE_SSE_ENVELOPE, hd_sse_encode_envelope, NULL) != first);
    hd_message_release(msg);
}

int main(void)
{
    RUN_TEST(test_single_line);
    RUN_TEST(test_line_breaks_become_data_lines);
    RUN_TEST(test_unicode_passes_through);
    RUN_TEST(test_envelope_is_one_data_line);
    RUN_TEST(test_gap_event);
    RUN_TEST(test_encoding_is_cached_per_message);
    return test_summary();
}
