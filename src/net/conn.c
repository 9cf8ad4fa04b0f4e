/*
 * The per-connection state machine (see conn.h): accept, the read path with
 * the llhttp glue and its limits, the bounded write queue, and the two-phase
 * close.
 */
#include "net/conn.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "herald/alloc.h"
#include "herald/clock.h"
#include "herald/log.h"
#include "http/response.h"
#include "net/server_internal.h"
#include "ops/metrics.h"
#include "transport/router.h"

static void conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

const hd_config *hd_conn_config(const hd_conn *conn)
{
    return conn->server->config;
}

uint64_t hd_conn_now_ms(const hd_conn *conn)
{
    return hd_server_now(conn->server);
}

uint64_t hd_conn_deadline_from_wall_ms(const hd_conn *conn, int64_t wall_ms)
{
    if (wall_ms == 0)
        return 0;
    int64_t remaining = wall_ms - hd_clock_wall_ms();
    return hd_conn_now_ms(conn) + (uint64_t)(remaining > 1 ? remaining : 1);
}

bool hd_conn_server_draining(const hd_conn *conn)
{
    /* Asked to stop (by another thread) counts already: requests are answered as draining. */
    return conn->server->draining ||
           __atomic_load_n(&conn->server->group->stopping, __ATOMIC_ACQUIRE);
}

uv_loop_t *hd_conn_loop(const hd_conn *conn)
{
    return conn->server->loop;
}

hd_hub *hd_conn_hub(const hd_conn *conn)
{
    return conn->server->hub;
}

struct hd_engine *hd_conn_engine(const hd_conn *conn)
{
    return conn->server->engine;
}

const hd_auth *hd_conn_auth(const hd_conn *conn)
{
    return conn->server->auth;
}

struct hd_ws_deflater *hd_conn_ws_deflater(const hd_conn *conn)
{
    return conn->server->ws_deflater;
}

hd_metrics *hd_conn_metrics(const hd_conn *conn)
{
    return &conn->server->metrics;
}

void hd_conn_group_metrics(const hd_conn *conn, hd_metrics *total, hd_metrics_gauges *gauges)
{
    const hd_server_group *group = conn->server->group;
    memset(total, 0, sizeof(*total));
    gauges->workers = group->size;
    for (unsigned i = 0; i < group->size; i++) {
        hd_metrics_accumulate(total, &group->servers[i]->metrics);
        gauges->worker_connections[i] =
            __atomic_load_n(&group->servers[i]->connection_count, __ATOMIC_RELAXED);
    }
    gauges->pending_body_bytes = __atomic_load_n(&group->pending_body_bytes, __ATOMIC_RELAXED);
}

size_t hd_conn_server_connections(const hd_conn *conn)
{
    return (size_t)__atomic_load_n(&conn->server->group->connections, __ATOMIC_RELAXED);
}

