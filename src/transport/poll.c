/*
 * GET /poll. The answer is gathered from shared buffers: one head (status,
 * headers and `{"messages":[`), then each message's cached JSON envelope
 * (HD_WIRE_ENVELOPE: the same bytes for every poller, and the same text the
 * WebSocket frames carry), then a tail with the cursor and any gaps.
 *
 * A poll's session owns its topics and its cursor, and while it waits a
 * timer; a waiting session is freed from the timer's close callback,
 * whichever of answer, disconnect or shutdown ended it.
 */
#include "transport/poll.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "engine/engine.h"
#include "http/response.h"
#include "ops/metrics.h"
#include "transport/subscribe_params.h"

#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_LIMIT 100
#define MAX_LIMIT 1000

typedef struct poll_request {
    hd_subscribe_params params;
    /*
     * The cursor when the client gave none: the cut of the first read, made
     * without a cursor ("" until it answered). The engine's cut, not this
     * node's newest id: in cluster mode the node may not have seen the
     * newest messages of the poll's topics.
     */
    char arrival_id[HD_ID_MAX];
    uint32_t timeout_s;
    size_t limit;
} poll_request;

/*
 * A poll from its request to its answer. It reads history (through the
 * engine); when that holds nothing new it waits: subscribed to its topics,
 * with a timer, the connection WAITING. An engine that answers a read later
 * has the connection WAITING during the read too.
 */
typedef struct poll_session {
    hd_subscriber subscriber; /* first: the hub hands it back to deliver */
    hd_conn *conn;            /* NULL once the poll ended */
    poll_request request;
    hd_engine_request *read; /* a read still under way (an engine that answers later) */
    bool force;              /* answer what the next read finds, even nothing */
    bool reread;             /* woken during a read: if it finds nothing, read again */
    bool held;               /* the connection is WAITING for this session */
    bool waiting;            /* subscribed to its topics */
    bool timing;             /* its timer runs (the session is freed from the timer's close) */
    uint32_t rechecks;       /* of the engine since the timeout, a read still under way */
    uv_timer_t timer;
} poll_session;

/* ------------------------------------------------------------------------ */
/* Sending an answer                                                        */

static hd_buf *envelope_of(hd_message *msg)
{
    return hd_message_encoded(msg, HD_WIRE_ENVELOPE, hd_message_encode_envelope, NULL);
}

/*
 * The answer: the messages read, up to max_outbound_bytes of envelopes
 * (like any queue, but at least one), and the gaps. Its cursor, to continue
 * from, is the last message sent when the answer was cut short (by the limit
 * or the bytes); otherwise the newest id as of the read (nothing of these
 * topics lies before it unread). The client's own cursor is never further
 * ahead: one beyond the newest id is refused when parsed.
 */
