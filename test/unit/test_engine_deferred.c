/*
 * The transports against an engine that answers later, as one that stores
 * elsewhere (Redis) will: publishes are held until the test completes them,
 * and reads are taken when asked but answered when the test says, so that
 * messages published meanwhile are newer than the answer's cut. The paths
 * the memory engine never takes run here. The
 * real connection state machine is fed bytes without a socket, as the fuzz
 * driver does; what a connection queued is measured by its byte count, and
 * what the engine was asked (and told to cancel) by the engine itself. Run
 * it under the sanitizer build too: a callback after its caller went, or a
 * ref or request left behind, is what it is for.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "engine/memory.h"
#include "herald/alloc.h"
#include "herald/config.h"
#include "herald/log.h"
#include "herald/settings.h"
#include "http/http1.h"
#include "net/conn.h"
#include "net/server_internal.h"
#include "transport/context.h"
#include "test.h"

#define EPOCH 0x0badf00d
#define MAX_PENDING 2048

/* ---------------------------------------------------------------- the deferred engine */

/* One call held back, with copies of what it was given (the caller's may be gone). */
typedef struct pending {
    bool is_read;
    bool cancelled;
    bool done;
    hd_publish_item items[4];
    size_t count;
    char *strings[12];
    size_t string_count;
    hd_history_query query;
    const char *topics[4];
    size_t topic_lens[4];
    char cursor_text[HD_ID_MAX];
    hd_history_result result; /* read when asked; its messages retained until answered */
    hd_gap gaps[4];
    hd_message **messages;
    hd_engine_publish_cb publish_done;
    hd_engine_read_cb read_done;
    hd_engine_describe_cb describe_done; /* the topic in items[0] */
    hd_engine_list_cb list_done;
    hd_topic_list_query list;
    void *ctx;
} pending;

typedef struct deferred {
    hd_engine base;
    hd_engine *memory; /* does the work when the test says so */
    pending *calls[MAX_PENDING];
    size_t count;
    size_t cancels;
} deferred;

static char *keep(pending *p, const char *text, size_t len)
{
    char *copy = hd_strndup(text != NULL ? text : "", len);
    p->strings[p->string_count++] = copy;
    return copy;
}

static pending *hold(deferred *d, void *ctx)
{
    pending *p = hd_calloc(1, sizeof(*p));
    p->ctx = ctx;
    CHECK(d->count < MAX_PENDING);
    d->calls[d->count++] = p;
    return p;
}

static hd_engine_request *deferred_publish(hd_engine *engine, const hd_publish_item *items,
                                           size_t count, int64_t now_ms, hd_engine_publish_cb done,
                                           void *ctx)
{
    (void)now_ms;
    pending *p = hold((deferred *)engine, ctx);
    p->publish_done = done;
    p->count = count;
    for (size_t i = 0; i < count && i < 4; i++) {
        p->items[i] = (hd_publish_item){
            .topic = keep(p, items[i].topic, items[i].topic_len),
            .topic_len = items[i].topic_len,
            .event = items[i].event ? keep(p, items[i].event, items[i].event_len) : NULL,
            .event_len = items[i].event_len,
            .data = keep(p, items[i].data, items[i].data_len),
            .data_len = items[i].data_len,
        };
    }
    return (hd_engine_request *)p;
}

static void take_result(void *ctx, const hd_history_result *result)
{
    pending *p = ctx;
    p->result = *result;
    for (size_t i = 0; i < result->gap_count && i < 4; i++)
        p->gaps[i] = result->gaps[i]; /* they name p's copies of the topics and the cursor */
    p->result.gaps = p->gaps;
    p->messages = hd_calloc(result->count + 1, sizeof(*p->messages));
    for (size_t i = 0; i < result->count; i++)
        p->messages[i] = hd_message_retain(result->messages[i]);
    p->result.messages = p->messages;
}

static hd_engine_request *deferred_read(hd_engine *engine, const hd_history_query *query,
                                        hd_engine_read_cb done, void *ctx)
{
    deferred *d = (deferred *)engine;
    pending *p = hold(d, ctx);
    p->is_read = true;
    p->read_done = done;
    p->query = *query;
    for (size_t i = 0; i < query->topic_count && i < 4; i++) {
        p->topics[i] = keep(p, query->topics[i], query->topic_lens[i]);
        p->topic_lens[i] = query->topic_lens[i];
    }
    p->query.topics = p->topics;
    p->query.topic_lens = p->topic_lens;
    snprintf(p->cursor_text, sizeof(p->cursor_text), "%.*s", (int)query->cursor.text_len,
             query->cursor.text ? query->cursor.text : "");
    p->query.cursor.text = p->cursor_text;
    hd_engine_read(d->memory, &p->query, take_result, p);
    return (hd_engine_request *)p;
}

