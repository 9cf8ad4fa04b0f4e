/*
 * Tests for src/net/conn.c without HTTP and without sockets: the server is
 * given a protocol of this file's own (hd_conn_protocol), which records what
 * it reads and hands the connection over at marker bytes, '|' to a wait
 * (as a long-poll does) and '>' to a stream (as a WebSocket handshake
 * does). Covered: input reaches the protocol; what comes behind a request
 * that started a wait is held, and handed back once the wait ends; what
 * comes behind one that started a stream goes to the stream, and the reader
 * is freed; the deadlines fire the protocol's callbacks; an ending
 * connection tells the protocol and no longer asks it about deadlines.
 */
#include <string.h>
#include <uv.h>

#include "herald/config.h"
#include "herald/settings.h"
#include "net/conn.h"
#include "net/server_internal.h"
#include "test.h"

/* ------------------------------------------------------------ the protocol */

typedef struct fake_reader {
    hd_conn_reader super;
    hd_strbuf got; /* what on_data consumed */
} fake_reader;

static struct {
    int reader_frees, read_timeouts, request_timeouts, endings;
} calls;

static hd_strbuf stream_got; /* what the stream's on_data received */

static fake_reader *reader_of(const hd_conn *conn)
{
    return hd_container_of(conn->reader, fake_reader, super);
}

static void session_on_close(hd_conn *conn, void *session)
{
    (void)conn, (void)session;
}

static void stream_on_data(hd_conn *conn, void *session, const char *bytes, size_t len)
{
    (void)conn, (void)session;
    hd_strbuf_append(&stream_got, bytes, len);
}

static const hd_stream_ops wait_ops = {.on_close = session_on_close,
                                       .transport = HD_TRANSPORT_POLL};
static const hd_stream_ops stream_ops = {
    .on_close = session_on_close, .on_data = stream_on_data, .transport = HD_TRANSPORT_WEBSOCKET};

static hd_conn_reader *fake_reader_new(hd_conn *conn)
{
    (void)conn;
    fake_reader *reader = calloc(1, sizeof(*reader));
    hd_strbuf_init(&reader->got);
    return &reader->super;
}

static void fake_reader_free(hd_conn *conn, hd_conn_reader *super)
{
    CHECK(conn->reader == NULL);
    fake_reader *reader = hd_container_of(super, fake_reader, super);
    hd_strbuf_free(&reader->got);
    free(reader);
    calls.reader_frees++;
}

/* Reads up to and including the first marker, which hands the connection over. */
static size_t fake_on_data(hd_conn *conn, const char *bytes, size_t len)
{
    size_t used = 0;
    while (used < len) {
        char c = bytes[used++];
        hd_strbuf_append(&reader_of(conn)->got, &c, 1);
        if (c == '|') {
            hd_conn_start_wait(conn, &wait_ops, NULL);
            break;
        }
        if (c == '>') {
            hd_conn_start_stream(conn, &stream_ops, NULL);
            break;
        }
    }
    return used;
}

static void fake_on_read_timeout(hd_conn *conn)
{
    (void)conn;
    calls.read_timeouts++;
}

static void fake_on_request_timeout(hd_conn *conn)
{
    (void)conn;
    calls.request_timeouts++;
}

static void fake_on_ending(hd_conn *conn)
{
    (void)conn;
    calls.endings++;
}

static bool fake_request_under_way(const hd_conn *conn)
{
    (void)conn;
    return false;
}

static size_t fake_refusal(const char *why, char *out, size_t cap)
{
    (void)why, (void)out, (void)cap;
    return 0;
}

static const hd_conn_protocol fake_protocol = {
    .reader_new = fake_reader_new,
    .reader_free = fake_reader_free,
    .on_data = fake_on_data,
    .on_read_timeout = fake_on_read_timeout,
    .on_request_timeout = fake_on_request_timeout,
    .on_ending = fake_on_ending,
    .request_under_way = fake_request_under_way,
    .refusal = fake_refusal,
};

/* ------------------------------------------------------------ fixture */

typedef struct fixture {
    uv_loop_t loop;
    hd_settings *settings;
    hd_server *server;
    hd_conn *conn;
} fixture;

static int context_marker;

static void open_fixture(fixture *f)
{
    memset(&calls, 0, sizeof(calls));
    hd_strbuf_init(&stream_got);
    uv_loop_init(&f->loop);
    hd_config config;
    hd_config_init(&config);
    char err[256];
    f->settings = hd_settings_new(&config, err, sizeof(err));
    /* Not started: no hub or engine is asked for anything. */
    f->server =
        hd_server_new(&f->loop, f->settings, NULL, NULL, NULL, &fake_protocol, &context_marker);
    f->conn = hd_conn_new(f->server);
}

