/*
 * GET /poll. The answer is gathered from shared buffers: one head (status,
 * headers and `{"messages":[`), then each message's cached JSON envelope
 * (HD_WIRE_ENVELOPE: the same bytes for every poller, and the same text the
 * WebSocket frames carry), then a tail with the cursor and any gaps.
 *
 * A waiting poll's session owns its topics, its cursor and a timer; it is
 * freed from the timer's close callback, whichever of answer, disconnect
 * or shutdown ended it.
 */
#include "transport/poll.h"

#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "http/response.h"
#include "ops/metrics.h"
#include "transport/subscribe_params.h"

#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_LIMIT 100
#define MAX_LIMIT 1000

typedef struct poll_request {
    hd_subscribe_params params;
    char arrival_id[HD_ID_MAX]; /* the cursor when the client gave none */
    uint32_t timeout_s;
    size_t limit;
} poll_request;

typedef struct poll_session {
    hd_subscriber subscriber; /* first: the hub hands it back to deliver */
    hd_conn *conn;            /* NULL once the wait ended */
    poll_request request;
    uv_timer_t timer;
} poll_session;

/* One answer being collected from history. */
typedef struct poll_answer {
    hd_buf **envelopes; /* one reference each: the messages may leave history once unlocked */
    size_t count;
    uint64_t bytes;
    uint64_t byte_cap;
    hd_strbuf gaps; /* the members of "gaps":[…] */
    size_t gap_count;
    char last_id[HD_ID_MAX];
    char newest_id[HD_ID_MAX]; /* the hub's newest id when history was read */
} poll_answer;

/* ------------------------------------------------------------------------ */
/* Reading and sending an answer                                            */

static void answer_on_gap(void *ctx, const hd_gap *gap)
{
    poll_answer *answer = ctx;
    hd_strbuf_append_str(&answer->gaps, answer->gap_count++ ? ",{" : "{");
    hd_gap_append_json_fields(gap, &answer->gaps);
    hd_strbuf_append_str(&answer->gaps, "}");
}

static hd_buf *envelope_of(hd_message *msg)
{
    return hd_message_encoded(msg, HD_WIRE_ENVELOPE, hd_message_encode_envelope, NULL);
}

/* An answer holds at most max_outbound_bytes of envelopes, like any queue, but at least one. */
static bool answer_accepts(void *ctx, hd_message *msg)
{
    poll_answer *answer = ctx;
    return answer->count == 0 || answer->bytes + envelope_of(msg)->len + 1 <= answer->byte_cap;
}

static bool answer_on_message(void *ctx, hd_message *msg)
{
    poll_answer *answer = ctx;
    hd_buf *envelope = hd_buf_retain(envelope_of(msg));
    answer->envelopes[answer->count++] = envelope;
    answer->bytes += envelope->len + 1;
    memcpy(answer->last_id, msg->id, msg->id_len + 1);
    return true;
}

static const hd_history_visitor answer_visitor = {
    .on_gap = answer_on_gap,
    .on_message = answer_on_message,
    .accepts = answer_accepts,
};

/*
 * The answer's cursor, to continue from, is the last message sent when the
 * answer was cut short; otherwise the newest id of the hub (nothing of these
 * topics lies before it unread). The client's own cursor is never further
 * ahead: one beyond the newest id is refused when parsed.
 */
static void send_answer(hd_conn *conn, poll_answer *answer, bool more)
{
    const char *cursor_id = more ? answer->last_id : answer->newest_id;
    hd_strbuf tail;
    hd_strbuf_init(&tail);
    hd_strbuf_printf(&tail, "],\"cursor\":\"%s\",\"gap\":%s", cursor_id,
                     answer->gap_count ? "true" : "false");
    if (answer->gap_count) {
        hd_strbuf_append_str(&tail, ",\"gaps\":[");
        hd_strbuf_append(&tail, answer->gaps.data, answer->gaps.len);
        hd_strbuf_append_str(&tail, "]");
    }
    hd_strbuf_printf(&tail, ",\"more\":%s}\n", more ? "true" : "false");

    static const char open[] = "{\"messages\":[";
    size_t body_len = sizeof(open) - 1 + tail.len;
    for (size_t i = 0; i < answer->count; i++)
        body_len += answer->envelopes[i]->len + (i > 0);
    hd_strbuf head;
    hd_strbuf_init(&head);
    bool close = hd_response_append_head(&head, conn, 200, "application/json",
                                         "Cache-Control: no-cache\r\n", body_len, 0);
    if (conn->request->method == HTTP_HEAD) {
        /* The Content-Length this answer has as a GET's, and none of its body. */
        for (size_t i = 0; i < answer->count; i++)
            hd_buf_release(answer->envelopes[i]);
        hd_strbuf_free(&tail);
        hd_conn_send_owned(conn, hd_strbuf_finish(&head));
    } else {
        hd_strbuf_append(&head, open, sizeof(open) - 1);
        hd_conn_send_owned(conn, hd_strbuf_finish(&head));
        hd_buf *comma = answer->count > 1 ? hd_buf_copy(",", 1) : NULL;
        for (size_t i = 0; i < answer->count; i++) {
            if (i > 0)
                hd_conn_send(conn, comma);
            hd_conn_send_owned(conn, answer->envelopes[i]);
        }
        hd_buf_release(comma);
        hd_conn_send_owned(conn, hd_strbuf_finish(&tail));
        hd_metric_add(&hd_conn_metrics(conn)->deliveries[HD_TRANSPORT_POLL], answer->count);
    }
    if (close)
        hd_conn_close_after_flush(conn);
}