bool hd_conn_hold_pending(hd_conn *conn, uint64_t *reserved, uint64_t bytes)
{
    uint64_t *held = &conn->server->group->pending_body_bytes;
    if (bytes <= *reserved) {
        __atomic_fetch_sub(held, *reserved - bytes, __ATOMIC_RELAXED);
        *reserved = bytes;
        return true;
    }
    uint64_t limit = hd_conn_config(conn)->limits.max_pending_body_bytes;
    uint64_t more = bytes - *reserved;
    uint64_t now = __atomic_load_n(held, __ATOMIC_RELAXED);
    do {
        if (more > limit || now > limit - more)
            return false;
    } while (!__atomic_compare_exchange_n(held, &now, now + more, true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    *reserved = bytes;
    return true;
}

uint64_t hd_conn_queued_bytes(const hd_conn *conn)
{
    return conn->outq.bytes;
}

/* ------------------------------------------------------------------------ */
/* Timeouts: FIFO lists whose entries all share one duration stay sorted.   */

void hd_conn_wait_in(hd_conn *conn, hd_list *list)
{
    hd_list_unlink(&conn->timeout_node);
    conn->timeout_since_ms = hd_server_now(conn->server);
    hd_list_insert_tail(list, &conn->timeout_node);
}

static void wait_for_request(hd_conn *conn)
{
    hd_conn_wait_in(conn, &conn->server->header_wait);
}

/*
 * Body buffers larger than this are freed with their share of
 * limits.max_pending_body_bytes: an idle keep-alive connection keeps no large upload.
 */
#define KEEP_BODY_BYTES 4096

/* The request being read is dispatched, or ends unfinished: its deadline and body go. */
static void end_request(hd_conn *conn)
{
    hd_conn_reader *reader = conn->reader;
    hd_list_unlink(&reader->request_node);
    hd_conn_hold_pending(conn, &reader->body_reserved, 0);
    if (conn->request->body.cap > KEEP_BODY_BYTES)
        hd_strbuf_free(&conn->request->body);
}

static void free_reader(hd_conn *conn)
{
    if (conn->reader == NULL)
        return;
    end_request(conn);
    hd_request_free(conn->request);
    hd_strbuf_free(&conn->reader->held_input);
    free(conn->reader);
    conn->reader = NULL;
    conn->request = NULL;
}

/* ------------------------------------------------------------------------ */
/* Write path                                                               */

/* Bytes waiting for the socket: queued or in flight, and ciphertext the TLS session made. */
static uint64_t outbound_bytes(const hd_conn *conn)
{
    return conn->outq.bytes + (conn->tls != NULL ? hd_tls_pending(conn->tls) : 0);
}

static bool would_overflow(const hd_conn *conn, size_t len)
{
    /* An empty queue takes any one buffer, or a message above the limit could never go out. */
    uint64_t outbound = outbound_bytes(conn);
    return outbound > 0 && outbound + len > hd_conn_config(conn)->limits.max_outbound_bytes;
}

/* Whether anything waits to be written: queued buffers, or ciphertext the TLS session made. */
static bool has_output(const hd_conn *conn)
{
    return conn->outq.count > 0 || (conn->tls != NULL && hd_tls_pending(conn->tls) > 0);
}

static void enqueue(hd_conn *conn, hd_buf *buf)
{
    hd_outq_push(&conn->outq, buf);
    if (!hd_list_linked(&conn->flush_node))
        hd_list_insert_tail(&conn->server->flush_list, &conn->flush_node);
}

/*
 * The slow-consumer policy, decided here only (as Redis decides it in
 * closeClientOnOutputBufferLimitReached): a stream whose queue would pass
 * limits.max_outbound_bytes is ended, and it ends whole. What the socket
 * has not started on is dropped, so the shared messages go back at once;
 * the buffer in progress is finished (a client that reads late must not
 * find half a frame), then the transport's last word, then close_notify and
 * FIN. That tail is at most one frame and the last word (on TLS: what was
 * already sealed, at most one seal), and close_timeout_s bounds its wait.
 */
static void end_slow_consumer(hd_conn *conn)
{
    hd_log_info("closing %s: slow consumer, its queue passed limits.max_outbound_bytes",
                conn->peer);
    hd_outq_drop_unstarted(&conn->outq);
    if (conn->stream_ops != NULL) {
        hd_metric_add(&conn->server->metrics.slow_consumer_disconnects[conn->stream_ops->transport],
                      1);
        if (conn->stream_ops->on_slow_consumer != NULL)
            conn->stream_ops->on_slow_consumer(conn, conn->stream_session);
    }
    hd_conn_close_after_flush(conn);
}

void hd_conn_send_last(hd_conn *conn, hd_buf *buf)
{
    if (conn->state == HD_CONN_CLOSING || conn->close_when_flushed) {
        hd_buf_release(buf);
        return;
    }
    enqueue(conn, buf);
    hd_conn_close_after_flush(conn);
}

int hd_conn_send_owned(hd_conn *conn, hd_buf *buf)
{
    if (conn->state == HD_CONN_CLOSING || conn->close_when_flushed) {
        hd_buf_release(buf);
        return -1;
    }
    if (conn->state == HD_CONN_READING) {
        /*
         * Answers are never dropped: a client that pipelines faster than it
         * reads is slowed down instead, by reading no more until it caught up.
         */
        enqueue(conn, buf);
        if (conn->outq.bytes > hd_conn_config(conn)->limits.max_outbound_bytes &&
            !conn->reading_paused) {
            conn->reading_paused = true;
            uv_read_stop((uv_stream_t *)&conn->tcp);
        }
        return 0;
    }
    if (would_overflow(conn, buf->len)) {
        hd_buf_release(buf);
        end_slow_consumer(conn);
        return -1;
    }
    enqueue(conn, buf);
    if (conn->stream_ops != NULL && conn->stream_ops->heartbeat_when_idle)
        hd_conn_wait_in(conn, &conn->server->stream_idle);
    return 0;
}

int hd_conn_send(hd_conn *conn, hd_buf *buf)
{
    return hd_conn_send_owned(conn, hd_buf_retain(buf));
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
    hd_conn *conn = req->data;
    free(req);
    if (status < 0)
        hd_conn_close(conn);
}

static void on_close_notify_written(uv_write_t *req, int status)
{
    (void)status; /* best effort: the TCP shutdown queued after it ends the stream anyway */
    hd_buf_release(req->data);
    free(req);
}

/*
 * TLS: the peer learns that the stream ended on purpose, not by truncation.
 * A queued write, not a try: the socket may be nearly full, and half an
 * alert followed by FIN is exactly a truncation. uv_shutdown, issued after
 * it, waits for it.
 */
static void send_close_notify(hd_conn *conn)
{
    hd_tls_shutdown(conn->tls);
    hd_buf *alert = hd_tls_take(conn->tls);
    if (alert == NULL)
        return;
    uv_write_t *req = hd_alloc(sizeof(*req));
    req->data = alert;
    uv_buf_t buf = uv_buf_init(alert->data, (unsigned)alert->len);
    if (uv_write(req, (uv_stream_t *)&conn->tcp, &buf, 1, on_close_notify_written) != 0) {
        hd_buf_release(alert);
        free(req);
    }
}

/* Everything is written and the connection must end: shut down, then linger. */
static void start_lingering(hd_conn *conn)
{
    /* Lingering means reading until EOF, so reading paused for backpressure resumes. */
    if (conn->reading_paused) {
        conn->reading_paused = false;
        if (uv_read_start((uv_stream_t *)&conn->tcp, hd_conn_on_alloc, conn_on_read) != 0) {
            hd_conn_close(conn);
            return;
        }
    }
    if (conn->tls != NULL)
        send_close_notify(conn);
    uv_shutdown_t *req = hd_alloc(sizeof(*req));
    req->data = conn;
    if (uv_shutdown(req, (uv_stream_t *)&conn->tcp, conn_on_shutdown) != 0) {
        free(req);
        hd_conn_close(conn);
        return;
    }
    wait_for_request(conn);
}

/* Gives back the buffers that were being written; written: they all reached the socket. */
static void release_in_flight(hd_conn *conn, bool written)
{
    uint64_t bytes = hd_outq_finish(&conn->outq);
    if (written)
        hd_metric_add(&conn->server->metrics.bytes_written, bytes);
}

/* What follows a completed write: more output, the end of the connection, or more input. */
static void conn_on_written(hd_conn *conn)
{
    if (has_output(conn)) {
        if (!hd_list_linked(&conn->flush_node))
            hd_list_insert_tail(&conn->server->flush_list, &conn->flush_node);
    } else if (conn->close_when_flushed) {
        start_lingering(conn);
        return;
    }
    /* Below the low-water mark: take more input, or more history, while the socket is busy. */
    if (outbound_bytes(conn) > hd_conn_config(conn)->limits.max_outbound_bytes / 2)
        return;
    if (conn->reading_paused && conn->state != HD_CONN_WAITING) {
        conn->reading_paused = false;
        if (uv_read_start((uv_stream_t *)&conn->tcp, hd_conn_on_alloc, conn_on_read) != 0)
            hd_conn_close(conn);
    }
    if (conn->stream_ops != NULL && conn->stream_ops->on_drain != NULL)
        conn->stream_ops->on_drain(conn, conn->stream_session);
}

static void conn_on_write(uv_write_t *req, int status)
{
    hd_conn *conn = req->data;
    free(req);
    conn->write_req = NULL;
    release_in_flight(conn, status == 0);
    if (conn->state == HD_CONN_CLOSING)
        return;
    if (status < 0) {
        hd_log_debug("write to %s failed: %s", conn->peer, uv_strerror(status));
        hd_conn_close(conn);
        return;
    }
    conn_on_written(conn);
}

/* TLS: seals the queued plaintext (hd_outq_seal); -1 when the session failed and it closed. */
static int seal(hd_conn *conn)
{
    if (hd_outq_seal(&conn->outq, conn->tls) == 0)
        return 0;
    hd_log_debug("TLS write to %s failed", conn->peer);
    hd_conn_close(conn);
    return -1;
}

/*
 * One gathered write of up to HD_CONN_WRITE_BATCH buffers. It is tried
 * synchronously first: when the socket takes everything, as it usually
 * does, no write request is queued and libuv does not touch epoll. Only a
 * partial write leaves the rest of the buffer in progress to uv_write,
 * alone: the buffers behind it stay queued, not started, so that a slow
 * consumer can still drop them (a uv_write cannot be taken back in part).
 * Once it is written the next flush pass gathers the rest.
 */
void hd_conn_flush(hd_conn *conn)
{
    if (conn->outq.in_flight > 0 || conn->state == HD_CONN_CLOSING)
        return;
    if (conn->tls != NULL && seal(conn) != 0)
        return;
    if (conn->outq.count == 0)
        return;
    uv_buf_t bufs[HD_CONN_WRITE_BATCH];
    /* TLS: only the sealed buffer at the front is ciphertext. */
    size_t count = hd_outq_start(&conn->outq, bufs, conn->tls != NULL ? 1 : HD_CONN_WRITE_BATCH);
    int written = uv_try_write((uv_stream_t *)&conn->tcp, bufs, (unsigned)count);
    if (written < 0 && written != UV_EAGAIN) {
        release_in_flight(conn, false);
        hd_conn_close(conn);
        return;
    }
    uv_buf_t rest;
    uint64_t released = 0;
    bool cut = hd_outq_took(&conn->outq, written > 0 ? (size_t)written : 0, &rest, &released);
    hd_metric_add(&conn->server->metrics.bytes_written, released);
    if (!cut) {
        conn_on_written(conn);
        return;
    }
    conn->write_req = hd_alloc(sizeof(*conn->write_req));
    conn->write_req->data = conn;
    if (uv_write(conn->write_req, (uv_stream_t *)&conn->tcp, &rest, 1, conn_on_write) != 0) {
        free(conn->write_req);
        conn->write_req = NULL;
        release_in_flight(conn, false);
        hd_conn_close(conn);
    }
}

void hd_conn_close_after_flush(hd_conn *conn)
{
    if (conn->state == HD_CONN_CLOSING || conn->close_when_flushed)
        return;
    conn->close_when_flushed = true;
    /* A request cut short (413, 503, 408, 400) holds no budget or body while the answer lingers. */
    if (conn->request_started)
        end_request(conn);
    /* A stream that is ending delivers nothing more: detach it now, not after the linger. */
    if (conn->stream_ops != NULL && !hd_list_linked(&conn->detach_node))
        hd_list_insert_tail(&conn->server->detach_list, &conn->detach_node);
    if (!has_output(conn)) {
        start_lingering(conn);
        return;
    }
    /*
     * What is queued gets its own deadline, counted from now and not from
     * the last request or heartbeat: a client that stalls for a while still
     * reads its tail whole. Nothing joins the queue any more, so the
     * deadline bounds bytes as well as time.
     */
    hd_conn_wait_in(conn, &conn->server->close_wait);
    if (conn->tls != NULL && !hd_list_linked(&conn->flush_node))
        /* Ciphertext the session made while the request was read (queued buffers are linked). */
        hd_list_insert_tail(&conn->server->flush_list, &conn->flush_node);
}

/* ------------------------------------------------------------------------ */
/* Close: mark and unlink now, uv_close from the server's pass, free in the  */
/* close callback.                                                          */

void hd_conn_close(hd_conn *conn)
{
    if (conn->state == HD_CONN_CLOSING)
        return;
    conn->state = HD_CONN_CLOSING;
    hd_list_unlink(&conn->timeout_node);
    if (conn->reader != NULL)
        hd_list_unlink(&conn->reader->request_node);
    hd_list_unlink(&conn->flush_node);
    hd_list_insert_tail(&conn->server->close_list, &conn->close_node);
}

void hd_conn_leave_limits(hd_conn *conn)
{
    hd_server_group *group = conn->server->group;
    if (conn->refused)
        return; /* given back when it was refused */
    __atomic_fetch_sub(&group->connections, 1, __ATOMIC_RELAXED);
    if (conn->ip_counted) {
        pthread_mutex_lock(&group->lock);
        hd_ip_count_remove(group->ip_counts, &conn->ip);
        pthread_mutex_unlock(&group->lock);
    }
}

static void conn_on_closed(uv_handle_t *handle)
{
    hd_conn *conn = (hd_conn *)handle;
    hd_server *server = conn->server;
    hd_outq_free(&conn->outq);
    free_reader(conn);
    hd_tls_free(conn->tls);
    hd_list_unlink(&conn->server_node);
    hd_metric_add(&server->connection_count, (uint64_t)-1);
    hd_conn_leave_limits(conn);
    if (conn->refused_draining)
        server->refused_draining--;
    free(conn);
    hd_server_maybe_done(server);
}

static void forget_session(hd_conn *conn)
{
    hd_metric_add(&conn->server->metrics.transport_connections[conn->stream_ops->transport],
                  (uint64_t)-1);
    conn->stream_ops = NULL;
    conn->stream_session = NULL;
}

void hd_conn_detach_stream(hd_conn *conn)
{
    hd_list_unlink(&conn->detach_node);
    hd_list_unlink(&conn->wake_node);
    if (conn->stream_ops != NULL) {
        const hd_stream_ops *ops = conn->stream_ops;
        void *session = conn->stream_session;
        forget_session(conn);
        ops->on_close(conn, session);
    }
}

void hd_conn_finish_close(hd_conn *conn)
{
    hd_list_unlink(&conn->close_node);
    hd_conn_detach_stream(conn);
    uv_close((uv_handle_t *)&conn->tcp, conn_on_closed);
}

void hd_conn_start_stream(hd_conn *conn, const hd_stream_ops *ops, void *session)
{
    /* A stream reads no more requests: the parser and request go once the parser returns. */
    conn->state = HD_CONN_STREAMING;
    conn->stream_ops = ops;
    conn->stream_session = session;
    hd_metric_add(&conn->server->metrics.transport_connections[ops->transport], 1);
    hd_conn_wait_in(conn, &conn->server->stream_idle);
    /* A request that was under way when shutdown began ends as soon as it starts. */
    if (conn->server->draining) {
        if (ops->on_shutdown != NULL)
            ops->on_shutdown(conn, session);
        else
            hd_conn_close_after_flush(conn);
    }
}

void hd_conn_start_wait(hd_conn *conn, const hd_stream_ops *ops, void *session)
{
    conn->state = HD_CONN_WAITING;
    conn->stream_ops = ops;
    conn->stream_session = session;
    hd_metric_add(&conn->server->metrics.transport_connections[ops->transport], 1);
    /* The session bounds the wait itself; no header timeout or heartbeat applies. */
    hd_list_unlink(&conn->timeout_node);
    if (conn->server->draining && ops->on_shutdown != NULL)
        ops->on_shutdown(conn, session);
}

void hd_conn_wake(hd_conn *conn)
{
    if (conn->state == HD_CONN_WAITING && !hd_list_linked(&conn->wake_node))
        hd_list_insert_tail(&conn->server->wake_list, &conn->wake_node);
}

void hd_conn_end_wait(hd_conn *conn)
{
    if (conn->stream_ops == NULL)
        return;
    hd_list_unlink(&conn->wake_node);
    /* Closing already (EOF in the same loop turn): the session ended itself, on_close must not. */
    forget_session(conn);
    if (conn->state != HD_CONN_WAITING)
        return;
    conn->state = HD_CONN_READING;
    llhttp_resume(&conn->reader->parser);
    wait_for_request(conn);
    /* Parsed in the server's pass, so that the answer the caller queues next goes first. */
    if (conn->reader->held_input.len > 0 || conn->reading_paused)
        hd_list_insert_tail(&conn->server->resume_list, &conn->wake_node);
}

/* Input that arrives while the answer is held back: kept for later, within a bound. */
static void hold_input(hd_conn *conn, const char *bytes, size_t len)
{
    hd_strbuf_append(&conn->reader->held_input, bytes, len);
    if (conn->reader->held_input.len >= hd_conn_config(conn)->limits.max_header_bytes &&
        !conn->reading_paused) {
        /* A client pipelining that much behind a long-poll waits for its answer first. */
        conn->reading_paused = true;
        uv_read_stop((uv_stream_t *)&conn->tcp);
    }
}

/* ------------------------------------------------------------------------ */
/* Timeouts fired by the server's sweep.                                    */

/* 408 for a request under way; then closed. */
static void answer_timeout(hd_conn *conn, const char *what, uint32_t seconds)
{
    hd_list_unlink(&conn->timeout_node);
    conn->request->keep_alive = false;
    hd_metric_add(&conn->server->metrics.protocol_errors[HD_PROTOCOL_HTTP], 1);
    hd_response_error(conn, 408, "request_timeout", HD_RESPONSE_CLOSE,
                      "The request %s within %u s.", what, seconds);
}

void hd_conn_on_header_timeout(hd_conn *conn)
{
    if (conn->close_when_flushed || !conn->request_started) {
        hd_conn_close(conn);
        return;
    }
    answer_timeout(conn, "headers did not arrive", hd_conn_config(conn)->limits.header_timeout_s);
}

/* Only a request under way is in request_wait (see end_request and hd_conn_close). */
void hd_conn_on_request_timeout(hd_conn *conn)
{
    answer_timeout(conn, "did not complete", hd_conn_config(conn)->limits.request_timeout_s);
}

/*
 * The tail was not read in time: a reset, not a FIN, since what reached the
 * socket may end in the middle of a frame, and the kernel would otherwise
 * keep probing a window that the peer does not open.
 */
void hd_conn_on_close_timeout(hd_conn *conn)
{
    hd_log_info("closing %s: it did not read its last output within limits.close_timeout_s",
                conn->peer);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&conn->tcp, &fd) == 0) {
        struct linger abort_on_close = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof(abort_on_close));
    }
    hd_conn_close(conn);
}

