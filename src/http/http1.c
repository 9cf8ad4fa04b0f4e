/*
 * HTTP/1.x requests off a connection (see http1.h): llhttp callbacks that
 * copy each request out of the read buffer and check the limits as bytes
 * arrive, the error answers, and the hd_conn_protocol functions net/ calls.
 * Returning HPE_USER from a callback stops the parser after the callback
 * has answered the client itself; HPE_PAUSED stops it when a request hands
 * the connection over (net/ then holds or forwards the rest of the input).
 */
#include "http/http1.h"

#include <ctype.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herald/alloc.h"
#include "herald/list.h"
#include "herald/log.h"
#include "http/request.h"
#include "http/response.h"
#include "ops/metrics.h"

/* A connection's reader: net/'s part first, then the parser and the request being read. */
typedef struct http1_reader {
    hd_conn_reader super;
    llhttp_t parser;
    hd_request request;
    uint64_t body_limit;    /* for the request being read */
    uint64_t body_reserved; /* of limits.max_pending_body_bytes, for the body being read */
    /* From the request's first byte until it is complete; stays set when it was answered early. */
    bool request_started;
    /* The complete request read last waits for deferred answers before it (may_dispatch). */
    bool dispatch_waits;
    /* Requests kept for deferred answers (keep_request), and their bytes (HD_HTTP_DEFERRED_MAX). */
    size_t kept;
    uint64_t kept_bytes;
} http1_reader;

/* A request kept for its deferred answer, with the bytes it counts. */
typedef struct kept_request {
    hd_request request;
    uint64_t bytes;
} kept_request;

/*
 * Body buffers larger than this are freed with their share of
 * limits.max_pending_body_bytes: an idle keep-alive connection keeps no large upload.
 */
#define KEEP_BODY_BYTES 4096

static http1_reader *reader_of(const hd_conn *conn)
{
    return hd_container_of(conn->reader, http1_reader, super);
}

static const hd_http_handlers *handlers_of(const hd_conn *conn)
{
    const hd_http_context *context = hd_conn_context(conn);
    return context->handlers;
}

static hd_conn *parser_conn(llhttp_t *parser)
{
    return parser->data;
}

/* The request being read is dispatched, or ends unfinished: its deadline and body go. */
static void end_request(hd_conn *conn)
{
    http1_reader *reader = reader_of(conn);
    hd_conn_stop_request_deadline(conn);
    hd_conn_hold_pending(conn, &reader->body_reserved, 0);
    if (reader->request.body.cap > KEEP_BODY_BYTES)
        hd_strbuf_free(&reader->request.body);
}

/* ------------------------------------------------------------------------ */
/* llhttp callbacks                                                         */

static int reject(hd_conn *conn, int status, const char *code, const char *message)
{
    conn->request->keep_alive = false;
    hd_metric_add(&hd_conn_metrics(conn)->protocol_errors[HD_PROTOCOL_HTTP], 1);
    hd_response_error(conn, status, code, HD_RESPONSE_CLOSE, "%s", message);
    return HPE_USER;
}

/* Counts bytes of the request head against limits.max_header_bytes. */
static int count_head_bytes(hd_conn *conn, size_t len)
{
    conn->request->header_bytes += len;
    if (conn->request->header_bytes > hd_conn_config(conn)->limits.max_header_bytes)
        return reject(conn, 431, "headers_too_large",
                      "The request head is larger than limits.max_header_bytes.");
    return 0;
}

static int on_message_begin(llhttp_t *parser)
{
    hd_conn *conn = parser_conn(parser);
    hd_request_reset(conn->request);
    reader_of(conn)->request_started = true;
    /* However steadily it trickles in, the request has limits.request_timeout_s from here. */
    hd_conn_start_request_deadline(conn);
    return 0;
}

/*
 * RFC 9112 §2.3: herald speaks HTTP/1.x, read as 1.1 past 1.1. The parser
 * lets every DIGIT.DIGIT through (LENIENT_VERSION) so that other majors
 * get a 505 here, not llhttp's 400 (or, for 2.0, an answer in HTTP/1.1).
 */
static int check_version(hd_conn *conn, const llhttp_t *parser)
{
    if (parser->http_major == 1)
        return 0;
    conn->request->method = parser->method; /* a HEAD still gets no body */
    return reject(conn, 505, "http_version_not_supported",
                  "herald speaks HTTP/1.1 and HTTP/1.0 only.");
}

static int on_version_complete(llhttp_t *parser)
{
    return check_version(parser_conn(parser), parser);
}