static hd_engine_request *deferred_describe(hd_engine *engine, const char *topic, size_t topic_len,
                                            hd_engine_describe_cb done, void *ctx)
{
    pending *p = hold((deferred *)engine, ctx);
    p->describe_done = done;
    p->items[0].topic = keep(p, topic, topic_len);
    p->items[0].topic_len = topic_len;
    return (hd_engine_request *)p;
}

static hd_engine_request *deferred_list(hd_engine *engine, const hd_topic_list_query *query,
                                        hd_engine_list_cb done, void *ctx)
{
    pending *p = hold((deferred *)engine, ctx);
    p->list_done = done;
    p->list = *query;
    p->list.prefix = keep(p, query->prefix, query->prefix_len);
    p->list.after = keep(p, query->after, query->after_len);
    return (hd_engine_request *)p;
}

static void deferred_cancel(hd_engine *engine, hd_engine_request *request)
{
    deferred *d = (deferred *)engine;
    pending *p = (pending *)request;
    CHECK(!p->done && !p->cancelled);
    p->cancelled = true;
    d->cancels++;
}

static hd_engine_state deferred_state(const hd_engine *engine)
{
    (void)engine;
    return HD_ENGINE_UP;
}

static void deferred_free(hd_engine *engine)
{
    deferred *d = (deferred *)engine;
    for (size_t i = 0; i < d->count; i++) {
        pending *p = d->calls[i];
        for (size_t s = 0; s < p->string_count; s++)
            free(p->strings[s]);
        for (size_t m = 0; p->messages != NULL && m < p->result.count; m++)
            hd_message_release(p->messages[m]);
        free(p->messages);
        free(p);
    }
    hd_engine_free(d->memory);
    free(d);
}

static const hd_engine_ops deferred_ops = {
    .name = "deferred",
    .publish = deferred_publish,
    .read = deferred_read,
    .describe = deferred_describe,
    .list = deferred_list,
    .cancel = deferred_cancel,
    .state = deferred_state,
    .free = deferred_free,
};

/* Calls not yet answered nor cancelled. */
static size_t outstanding(const deferred *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->count; i++)
        n += !d->calls[i]->done && !d->calls[i]->cancelled;
    return n;
}

/* Answers the calls held so far, oldest first (callbacks may make new ones: left for later). */
static void complete(deferred *d)
{
    size_t count = d->count;
    for (size_t i = 0; i < count; i++) {
        pending *p = d->calls[i];
        if (p->done || p->cancelled)
            continue;
        p->done = true;
        if (p->is_read)
            p->read_done(p->ctx, &p->result);
        else if (p->describe_done != NULL)
            hd_engine_describe(d->memory, p->items[0].topic, p->items[0].topic_len,
                               p->describe_done, p->ctx);
        else if (p->list_done != NULL)
            hd_engine_list(d->memory, &p->list, p->list_done, p->ctx);
        else
            hd_engine_publish(d->memory, p->items, p->count, 0, p->publish_done, p->ctx);
    }
}

/* Answers the call made n-th (from 0), alone. */
static void complete_one(deferred *d, size_t n)
{
    pending *p = d->calls[n];
    CHECK(!p->done && !p->cancelled && !p->is_read);
    p->done = true;
    hd_engine_publish(d->memory, p->items, p->count, 0, p->publish_done, p->ctx);
}

/* ---------------------------------------------------------------- a server without sockets */

typedef struct world {
    uv_loop_t loop;
    hd_hub *hub;
    deferred *engine;
    hd_settings *settings;
    void *context; /* the transports' per-loop context, as main.c wires it */
    hd_server *server;
} world;

/* config_tweak: changes the defaults, or NULL. */
static void world_init_with(world *w, void (*config_tweak)(hd_config *config))
{
    hd_log_set_level(HD_LOG_ERROR);
    uv_loop_init(&w->loop);
    hd_hub_options options = {
        .history_max_messages = 100, .history_max_bytes = 1 << 20, .epoch = EPOCH};
    w->hub = hd_hub_new(&options);
    w->engine = hd_calloc(1, sizeof(*w->engine));
    hd_engine_init(&w->engine->base, &deferred_ops, w->hub);
    w->engine->memory = hd_engine_memory_new(w->hub);
    hd_config config;
    hd_config_init(&config);
    if (config_tweak != NULL)
        config_tweak(&config);
    char err[256];
    w->settings = hd_settings_new(&config, err, sizeof(err));
    hd_config_free(&config);
    w->context = hd_transport_context_new();
    w->server = hd_server_new(&w->loop, w->settings, w->hub, &w->engine->base, NULL,
                              &hd_http1_protocol, w->context);
}