static void feed(fixture *f, const char *text)
{
    hd_conn_feed(f->conn, text, strlen(text));
}

static void close_fixture(fixture *f)
{
    hd_conn_close(f->conn);
    hd_conn_finish_close(f->conn);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(calls.reader_frees, 1); /* once, whether a stream took over or not */
    hd_server_free(f->server);
    hd_settings_release(f->settings);
    uv_loop_close(&f->loop);
    hd_strbuf_free(&stream_got);
}

static void check_got(const hd_conn *conn, const char *expected)
{
    const hd_strbuf *got = &reader_of(conn)->got;
    CHECK_EQ_MEM(got->data, got->len, expected, strlen(expected));
}

/* ------------------------------------------------------------ tests */

static void test_input_reaches_the_protocol(void)
{
    fixture f;
    open_fixture(&f);
    CHECK(hd_conn_context(f.conn) == &context_marker);
    CHECK(hd_conn_reads_requests(f.conn));
    feed(&f, "abc");
    feed(&f, "def");
    check_got(f.conn, "abcdef");
    close_fixture(&f);
}

/* A long-poll: what arrives behind it is held, then read once the answer is queued. */
static void test_wait_holds_the_rest(void)
{
    fixture f;
    open_fixture(&f);
    feed(&f, "one|two");
    CHECK_EQ_INT(f.conn->state, HD_CONN_WAITING);
    CHECK(!hd_conn_reads_requests(f.conn));
    feed(&f, "three");
    check_got(f.conn, "one|");

    hd_conn_end_wait(f.conn);
    CHECK_EQ_INT(f.conn->state, HD_CONN_READING);
    check_got(f.conn, "one|"); /* not yet: the server's pass reads it, after the answer */
    CHECK(hd_list_linked(&f.conn->wake_node));
    hd_conn_resume_input(f.conn);
    check_got(f.conn, "one|twothree");
    close_fixture(&f);
}

/* Another wait inside the held input holds the rest again. */
static void test_wait_inside_held_input(void)
{
    fixture f;
    open_fixture(&f);
    feed(&f, "a|b|c");
    hd_conn_end_wait(f.conn);
    hd_conn_resume_input(f.conn);
    check_got(f.conn, "a|b|");
    CHECK_EQ_INT(f.conn->state, HD_CONN_WAITING);
    hd_conn_end_wait(f.conn);
    hd_conn_resume_input(f.conn);
    check_got(f.conn, "a|b|c");
    close_fixture(&f);
}

/* A stream (a WebSocket after its handshake): the rest is its, and the reader goes. */
static void test_stream_takes_the_rest(void)
{
    fixture f;
    open_fixture(&f);
    feed(&f, "hello>frame1");
    CHECK_EQ_INT(f.conn->state, HD_CONN_STREAMING);
    CHECK(f.conn->reader == NULL && f.conn->request == NULL);
    CHECK_EQ_INT(calls.reader_frees, 1);
    feed(&f, "frame2");
    CHECK_EQ_MEM(stream_got.data, stream_got.len, "frame1frame2", 12);
    close_fixture(&f); /* freed once, already: closing frees nothing more */
}

static void test_deadlines_go_to_the_protocol(void)
{
    fixture f;
    open_fixture(&f);
    hd_conn_start_request_deadline(f.conn);
    CHECK(hd_list_linked(&f.conn->reader->request_node));
    hd_conn_on_header_timeout(f.conn);
    hd_conn_on_request_timeout(f.conn);
    CHECK_EQ_INT(calls.read_timeouts, 1);
    CHECK_EQ_INT(calls.request_timeouts, 1);
    hd_conn_stop_request_deadline(f.conn);
    CHECK(!hd_list_linked(&f.conn->reader->request_node));

    /* Ending: the protocol is told, and a read deadline now closes without asking it. */
    hd_conn_start_request_deadline(f.conn);
    hd_conn_close_after_flush(f.conn);
    CHECK_EQ_INT(calls.endings, 1);
    CHECK(!hd_conn_reads_requests(f.conn));
    hd_conn_on_header_timeout(f.conn);
    CHECK_EQ_INT(calls.read_timeouts, 1);
    CHECK_EQ_INT(f.conn->state, HD_CONN_CLOSING);
    CHECK(!hd_list_linked(&f.conn->reader->request_node));
    close_fixture(&f);
}

int main(void)
{
    RUN_TEST(test_input_reaches_the_protocol);
    RUN_TEST(test_wait_holds_the_rest);
    RUN_TEST(test_wait_inside_held_input);
    RUN_TEST(test_stream_takes_the_rest);
    RUN_TEST(test_deadlines_go_to_the_protocol);
    return test_summary();
}