static int on_url(llhttp_t *parser, const char *at, size_t len)
{
    hd_conn *conn = parser_conn(parser);
    if (conn->request->target.len + len > hd_conn_config(conn)->limits.max_header_bytes / 2)
        return reject(conn, 414, "uri_too_long",
                      "The request target is longer than limits.max_header_bytes / 2.");
    hd_strbuf_append(&conn->request->target, at, len);
    return count_head_bytes(conn, len);
}

/*
 * Trailer fields (after a chunked body) are counted against the limits and
 * dropped: RFC 9110 §6.5.1 forbids merging them into the header section,
 * where a token or a Content-Type a proxy never saw in the head would count.
 */
static bool in_trailers(const llhttp_t *parser)
{
    return (parser->flags & F_TRAILING) != 0;
}

static int on_header_field(llhttp_t *parser, const char *at, size_t len)
{
    hd_conn *conn = parser_conn(parser);
    int rc = count_head_bytes(conn, len);
    if (rc != 0)
        return rc;
    /*
     * RFC 9112 §5.1: no whitespace between a field name and its colon, which
     * llhttp 8.1 lets through; proxies disagree on such names (smuggling).
     */
    if (memchr(at, ' ', len) != NULL || memchr(at, '\t', len) != NULL)
        return reject(conn, 400, "bad_request",
                      "Malformed HTTP request: whitespace in a header name.");
    if (in_trailers(parser))
        return 0;
    hd_strbuf *headers = &conn->request->headers;
    hd_strbuf_reserve(headers, len);
    for (size_t i = 0; i < len; i++)
        headers->data[headers->len++] = (char)tolower((unsigned char)at[i]);
    return 0;
}

static int on_header_field_complete(llhttp_t *parser)
{
    hd_conn *conn = parser_conn(parser);
    hd_strbuf *headers = &conn->request->headers;
    /* Nothing since the last value's terminator: ": value", which llhttp 8.1 lets through. */
    if (!in_trailers(parser) && (headers->len == 0 || headers->data[headers->len - 1] == '\0'))
        return reject(conn, 400, "bad_request", "Malformed HTTP request: an empty header name.");
    if (!in_trailers(parser))
        hd_strbuf_append(headers, "", 1);
    if (++conn->request->header_count > hd_conn_config(conn)->limits.max_headers)
        return reject(conn, 431, "headers_too_large",
                      "The request has more headers than limits.max_headers.");
    return 0;
}

static int on_header_value(llhttp_t *parser, const char *at, size_t len)
{
    hd_conn *conn = parser_conn(parser);
    int rc = count_head_bytes(conn, len);
    if (rc != 0 || in_trailers(parser))
        return rc;
    hd_strbuf_append(&conn->request->headers, at, len);
    return 0;
}

static int on_header_value_complete(llhttp_t *parser)
{
    if (!in_trailers(parser))
        hd_strbuf_append(&parser_conn(parser)->request->headers, "", 1);
    return 0;
}

/*
 * Counts a body against limits.max_pending_body_bytes as its bytes arrive,
 * not by its declared Content-Length: a client that declares a large body
 * and sends nothing would otherwise hold the budget for free, and a few such
 * connections would turn every other publisher away. To hold budget a client
 * must send the bytes. Over the limit: 503 busy, then closed.
 */
static int reserve_body(hd_conn *conn, uint64_t bytes)
{
    http1_reader *reader = reader_of(conn);
    if (bytes <= reader->body_reserved || hd_conn_hold_pending(conn, &reader->body_reserved, bytes))
        return 0;
    hd_metric_add(&hd_conn_metrics(conn)->pending_body_refusals[HD_PROTOCOL_HTTP], 1);
    hd_log_debug("refusing a body from %s: limits.max_pending_body_bytes reached", conn->peer);
    conn->request->keep_alive = false;
    hd_response_error_with(conn, 503, "Retry-After: 1\r\n", "busy",
                           "herald holds limits.max_pending_body_bytes of request bodies and "
                           "messages being received; try again shortly.");
    return HPE_USER;
}

/*
 * RFC 9112 rules on the whole head that llhttp 8.1 leaves to its user:
 * exactly one Host (§3.2; HTTP/1.0 may omit it), no Transfer-Encoding in
 * HTTP/1.0 (§6.1: such framing cannot be trusted), a Transfer-Encoding that
 * ends in chunked (§6.3: else 400, before llhttp says the same later), and
 * no transfer coding but chunked, the only one herald undoes (§6.1: 501).
 */