static void world_init(world *w)
{
    world_init_with(w, NULL);
}

static void world_free(world *w)
{
    uv_run(&w->loop, UV_RUN_DEFAULT); /* the connections' and timers' close callbacks */
    hd_server_free(w->server);
    hd_transport_context_free(w->context);
    hd_settings_release(w->settings);
    hd_engine_free(&w->engine->base);
    hd_hub_free(w->hub);
    CHECK_EQ_INT(uv_loop_close(&w->loop), 0);
}

static hd_conn *connect_and_send(world *w, const char *request)
{
    hd_conn *conn = hd_conn_new(w->server);
    hd_conn_feed(conn, request, strlen(request));
    return conn;
}

static void disconnect(hd_conn *conn)
{
    hd_conn_close(conn);
    hd_conn_finish_close(conn);
}

static void publish_direct(world *w, const char *topic, const char *data)
{
    hd_publish_item item = {
        .topic = topic, .topic_len = strlen(topic), .data = data, .data_len = strlen(data)};
    CHECK_EQ_INT(hd_hub_publish_batch(w->hub, &item, 1, 0, NULL, NULL, NULL, NULL), HD_HUB_OK);
}

static size_t history_of(world *w, const char *topic)
{
    hd_topic_info info;
    return hd_hub_topic_info(w->hub, topic, strlen(topic), &info) ? info.history_messages : 0;
}

static size_t subscribers_of(world *w, const char *topic)
{
    hd_topic_info info;
    return hd_hub_topic_info(w->hub, topic, strlen(topic), &info) ? info.subscribers : 0;
}

/* ---------------------------------------------------------------- HTTP publish */

static void test_http_publish_answered_from_the_callback(void)
{
    world w;
    world_init(&w);
    hd_conn *conn = connect_and_send(&w, "POST /topics/news HTTP/1.1\r\nHost: x\r\n"
                                         "Content-Length: 5\r\n\r\nhello");
    CHECK_EQ_INT(outstanding(w.engine), 1);
    CHECK_EQ_INT(hd_conn_queued_bytes(conn), 0); /* held: nothing answered yet */
    CHECK_EQ_INT(history_of(&w, "news"), 0);

    complete(w.engine);
    CHECK_EQ_INT(history_of(&w, "news"), 1);
    CHECK(hd_conn_queued_bytes(conn) > 0); /* the 201 */

    /* A batch too. */
    uint64_t before = hd_conn_queued_bytes(conn);
    const char *batch = "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        "Content-Length: 54\r\n\r\n"
                        "[{\"topic\":\"news\",\"data\":\"a\"},{\"topic\":\"x\",\"data\":\"b\"}]";
    hd_conn *second = connect_and_send(&w, batch);
    CHECK_EQ_INT(outstanding(w.engine), 1);
    CHECK_EQ_INT(hd_conn_queued_bytes(second), 0);
    complete(w.engine);
    CHECK_EQ_INT(history_of(&w, "news"), 2);
    CHECK(hd_conn_queued_bytes(second) > 0);
    CHECK_EQ_INT(hd_conn_queued_bytes(conn), before);

    disconnect(conn);
    disconnect(second);
    world_free(&w);
}

static void test_http_publish_cancelled_on_close(void)
{
    world w;
    world_init(&w);
    hd_conn *conn = connect_and_send(&w, "POST /topics/news HTTP/1.1\r\nHost: x\r\n"
                                         "Content-Length: 5\r\n\r\nhello");
    CHECK_EQ_INT(outstanding(w.engine), 1);
    disconnect(conn);
    CHECK_EQ_INT(w.engine->cancels, 1);
    CHECK_EQ_INT(outstanding(w.engine), 0);
    complete(w.engine); /* nothing left to answer: the callback never runs */
    CHECK_EQ_INT(history_of(&w, "news"), 0);
    world_free(&w);
}