void hd_conn_on_idle_stream(hd_conn *conn)
{
    hd_conn_wait_in(conn, &conn->server->stream_idle);
    if (conn->stream_ops != NULL && conn->stream_ops->on_heartbeat != NULL)
        conn->stream_ops->on_heartbeat(conn, conn->stream_session);
}

/* ------------------------------------------------------------------------ */
/* Read path: llhttp callbacks. Returning HPE_USER stops the parser after   */
/* the callback has answered the client itself.                            */

static hd_conn *parser_conn(llhttp_t *parser)
{
    return parser->data;
}

static int reject(hd_conn *conn, int status, const char *code, const char *message)
{
    conn->request->keep_alive = false;
    hd_metric_add(&conn->server->metrics.protocol_errors[HD_PROTOCOL_HTTP], 1);
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
    conn->request_started = true;
    /* However steadily it trickles in, the request has limits.request_timeout_s from here. */
    conn->reader->request_since_ms = hd_server_now(conn->server);
    hd_list_insert_tail(&conn->server->request_wait, &conn->reader->request_node);
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
    if (bytes <= conn->reader->body_reserved ||
        hd_conn_hold_pending(conn, &conn->reader->body_reserved, bytes))
        return 0;
    hd_metric_add(&conn->server->metrics.pending_body_refusals[HD_PROTOCOL_HTTP], 1);
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
    if (!hd_router_head_acceptable(conn)) {
        hd_metric_add(&conn->server->metrics.http_requests, 1);
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
    wait_for_request(conn);
    req->method = parser->method;
    /* While draining, each request still in flight is answered, then its connection closed. */
    req->keep_alive = llhttp_should_keep_alive(parser) && !hd_conn_server_draining(conn);
    if (check_head(conn, parser) != 0)
        return HPE_USER;
    hd_request_split_target(req);
    conn->reader->body_limit = hd_router_body_limit(conn);
    if ((parser->flags & F_CONTENT_LENGTH) && parser->content_length > conn->reader->body_limit) {
        hd_metric_add(&conn->server->metrics.protocol_errors[HD_PROTOCOL_HTTP], 1);
        hd_response_error(conn, 413, "payload_too_large", HD_RESPONSE_CLOSE,
                          "The body of %llu bytes exceeds the limit of %llu bytes.",
                          (unsigned long long)parser->content_length,
                          (unsigned long long)conn->reader->body_limit);
        return HPE_USER;
    }
    return answer_expectation(conn, parser);
}

static int refuse_body(hd_conn *conn)
{
    hd_metric_add(&conn->server->metrics.protocol_errors[HD_PROTOCOL_HTTP], 1);
    hd_response_error(conn, 413, "payload_too_large", HD_RESPONSE_CLOSE,
                      "The body exceeds the limit of %llu bytes.",
                      (unsigned long long)conn->reader->body_limit);
    return HPE_USER;
}

/* A chunk that would take the body past its limit is refused once its size is read. */
static int on_chunk_header(llhttp_t *parser)
{
    hd_conn *conn = parser_conn(parser);
    if (parser->content_length > conn->reader->body_limit - conn->request->body.len)
        return refuse_body(conn);
    return 0;
}

static int on_body(llhttp_t *parser, const char *at, size_t len)
{
    hd_conn *conn = parser_conn(parser);
    if (conn->request->body.len + len > conn->reader->body_limit)
        return refuse_body(conn);
    int rc = reserve_body(conn, conn->request->body.len + len);
    if (rc != 0)
        return rc;
    hd_strbuf_append(&conn->request->body, at, len);
    wait_for_request(conn);
    return 0;
}

static int on_message_complete(llhttp_t *parser)
{
    hd_conn *conn = parser_conn(parser);
    conn->request_started = false;
    hd_metric_add(&conn->server->metrics.http_requests, 1);
    hd_router_dispatch(conn);
    end_request(conn); /* the handler is done with the body */
    if (conn->state != HD_CONN_READING || conn->close_when_flushed)
        return HPE_PAUSED;
    wait_for_request(conn);
    return 0;
}

void hd_conn_init_http_settings(llhttp_settings_t *settings)
{
    llhttp_settings_init(settings);
    settings->on_message_begin = on_message_begin;
    settings->on_version_complete = on_version_complete;
    settings->on_url = on_url;
    settings->on_header_field = on_header_field;
    settings->on_header_field_complete = on_header_field_complete;
    settings->on_header_value = on_header_value;
    settings->on_header_value_complete = on_header_value_complete;
    settings->on_headers_complete = on_headers_complete;
    settings->on_chunk_header = on_chunk_header;
    settings->on_body = on_body;
    settings->on_message_complete = on_message_complete;
}

static void parse_input(hd_conn *conn, const char *data, size_t len)
{
    llhttp_errno_t err = llhttp_execute(&conn->reader->parser, data, len);
    const char *rest = err == HPE_PAUSED ? llhttp_get_error_pos(&conn->reader->parser) : NULL;
    size_t rest_len = rest != NULL && rest < data + len ? (size_t)(data + len - rest) : 0;
    /* A stream that started inside the parser's callbacks needs it no more, now it returned. */
    if (conn->state == HD_CONN_STREAMING)
        free_reader(conn);
    if (err == HPE_PAUSED && conn->state == HD_CONN_WAITING) {
        if (rest_len > 0)
            hold_input(conn, rest, rest_len);
        return;
    }
    if (err == HPE_PAUSED && conn->stream_ops != NULL && conn->stream_ops->on_data != NULL) {
        /* A WebSocket client may send frames right behind its handshake. */
        if (rest_len > 0)
            conn->stream_ops->on_data(conn, conn->stream_session, rest, rest_len);
        return;
    }
    /* A callback that answered (413, 414, 431) has already ended the connection. */
    if (err == HPE_OK || err == HPE_PAUSED || err == HPE_USER || conn->close_when_flushed)
        return;
    if (err == HPE_PAUSED_UPGRADE) {
        /* Answered as plain HTTP; what follows is a protocol herald does not speak there. */
        hd_conn_close_after_flush(conn);
        return;
    }
    conn->request->keep_alive = false;
    hd_metric_add(&conn->server->metrics.protocol_errors[HD_PROTOCOL_HTTP], 1);
    hd_response_error(conn, 400, "bad_request", HD_RESPONSE_CLOSE, "Malformed HTTP request: %s.",
                      llhttp_get_error_reason(&conn->reader->parser));
}

void hd_conn_resume_input(hd_conn *conn)
{
    hd_list_unlink(&conn->wake_node);
    if (conn->state != HD_CONN_READING || conn->close_when_flushed)
        return;
    if (conn->reading_paused &&
        conn->outq.bytes <= hd_conn_config(conn)->limits.max_outbound_bytes) {
        conn->reading_paused = false;
        if (uv_read_start((uv_stream_t *)&conn->tcp, hd_conn_on_alloc, conn_on_read) != 0) {
            hd_conn_close(conn);
            return;
        }
    }
    /* Parsing may hold input again (another long-poll), so it starts from a fresh buffer. */
    hd_strbuf input = conn->reader->held_input;
    hd_strbuf_init(&conn->reader->held_input);
    if (input.len > 0)
        parse_input(conn, input.data, input.len);
    hd_strbuf_free(&input);
}

/* ------------------------------------------------------------------------ */
/* libuv callbacks                                                          */

void hd_conn_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    hd_conn *conn = (hd_conn *)handle;
    /* Every read is parsed before the next one, so one buffer serves all connections. */
    *buf = uv_buf_init(conn->server->read_buffer, sizeof(conn->server->read_buffer));
}

