/*
 * SSE sessions: a subscriber that encodes nothing itself. It queues the
 * message's shared SSE encoding on its connection, after catching up from
 * history when the client gave a cursor.
 */
#include "transport/sse.h"

#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "herald/log.h"
#include "engine/engine.h"
#include "http/access_log.h"
#include "http/response.h"
#include "ops/metrics.h"
#include "transport/catch_up.h"
#include "transport/subscribe_params.h"

typedef struct sse_session {
    hd_subscriber subscriber; /* first: the hub hands it back to deliver */
    hd_conn *conn;
    hd_wire wire;
    bool ending;           /* its token expired: the stream is being closed */
    hd_catch_up *catch_up; /* while history is still owed */
    /*
     * Built while the request was readable, sent once the engine confirmed
     * the subscription (catch_up.h): the stream's head, or (refusal, only
     * when the engine may find the cursor beyond its newest id) a 400.
     */
    hd_buf *head;
    hd_buf *refusal;
    hd_access_stream log;       /* for the access log's line when the stream ends */
    uint64_t token_deadline_ms; /* loop time at which the client's token expires; 0: never */
} sse_session;

/* ------------------------------------------------------------------------ */
/* Encoders                                                                 */

static void append_data_lines(hd_strbuf *sb, const char *data, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && data[i] != '\n' && data[i] != '\r')
            continue;
        hd_strbuf_append(sb, "data: ", 6);
        hd_strbuf_append(sb, data + start, i - start);
        hd_strbuf_append(sb, "\n", 1);
        if (i + 1 < len && data[i] == '\r' && data[i + 1] == '\n')
            i++;
        start = i + 1;
    }
}

static void append_event_head(hd_strbuf *sb, const hd_message *msg)
{
    hd_strbuf_append(sb, "id: ", 4);
    hd_strbuf_append(sb, msg->id, msg->id_len);
    hd_strbuf_append(sb, "\n", 1);
    if (msg->event != NULL) {
        hd_strbuf_append(sb, "event: ", 7);
        hd_strbuf_append(sb, msg->event, msg->event_len);
        hd_strbuf_append(sb, "\n", 1);
    }
}

hd_buf *hd_sse_encode_message(const hd_message *msg, void *ctx)
{
    (void)ctx;
    hd_strbuf sb;
    hd_strbuf_init(&sb);
    hd_strbuf_reserve(&sb, msg->data_len + msg->event_len + 64);
    append_event_head(&sb, msg);
    append_data_lines(&sb, msg->data, msg->data_len);
    hd_strbuf_append(&sb, "\n", 1);
    return hd_strbuf_finish(&sb);
}

hd_buf *hd_sse_encode_envelope(const hd_message *msg, void *ctx)
{
    (void)ctx;
    hd_strbuf sb;
    hd_strbuf_init(&sb);
    hd_strbuf_reserve(&sb, msg->data_len + msg->topic_len + msg->event_len + 128);
    append_event_head(&sb, msg);
    hd_strbuf_append(&sb, "data: ", 6);
    /* The envelope escapes every line break, so it is always one data line. */
    hd_message_append_envelope(msg, &sb);
    hd_strbuf_append(&sb, "\n\n", 2);
    return hd_strbuf_finish(&sb);
}

hd_buf *hd_sse_encode_gap(const hd_gap *gap)
{
    hd_strbuf sb;
    hd_strbuf_init(&sb);
    hd_strbuf_append_str(&sb, "event: herald-gap\ndata: {");
    hd_gap_append_json_fields(gap, &sb);
    hd_strbuf_append_str(&sb, "}\n\n");
    return hd_strbuf_finish(&sb);
}

/* ------------------------------------------------------------------------ */
/* Session                                                                  */

static hd_buf *encode_for(sse_session *session, hd_message *msg)
{
    hd_wire_encoder encoder =
        session->wire == HD_WIRE_SSE ? hd_sse_encode_message : hd_sse_encode_envelope;
    return hd_message_encoded(msg, session->wire, encoder, NULL);
}

/*
 * A stream outlives no token: once it expires, a last event says so and the
 * stream ends. EventSource reconnects with the same URL, gets 401 and stops,
 * so the page knows to fetch a new token.
 */
static bool token_expired(sse_session *session)
{
    if (session->ending)
        return true;
    if (session->token_deadline_ms == 0 ||
        hd_conn_now_ms(session->conn) < session->token_deadline_ms)
        return false;
    static const char last_event[] = "event: herald-token-expired\n"
                                     "data: {\"error\":\"token_expired\","
                                     "\"message\":\"The token has expired.\"}\n\n";
    session->ending = true;
    hd_conn_set_end_reason(session->conn, "token expired");
    hd_conn_send_owned(session->conn, hd_buf_copy(last_event, sizeof(last_event) - 1));
    hd_conn_close_after_flush(session->conn);
    return true;
}