static void send_answer(hd_conn *conn, const hd_history_result *result, const char *cursor_text)
{
    uint64_t byte_cap = hd_conn_config(conn)->limits.max_outbound_bytes;
    static const char open[] = "{\"messages\":[";
    size_t count = 0, body_len = sizeof(open) - 1;
    uint64_t bytes = 0;
    for (; count < result->count; count++) {
        size_t len = envelope_of(result->messages[count])->len;
        if (count > 0 && bytes + len + 1 > byte_cap)
            break;
        bytes += len + 1;
        body_len += len + (count > 0);
    }
    bool more = result->more || count < result->count;
    char cursor_id[HD_ID_MAX];
    if (cursor_text != NULL)
        snprintf(cursor_id, sizeof(cursor_id), "%s", cursor_text);
    else if (more)
        memcpy(cursor_id, result->messages[count - 1]->id, result->messages[count - 1]->id_len + 1);
    else
        hd_id_format(result->epoch, result->cut, cursor_id);

    hd_strbuf tail;
    hd_strbuf_init(&tail);
    hd_strbuf_printf(&tail, "],\"cursor\":\"%s\",\"gap\":%s", cursor_id,
                     result->gap_count ? "true" : "false");
    if (result->gap_count) {
        hd_strbuf_append_str(&tail, ",\"gaps\":[");
        for (size_t i = 0; i < result->gap_count; i++) {
            hd_strbuf_append_str(&tail, i > 0 ? ",{" : "{");
            hd_gap_append_json_fields(&result->gaps[i], &tail);
            hd_strbuf_append_str(&tail, "}");
        }
        hd_strbuf_append_str(&tail, "]");
    }
    hd_strbuf_printf(&tail, ",\"more\":%s}\n", more ? "true" : "false");
    body_len += tail.len;

    hd_strbuf head;
    hd_strbuf_init(&head);
    bool close = hd_response_append_head(&head, conn, 200, "application/json",
                                         "Cache-Control: no-cache\r\n", body_len, 0);
    hd_response_sent(conn, 200, head.len + (conn->request->method == HTTP_HEAD ? 0 : body_len));
    if (conn->request->method == HTTP_HEAD) {
        /* The Content-Length this answer has as a GET's, and none of its body. */
        hd_strbuf_free(&tail);
        hd_conn_send_owned(conn, hd_strbuf_finish(&head));
    } else {
        hd_strbuf_append(&head, open, sizeof(open) - 1);
        hd_conn_send_owned(conn, hd_strbuf_finish(&head));
        hd_buf *comma = count > 1 ? hd_buf_copy(",", 1) : NULL;
        for (size_t i = 0; i < count; i++) {
            if (i > 0)
                hd_conn_send(conn, comma);
            hd_conn_send(conn, envelope_of(result->messages[i]));
        }
        hd_buf_release(comma);
        hd_conn_send_owned(conn, hd_strbuf_finish(&tail));
        hd_metric_add(&hd_conn_metrics(conn)->deliveries[HD_TRANSPORT_POLL], count);
    }
    if (close)
        hd_conn_close_after_flush(conn);
}

/* ------------------------------------------------------------------------ */
/* The session                                                              */

static const hd_stream_ops poll_wait_ops;

static void session_on_timer_closed(uv_handle_t *handle)
{
    poll_session *session = handle->data;
    hd_subscribe_params_free(&session->request.params);
    free(session);
}

/*
 * The poll is over (answered, refused, or its connection closed): no read,
 * wake or timer comes to it any more, and the connection reads on after the
 * answer the caller queues next. Then session_free.
 */
static void session_stop(poll_session *session)
{
    hd_conn *conn = session->conn;
    hd_engine_cancel(hd_conn_engine(conn), session->read);
    session->read = NULL;
    session->conn = NULL;
    if (session->held)
        hd_conn_end_wait(conn);
    if (session->waiting)
        hd_hub_unsubscribe_all(hd_conn_hub(conn), &session->subscriber);
}

/*
 * A session whose timer ran goes once the timer is closed, so that the
 * callbacks it is freed from may still read it.
 */
static void session_free(poll_session *session)
{
    if (session->timing) {
        uv_close((uv_handle_t *)&session->timer, session_on_timer_closed);
    } else {
        hd_subscribe_params_free(&session->request.params);
        free(session);
    }
}

/* The answer will come from a callback: hold the request until then. */
static void session_hold(poll_session *session)
{
    if (session->held)
        return;
    session->held = true;
    hd_conn_start_wait(session->conn, &poll_wait_ops, session);
}

static hd_cursor request_cursor(const poll_request *request, hd_conn *conn)
{
    if (request->params.cursor.present)
        return request->params.cursor;
    hd_cursor cursor = {0};
    if (request->arrival_id[0] == '\0')
        return cursor;
    hd_hub_parse_cursor(hd_conn_hub(conn), request->arrival_id, strlen(request->arrival_id),
                        &cursor);
    return cursor;
}

static void session_read(poll_session *session);

static void session_on_deliver(hd_subscriber *sub, hd_message *msg)
{
    hd_conn *conn = ((poll_session *)sub)->conn;
    /* The answer is read from history in the server's pass: a whole batch goes in one answer. */
    hd_conn_note_publish(conn, msg->time_ms);
    hd_conn_wake(conn);
}

static const hd_subscriber_ops poll_subscriber_ops = {
    .deliver = session_on_deliver,
    .transport = HD_TRANSPORT_POLL,
};