/* What the connection queued, as one string (the caller frees it with hd_strbuf_free). */
static hd_strbuf queued_text(const hd_conn *conn)
{
    hd_strbuf text;
    hd_strbuf_init(&text);
    const hd_outq *q = &conn->outq;
    for (size_t i = 0; i < q->count; i++) {
        const hd_buf *buf = q->ring[(q->head + i) & (q->cap - 1)];
        hd_strbuf_append(&text, buf->data, buf->len);
    }
    hd_strbuf_append(&text, "", 1);
    return text;
}

/* The status codes and topics of the answers queued, in order ("201 a,200,201 b"). */
static void check_answers(const hd_conn *conn, const char *expected)
{
    hd_strbuf queued = queued_text(conn);
    const char *text = queued.data;
    hd_strbuf got;
    hd_strbuf_init(&got);
    for (const char *p = strstr(text, "HTTP/1.1 "); p != NULL; p = strstr(p + 1, "HTTP/1.1 ")) {
        if (got.len > 0)
            hd_strbuf_append(&got, ",", 1);
        hd_strbuf_append(&got, p + 9, 3);
        const char *next = strstr(p + 1, "HTTP/1.1 ");
        const char *topic = strstr(p, "\"topic\":\"");
        if (topic != NULL && (next == NULL || topic < next)) {
            topic += 9;
            hd_strbuf_append(&got, " ", 1);
            hd_strbuf_append(&got, topic, (size_t)(strchr(topic, '"') - topic));
        }
    }
    hd_strbuf_append(&got, "", 1);
    if (strcmp(got.data, expected) != 0)
        fprintf(stderr, "answers: %s, expected %s\n", got.data, expected);
    CHECK(strcmp(got.data, expected) == 0);
    hd_strbuf_free(&got);
    hd_strbuf_free(&queued);
}

#define PUBLISH_TO(topic) "POST /topics/" topic " HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"

static void test_http_pipelined_publishes_answered_in_order(void)
{
    world w;
    world_init(&w);
    /* All three reach the engine; the health check waits for their answers, the fourth behind it.
     */
    hd_conn *conn =
        connect_and_send(&w, PUBLISH_TO("a") PUBLISH_TO("b") PUBLISH_TO(
                                 "c") "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" PUBLISH_TO("d"));
    CHECK_EQ_INT(outstanding(w.engine), 3);
    complete_one(w.engine, 2);
    CHECK_EQ_INT(hd_conn_queued_bytes(conn), 0); /* c waits for a and b */
    complete_one(w.engine, 0);
    check_answers(conn, "201 a");
    hd_conn_resume_input(conn); /* b is still owed: the health check waits on */
    check_answers(conn, "201 a");
    complete_one(w.engine, 1);
    check_answers(conn, "201 a,201 b,201 c");
    CHECK(hd_list_linked(&conn->wake_node)); /* read on in the server's pass */
    hd_conn_resume_input(conn);
    check_answers(conn, "201 a,201 b,201 c,200");
    CHECK_EQ_INT(outstanding(w.engine), 1);
    /* An error behind an owed answer waits for it too. */
    hd_conn_feed(conn, PUBLISH_TO("x?event=no%20space"), strlen(PUBLISH_TO("x?event=no%20space")));
    check_answers(conn, "201 a,201 b,201 c,200");
    complete(w.engine);
    check_answers(conn, "201 a,201 b,201 c,200,201 d,400");
    disconnect(conn);
    CHECK_EQ_INT(w.engine->cancels, 0);
    world_free(&w);
}

static void test_http_pipelined_publishes_bounded(void)
{
    world w;
    world_init(&w);
    hd_strbuf requests;
    hd_strbuf_init(&requests);
    for (int i = 0; i < HD_HTTP_DEFERRED_MAX + 6; i++)
        hd_strbuf_append_str(&requests, PUBLISH_TO("t"));
    hd_conn *conn = hd_conn_new(w.server);
    hd_conn_feed(conn, requests.data, requests.len);
    CHECK_EQ_INT(outstanding(w.engine), HD_HTTP_DEFERRED_MAX); /* the rest is held */
    CHECK(conn->reader->held_input.len > 0);
    complete(w.engine);
    hd_conn_resume_input(conn);
    CHECK_EQ_INT(outstanding(w.engine), 6);
    /* A connection that goes cancels what it is owed. */
    disconnect(conn);
    CHECK_EQ_INT(w.engine->cancels, 6);
    CHECK_EQ_INT(history_of(&w, "t"), HD_HTTP_DEFERRED_MAX);
    hd_strbuf_free(&requests);
    world_free(&w);
}

/* ---------------------------------------------------------------- socketpair probes */

