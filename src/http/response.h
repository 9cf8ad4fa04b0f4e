/*
 * Building HTTP/1.1 responses into one shared buffer each and queueing them
 * on the connection (hd_conn_send), in request order. Every response carries
 * Content-Type and Content-Length; CORS headers follow cors.allow_origins and
 * the request's Origin. A response closes the connection when the request
 * asked for it, or when the caller passes HD_RESPONSE_CLOSE (errors after
 * which the byte stream cannot be trusted).
 */
#ifndef HERALD_HTTP_RESPONSE_H
#define HERALD_HTTP_RESPONSE_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>

#include "herald/buf.h"
#include "http/request.h"
#include "net/conn.h"

enum {
    HD_RESPONSE_CLOSE = 1,
};

const char *hd_status_reason(int status);

/* Appends the CORS headers the request's Origin earns (nothing without Origin). */
void hd_response_append_cors(hd_strbuf *head, const hd_conn *conn);

/*
 * Appends the status line and headers, up to and including the blank line,
 * for a body of body_len bytes that the caller queues itself. Returns
 * whether the connection must close after the body (then call
 * hd_conn_close_after_flush once it is queued).
 */
bool hd_response_append_head(hd_strbuf *out, hd_conn *conn, int status, const char *content_type,
                             const char *extra_headers, size_t body_len, int flags);

/*
 * An answer made with Keep-Alive turned out to be the connection's last
 * (hd_conn_protocol's closing_answer): a copy that says Connection: close
 * instead, or NULL when it has no Keep-Alive header (it closes already).
 */
hd_buf *hd_response_closing(const hd_buf *answer);

/*
 * A response of bytes bytes (head and body) with this status was queued
 * for the current request: counted in herald_http_responses_total and
 * written to the access log. hd_response_send calls it; callers that build
 * an answer with hd_response_append_head call it when they queue it.
 */
void hd_response_sent(hd_conn *conn, int status, size_t bytes);

/* extra_headers: complete "Name: value\r\n" lines, or NULL. */
void hd_response_send(hd_conn *conn, int status, const char *content_type,
                      const char *extra_headers, const void *body, size_t body_len, int flags);
/* {"error":code,"message":message} with the given status. */
void hd_response_error(hd_conn *conn, int status, const char *code, int flags, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* An error with extra header lines (e.g. 426 with Sec-WebSocket-Version). */
void hd_response_error_with(hd_conn *conn, int status, const char *extra_headers, const char *code,
                            const char *message);
/* 405 with Allow: allow. */
void hd_response_method_not_allowed(hd_conn *conn, const char *allow);

#endif