static int check_head(hd_conn *conn, const llhttp_t *parser)
{
    /* A request line without a version (HTTP/0.9) never reached on_version_complete. */
    if (check_version(conn, parser) != 0)
        return HPE_USER;
    const hd_request *req = conn->request;
    const char *host = hd_request_header(req, "host", NULL);
    if (host == NULL && parser->http_minor > 0)
        return reject(conn, 400, "bad_request", "An HTTP/1.1 request needs a Host header.");
    if (host != NULL && hd_request_header_next(req, "host", host, NULL) != NULL)
        return reject(conn, 400, "bad_request", "A request has one Host header, not several.");
    /* Present counts, even empty (which llhttp 8.1 ignores): a proxy may read it otherwise. */
    size_t len;
    const char *coding = hd_request_header(req, "transfer-encoding", &len);
    if (coding == NULL)
        return 0;
    if (parser->http_minor == 0)
        return reject(conn, 400, "bad_request",
                      "Transfer-Encoding is not HTTP/1.0: the body's length cannot be trusted.");
    if (!(parser->flags & F_CHUNKED))
        return reject(conn, 400, "bad_request",
                      "Malformed HTTP request: a Transfer-Encoding must end in chunked.");
    for (; coding != NULL;
         coding = hd_request_header_next(req, "transfer-encoding", coding, &len)) {
        if (!hd_header_only_token(coding, len, "chunked"))
            return reject(conn, 501, "not_implemented",
                          "herald decodes no transfer coding but chunked.");
    }
    return 0;
}

/*
 * Expect: 100-continue (RFC 9110 §10.1.1): the client waits for a go-ahead
 * before it sends the body. HTTP/1.0 clients must not be sent one, nor is
 * one needed without a body. When the head alone already decides a refusal
 * (404, 405, 401, 415...), that is the answer instead, and the connection
 * closes: the client may send the body anyway, and it is not read.
 */
static int answer_expectation(hd_conn *conn, const llhttp_t *parser)
{
    hd_request *req = conn->request;
    size_t len;
    const char *expect = hd_request_header(req, "expect", &len);
    if (expect == NULL || len != 12 || strncasecmp(expect, "100-continue", 12) != 0 ||
        parser->http_minor == 0 || !((parser->flags & F_CHUNKED) || parser->content_length > 0))
        return 0;
    bool keep_alive = req->keep_alive;
    req->keep_alive = false;
    if (!handlers_of(conn)->head_acceptable(conn)) {
        hd_metric_add(&hd_conn_metrics(conn)->http_requests, 1);
        return HPE_USER;
    }
    req->keep_alive = keep_alive;
    static const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n";
    hd_conn_send_owned(conn, hd_buf_copy(interim, sizeof(interim) - 1));
    return 0;
}

static int on_headers_complete(llhttp_t *parser)
{
    hd_conn *conn = parser_conn(parser);
    hd_request *req = conn->request;
    /* The body gets its own header_timeout_s, renewed as it arrives. */
    hd_conn_renew_read_deadline(conn);
    req->method = parser->method;
    /* While draining, each request still in flight is answered, then its connection closed. */
    req->keep_alive = llhttp_should_keep_alive(parser) && !hd_conn_server_draining(conn);
    if (check_head(conn, parser) != 0)
        return HPE_USER;
    hd_request_split_target(req);
    http1_reader *reader = reader_of(conn);
    reader->body_limit = handlers_of(conn)->body_limit(conn);
    if ((parser->flags & F_CONTENT_LENGTH) && parser->content_length > reader->body_limit) {
        hd_metric_add(&hd_conn_metrics(conn)->protocol_errors[HD_PROTOCOL_HTTP], 1);
        hd_response_error(conn, 413, "payload_too_large", HD_RESPONSE_CLOSE,
                          "The body of %llu bytes exceeds the limit of %llu bytes.",
                          (unsigned long long)parser->content_length,
                          (unsigned long long)reader->body_limit);
        return HPE_USER;
    }
    return answer_expectation(conn, parser);
}

static int refuse_body(hd_conn *conn)
{
    hd_metric_add(&hd_conn_metrics(conn)->protocol_errors[HD_PROTOCOL_HTTP], 1);
    hd_response_error(conn, 413, "payload_too_large", HD_RESPONSE_CLOSE,
                      "The body exceeds the limit of %llu bytes.",
                      (unsigned long long)reader_of(conn)->body_limit);
    return HPE_USER;
}

/* A chunk that would take the body past its limit is refused once its size is read. */
static int on_chunk_header(llhttp_t *parser)
{
    hd_conn *conn = parser_conn(parser);
    if (parser->content_length > reader_of(conn)->body_limit - conn->request->body.len)
        return refuse_body(conn);
    return 0;
}