static bool queue_message(void *ctx, hd_message *msg)
{
    sse_session *session = ctx;
    if (token_expired(session))
        return false;
    if (hd_conn_send(session->conn, encode_for(session, msg)) != 0)
        return false;
    hd_metric_add(&hd_conn_metrics(session->conn)->deliveries[HD_TRANSPORT_SSE], 1);
    return true;
}

static void queue_gap(void *ctx, const hd_gap *gap)
{
    sse_session *session = ctx;
    hd_conn_send_owned(session->conn, hd_sse_encode_gap(gap));
}

static void session_on_started(void *ctx, bool valid)
{
    sse_session *session = ctx;
    hd_buf *answer = valid ? session->head : session->refusal;
    hd_buf *other = valid ? session->refusal : session->head;
    session->head = session->refusal = NULL;
    hd_buf_release(other);
    if (answer == NULL) /* the head went out already: the stream ended while it waited */
        return;
    session->log.status = valid ? 200 : 400;
    hd_metrics_count_response(hd_conn_metrics(session->conn), session->log.status);
    hd_conn_send_owned(session->conn, answer);
    if (!valid)
        hd_conn_close_after_flush(session->conn);
}

/*
 * The catch-up's read failed (the store refused it or cannot take it now):
 * the stream ends with an event that says so, after its head if that had
 * not gone out (a 503 would make EventSource give up). Nothing more is
 * delivered on it, so the client reconnects and resumes from its last id,
 * missing nothing.
 */
static void session_on_failed(void *ctx, bool hole)
{
    (void)hole;
    sse_session *session = ctx;
    static const char last_event[] = "event: herald-unavailable\n"
                                     "data: {\"error\":\"unavailable\","
                                     "\"message\":\"The message store could not be read: "
                                     "reconnect to resume.\"}\n\n";
    if (session->head != NULL)
        session_on_started(session, true);
    session->ending = true;
    hd_conn_set_end_reason(session->conn, "unavailable");
    hd_conn_send_owned(session->conn, hd_buf_copy(last_event, sizeof(last_event) - 1));
    hd_conn_close_after_flush(session->conn);
}

static const hd_catch_up_ops sse_catch_up_ops = {
    .send_message = queue_message,
    .send_gap = queue_gap,
    .started = session_on_started,
    .failed = session_on_failed,
};

static void session_on_deliver(hd_subscriber *sub, hd_message *msg)
{
    sse_session *session = (sse_session *)sub;
    if (!hd_catch_up_holds(session->catch_up, msg) && queue_message(session, msg))
        hd_conn_note_publish(session->conn, msg->time_ms);
}

static void session_on_gap(hd_subscriber *sub, const hd_gap *gap)
{
    sse_session *session = (sse_session *)sub;
    /* Before the head, the catch-up's read reports it; once ending, nothing more goes. */
    if (session->head == NULL && !session->ending)
        queue_gap(session, gap);
}

static const hd_subscriber_ops sse_subscriber_ops = {
    .deliver = session_on_deliver,
    .gap = session_on_gap,
    .transport = HD_TRANSPORT_SSE,
};

/*
 * An ending stream (its token expired) takes nothing more: its catch-up
 * stops here, where no catch-up callback is under way, rather than read
 * on from the store for a client that gets none of it.
 */
static void session_on_drain(hd_conn *conn, void *ctx)
{
    (void)conn;
    sse_session *session = ctx;
    if (session->ending)
        hd_catch_up_free(&session->catch_up);
    else
        hd_catch_up_continue(&session->catch_up);
}

static void session_on_heartbeat(hd_conn *conn, void *ctx)
{
    sse_session *session = ctx;
    if (session->head != NULL || token_expired(session))
        return;
    /* Six bytes per idle connection per heartbeat_s: not worth sharing state for. */
    hd_conn_send_owned(conn, hd_buf_copy(": hb\n\n", 6));
}

static void session_on_close(hd_conn *conn, void *ctx)
{
    sse_session *session = ctx;
    hd_access_stream_end(&session->log, conn, "sse");
    hd_hub_unsubscribe_all(hd_conn_hub(conn), &session->subscriber);
    hd_catch_up_free(&session->catch_up);
    hd_buf_release(session->head);
    hd_buf_release(session->refusal);
    free(session);
}

/*
 * Shutdown ends the stream at once, possibly before the engine confirmed the
 * subscription: the client still gets the stream's head (then its end), as a
 * request under way at a shutdown gets its answer.
 */
static void session_on_shutdown(hd_conn *conn, void *ctx)
{
    sse_session *session = ctx;
    if (session->head != NULL) {
        hd_metrics_count_response(hd_conn_metrics(conn), 200);
        hd_conn_send_owned(conn, session->head);
        session->head = NULL;
        hd_buf_release(session->refusal);
        session->refusal = NULL;
    }
    hd_conn_close_after_flush(conn);
}

static const hd_stream_ops sse_stream_ops = {
    .on_close = session_on_close,
    .on_shutdown = session_on_shutdown,
    .on_heartbeat = session_on_heartbeat,
    .on_drain = session_on_drain,
    .heartbeat_when_idle = true,
    .transport = HD_TRANSPORT_SSE,
};

