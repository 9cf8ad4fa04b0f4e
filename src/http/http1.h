/*
 * HTTP/1.x over a connection (as h2o's lib/http1.c): the llhttp glue that
 * turns bytes into requests, the limits checked as they arrive (head size,
 * header count, target length, body size and the shared body budget,
 * request deadlines), the RFC 9112 rules llhttp leaves to its user, and the
 * error answers for all of these. It is the protocol net/ reads requests
 * with (hd_conn_protocol), and it hands each complete request to handlers
 * it is given, never named here: the direction is transport -> http -> net.
 */
#ifndef HERALD_HTTP_HTTP1_H
#define HERALD_HTTP_HTTP1_H

#include <stdbool.h>
#include <stdint.h>

#include "net/conn.h"

/*
 * Where requests go (transport/router.c). Each is called on the
 * connection's loop with conn->request read as far as it says.
 */
typedef struct hd_http_handlers {
    /* The body size the request's route accepts, once its head is parsed. */
    uint64_t (*body_limit)(const hd_conn *conn);
    /*
     * Whether the request may go on to send its body, judged from its head
     * before the body is read (Expect: 100-continue); false after answering
     * the refusal the head alone earns.
     */
    bool (*head_acceptable)(hd_conn *conn);
    /* Answers the complete request, or hands the connection to a wait or a stream. */
    void (*dispatch)(hd_conn *conn);
    /*
     * Whether the complete request may be dispatched while answers to
     * earlier ones are deferred (hd_conn_defer: publishes in cluster mode);
     * any other waits until they are written.
     */
    bool (*may_overlap)(const hd_conn *conn);
} hd_http_handlers;

/*
 * Pipelining: requests are read on while their answers are deferred, up to
 * this many such requests per connection, and while their heads and bodies
 * total less than limits.max_request_bytes (a deferred answer's engine holds
 * a copy of its body); past either, reading waits for one to be written.
 */
#define HD_HTTP_DEFERRED_MAX 64

/*
 * What the context of a loop serving HTTP/1 (hd_server_new's, reached with
 * hd_conn_context) starts with; the handlers keep whatever else they need
 * per loop after it (transport/context.h).
 */
typedef struct hd_http_context {
    const hd_http_handlers *handlers;
} hd_http_context;

/* The protocol for hd_server_new: HTTP/1.1 and HTTP/1.0 requests, answered in order. */
extern const hd_conn_protocol hd_http1_protocol;

#endif