void hd_conn_feed(hd_conn *conn, const char *bytes, size_t len)
{
    if (len == 0 || conn->close_when_flushed)
        return;
    if (conn->state == HD_CONN_READING)
        parse_input(conn, bytes, len);
    else if (conn->state == HD_CONN_WAITING)
        hold_input(conn, bytes, len);
    else if (conn->stream_ops != NULL && conn->stream_ops->on_data != NULL)
        conn->stream_ops->on_data(conn, conn->stream_session, bytes, len);
}

/*
 * TLS: the ciphertext just read goes into the session, and the plaintext
 * that comes out goes where plaintext from the socket goes on a plain
 * listener. It is decrypted into the server's read buffer, free again now
 * that the session copied the ciphertext; consumers copy what they keep, as
 * they must anyway, since every read reuses that buffer. Whatever the
 * session has to say (handshake records, alerts) is written by the flush
 * pass. A handshake failure or bytes that are not TLS (plain HTTP to a TLS
 * port) end this connection only, after a best-effort alert.
 */
static void tls_on_read(hd_conn *conn, const char *cipher, size_t len)
{
    /* Ending: the answer is sealed or written, and only EOF is awaited. */
    if (conn->close_when_flushed)
        return;
    hd_tls_feed(conn->tls, cipher, len);
    char *plain = conn->server->read_buffer;
    for (;;) {
        const char *reason = NULL;
        ssize_t n = hd_tls_read(conn->tls, plain, sizeof(conn->server->read_buffer), &reason);
        if (n > 0) {
            hd_conn_feed(conn, plain, (size_t)n);
            if (conn->state == HD_CONN_CLOSING || conn->close_when_flushed)
                return;
            continue;
        }
        if (n == HD_TLS_WANT)
            break;
        if (n == HD_TLS_ERROR) {
            hd_log_debug("TLS from %s failed: %s", conn->peer, reason);
            hd_buf *alert = hd_tls_take(conn->tls);
            if (alert != NULL) {
                uv_buf_t buf = uv_buf_init(alert->data, (unsigned)alert->len);
                uv_try_write((uv_stream_t *)&conn->tcp, &buf, 1);
                hd_buf_release(alert);
            }
        }
        hd_conn_close(conn); /* HD_TLS_ERROR, or close_notify: the peer is done, like EOF */
        return;
    }
    if (hd_tls_pending(conn->tls) == 0)
        return;
    /*
     * The session can write without a request (a TLS 1.3 KeyUpdate is
     * answered in kind): a peer that does not read gets no more of that than
     * the outbound limit, like any slow consumer.
     */
    if (outbound_bytes(conn) > hd_conn_config(conn)->limits.max_outbound_bytes) {
        hd_log_debug("TLS from %s: closed, it does not read what it asks for", conn->peer);
        hd_conn_close(conn);
        return;
    }
    if (!hd_list_linked(&conn->flush_node))
        hd_list_insert_tail(&conn->server->flush_list, &conn->flush_node);
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    hd_conn *conn = (hd_conn *)stream;
    if (nread < 0) {
        hd_conn_close(conn);
        return;
    }
    hd_metric_add(&conn->server->metrics.bytes_read, (uint64_t)nread);
    if (conn->tls != NULL)
        tls_on_read(conn, buf->base, (size_t)nread);
    else
        hd_conn_feed(conn, buf->base, (size_t)nread);
}