/* ------------------------------------------------------------------------ */
/* GET /events                                                              */

static int parse_format(hd_conn *conn, hd_wire *wire)
{
    hd_query_iter it;
    hd_query_param param;
    int rc = 0;
    *wire = HD_WIRE_SSE;
    hd_query_iter_init(&it, conn->request);
    while (rc == 0 && hd_query_next(&it, &param)) {
        if (strcmp(param.key, "format") != 0)
            continue;
        if (param.value_len == 4 && memcmp(param.value, "json", 4) == 0) {
            *wire = HD_WIRE_SSE_ENVELOPE;
        } else if (!(param.value_len == 4 && memcmp(param.value, "text", 4) == 0)) {
            hd_response_error(conn, 400, "invalid_parameter", 0,
                              "format must be \"text\" or \"json\".");
            rc = -1;
        }
    }
    hd_query_iter_free(&it);
    return rc;
}

static int subscribe_all(sse_session *session, const hd_subscribe_params *params)
{
    hd_hub *hub = hd_conn_hub(session->conn);
    for (size_t i = 0; i < params->topic_count; i++) {
        hd_hub_status status =
            hd_hub_subscribe(hub, &session->subscriber, params->topics[i], params->topic_lens[i]);
        if (status != HD_HUB_OK) {
            hd_hub_unsubscribe_all(hub, &session->subscriber);
            hd_response_error(session->conn, 503, "topic_limit", 0,
                              "The server holds limits.max_topics topics already.");
            return -1;
        }
    }
    return 0;
}

/* The stream's status line and headers, then (preamble) its first lines. */
static hd_buf *stream_head(hd_conn *conn, bool preamble)
{
    hd_strbuf head;
    hd_strbuf_init(&head);
    /* No length and no chunking: the stream is the rest of the connection. */
    hd_strbuf_append_str(&head, "HTTP/1.1 200 OK\r\n"
                                "Content-Type: text/event-stream; charset=utf-8\r\n"
                                "Cache-Control: no-cache\r\n"
                                "X-Accel-Buffering: no\r\n"
                                "Connection: close\r\n");
    hd_response_append_cors(&head, conn);
    hd_strbuf_append(&head, "\r\n", 2);
    if (preamble)
        hd_strbuf_printf(&head, "retry: %u\n: herald\n\n", hd_conn_config(conn)->sse.retry_ms);
    return hd_strbuf_finish(&head);
}

/* The 400 for a cursor the engine finds beyond its newest id (catch_up.h). */
static hd_buf *invalid_cursor_answer(hd_conn *conn)
{
    static const char body[] =
        "{\"error\":\"invalid_cursor\",\"message\":\"The cursor is not an id "
        "herald issued: malformed, or beyond the newest id.\"}\n";
    hd_strbuf out;
    hd_strbuf_init(&out);
    hd_response_append_head(&out, conn, 400, "application/json", NULL, sizeof(body) - 1,
                            HD_RESPONSE_CLOSE);
    hd_strbuf_append(&out, body, sizeof(body) - 1);
    return hd_strbuf_finish(&out);
}

void hd_sse_handle(hd_conn *conn)
{
    static const char *const cursor_params[] = {"last_event_id", "since", NULL};
    hd_wire wire;
    if (parse_format(conn, &wire) != 0)
        return;
    hd_subscribe_params params;
    if (hd_subscribe_params_parse(conn, "last-event-id", cursor_params, true, &params, NULL) != 0)
        return;
    if (conn->request->method == HTTP_HEAD) {
        /* The head of the stream a GET would open, and no stream: nothing subscribes. */
        hd_subscribe_params_free(&params);
        hd_conn_send_owned(conn, stream_head(conn, false));
        hd_conn_close_after_flush(conn);
        return;
    }
    sse_session *session = hd_calloc(1, sizeof(*session));
    session->conn = conn;
    session->wire = wire;
    session->token_deadline_ms = hd_conn_deadline_from_wall_ms(conn, params.token_expires_ms);
    hd_subscriber_init(&session->subscriber, &sse_subscriber_ops);
    if (subscribe_all(session, &params) != 0) {
        hd_subscribe_params_free(&params);
        free(session);
        return;
    }
    session->head = stream_head(conn, true);
    if (params.cursor.present && !hd_engine_subscribes_at_once(hd_conn_engine(conn)))
        session->refusal = invalid_cursor_answer(conn);
    hd_access_stream_start(&session->log, conn, 200);
    hd_conn_start_stream(conn, &sse_stream_ops, session);
    /* The catch-up keeps its own copy of what it needs; a long-lived stream keeps nothing else. */
    hd_catch_up_start(&session->catch_up, conn, &session->subscriber, &sse_catch_up_ops, session,
                      params.topics, params.topic_lens, NULL, params.topic_count, &params.cursor);
    hd_subscribe_params_free(&params);
}