/* Answers now with what history holds, even nothing, or with the read under way. */
static void session_force(poll_session *session)
{
    session->force = true;
    if (session->read == NULL)
        session_read(session);
}

/* 503 unavailable: the engine could not read (the store refused it, or cannot take it now). */
static void answer_unavailable(poll_session *session)
{
    hd_conn *conn = session->conn;
    session_stop(session);
    session_free(session);
    hd_response_error_with(conn, 503, "Retry-After: 1\r\n", "unavailable",
                           "The message store cannot be read now: try again shortly.");
}

/*
 * The poll's timeout passed while the engine cannot answer a read (Redis
 * unreachable, or the read still waits for room on the link): answered
 * with nothing and the cursor it came with, so that a client is not held
 * past its timeout (SPEC §5: new subscribers are never refused). A poll
 * without a cursor whose first read never came back gets the node's newest
 * id: never ahead of the cluster's cut, so the next poll from it skips
 * nothing (it may bring messages published just before this poll came).
 * A node that never reached the store has no id of the cluster's to give:
 * its placeholder epoch would read as another epoch's (a false gap, then
 * all of history), so that poll is refused instead.
 */
static void answer_unchanged(poll_session *session)
{
    hd_conn *conn = session->conn;
    const hd_cursor *given = &session->request.params.cursor;
    char cursor[HD_ID_MAX];
    if (given->present) {
        snprintf(cursor, sizeof(cursor), "%.*s", (int)given->text_len, given->text);
    } else if (session->request.arrival_id[0] != '\0') {
        memcpy(cursor, session->request.arrival_id, sizeof(cursor));
    } else if (!hd_hub_epoch_known(hd_conn_hub(conn))) {
        answer_unavailable(session);
        return;
    } else {
        hd_hub_newest_id(hd_conn_hub(conn), cursor);
    }
    session_stop(session);
    hd_history_result nothing = {0};
    send_answer(conn, &nothing, cursor);
    session_free(session);
}

/* How soon a poll past its timeout whose read is still under way looks at the engine again. */
#define RECHECK_MS 1000

/*
 * At the timeout the poll is answered with what the next read finds. While
 * that read is under way the engine is looked at again every RECHECK_MS:
 * a store that stalls meanwhile (the engine goes down, the read waits for
 * it) does not hold the poll for the whole outage. A read that is still
 * not answered cluster.timeout_ms after the timeout while the engine stays
 * up (queued behind a full link) is given up the same way.
 */
static void session_on_timeout(uv_timer_t *timer)
{
    poll_session *session = timer->data;
    uint64_t waited_ms = (uint64_t)session->rechecks * RECHECK_MS;
    /* A read now would wait for the engine too. */
    if (hd_engine_get_state(hd_conn_engine(session->conn)) != HD_ENGINE_UP ||
        waited_ms > hd_conn_config(session->conn)->cluster.timeout_ms) {
        answer_unchanged(session);
        return;
    }
    session->rechecks++;
    session_force(session);
    if (session->conn != NULL && session->read != NULL) /* else answered: the timer is closing */
        uv_timer_start(&session->timer, session_on_timeout, RECHECK_MS, 0);
}

/* The poll's timeout counts from its request, reads included; the timer runs once. */
static void session_start_timer(poll_session *session)
{
    if (session->timing)
        return;
    session->timing = true;
    uv_timer_init(hd_conn_loop(session->conn), &session->timer);
    session->timer.data = session;
    uv_timer_start(&session->timer, session_on_timeout, (uint64_t)session->request.timeout_s * 1000,
                   0);
}