static int on_body(llhttp_t *parser, const char *at, size_t len)
{
    hd_conn *conn = parser_conn(parser);
    if (conn->request->body.len + len > reader_of(conn)->body_limit)
        return refuse_body(conn);
    int rc = reserve_body(conn, conn->request->body.len + len);
    if (rc != 0)
        return rc;
    hd_strbuf_append(&conn->request->body, at, len);
    hd_conn_renew_read_deadline(conn);
    return 0;
}

/* Whether as many requests as may be are kept for deferred answers (HD_HTTP_DEFERRED_MAX). */
static bool deferred_full(const hd_conn *conn)
{
    return reader_of(conn)->kept >= HD_HTTP_DEFERRED_MAX;
}

/* The bytes a request counts once kept for its deferred answer (http1_keep_request). */
static uint64_t request_bytes(const hd_request *request)
{
    return request->header_bytes + request->body.len;
}

/*
 * Whether the complete request may be dispatched now. Behind deferred
 * answers, only a request that may overlap them, and only while the
 * requests kept stay within HD_HTTP_DEFERRED_MAX and, with this one,
 * limits.max_request_bytes: checked before, so that the bound holds.
 */
static bool may_dispatch(const hd_conn *conn)
{
    const http1_reader *reader = reader_of(conn);
    return reader->kept == 0 || (!deferred_full(conn) &&
                                 reader->kept_bytes + request_bytes(conn->request) <=
                                     hd_conn_config(conn)->limits.max_request_bytes &&
                                 handlers_of(conn)->may_overlap(conn));
}

/* Dispatches the complete request; HPE_PAUSED: the parser stops after it. */
static int dispatch(hd_conn *conn)
{
    http1_reader *reader = reader_of(conn);
    bool last = !conn->request->keep_alive || hd_conn_server_draining(conn);
    size_t kept = reader->kept;
    handlers_of(conn)->dispatch(conn);
    end_request(conn); /* the handler is done with the body */
    /* Deferred, the last request closes the connection once answered; nothing more is read. */
    if (reader->kept > kept && last)
        hd_conn_close_after_flush(conn);
    /* A wait or a stream took the connection over, or it ends: the parser stops here. */
    if (!hd_conn_reads_requests(conn))
        return HPE_PAUSED;
    hd_conn_renew_read_deadline(conn);
    if (deferred_full(conn)) {
        hd_conn_wait_for_answers(conn);
        return HPE_PAUSED;
    }
    return 0;
}