static hd_cursor request_cursor(const poll_request *request, hd_conn *conn)
{
    if (request->params.cursor.present)
        return request->params.cursor;
    hd_cursor cursor;
    hd_hub_parse_cursor(hd_conn_hub(conn), request->arrival_id, strlen(request->arrival_id),
                        &cursor);
    return cursor;
}

/*
 * Answers from history when there is something to say, or always when
 * forced (timeout, plain polling, shutdown). For a waiting poll, before_send
 * ends the wait so that the answer can be queued. Returns whether it answered.
 */
static bool try_answer(hd_conn *conn, const poll_request *request, bool force,
                       void (*before_send)(void *ctx), void *ctx)
{
    hd_cursor cursor = request_cursor(request, conn);
    poll_answer answer = {
        .envelopes = hd_alloc(request->limit * sizeof(hd_buf *)),
        .byte_cap = hd_conn_config(conn)->limits.max_outbound_bytes,
    };
    hd_strbuf_init(&answer.gaps);
    bool more = false;
    uint64_t cut;
    hd_history_query query = {
        .topics = (const char *const *)request->params.topics,
        .topic_lens = request->params.topic_lens,
        .topic_count = request->params.topic_count,
        .cursor = cursor,
        .limit = request->limit,
    };
    hd_hub *hub = hd_conn_hub(conn);
    hd_hub_read_history(hub, &query, &answer_visitor, &answer, &more, &cut);
    hd_id_format(hd_hub_epoch(hub), cut, answer.newest_id);
    bool answered = force || answer.count > 0 || answer.gap_count > 0;
    if (answered) {
        if (before_send != NULL)
            before_send(ctx);
        send_answer(conn, &answer, more);
    }
    hd_strbuf_free(&answer.gaps);
    free(answer.envelopes);
    return answered;
}

/* ------------------------------------------------------------------------ */
/* Waiting                                                                  */

static void session_on_timer_closed(uv_handle_t *handle)
{
    poll_session *session = handle->data;
    hd_subscribe_params_free(&session->request.params);
    free(session);
}

/* The wait is over (answered or disconnected): the session goes once its timer is closed. */
static void session_end(poll_session *session)
{
    if (session->conn == NULL)
        return;
    hd_hub_unsubscribe_all(hd_conn_hub(session->conn), &session->subscriber);
    session->conn = NULL;
    uv_close((uv_handle_t *)&session->timer, session_on_timer_closed);
}

static void session_end_wait(void *ctx)
{
    poll_session *session = ctx;
    hd_conn *conn = session->conn;
    session_end(session);
    hd_conn_end_wait(conn);
}

static void session_answer(poll_session *session, bool force)
{
    try_answer(session->conn, &session->request, force, session_end_wait, session);
}

static void session_on_deliver(hd_subscriber *sub, hd_message *msg)
{
    (void)msg;
    /* The answer is read from history in the server's pass: a whole batch goes in one answer. */
    hd_conn_wake(((poll_session *)sub)->conn);
}

static const hd_subscriber_ops poll_subscriber_ops = {
    .deliver = session_on_deliver,
    .transport = HD_TRANSPORT_POLL,
};

static void session_on_wake(hd_conn *conn, void *ctx)
{
    (void)conn;
    session_answer(ctx, false);
}

static void session_on_timeout(uv_timer_t *timer)
{
    session_answer(timer->data, true);
}