hd_conn *hd_conn_new(hd_server *server)
{
    hd_conn *conn = hd_calloc(1, sizeof(*conn));
    conn->server = server;
    conn->state = HD_CONN_READING;
    hd_list_init(&conn->server_node);
    hd_list_init(&conn->flush_node);
    hd_list_init(&conn->close_node);
    hd_list_init(&conn->timeout_node);
    hd_list_init(&conn->detach_node);
    hd_list_init(&conn->wake_node);
    conn->reader = hd_calloc(1, sizeof(*conn->reader));
    hd_strbuf_init(&conn->reader->held_input);
    hd_list_init(&conn->reader->request_node);
    conn->request = &conn->reader->request;
    hd_request_init(conn->request);
    llhttp_init(&conn->reader->parser, HTTP_REQUEST, &server->http_settings);
    /* Any DIGIT.DIGIT version: on_version_complete answers those herald does not speak. */
    conn->reader->parser.lenient_flags |= LENIENT_VERSION;
    conn->reader->parser.data = conn;
    uv_tcp_init(server->loop, &conn->tcp);
    hd_list_insert_tail(&server->connections, &conn->server_node);
    hd_metric_add(&server->connection_count, 1);
    __atomic_fetch_add(&server->group->connections, 1, __ATOMIC_RELAXED);
    strcpy(conn->peer, "?");
    return conn;
}

void hd_conn_serve(hd_conn *conn)
{
    if (conn->server->tls != NULL)
        conn->tls = hd_tls_new(conn->server->tls);
    uv_tcp_nodelay(&conn->tcp, 1);
    if (uv_read_start((uv_stream_t *)&conn->tcp, hd_conn_on_alloc, conn_on_read) != 0) {
        hd_conn_close(conn);
        return;
    }
    wait_for_request(conn);
}
