#include "http/request.h"
#include "test.h"

static void test_percent_decode(void)
{
    char out[32];
    CHECK_EQ_INT(hd_percent_decode("a%2Fb", 5, out, false), 3);
    CHECK_EQ_MEM(out, 3, "a/b", 3);
    CHECK_EQ_INT(hd_percent_decode("a+b", 3, out, true), 3);
    CHECK_EQ_MEM(out, 3, "a b", 3);
    CHECK_EQ_INT(hd_percent_decode("a+b", 3, out, false), 3);
    CHECK_EQ_MEM(out, 3, "a+b", 3);
    CHECK_EQ_INT(hd_percent_decode("%e2%82%AC", 9, out, false), 3);
    CHECK_EQ_MEM(out, 3, "\xe2\x82\xac", 3);
    CHECK_EQ_INT(hd_percent_decode("%", 1, out, false), -1);
    CHECK_EQ_INT(hd_percent_decode("%4", 2, out, false), -1);
    CHECK_EQ_INT(hd_percent_decode("%zz", 3, out, false), -1);
}

static void test_query_iteration(void)
{
    hd_request req;
    hd_request_init(&req);
    const char *target = "/events?topic=a&&topic=b%2Fc&x&last_event_id=1-2&k=v+w";
    hd_strbuf_append_str(&req.target, target);
    hd_request_split_target(&req);
    CHECK_EQ_MEM(req.path, req.path_len, "/events", 7);

    hd_query_iter it;
    hd_query_param p;
    hd_query_iter_init(&it, &req);
    const char *expected[][2] = {
        {"topic", "a"}, {"topic", "b/c"}, {"x", ""}, {"last_event_id", "1-2"}, {"k", "v w"}};
    size_t n = 0;
    while (hd_query_next(&it, &p)) {
        CHECK(n < 5);
        if (n >= 5)
            break;
        CHECK_EQ_STR(p.key, expected[n][0]);
        CHECK_EQ_MEM(p.value, p.value_len, expected[n][1], strlen(expected[n][1]));
        n++;
    }
    CHECK_EQ_INT(n, 5);
    hd_query_iter_free(&it);
    hd_request_free(&req);
}

static void test_headers_and_tokens(void)
{
    hd_request req;
    hd_request_init(&req);
    hd_strbuf_append(&req.headers, "upgrade\0websocket\0connection\0keep-alive, Upgrade\0", 49);
    size_t len;
    const char *value = hd_request_header(&req, "connection", &len);
    CHECK(value != NULL);
    CHECK(hd_header_has_token(value, len, "upgrade"));
    CHECK(hd_header_has_token(value, len, "keep-alive"));
    CHECK(!hd_header_has_token(value, len, "close"));
    CHECK(!hd_header_has_token("upgraded", 8, "upgrade"));
    CHECK(hd_request_header(&req, "origin", &len) == NULL);
    hd_request_free(&req);
}

static void test_repeated_headers(void)
{
    hd_request req;
    hd_request_init(&req);
    hd_strbuf_append(&req.headers, "host\0a\0transfer-encoding\0gzip\0host\0b\0", 37);
    size_t len;
    const char *first = hd_request_header(&req, "host", &len);
    CHECK_EQ_MEM(first, len, "a", 1);
    const char *second = hd_request_header_next(&req, "host", first, &len);
    CHECK_EQ_MEM(second, len, "b", 1);
    CHECK(hd_request_header_next(&req, "host", second, &len) == NULL);
    const char *te = hd_request_header(&req, "transfer-encoding", NULL);
    CHECK(te != NULL);
    CHECK(hd_request_header_next(&req, "transfer-encoding", te, NULL) == NULL);

    CHECK(hd_header_only_token("chunked", 7, "chunked"));
    CHECK(hd_header_only_token(" Chunked ,, ", 12, "chunked"));
    CHECK(hd_header_only_token("", 0, "chunked"));
    CHECK(!hd_header_only_token("gzip, chunked", 13, "chunked"));
    CHECK(!hd_header_only_token("chunked;x=1", 11, "chunked"));
    hd_request_free(&req);
}

static void check_split(const char *target, const char *path, const char *query)
{
    hd_request req;
    hd_request_init(&req);
    hd_strbuf_append_str(&req.target, target);
    hd_request_split_target(&req);
    CHECK_EQ_MEM(req.path, req.path_len, path, strlen(path));
    CHECK_EQ_MEM(req.query, req.query_len, query, strlen(query));
    hd_request_free(&req);
}

static void test_target_forms(void)
{
    check_split("/events?topic=a", "/events", "topic=a");
    check_split("/healthz", "/healthz", "");
    check_split("http://herald.test/healthz", "/healthz", "");
    check_split("HTTPS://h:8443/poll?topic=a&since=x", "/poll", "topic=a&since=x");
    check_split("http://user@h/topics/a?b", "/topics/a", "b");
    check_split("http://h", "/", "");
    check_split("http://h?x=1", "/", "x=1");
    /* Other schemes are not absolute-form herald serves: they route nowhere. */
    check_split("ftp://h/healthz", "ftp://h/healthz", "");
    check_split("http:/healthz", "http:/healthz", "");
    check_split("*", "*", "");
}

int main(void)
{
    RUN_TEST(test_percent_decode);
    RUN_TEST(test_query_iteration);
    RUN_TEST(test_headers_and_tokens);
    RUN_TEST(test_repeated_headers);
    RUN_TEST(test_target_forms);
    return test_summary();
}
