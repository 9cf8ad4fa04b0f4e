#include "test.h"
#include "transport/ws_control.h"

static int parse(const char *text, hd_ws_command *command)
{
    return hd_ws_command_parse(text, strlen(text), 4, command);
}

static void check_error(const char *text, const char *code)
{
    hd_ws_command command;
    CHECK_EQ_INT(parse(text, &command), -1);
    CHECK(command.error != NULL && strcmp(command.error, code) == 0);
    hd_ws_command_free(&command);
}

static void test_subscribe(void)
{
    hd_ws_command command;
    CHECK_EQ_INT(
        parse("{\"op\":\"subscribe\",\"topics\":[\"a\",\"b/c\"],\"since\":\"x-1\",\"ref\":7}",
              &command),
        0);
    CHECK_EQ_INT(command.op, HD_WS_OP_SUBSCRIBE);
    CHECK_EQ_INT(command.topic_count, 2);
    CHECK_EQ_STR(command.topics[1], "b/c");
    CHECK_EQ_STR(command.since, "x-1");
    CHECK_EQ_STR(command.ref, "7");
    hd_ws_command_free(&command);
}

static void test_publish_and_ping(void)
{
    hd_ws_command command;
    CHECK_EQ_INT(parse("{\"op\":\"publish\",\"topic\":\"t\",\"data\":\"h\\u00e9\",\"event\":\"e\","
                       "\"ref\":\"abc\"}",
                       &command),
                 0);
    CHECK_EQ_INT(command.op, HD_WS_OP_PUBLISH);
    CHECK_EQ_STR(command.data, "h\xc3\xa9");
    CHECK_EQ_INT(command.data_len, 3);
    CHECK_EQ_STR(command.event, "e");
    CHECK_EQ_STR(command.ref, "\"abc\"");
    hd_ws_command_free(&command);

    CHECK_EQ_INT(parse("{\"op\":\"publish\",\"topic\":\"t\",\"data\":\"x\","
                       "\"idempotency_key\":\"order 17\"}",
                       &command),
                 0);
    CHECK_EQ_STR(command.idempotency_key, "order 17");
    hd_ws_command_free(&command);

    CHECK_EQ_INT(parse("{\"op\":\"ping\"}", &command), 0);
    CHECK(command.ref == NULL);
    hd_ws_command_free(&command);
}

static void test_errors_keep_the_ref(void)
{
    hd_ws_command command;
    CHECK_EQ_INT(parse("{\"op\":\"dance\",\"ref\":5}", &command), -1);
    CHECK_EQ_STR(command.error, "invalid_op");
    CHECK_EQ_STR(command.ref, "5");
    hd_ws_command_free(&command);
}

static void test_bad_commands(void)
{
    check_error("", "invalid_json");
    check_error("[1]", "invalid_json");
    check_error("{\"op\":", "invalid_json");
    check_error("{\"op\":1}", "invalid_op");
    check_error("{\"op\":\"subscribe\"}", "invalid_json");
    check_error("{\"op\":\"subscribe\",\"topics\":[]}", "invalid_json");
    check_error("{\"op\":\"subscribe\",\"topics\":[\"a b\"]}", "invalid_topic");
    check_error("{\"op\":\"subscribe\",\"topics\":[3]}", "invalid_topic");
    check_error("{\"op\":\"subscribe\",\"topics\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}",
                "too_many_topics");
    /* since that is not a string is a cursor herald never issued, as on every transport. */
    check_error("{\"op\":\"subscribe\",\"topics\":[\"a\"],\"since\":5}", "invalid_cursor");
    check_error("{\"op\":\"subscribe\",\"topics\":[\"a\"],\"since\":null}", "invalid_cursor");
    check_error("{\"op\":\"publish\",\"topic\":\"a\"}", "invalid_json");
    check_error("{\"op\":\"publish\",\"topic\":\"a\",\"data\":1}", "invalid_json");
    check_error("{\"op\":\"publish\",\"topic\":\"\",\"data\":\"x\"}", "invalid_topic");
    check_error("{\"op\":\"publish\",\"topic\":\"a\",\"data\":\"x\",\"event\":\"a b\"}",
                "invalid_event");
    check_error("{\"op\":\"publish\",\"topic\":\"a\",\"data\":\"x\",\"idempotency_key\":\"\"}",
                "invalid_idempotency_key");
    check_error("{\"op\":\"publish\",\"topic\":\"a\",\"data\":\"x\",\"idempotency_key\":\"a\\tb\"}",
                "invalid_idempotency_key");
    check_error("{\"op\":\"publish\",\"topic\":\"a\",\"data\":\"x\",\"idempotency_key\":7}",
                "invalid_json");
    check_error("{\"op\":\"ping\",\"ref\":{\"a\":1}}", "invalid_ref");
    check_error("{\"op\":\"publish\",\"topic\":\"a\",\"data\":\"x\\u0000y\"}", "invalid_json");
}