static void session_on_shutdown(hd_conn *conn, void *ctx)
{
    (void)conn;
    session_answer(ctx, true);
}

static void session_on_close(hd_conn *conn, void *ctx)
{
    (void)conn;
    session_end(ctx);
}

static const hd_stream_ops poll_wait_ops = {
    .on_close = session_on_close,
    .on_wake = session_on_wake,
    .on_shutdown = session_on_shutdown,
    .transport = HD_TRANSPORT_POLL,
};

static void start_waiting(hd_conn *conn, poll_request *request)
{
    poll_session *session = hd_calloc(1, sizeof(*session));
    session->conn = conn;
    session->request = *request;
    hd_subscriber_init(&session->subscriber, &poll_subscriber_ops);
    hd_hub *hub = hd_conn_hub(conn);
    for (size_t i = 0; i < request->params.topic_count; i++) {
        if (hd_hub_subscribe(hub, &session->subscriber, request->params.topics[i],
                             request->params.topic_lens[i]) != HD_HUB_OK) {
            hd_hub_unsubscribe_all(hub, &session->subscriber);
            hd_subscribe_params_free(&session->request.params);
            free(session);
            hd_response_error(conn, 503, "topic_limit", 0,
                              "The server holds limits.max_topics topics already.");
            return;
        }
    }
    uv_timer_init(hd_conn_loop(conn), &session->timer);
    session->timer.data = session;
    uv_timer_start(&session->timer, session_on_timeout, (uint64_t)request->timeout_s * 1000, 0);
    hd_conn_start_wait(conn, &poll_wait_ops, session);
    /*
     * Another worker may have published between the first read and the
     * subscription, which then missed it: look again once, in the next pass.
     */
    hd_conn_wake(conn);
}

/* ------------------------------------------------------------------------ */
/* GET /poll                                                                */

/* A decimal integer, or false. Huge values saturate: callers clamp or refuse them. */
static bool parse_number(const hd_query_param *param, uint64_t *out)
{
    if (param->value_len == 0)
        return false;
    uint64_t value = 0;
    for (size_t i = 0; i < param->value_len; i++) {
        if (param->value[i] < '0' || param->value[i] > '9')
            return false;
        if (value < UINT32_MAX)
            value = value * 10 + (uint64_t)(param->value[i] - '0');
    }
    *out = value;
    return true;
}

static int parse_poll_options(hd_conn *conn, poll_request *request)
{
    uint32_t timeout_max = hd_conn_config(conn)->limits.poll_timeout_max_s;
    request->timeout_s = DEFAULT_TIMEOUT_S < timeout_max ? DEFAULT_TIMEOUT_S : timeout_max;
    request->limit = DEFAULT_LIMIT;
    hd_query_iter it;
    hd_query_param param;
    const char *error = NULL;
    hd_query_iter_init(&it, conn->request);
    while (error == NULL && hd_query_next(&it, &param)) {
        uint64_t value;
        if (strcmp(param.key, "timeout") == 0) {
            if (!parse_number(&param, &value))
                error = "timeout must be a whole number of seconds, 0 or more.";
            else
                request->timeout_s = value < timeout_max ? (uint32_t)value : timeout_max;
        } else if (strcmp(param.key, "limit") == 0) {
            if (!parse_number(&param, &value) || value < 1 || value > MAX_LIMIT)
                error = "limit must be a whole number from 1 to 1000.";
            else
                request->limit = (size_t)value;
        }
    }
    hd_query_iter_free(&it);
    if (error == NULL)
        return 0;
    hd_response_error(conn, 400, "invalid_parameter", 0, "%s", error);
    return -1;
}

void hd_poll_handle(hd_conn *conn)
{
    static const char *const cursor_params[] = {"since", NULL};
    poll_request request = {0};
    if (parse_poll_options(conn, &request) != 0)
        return;
    if (hd_subscribe_params_parse(conn, NULL, cursor_params, true, &request.params, NULL) != 0)
        return;
    hd_hub_newest_id(hd_conn_hub(conn), request.arrival_id);
    /* HEAD does not wait: it is answered at once with the head of what a GET would get now. */
    bool force = request.timeout_s == 0 || hd_conn_server_draining(conn) ||
                 conn->request->method == HTTP_HEAD;
    if (try_answer(conn, &request, force, NULL, NULL)) {
        hd_subscribe_params_free(&request.params);
        return;
    }
    start_waiting(conn, &request);
}