/* A connection served over one end of a socketpair; *peer is the client's end (non-blocking). */
static hd_conn *serve_pair(world *w, int *peer)
{
    int fds[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    hd_conn *conn = hd_conn_new(w->server);
    CHECK_EQ_INT(uv_tcp_open(&conn->tcp, fds[0]), 0);
    hd_conn_serve(conn);
    CHECK_EQ_INT(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
    *peer = fds[1];
    return conn;
}

/* Writes from *at on (wrapping around) until the socket takes no more. */
static void write_until_full(int fd, const hd_strbuf *text, size_t *at)
{
    for (;;) {
        ssize_t n = write(fd, text->data + *at, text->len - *at);
        if (n < 0) {
            CHECK(errno == EAGAIN);
            return;
        }
        *at = (*at + (size_t)n) % text->len;
    }
}

/* Reads what the server wrote; returns it (the caller frees it with hd_strbuf_free). */
static hd_strbuf read_available(int fd)
{
    hd_strbuf got;
    hd_strbuf_init(&got);
    char chunk[65536];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof(chunk))) > 0)
        hd_strbuf_append(&got, chunk, (size_t)n);
    hd_strbuf_append(&got, "", 1);
    return got;
}

/* n publishes to t, pipelined (the caller frees them with hd_strbuf_free). */
static hd_strbuf publishes(int n)
{
    hd_strbuf requests;
    hd_strbuf_init(&requests);
    for (int i = 0; i < n; i++)
        hd_strbuf_append_str(&requests, PUBLISH_TO("t"));
    return requests;
}

/* The 201 answers the server wrote to the client's end since the last call. */
static size_t created_read(int peer)
{
    hd_strbuf got = read_available(peer);
    size_t created = 0;
    for (const char *p = strstr(got.data, "HTTP/1.1 201"); p != NULL;
         p = strstr(p + 1, "HTTP/1.1 201"))
        created++;
    hd_strbuf_free(&got);
    return created;
}

/* Runs the loop until no callback is due (reads, writes), without blocking. */
static void run_briefly(world *w)
{
    for (int i = 0; i < 4; i++)
        uv_run(&w->loop, UV_RUN_NOWAIT);
}

/*
 * A client that pipelines without end while it reads its answers: each
 * answer written must not let the connection read (and hold) one buffer
 * more while it still waits for deferred answers.
 */
static void test_http_input_held_behind_answers_bounded(void)
{
    world w;
    world_init(&w);
    int peer;
    hd_conn *conn = serve_pair(&w, &peer);
    hd_strbuf requests = publishes(4000);
    size_t at = 0;
    uint64_t bound = hd_conn_config(conn)->limits.max_header_bytes + HD_READ_BUFFER_SIZE;
    size_t answered = 0;
    for (int cycle = 0; cycle < 20; cycle++) {
        write_until_full(peer, &requests, &at);
        run_briefly(&w);
        CHECK(conn->reader->held_input.len < bound);
        CHECK_EQ_INT(outstanding(w.engine), HD_HTTP_DEFERRED_MAX);
        complete(w.engine);
        hd_conn_flush(conn); /* the answers go: reading must not start again */
        run_briefly(&w);
        CHECK(conn->reader->held_input.len < bound);
        answered += created_read(peer);
        hd_conn_resume_input(conn); /* the next requests, from what is held */
        CHECK(conn->reader->held_input.len < bound);
    }
    CHECK_EQ_INT(answered, 20 * HD_HTTP_DEFERRED_MAX);
    disconnect(conn);
    close(peer);
    hd_strbuf_free(&requests);
    world_free(&w);
}

/* A half-close with answers owed: they still go, in order, and then the connection ends. */
static void test_http_half_close_answers_what_was_read(void)
{
    world w;
    world_init(&w);
    int peer;
    hd_conn *conn = serve_pair(&w, &peer);
    hd_strbuf requests = publishes(50);
    CHECK_EQ_INT(write(peer, requests.data, requests.len), requests.len);
    CHECK_EQ_INT(shutdown(peer, SHUT_WR), 0);
    run_briefly(&w);
    CHECK_EQ_INT(outstanding(w.engine), 50);
    CHECK(conn->state == HD_CONN_READING); /* EOF read, but answers are owed */
    CHECK_EQ_INT(w.engine->cancels, 0);
    complete(w.engine);
    hd_conn_flush(conn);
    run_briefly(&w); /* the shutdown's callback: nothing to linger for */
    CHECK(conn->state == HD_CONN_CLOSING);
    hd_conn_finish_close(conn);
    CHECK_EQ_INT(created_read(peer), 50);
    CHECK_EQ_INT(history_of(&w, "t"), 50);
    hd_strbuf_free(&requests);
    close(peer);
    world_free(&w);
}