/* The ref a ping with this ref gets echoed, or NULL when it is refused (invalid_ref). */
static char *echoed_ref(const char *ref)
{
    char text[256];
    snprintf(text, sizeof(text), "{\"op\":\"ping\",\"ref\":%s}", ref);
    hd_ws_command command;
    int rc = parse(text, &command);
    char *echoed = NULL;
    if (rc == 0) {
        CHECK(command.ref != NULL);
        echoed = strdup(command.ref);
    } else {
        CHECK_EQ_STR(command.error, "invalid_ref");
        CHECK(command.ref == NULL);
    }
    hd_ws_command_free(&command);
    return echoed;
}

static void check_ref(const char *ref, const char *echoed)
{
    char *got = echoed_ref(ref);
    if (echoed == NULL) {
        if (got != NULL)
            fprintf(stderr, "ref %s was echoed as %s\n", ref, got);
        CHECK(got == NULL);
    } else {
        CHECK(got != NULL && strcmp(got, echoed) == 0);
    }
    free(got);
}

static void test_refs(void)
{
    /* Strings (at most 128 bytes) are echoed as given, re-escaped. */
    check_ref("\"abc\"", "\"abc\"");
    check_ref("\"\"", "\"\"");
    check_ref("\"a\\\"b\"", "\"a\\\"b\"");
    char long_ref[160];
    memset(long_ref, 'x', sizeof(long_ref));
    long_ref[0] = '"';
    long_ref[129] = '"';
    long_ref[130] = '\0';
    check_ref(long_ref, long_ref);
    long_ref[129] = 'x';
    long_ref[130] = '"';
    long_ref[131] = '\0';
    check_ref(long_ref, NULL);

    /* Integers JSON carries exactly everywhere: |n| <= 2^53 - 1. */
    check_ref("0", "0");
    check_ref("-1", "-1");
    check_ref("42", "42");
    check_ref("9007199254740991", "9007199254740991");
    check_ref("-9007199254740991", "-9007199254740991");
    /* An integral value however spelled: echoed in plain decimal. */
    check_ref("1e3", "1000");
    check_ref("2.0", "2");

    /* Anything else would come back changed (or as null): refused. */
    check_ref("1.5", NULL);
    check_ref("-0.25", NULL);
    check_ref("9007199254740992", NULL);
    check_ref("9007199254740993", NULL);
    check_ref("-9007199254740992", NULL);
    check_ref("1e300", NULL);
    check_ref("1e400", NULL);
    check_ref("-1e400", NULL);
    check_ref("{\"a\":1}", NULL);
    check_ref("[1]", NULL);
    check_ref("[]", NULL);
    check_ref("true", NULL);
    check_ref("false", NULL);
    check_ref("null", NULL);

    /* The ref is checked first, whatever else is wrong with the command. */
    check_error("{\"op\":\"dance\",\"ref\":1.5}", "invalid_ref");
}

static void test_append_ref(void)
{
    hd_ws_command command;
    parse("{\"op\":\"ping\",\"ref\":12}", &command);
    hd_strbuf sb;
    hd_strbuf_init(&sb);
    hd_ws_append_ref(command.ref, &sb);
    CHECK_EQ_MEM(sb.data, sb.len, "\"ref\":12,", 9);
    /* No ref, nothing. */
    hd_ws_append_ref(NULL, &sb);
    CHECK_EQ_INT(sb.len, 9);
    hd_strbuf_free(&sb);
    hd_ws_command_free(&command);
}

int main(void)
{
    RUN_TEST(test_subscribe);
    RUN_TEST(test_publish_and_ping);
    RUN_TEST(test_errors_keep_the_ref);
    RUN_TEST(test_bad_commands);
    RUN_TEST(test_refs);
    RUN_TEST(test_append_ref);
    return test_summary();
}