static int on_message_complete(llhttp_t *parser)
{
    hd_conn *conn = parser_conn(parser);
    http1_reader *reader = reader_of(conn);
    reader->request_started = false;
    hd_metric_add(&hd_conn_metrics(conn)->http_requests, 1);
    if (!may_dispatch(conn)) {
        reader->dispatch_waits = true;
        /* It is complete: only its answer waits, and its body (copied) needs no budget. */
        hd_conn_stop_request_deadline(conn);
        hd_conn_hold_pending(conn, &reader->body_reserved, 0);
        hd_conn_wait_for_answers(conn);
        return HPE_PAUSED;
    }
    return dispatch(conn);
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_version_complete = on_version_complete,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_chunk_header = on_chunk_header,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ------------------------------------------------------------------------ */
/* The protocol net/ calls                                                  */

static hd_conn_reader *http1_reader_new(hd_conn *conn)
{
    http1_reader *reader = hd_calloc(1, sizeof(*reader));
    hd_request_init(&reader->request);
    conn->request = &reader->request;
    llhttp_init(&reader->parser, HTTP_REQUEST, &parser_settings);
    /* Any DIGIT.DIGIT version: on_version_complete answers those herald does not speak. */
    reader->parser.lenient_flags |= LENIENT_VERSION;
    reader->parser.data = conn;
    return &reader->super;
}

static hd_request *http1_keep_request(hd_conn *conn)
{
    http1_reader *reader = reader_of(conn);
    kept_request *kept = hd_alloc(sizeof(*kept));
    kept->request = reader->request; /* takes its buffers over */
    kept->bytes = request_bytes(&kept->request);
    hd_strbuf_free(&kept->request.body);
    hd_request_init(&reader->request);
    reader->kept++;
    reader->kept_bytes += kept->bytes;
    return &kept->request;
}

static void http1_release_request(hd_conn *conn, hd_request *request)
{
    http1_reader *reader = reader_of(conn);
    kept_request *kept = hd_container_of(request, kept_request, request);
    reader->kept--;
    reader->kept_bytes -= kept->bytes;
    hd_request_free(&kept->request);
    free(kept);
}

static void http1_reader_free(hd_conn *conn, hd_conn_reader *super)
{
    http1_reader *reader = hd_container_of(super, http1_reader, super);
    hd_conn_hold_pending(conn, &reader->body_reserved, 0);
    hd_request_free(&reader->request);
    free(reader);
}

/*
 * Before reading on after deferred answers were written: the request that
 * waited for them goes now, and the parser goes on unless it must wait
 * still. Returns false to read nothing.
 */
static bool may_read_on(hd_conn *conn)
{
    http1_reader *reader = reader_of(conn);
    if (reader->dispatch_waits) {
        if (!may_dispatch(conn)) {
            hd_conn_wait_for_answers(conn);
            return false;
        }
        reader->dispatch_waits = false;
        if (dispatch(conn) != 0)
            return false;
    } else if (deferred_full(conn)) {
        hd_conn_wait_for_answers(conn);
        return false;
    }
    return true;
}

static size_t http1_on_data(hd_conn *conn, const char *data, size_t len)
{
    if (!may_read_on(conn))
        return 0;
    llhttp_t *parser = &reader_of(conn)->parser;
    /* Paused by a wait that has been answered since (a no-op otherwise): on to the next request. */
    llhttp_resume(parser);
    llhttp_errno_t err = llhttp_execute(parser, data, len);
    if (err == HPE_PAUSED) {
        const char *rest = llhttp_get_error_pos(parser);
        return rest != NULL && rest < data + len ? (size_t)(rest - data) : len;
    }
    /* A callback that answered (413, 414, 431) has already ended the connection. */
    if (err == HPE_OK || err == HPE_USER || !hd_conn_reads_requests(conn))
        return len;
    if (err == HPE_PAUSED_UPGRADE) {
        /* Answered as plain HTTP; what follows is a protocol herald does not speak there. */
        hd_conn_close_after_flush(conn);
        return len;
    }
    conn->request->keep_alive = false;
    hd_metric_add(&hd_conn_metrics(conn)->protocol_errors[HD_PROTOCOL_HTTP], 1);
    hd_response_error(conn, 400, "bad_request", HD_RESPONSE_CLOSE, "Malformed HTTP request: %s.",
                      llhttp_get_error_reason(parser));
    return len;
}

/* 408 for a request under way; then closed. */
static void answer_timeout(hd_conn *conn, const char *what, uint32_t seconds)
{
    conn->request->keep_alive = false;
    hd_metric_add(&hd_conn_metrics(conn)->protocol_errors[HD_PROTOCOL_HTTP], 1);
    hd_response_error(conn, 408, "request_timeout", HD_RESPONSE_CLOSE,
                      "The request %s within %u s.", what, seconds);
}

/* An idle keep-alive connection is closed; a request under way is answered. */
static void http1_on_read_timeout(hd_conn *conn)
{
    if (!reader_of(conn)->request_started) {
        hd_conn_close(conn);
        return;
    }
    answer_timeout(conn, "headers did not arrive", hd_conn_config(conn)->limits.header_timeout_s);
}

static void http1_on_request_timeout(hd_conn *conn)
{
    answer_timeout(conn, "did not complete", hd_conn_config(conn)->limits.request_timeout_s);
}

static void http1_on_ending(hd_conn *conn)
{
    if (reader_of(conn)->request_started)
        end_request(conn);
}

static bool http1_request_under_way(const hd_conn *conn)
{
    return reader_of(conn)->request_started;
}

static size_t http1_refusal(const char *why, char *out, size_t cap)
{
    char body[160];
    int body_len = snprintf(body, sizeof(body),
                            "{\"error\":\"too_many_connections\",\"message\":\"%s.\"}\n", why);
    int len = snprintf(out, cap,
                       "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                       "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                       body_len, body);
    return len > 0 && (size_t)len < cap ? (size_t)len : 0;
}

const hd_conn_protocol hd_http1_protocol = {
    .reader_new = http1_reader_new,
    .reader_free = http1_reader_free,
    .keep_request = http1_keep_request,
    .release_request = http1_release_request,
    .on_data = http1_on_data,
    .on_read_timeout = http1_on_read_timeout,
    .on_request_timeout = http1_on_request_timeout,
    .on_ending = http1_on_ending,
    .closing_answer = hd_response_closing,
    .request_under_way = http1_request_under_way,
    .refusal = http1_refusal,
};