/* ---------------------------------------------------------------- bounds behind owed answers */

static void small_requests(hd_config *config)
{
    config->limits.max_request_bytes = 1000;
}

#define BODY_20 "01234567890123456789"
#define BODY_100 BODY_20 BODY_20 BODY_20 BODY_20 BODY_20
#define BODY_200 BODY_100 BODY_100
#define PUBLISH_200 "POST /topics/t HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n" BODY_200

/* The bytes of the publishes outstanding stay within limits.max_request_bytes: checked before. */
static void test_http_outstanding_bytes_bounded_before(void)
{
    world w;
    world_init_with(&w, small_requests);
    /* Each counts 231 bytes (head fields and body): four fit in 1000, not five. */
    hd_conn *conn = connect_and_send(
        &w, PUBLISH_200 PUBLISH_200 PUBLISH_200 PUBLISH_200 PUBLISH_200 PUBLISH_200);
    CHECK_EQ_INT(outstanding(w.engine), 4);
    complete_one(w.engine, 0);
    hd_conn_resume_input(conn);
    CHECK_EQ_INT(outstanding(w.engine), 4); /* one more fits */
    complete(w.engine);
    hd_conn_resume_input(conn);
    CHECK_EQ_INT(outstanding(w.engine), 1);
    complete(w.engine);
    CHECK_EQ_INT(history_of(&w, "t"), 6);
    disconnect(conn);
    world_free(&w);
}

/* A request waiting behind owed answers holds no share of limits.max_pending_body_bytes. */
static void test_http_waiting_request_holds_no_body_budget(void)
{
    world w;
    world_init(&w);
    hd_conn *conn = connect_and_send(&w, PUBLISH_TO("a") "POST /healthz HTTP/1.1\r\nHost: x\r\n"
                                                         "Content-Length: 100\r\n\r\n" BODY_100);
    CHECK_EQ_INT(outstanding(w.engine), 1);
    CHECK_EQ_INT(w.server->group->pending_body_bytes, 0);
    complete(w.engine);
    hd_conn_resume_input(conn);
    check_answers(conn, "201 a,405");
    CHECK_EQ_INT(w.server->group->pending_body_bytes, 0);
    disconnect(conn);
    world_free(&w);
}

/* A 413 answered early behind an owed answer: the header timeout adds no 408 that never goes. */
static void test_http_no_timeout_answer_after_early_close(void)
{
    world w;
    world_init(&w);
    hd_conn *conn = connect_and_send(
        &w,
        PUBLISH_TO("a") "POST /topics/b HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n");
    CHECK_EQ_INT(outstanding(w.engine), 1);
    uint64_t errors = hd_conn_metrics(conn)->protocol_errors[HD_PROTOCOL_HTTP];
    hd_conn_on_header_timeout(conn);
    CHECK(conn->state == HD_CONN_READING);
    CHECK_EQ_INT(hd_conn_metrics(conn)->protocol_errors[HD_PROTOCOL_HTTP], errors);
    complete(w.engine);
    check_answers(conn, "201 a,413");
    disconnect(conn);
    world_free(&w);
}

/* Shutdown behind an answer queued with keep-alive: the last answer sent says close. */
static void test_http_drain_last_answer_says_close(void)
{
    world w;
    world_init(&w);
    hd_conn *conn = connect_and_send(&w, PUBLISH_TO("a") PUBLISH_TO("b?event=no%20space"));
    CHECK_EQ_INT(outstanding(w.engine), 1);
    hd_conn_close_after_flush(conn); /* as hd_server_shutdown does */
    complete(w.engine);
    check_answers(conn, "201 a,400");
    hd_strbuf queued = queued_text(conn);
    const char *second = strstr(queued.data + 1, "HTTP/1.1 ");
    CHECK(second != NULL && strstr(second, "Connection: close\r\n") != NULL);
    CHECK(second != NULL && strstr(second, "Keep-Alive") == NULL);
    CHECK_EQ_INT(hd_conn_queued_bytes(conn), queued.len - 1);
    hd_strbuf_free(&queued);
    disconnect(conn);
    world_free(&w);
}

/* ---------------------------------------------------------------- GET /topics */

