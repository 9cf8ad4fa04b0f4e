/*
 * Publishing over HTTP: POST /topics/{topic} (the body is the data) and the
 * all-or-nothing batch POST /publish (docs/protocol.md).
 */
#ifndef HERALD_TRANSPORT_PUBLISH_H
#define HERALD_TRANSPORT_PUBLISH_H

#include "engine/engine.h"
#include "herald/hub.h"
#include "engine/engine.h"
#include "net/conn.h"

void hd_publish_handle_topic(hd_conn *conn);
void hd_publish_handle_batch(hd_conn *conn);

/*
 * What the handlers check before they look at the body (topic and event
 * names, the token, the content type), alone: false after answering the
 * refusal. For a client that waits for 100 Continue before the body.
 */
bool hd_publish_topic_head_acceptable(hd_conn *conn);
bool hd_publish_batch_head_acceptable(hd_conn *conn);

/*
 * Appends the members a publish answers for item i of a successful outcome
 * (`"id":…,"topic":…,"subscribers":N`, and `"duplicate":true` for a repeat
 * of an idempotency key; no braces): the HTTP answers and the WebSocket ack
 * share them.
 */
void hd_publish_append_result(hd_strbuf *sb, const hd_publish_outcome *outcome, size_t i);
/* Whether item i of a successful outcome repeated an idempotency key (published nothing). */
bool hd_publish_repeated(const hd_publish_outcome *outcome, size_t i);

/*
 * Holds the current request back while the engine answers it later (request
 * non-NULL; NULL: it answered already): the connection is WAITING, and a
 * close cancels the request. The callback calls hd_conn_end_wait before it
 * queues the answer. For GET /topics/{t} and GET /topics; a publish defers
 * its answer instead (hd_conn_defer), so that the connection reads on.
 */
void hd_publish_hold_for_engine(hd_conn *conn, hd_engine_request *request);

/* What a publish refused with status tells its client, over HTTP or in a WebSocket error. */
typedef struct hd_publish_refusal {
    int http_status;
    const char *code;    /* the error code, e.g. "topic_limit" */
    const char *message; /* one sentence */
    const char *headers; /* extra HTTP header lines (Retry-After), or NULL */
} hd_publish_refusal;
hd_publish_refusal hd_publish_refusal_of(hd_hub_status status);

#endif