/* Nothing new up to the read's cut: subscribe and wait for a message or the timeout. */
static void start_waiting(poll_session *session, const hd_history_result *result)
{
    hd_conn *conn = session->conn;
    hd_hub *hub = hd_conn_hub(conn);
    const hd_subscribe_params *params = &session->request.params;
    for (size_t i = 0; i < params->topic_count; i++) {
        if (hd_hub_subscribe(hub, &session->subscriber, params->topics[i], params->topic_lens[i]) !=
            HD_HUB_OK) {
            hd_hub_unsubscribe_all(hub, &session->subscriber);
            session_stop(session);
            session_free(session);
            hd_response_error(conn, 503, "topic_limit", 0,
                              "The server holds limits.max_topics topics already.");
            return;
        }
    }
    /*
     * Woken by whatever comes after the cut, even if the hub knew of it
     * when subscribing: a read answered from the node's own history
     * (may_lag) stops where the node's live feed was, and what the node
     * knew of beyond it is still on its way.
     */
    for (size_t i = 0; i < params->topic_count; i++)
        hd_subscriber_move_seen(&session->subscriber, params->topics[i], params->topic_lens[i],
                                result->epoch, result->cut, false);
    session->waiting = true;
    session_start_timer(session);
    session_hold(session);
    /*
     * Another worker may have published between the read and the
     * subscription, which then missed it: look again once, in the next pass.
     */
    hd_conn_wake(conn);
}

static void session_on_read(void *ctx, const hd_history_result *result)
{
    poll_session *session = ctx;
    session->read = NULL;
    if (result->status != HD_HUB_OK) {
        answer_unavailable(session); /* never an empty answer: the client would skip a range */
        return;
    }
    if (!hd_engine_subscribes_at_once(hd_conn_engine(session->conn)) &&
        hd_cursor_beyond(&session->request.params.cursor, result->epoch, result->cut)) {
        /* Only the store knows the cluster's newest id (the hub checked its own). */
        hd_conn *conn = session->conn;
        session_stop(session);
        session_free(session);
        hd_response_error(conn, 400, "invalid_cursor", 0,
                          "The cursor is not an id herald issued: malformed, or beyond the newest "
                          "id.");
        return;
    }
    if (!session->request.params.cursor.present && session->request.arrival_id[0] == '\0')
        hd_id_format(result->epoch, result->cut, session->request.arrival_id);
    if (session->force || result->count > 0 || result->gap_count > 0) {
        hd_conn *conn = session->conn;
        session_stop(session);
        send_answer(conn, result, NULL); /* its gaps name the session's topics and cursor */
        session_free(session);
    } else if (session->reread) {
        session->reread = false;
        session_read(session);
    } else if (!session->waiting) {
        start_waiting(session, result);
    }
}

static void session_read(poll_session *session)
{
    hd_conn *conn = session->conn;
    const poll_request *request = &session->request;
    hd_history_query query = {
        .topics = (const char *const *)request->params.topics,
        .topic_lens = request->params.topic_lens,
        .topic_count = request->params.topic_count,
        .cursor = request_cursor(request, conn),
        .limit = request->limit,
        .may_lag = !session->force, /* a poll that waits is woken by what comes later */
    };
    hd_engine_request *read =
        hd_engine_read(hd_conn_engine(conn), &query, session_on_read, session);
    if (read == NULL)
        return; /* answered or waiting already: session may be gone */
    session->read = read;
    session_hold(session);
    session_start_timer(session);
}

static void session_on_wake(hd_conn *conn, void *ctx)
{
    (void)conn;
    poll_session *session = ctx;
    if (session->read != NULL)
        session->reread = true;
    else
        session_read(session);
}

static void session_on_shutdown(hd_conn *conn, void *ctx)
{
    (void)conn;
    session_force(ctx);
}

static void session_on_close(hd_conn *conn, void *ctx)
{
    (void)conn;
    poll_session *session = ctx;
    session->held = false; /* the connection forgot the session already */
    session_stop(session);
    session_free(session);
}

static const hd_stream_ops poll_wait_ops = {
    .on_close = session_on_close,
    .on_wake = session_on_wake,
    .on_shutdown = session_on_shutdown,
    .transport = HD_TRANSPORT_POLL,
};

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
    poll_session *session = hd_calloc(1, sizeof(*session));
    session->conn = conn;
    session->request = request;
    hd_subscriber_init(&session->subscriber, &poll_subscriber_ops);
    /* HEAD does not wait: it is answered at once with the head of what a GET would get now. */
    session->force = request.timeout_s == 0 || hd_conn_server_draining(conn) ||
                     conn->request->method == HTTP_HEAD;
    session_read(session);
}