static void test_http_topics_answered_from_the_callback(void)
{
    world w;
    world_init(&w);
    publish_direct(&w, "news", "a");
    hd_conn *info = connect_and_send(&w, "GET /topics/news HTTP/1.1\r\nHost: x\r\n\r\n");
    hd_conn *list = connect_and_send(&w, "GET /topics?prefix=n HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK_EQ_INT(outstanding(w.engine), 2);
    CHECK_EQ_INT(hd_conn_queued_bytes(info), 0); /* held: nothing answered yet */
    CHECK_EQ_INT(hd_conn_queued_bytes(list), 0);
    complete(w.engine);
    CHECK(hd_conn_queued_bytes(info) > 0);
    CHECK(hd_conn_queued_bytes(list) > 0);
    CHECK_EQ_INT(outstanding(w.engine), 0);
    disconnect(info);
    disconnect(list);
    world_free(&w);
}

static void test_http_topics_cancelled_on_close(void)
{
    world w;
    world_init(&w);
    publish_direct(&w, "news", "a");
    hd_conn *info = connect_and_send(&w, "GET /topics/news HTTP/1.1\r\nHost: x\r\n\r\n");
    hd_conn *list = connect_and_send(&w, "GET /topics HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK_EQ_INT(outstanding(w.engine), 2);
    disconnect(info);
    disconnect(list);
    CHECK_EQ_INT(w.engine->cancels, 2);
    CHECK_EQ_INT(outstanding(w.engine), 0);
    complete(w.engine); /* nothing left to answer: the callbacks never run */
    world_free(&w);
}

/* ---------------------------------------------------------------- catch-up (SSE) */

/* Three messages in history, and an SSE stream that resumes from before them. */
static hd_conn *resume_three(world *w)
{
    world_init(w);
    for (int i = 0; i < 3; i++)
        publish_direct(w, "t", "held");
    return connect_and_send(w, "GET /events?topic=t&since=0badf00d-0 HTTP/1.1\r\nHost: x\r\n\r\n");
}

static void test_sse_catch_up_read_later(void)
{
    world w;
    hd_conn *conn = resume_three(&w);
    uint64_t head = hd_conn_queued_bytes(conn);
    CHECK(head > 0); /* the stream's head goes at once */
    CHECK_EQ_INT(outstanding(w.engine), 1);

    complete(w.engine);
    CHECK(hd_conn_queued_bytes(conn) > head); /* the three held messages */
    CHECK_EQ_INT(outstanding(w.engine), 0);   /* caught up: nothing more asked */

    /* A stream that closes during its catch-up cancels the read. */
    hd_conn *other =
        connect_and_send(&w, "GET /events?topic=t&since=0badf00d-1 HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK_EQ_INT(outstanding(w.engine), 1);
    disconnect(other);
    CHECK_EQ_INT(w.engine->cancels, 1);
    CHECK_EQ_INT(subscribers_of(&w, "t"), 1);

    disconnect(conn);
    world_free(&w);
}

/*
 * Overtaken: a live message newer than the read's cut arrives, and is
 * skipped, while the read is under way. The catch-up must read once more
 * rather than end, or that message is lost to the client.
 */
static void test_catch_up_reads_past_what_it_skipped(void)
{
    world w;
    hd_conn *conn = resume_three(&w);
    CHECK_EQ_INT(outstanding(w.engine), 1); /* read, cut 3, not yet answered */
    publish_direct(&w, "t", "live");        /* seq 4, for the subscriber */
    uint64_t head = hd_conn_queued_bytes(conn);
    while (hd_hub_deliver_pending(w.hub, UINT64_MAX)) /* as the worker does when woken */
        ;
    CHECK_EQ_INT(hd_conn_queued_bytes(conn), head); /* skipped: a batch will carry it */

    complete(w.engine);
    uint64_t three = hd_conn_queued_bytes(conn);
    CHECK(three > head);
    CHECK_EQ_INT(outstanding(w.engine), 1); /* cut 3 < 4: it reads on */
    complete(w.engine);
    uint64_t four = hd_conn_queued_bytes(conn);
    CHECK_EQ_INT(four - three,
                 (three - head) / 3); /* the fourth, same size as each of the others */
    CHECK_EQ_INT(outstanding(w.engine), 0);

    /* Caught up: live messages flow again. */
    publish_direct(&w, "t", "next");
    while (hd_hub_deliver_pending(w.hub, UINT64_MAX))
        ;
    CHECK(hd_conn_queued_bytes(conn) > four);
    disconnect(conn);
    world_free(&w);
}

/* ---------------------------------------------------------------- poll */

static void test_poll_read_later(void)
{
    world w;
    world_init(&w);
    publish_direct(&w, "t", "held");

    /* Something to say: answered when the read comes back. */
    hd_conn *conn = connect_and_send(
        &w, "GET /poll?topic=t&since=0badf00d-0&timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK_EQ_INT(outstanding(w.engine), 1);
    CHECK_EQ_INT(hd_conn_queued_bytes(conn), 0);
    complete(w.engine);
    CHECK(hd_conn_queued_bytes(conn) > 0);
    CHECK_EQ_INT(subscribers_of(&w, "t"), 0); /* it never had to wait */

    /* Nothing new: it waits, subscribed, until it goes. */
    hd_conn *waiting = connect_and_send(
        &w, "GET /poll?topic=t&since=0badf00d-1&timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n");
    complete(w.engine);
    CHECK_EQ_INT(hd_conn_queued_bytes(waiting), 0);
    CHECK_EQ_INT(subscribers_of(&w, "t"), 1);
    disconnect(waiting);
    CHECK_EQ_INT(subscribers_of(&w, "t"), 0);

    /* Gone during its read: the read is cancelled. */
    hd_conn *gone = connect_and_send(
        &w, "GET /poll?topic=t&since=0badf00d-1&timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK_EQ_INT(outstanding(w.engine), 1);
    disconnect(gone);
    CHECK_EQ_INT(w.engine->cancels, 1);

    disconnect(conn);
    world_free(&w);
}

/* ---------------------------------------------------------------- WebSocket publish */

/* A client's text frame: masked, as RFC 6455 requires of clients. */
static size_t client_frame(const char *text, char *out)
{
    size_t len = strlen(text);
    static const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    out[0] = (char)0x81;
    out[1] = (char)(0x80 | len); /* < 126 here */
    memcpy(out + 2, mask, 4);
    for (size_t i = 0; i < len; i++)
        out[6 + i] = (char)(text[i] ^ mask[i % 4]);
    return 6 + len;
}

static void test_websocket_publish_acked_later(void)
{
    world w;
    world_init(&w);
    hd_conn *conn = connect_and_send(&w, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                         "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    uint64_t handshake = hd_conn_queued_bytes(conn);
    CHECK(handshake > 0);

    char frame[128];
    size_t len =
        client_frame("{\"op\":\"publish\",\"topic\":\"t\",\"data\":\"x\",\"ref\":\"r1\"}", frame);
    hd_conn_feed(conn, frame, len);
    CHECK_EQ_INT(outstanding(w.engine), 1);
    CHECK_EQ_INT(hd_conn_queued_bytes(conn), handshake);
    complete(w.engine);
    CHECK(hd_conn_queued_bytes(conn) > handshake); /* the ack */
    CHECK_EQ_INT(history_of(&w, "t"), 1);

    /* Two in flight (the session's own and one more), then the session goes. */
    hd_conn_feed(conn, frame, len);
    len = client_frame("{\"op\":\"publish\",\"topic\":\"t\",\"data\":\"y\",\"ref\":\"r2\"}", frame);
    hd_conn_feed(conn, frame, len);
    CHECK_EQ_INT(outstanding(w.engine), 2);
    disconnect(conn);
    CHECK_EQ_INT(w.engine->cancels, 2);
    CHECK_EQ_INT(history_of(&w, "t"), 1);
    world_free(&w);
}

int main(void)
{
    RUN_TEST(test_http_publish_answered_from_the_callback);
    RUN_TEST(test_http_publish_cancelled_on_close);
    RUN_TEST(test_http_pipelined_publishes_answered_in_order);
    RUN_TEST(test_http_pipelined_publishes_bounded);
    RUN_TEST(test_http_input_held_behind_answers_bounded);
    RUN_TEST(test_http_half_close_answers_what_was_read);
    RUN_TEST(test_http_outstanding_bytes_bounded_before);
    RUN_TEST(test_http_waiting_request_holds_no_body_budget);
    RUN_TEST(test_http_no_timeout_answer_after_early_close);
    RUN_TEST(test_http_drain_last_answer_says_close);
    RUN_TEST(test_http_topics_answered_from_the_callback);
    RUN_TEST(test_http_topics_cancelled_on_close);
    RUN_TEST(test_sse_catch_up_read_later);
    RUN_TEST(test_catch_up_reads_past_what_it_skipped);
    RUN_TEST(test_poll_read_later);
    RUN_TEST(test_websocket_publish_acked_later);
    return test_summary();
}
