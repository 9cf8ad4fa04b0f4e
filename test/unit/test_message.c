#include "herald/message.h"

#include <stdint.h>

#include "test.h"

static hd_message *make(const char *topic, const char *event, const char *data, uint64_t seq)
{
    return hd_message_new(topic, strlen(topic), event, event ? strlen(event) : 0, data,
                          strlen(data), seq, 0xdeadbeef, 1764000000000);
}

/* The envelope of msg as a NUL-terminated string the caller frees. */
static char *envelope(const hd_message *msg)
{
    hd_strbuf sb;
    hd_strbuf_init(&sb);
    hd_message_append_envelope(msg, &sb);
    hd_strbuf_append(&sb, "", 1);
    char *text = strdup(sb.data);
    hd_strbuf_free(&sb);
    return text;
}

static void test_fields_are_copied(void)
{
    char topic[] = "orders", event[] = "created", data[] = "hello";
    hd_message *msg = hd_message_new(topic, 6, event, 7, data, 5, 42, 0xdeadbeef, 123);
    topic[0] = event[0] = data[0] = 'X';
    CHECK_EQ_INT(msg->refs, 1);
    CHECK_EQ_INT(msg->seq, 42);
    CHECK_EQ_INT(msg->time_ms, 123);
    CHECK_EQ_MEM(msg->topic, msg->topic_len, "orders", 6);
    CHECK_EQ_MEM(msg->event, msg->event_len, "created", 7);
    CHECK_EQ_MEM(msg->data, msg->data_len, "hello", 5);
    for (int i = 0; i < HD_WIRE_COUNT; i++)
        CHECK(msg->wire[i] == NULL);
    hd_message_release(msg);
}

static void test_no_event_and_empty_data(void)
{
    hd_message *msg = hd_message_new("t", 1, NULL, 0, "", 0, 1, 1, 0);
    CHECK(msg->event == NULL);
    CHECK_EQ_INT(msg->event_len, 0);
    CHECK_EQ_INT(msg->data_len, 0);
    hd_message_release(msg);
}

static void test_id_format(void)
{
    hd_message *msg = make("t", NULL, "", 42);
    CHECK_EQ_STR(msg->id, "deadbeef-42");
    CHECK_EQ_INT(msg->id_len, 11);
    hd_message_release(msg);

    msg = hd_message_new("t", 1, NULL, 0, "", 0, 7, 0x1a, 0);
    CHECK_EQ_STR(msg->id, "0000001a-7");
    hd_message_release(msg);

    msg = hd_message_new("t", 1, NULL, 0, "", 0, UINT64_MAX, 0xffffffff, 0);
    CHECK_EQ_STR(msg->id, "ffffffff-18446744073709551615");
    CHECK(msg->id_len < HD_ID_MAX);
    hd_message_release(msg);
}

static void test_retain_release(void)
{
    hd_message *msg = make("t", NULL, "x", 1);
    CHECK(hd_message_retain(msg) == msg);
    CHECK_EQ_INT(msg->refs, 2);
    hd_message_release(msg);
    CHECK_EQ_INT(msg->refs, 1);
    hd_message_release(msg);
    hd_message_release(NULL);
}

static void test_cost(void)
{
    hd_message *empty = make("t", NULL, "", 1);
    hd_message *full = make("topic", "ev", "0123456789", 2);
    CHECK_EQ_INT(hd_message_cost(empty), sizeof(hd_message) + 1);
    CHECK_EQ_INT(hd_message_cost(full) - hd_message_cost(empty), 4 + 2 + 10);
    hd_message_release(empty);
    hd_message_release(full);
}

static void test_envelope_without_event(void)
{
    hd_message *msg = make("orders", NULL, "hello", 1842);
    char *text = envelope(msg);
    CHECK_EQ_STR(text, "{\"type\":\"message\",\"topic\":\"orders\",\"id\":\"deadbeef-1842\","
                       "\"data\":\"hello\",\"time\":1764000000000}");
    free(text);
    hd_message_release(msg);
}

static void test_envelope_with_event(void)
{
    hd_message *msg = make("a/b", "created", "", 3);
    char *text = envelope(msg);
    CHECK_EQ_STR(text, "{\"type\":\"message\",\"topic\":\"a/b\",\"id\":\"deadbeef-3\","
                       "\"event\":\"created\",\"data\":\"\",\"time\":1764000000000}");
    free(text);
    hd_message_release(msg);
}

static void test_envelope_escapes(void)
{
    hd_message *msg = make("t", NULL, "q\"b\\n\nr\rt\t\x01/", 1);
    char *text = envelope(msg);
    CHECK_EQ_STR(text, "{\"type\":\"message\",\"topic\":\"t\",\"id\":\"deadbeef-1\","
                       "\"data\":\"q\\\"b\\\\n\\nr\\rt\\t\\u0001/\",\"time\":1764000000000}");
    free(text);
    hd_message_release(msg);
}

static void test_envelope_unicode_passthrough(void)
{
    const char *data = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe2\x80\xa8";
    hd_message *msg = make("t", NULL, data, 1);
    char *text = envelope(msg);
    char expected[256];
    snprintf(expected, sizeof(expected),
             "{\"type\":\"message\",\"topic\":\"t\",\"id\":\"deadbeef-1\",\"data\":\"%s\","
             "\"time\":1764000000000}",
             data);
    CHECK_EQ_STR(text, expected);
    free(text);
    hd_message_release(msg);
}

static void test_envelope_negative_time(void)
{
    hd_message *msg = hd_message_new("t", 1, NULL, 0, "", 0, 1, 1, -5);
    char *text = envelope(msg);
    CHECK(strstr(text, ",\"time\":-5}") != NULL);
    free(text);
    hd_message_release(msg);
}

static int encoder_calls;

static hd_buf *count_encoder(const hd_message *msg, void *ctx)
{
    CHECK(ctx == NULL);
    encoder_calls++;
    return hd_buf_copy(msg->data, msg->data_len);
}

static void test_encoded_is_cached(void)
{
    hd_message *msg = make("t", NULL, "payload", 1);
    encoder_calls = 0;
    hd_buf *a = hd_message_encoded(msg, HD_WIRE_SSE, count_encoder, NULL);
    hd_buf *b = hd_message_encoded(msg, HD_WIRE_SSE, count_encoder, NULL);
    CHECK(a == b);
    CHECK_EQ_INT(encoder_calls, 1);
    CHECK_EQ_MEM(a->data, a->len, "payload", 7);

    hd_buf *c = hd_message_encoded(msg, HD_WIRE_WS, count_encoder, NULL);
    CHECK(c != a);
    CHECK_EQ_INT(encoder_calls, 2);
    CHECK(msg->wire[HD_WIRE_ENVELOPE] == NULL);

    /* A retained encoding outlives the message. */
    hd_buf_retain(c);
    hd_message_release(msg);
    CHECK_EQ_INT(c->refs, 1);
    CHECK_EQ_MEM(c->data, c->len, "payload", 7);
    hd_buf_release(c);
}

int main(void)
{
    RUN_TEST(test_fields_are_copied);
    RUN_TEST(test_no_event_and_empty_data);
    RUN_TEST(test_id_format);
    RUN_TEST(test_retain_release);
    RUN_TEST(test_cost);
    RUN_TEST(test_envelope_without_event);
    RUN_TEST(test_envelope_with_event);
    RUN_TEST(test_envelope_escapes);
    RUN_TEST(test_envelope_unicode_passthrough);
    RUN_TEST(test_envelope_negative_time);
    RUN_TEST(test_encoded_is_cached);
    return test_summary();
}
