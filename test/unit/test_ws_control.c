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
    check_error("{\"op\":\"subscribe\",\"topics\":[\"a\"],\"since\":5}", "invalid_json");
    check_error("{\"op\":\"publish\",\"topic\":\"a\"}", "invalid_json");
    check_error("{\"op\":\"publish\",\"topic\":\"a\",\"data\":1}", "invalid_json");
    check_error("{\"op\":\"publish\",\"topic\":\"\",\"data\":\"x\"}", "invalid_topic");
    check_error("{\"op\":\"publish\",\"topic\":\"a\",\"data\":\"x\",\"event\":\"a b\"}",
                "invalid_event");
    check_error("{\"op\":\"ping\",\"ref\":{\"a\":1}}", "invalid_ref");
    check_error("{\"op\":\"publish\",\"topic\":\"a\",\"data\":\"x\\u0000y\"}", "invalid_json");
}

static void test_append_ref(void)
{
    hd_ws_command command;
    parse("{\"op\":\"ping\",\"ref\":12}", &command);
    hd_strbuf sb;
    hd_strbuf_init(&sb);
    hd_ws_command_append_ref(&command, &sb);
    CHECK_EQ_MEM(sb.data, sb.len, "\"ref\":12,", 9);
    hd_strbuf_free(&sb);
    hd_ws_command_free(&command);
}

int main(void)
{
    RUN_TEST(test_subscribe);
    RUN_TEST(test_publish_and_ping);
    RUN_TEST(test_errors_keep_the_ref);
    RUN_TEST(test_bad_commands);
    RUN_TEST(test_append_ref);
    return test_summary();
}
