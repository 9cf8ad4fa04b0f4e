/*
 * The per-connection state machine (see conn.h): the read path up to the
 * protocol, held input, the write path over the bounded queue (outq.c), the
 * deadlines the server's sweep fires, streams and waits, and the two-phase
 * close. Accepting and refusing are listener.c's; what the bytes mean is the
 * protocol's (hd_conn_protocol).
 */
#include "net/conn.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "herald/alloc.h"
#include "herald/clock.h"
#include "herald/log.h"
#include "net/server_internal.h"
#include "ops/metrics.h"

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

void *hd_conn_context(const hd_conn *conn)
{
    return conn->server->context;
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

void hd_conn_renew_read_deadline(hd_conn *conn)
{
    hd_conn_wait_in(conn, &conn->server->header_wait);
}

void hd_conn_start_request_deadline(hd_conn *conn)
{
    hd_conn_reader *reader = conn->reader;
    hd_list_unlink(&reader->request_node);
    reader->request_since_ms = hd_server_now(conn->server);
    hd_list_insert_tail(&conn->server->request_wait, &reader->request_node);
}

void hd_conn_stop_request_deadline(hd_conn *conn)
{
    hd_list_unlink(&conn->reader->request_node);
}

/* READING, and a close after the answers owed was asked for (hd_conn_close_after_flush). */
static bool closing_after_answers(const hd_conn *conn)
{
    return conn->reader != NULL && conn->reader->closing_after_answers;
}

bool hd_conn_reads_requests(const hd_conn *conn)
{
    return conn->state == HD_CONN_READING && !conn->close_when_flushed &&
           !closing_after_answers(conn);
}

static void drop_answers(hd_conn *conn);
static void end_after_input(hd_conn *conn);
static hd_outq *answer_place(hd_conn *conn);
static bool close_after_answers(hd_conn *conn);

static void free_reader(hd_conn *conn)
{
    hd_conn_reader *reader = conn->reader;
    if (reader == NULL)
        return;
    drop_answers(conn);
    hd_list_unlink(&reader->request_node);
    hd_strbuf_free(&reader->held_input);
    conn->reader = NULL;
    conn->request = NULL;
    conn->server->protocol->reader_free(conn, reader);
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
 * Answers are never dropped: a client that pipelines faster than it reads
 * is slowed down instead, by reading no more until it caught up. Answers
 * queued behind a deferred one count as queued.
 */
static void pause_reading_past_limit(hd_conn *conn)
{
    if (conn->outq.bytes + conn->reader->answers_bytes >
            hd_conn_config(conn)->limits.max_outbound_bytes &&
        !conn->reading_paused) {
        conn->reading_paused = true;
        uv_read_stop((uv_stream_t *)&conn->tcp);
    }
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
    hd_conn_set_end_reason(conn, "slow consumer");
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
        hd_outq *behind = answer_place(conn);
        if (behind != NULL) {
            hd_outq_push(behind, buf);
            conn->reader->answers_bytes += buf->len;
        } else {
            enqueue(conn, buf);
        }
        pause_reading_past_limit(conn);
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
    /* After the client's EOF there is nothing to linger for: no more input will come. */
    if (status < 0 || conn->input_ended)
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
    if (conn->reading_paused && !conn->input_ended) {
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
    hd_conn_renew_read_deadline(conn);
}

/* Gives back the buffers that were being written; written: they all reached the socket. */
static void release_in_flight(hd_conn *conn, bool written)
{
    uint64_t bytes = hd_outq_finish(&conn->outq);
    if (written)
        hd_metric_add(&conn->server->metrics.bytes_written, bytes);
}

void hd_conn_set_end_reason(hd_conn *conn, const char *reason)
{
    if (conn->end_reason == NULL)
        conn->end_reason = reason;
}

void hd_conn_note_publish(hd_conn *conn, int64_t publish_ms)
{
    if (conn->oldest_publish_ms == 0)
        conn->oldest_publish_ms = publish_ms;
}

/* The queue is all with the socket: one observation for its oldest live message, if any. */
static void observe_publish_to_flush(hd_conn *conn)
{
    int64_t age = hd_clock_wall_ms() - conn->oldest_publish_ms;
    /* Another node's clock (cluster) may run ahead of this one's. */
    hd_metrics_observe_publish_to_flush(&conn->server->metrics, age > 0 ? (uint64_t)age : 0);
    conn->oldest_publish_ms = 0;
}

/*
 * Whether reading that was paused may start again. Not while a long-poll's
 * answer is held back, nor while the protocol waits for deferred answers
 * (their writes would otherwise let it read on, one buffer more each time),
 * nor with a full bound of input held, nor with answers (queued or behind a
 * deferred one) past the outbound limit, nor after the client's EOF.
 */
static bool may_restart_reading(const hd_conn *conn)
{
    if (conn->state == HD_CONN_WAITING || conn->input_ended)
        return false;
    const hd_conn_reader *reader = conn->reader;
    if (reader == NULL)
        return true;
    const hd_config *config = hd_conn_config(conn);
    return !reader->waiting_for_answers &&
           reader->held_input.len < config->limits.max_header_bytes &&
           conn->outq.bytes + reader->answers_bytes <= config->limits.max_outbound_bytes;
}

/* What follows a completed write: more output, the end of the connection, or more input. */
static void conn_on_written(hd_conn *conn)
{
    if (conn->oldest_publish_ms != 0 && !has_output(conn))
        observe_publish_to_flush(conn);
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
    if (conn->reading_paused && may_restart_reading(conn)) {
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
        hd_conn_set_end_reason(conn, "write error");
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
    if (close_after_answers(conn))
        return;
    conn->close_when_flushed = true;
    /* A request cut short by an early answer holds no budget or body while the answer lingers. */
    if (conn->reader != NULL)
        conn->server->protocol->on_ending(conn);
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
/* Deferred answers (pipelining): see hd_conn_defer in conn.h.              */

/*
 * A place in the order of answers: a deferred answer (request set, open
 * until hd_conn_answer_end), or answers queued behind one (request NULL).
 * The list is empty or starts with an open one: whatever is complete at its
 * head is moved to the connection's queue at once.
 */
struct hd_conn_answer {
    hd_list node; /* in reader->answers */
    hd_conn *conn;
    hd_outq out; /* what was queued for it, in order */
    bool open;
    bool close_after;          /* the connection closes once it is written */
    hd_request *request;       /* the protocol's (keep_request); while given: the one it replaced */
    uint64_t request_since_ms; /* swapped with the reader's likewise, for the access log */
    hd_conn_answer_cancel cancel;
    void *ctx;
};

static hd_conn_answer *first_answer(const hd_conn_reader *reader)
{
    return hd_container_of(reader->answers.next, hd_conn_answer, node);
}

static hd_conn_answer *last_answer(const hd_conn_reader *reader)
{
    return hd_container_of(reader->answers.prev, hd_conn_answer, node);
}

/* A place at the end of the order for what is queued next (not a deferred answer). */
static hd_conn_answer *tail_place(hd_conn *conn)
{
    hd_conn_reader *reader = conn->reader;
    hd_conn_answer *last = last_answer(reader);
    if (!last->open && !last->close_after)
        return last;
    hd_conn_answer *place = hd_calloc(1, sizeof(*place));
    place->conn = conn;
    hd_list_insert_tail(&reader->answers, &place->node);
    return place;
}

/* Where an answer queued now goes; NULL: the connection's queue, nothing is owed before it. */
static hd_outq *answer_place(hd_conn *conn)
{
    hd_conn_reader *reader = conn->reader;
    if (hd_list_empty(&reader->answers))
        return NULL;
    if (reader->answering != NULL)
        return reader->answering == first_answer(reader) ? NULL : &reader->answering->out;
    return &tail_place(conn)->out;
}

static void free_answer(hd_conn *conn, hd_conn_answer *answer)
{
    /*
     * The reader outlives its answers: drop_answers runs before it is freed
     * (free_reader, hd_conn_finish_close), and neither can run while an
     * answer is given, so hd_conn_answer_end finds it too.
     */
    assert(conn->reader != NULL);
    hd_list_unlink(&answer->node);
    conn->reader->answers_bytes -= answer->out.bytes;
    hd_outq_free(&answer->out);
    if (answer->request != NULL)
        conn->server->protocol->release_request(conn, answer->request);
    free(answer);
}

/* The connection goes (or closes after an answer): what is still owed is cancelled. */
static void drop_answers(hd_conn *conn)
{
    hd_conn_reader *reader = conn->reader;
    if (reader == NULL)
        return;
    while (!hd_list_empty(&reader->answers)) {
        hd_conn_answer *answer = first_answer(reader);
        if (answer->open && answer != reader->answering)
            answer->cancel(conn, answer->ctx);
        if (answer == reader->answering) {
            hd_list_unlink(&answer->node); /* hd_conn_answer_end frees it */
            continue;
        }
        free_answer(conn, answer);
    }
}

static void say_close_in_last(hd_conn *conn, hd_conn_answer *at);

/* Moves the complete answers at the head of the order to the connection's queue. */
static void flush_answers(hd_conn *conn)
{
    hd_conn_reader *reader = conn->reader;
    while (!hd_list_empty(&reader->answers) && !first_answer(reader)->open) {
        hd_conn_answer *answer = first_answer(reader);
        bool close = answer->close_after;
        /*
         * Draining (asked to stop, and perhaps not yet told in this loop),
         * the last answer owed is the connection's last, even one made before.
         */
        if (!close && answer->node.next == &reader->answers && hd_conn_server_draining(conn)) {
            say_close_in_last(conn, answer);
            close = true;
        }
        reader->answers_bytes -= answer->out.bytes;
        if (conn->state == HD_CONN_CLOSING) {
            hd_outq_free(&answer->out);
        } else if (answer->out.count > 0) {
            hd_outq_take_all(&conn->outq, &answer->out);
            if (!hd_list_linked(&conn->flush_node))
                hd_list_insert_tail(&conn->server->flush_list, &conn->flush_node);
        }
        free_answer(conn, answer);
        if (close) {
            drop_answers(conn);
            reader->closing_after_answers = false;
            hd_conn_close_after_flush(conn);
            return;
        }
    }
    /* The protocol reads on in the server's pass, after the answers just queued. */
    if (reader->waiting_for_answers && !hd_list_linked(&conn->wake_node))
        hd_list_insert_tail(&conn->server->resume_list, &conn->wake_node);
    else if (!reader->waiting_for_answers)
        end_after_input(conn);
}

/*
 * The answers queued behind owed ones were made before the close was
 * decided (shutdown began behind them): the last one says so now, so that
 * the client knows its connection ends there (the protocol's closing_answer).
 */
static void say_close_in_last(hd_conn *conn, hd_conn_answer *at)
{
    const hd_conn_protocol *protocol = conn->server->protocol;
    if (at->out.count == 0 || protocol->closing_answer == NULL)
        return;
    hd_buf *closing = protocol->closing_answer(hd_outq_last(&at->out));
    if (closing == NULL)
        return;
    conn->reader->answers_bytes -= at->out.bytes;
    hd_outq_replace_last(&at->out, closing);
    conn->reader->answers_bytes += at->out.bytes;
}

/*
 * hd_conn_close_after_flush while answers are owed: the close waits for the
 * answer being given, or else for the last one owed. Nothing more is read
 * meanwhile; a request cut short lets go of what it holds. false: nothing
 * is owed, close as usual.
 */
static bool close_after_answers(hd_conn *conn)
{
    hd_conn_reader *reader = conn->reader;
    if (reader == NULL || hd_list_empty(&reader->answers))
        return false;
    hd_conn_answer *at = reader->answering != NULL ? reader->answering : last_answer(reader);
    at->close_after = true;
    if (!at->open)
        say_close_in_last(conn, at);
    if (!reader->closing_after_answers) {
        reader->closing_after_answers = true;
        conn->server->protocol->on_ending(conn);
    }
    return true;
}

hd_conn_answer *hd_conn_defer(hd_conn *conn, hd_conn_answer_cancel cancel, void *ctx)
{
    hd_conn_reader *reader = conn->reader;
    hd_conn_answer *answer = hd_calloc(1, sizeof(*answer));
    answer->conn = conn;
    answer->open = true;
    answer->cancel = cancel;
    answer->ctx = ctx;
    answer->request_since_ms = reader->request_since_ms;
    answer->request = conn->server->protocol->keep_request(conn);
    hd_list_insert_tail(&reader->answers, &answer->node);
    return answer;
}

static void swap_request(hd_conn *conn, hd_conn_answer *answer)
{
    hd_request *request = conn->request;
    conn->request = answer->request;
    answer->request = request;
    uint64_t since = conn->reader->request_since_ms;
    conn->reader->request_since_ms = answer->request_since_ms;
    answer->request_since_ms = since;
}

hd_conn *hd_conn_answer_begin(hd_conn_answer *answer)
{
    hd_conn *conn = answer->conn;
    conn->reader->answering = answer;
    swap_request(conn, answer);
    return conn;
}

void hd_conn_answer_end(hd_conn_answer *answer)
{
    hd_conn *conn = answer->conn;
    swap_request(conn, answer);
    conn->reader->answering = NULL;
    answer->open = false;
    if (!hd_list_linked(&answer->node)) {
        free_answer(conn, answer); /* dropped while it was given: the connection closes */
        return;
    }
    flush_answers(conn);
}

bool hd_conn_owes_answers(const hd_conn *conn)
{
    return conn->reader != NULL && !hd_list_empty(&conn->reader->answers);
}

bool hd_conn_answers_follow(const hd_conn *conn)
{
    const hd_conn_reader *reader = conn->reader;
    return reader != NULL && reader->answering != NULL &&
           reader->answering->node.next != &reader->answers;
}

void hd_conn_wait_for_answers(hd_conn *conn)
{
    conn->reader->waiting_for_answers = true;
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
    /* Before the loop turns again: no engine answer may arrive for a connection going away. */
    drop_answers(conn);
    hd_conn_detach_stream(conn);
    uv_close((uv_handle_t *)&conn->tcp, conn_on_closed);
}

void hd_conn_start_stream(hd_conn *conn, const hd_stream_ops *ops, void *session)
{
    /* A stream reads no more requests: its reader goes once the protocol returns. */
    conn->state = HD_CONN_STREAMING;
    conn->stream_ops = ops;
    conn->stream_session = session;
    hd_metric_add(&conn->server->metrics.transport_connections[ops->transport], 1);
    hd_conn_wait_in(conn, &conn->server->stream_idle);
    /* A request that was under way when shutdown began ends as soon as it starts. */
    if (conn->server->draining) {
        hd_conn_set_end_reason(conn, "shutdown");
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
    hd_conn_renew_read_deadline(conn);
    /* Read in the server's pass, so that the answer the caller queues next goes first. */
    if (conn->reader->held_input.len > 0 || conn->reading_paused || conn->input_ended)
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

/* Lingering after the last answer, the connection ends; otherwise the protocol decides. */
void hd_conn_on_header_timeout(hd_conn *conn)
{
    if (conn->close_when_flushed || conn->reader == NULL) {
        hd_conn_close(conn);
        return;
    }
    /*
     * Idle in appearance only: answers it is owed are on their way (their
     * engine bounds that). Closing after them, a request cut short (by a 413
     * answered early) was answered already: a 408 would never be sent.
     */
    if (hd_conn_owes_answers(conn) &&
        (closing_after_answers(conn) || !conn->server->protocol->request_under_way(conn))) {
        hd_conn_renew_read_deadline(conn);
        return;
    }
    conn->server->protocol->on_read_timeout(conn);
}

/* Only a request under way is in request_wait (see hd_conn_stop_request_deadline). */
void hd_conn_on_request_timeout(hd_conn *conn)
{
    hd_list_unlink(&conn->timeout_node);
    conn->server->protocol->on_request_timeout(conn);
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

/*
 * Input for the protocol, while READING. What it did not consume came
 * behind a request that handed the connection over: held for after the
 * answer (WAITING), or the stream's (a WebSocket client may send frames
 * right behind its handshake); anything else is dropped.
 */
static void read_requests(hd_conn *conn, const char *bytes, size_t len)
{
    size_t used = conn->server->protocol->on_data(conn, bytes, len);
    /* A stream that started inside the protocol's callbacks needs the reader no more. */
    if (conn->state == HD_CONN_STREAMING)
        free_reader(conn);
    if (used >= len)
        return;
    if (conn->state == HD_CONN_WAITING ||
        (conn->state == HD_CONN_READING && conn->reader->waiting_for_answers))
        hold_input(conn, bytes + used, len - used);
    else if (conn->stream_ops != NULL && conn->stream_ops->on_data != NULL)
        conn->stream_ops->on_data(conn, conn->stream_session, bytes + used, len - used);
}

/*
 * After a half-close (the client's EOF while answers were owed or input
 * held), the requests read before it are answered; once none is left, the
 * connection ends. A request cut short by the EOF is not answered.
 */
static void end_after_input(hd_conn *conn)
{
    if (conn->input_ended && hd_conn_reads_requests(conn) && !hd_conn_owes_answers(conn) &&
        conn->reader->held_input.len == 0 && !conn->reader->waiting_for_answers)
        hd_conn_close_after_flush(conn);
}

void hd_conn_resume_input(hd_conn *conn)
{
    hd_list_unlink(&conn->wake_node);
    if (!hd_conn_reads_requests(conn))
        return;
    /* Waiting for answers, the protocol may have a request to dispatch even without input. */
    bool waited = conn->reader->waiting_for_answers;
    conn->reader->waiting_for_answers = false;
    /* Reading may hold input again (another long-poll), so it starts from a fresh buffer. */
    hd_strbuf input = conn->reader->held_input;
    hd_strbuf_init(&conn->reader->held_input);
    if (input.len > 0 || waited)
        read_requests(conn, input.len > 0 ? input.data : "", input.len);
    hd_strbuf_free(&input);
    /* After the held input: whether the protocol waits again, and how much it held, is known. */
    if (conn->state == HD_CONN_CLOSING)
        return;
    if (conn->reading_paused && may_restart_reading(conn)) {
        conn->reading_paused = false;
        if (uv_read_start((uv_stream_t *)&conn->tcp, hd_conn_on_alloc, conn_on_read) != 0) {
            hd_conn_close(conn);
            return;
        }
    }
    end_after_input(conn);
}

/* ------------------------------------------------------------------------ */
/* libuv callbacks                                                          */

void hd_conn_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    hd_conn *conn = (hd_conn *)handle;
    /* Every read is consumed before the next one, so one buffer serves all connections. */
    *buf = uv_buf_init(conn->server->read_buffer, sizeof(conn->server->read_buffer));
}

void hd_conn_feed(hd_conn *conn, const char *bytes, size_t len)
{
    if (len == 0 || conn->close_when_flushed || closing_after_answers(conn))
        return;
    /*
     * Input held while the last answer waited is read in the server's pass
     * after the answer (hd_conn_end_wait): what arrives before that pass
     * came after it on the wire, so it queues behind it, or pipelined
     * requests would be served out of order. The same holds for input
     * held while the protocol waits for deferred answers.
     */
    if (conn->state == HD_CONN_READING && conn->reader->held_input.len == 0 &&
        !conn->reader->waiting_for_answers)
        read_requests(conn, bytes, len);
    else if (conn->state == HD_CONN_READING || conn->state == HD_CONN_WAITING)
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
static bool half_closed(hd_conn *conn);

static void tls_on_read(hd_conn *conn, const char *cipher, size_t len)
{
    /* Ending: the answer is sealed or written (or owed), and only EOF is awaited. */
    if (conn->close_when_flushed || closing_after_answers(conn))
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
        /* close_notify is the peer's EOF: a half-close as on a plain socket (TLS 1.3 §6.1). */
        if (n == HD_TLS_CLOSED && half_closed(conn))
            return;
        hd_conn_close(conn); /* HD_TLS_ERROR, or close_notify with nothing owed */
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

/*
 * EOF with requests read and not yet answered (owed, or held behind owed
 * answers): a half-close (shutdown(SHUT_WR), as HTTP/1.0 tools do) that
 * still reads. Those requests are answered in order, then the connection
 * ends (end_after_input); a publish already sent to Redis is not cancelled.
 * Returns false for a close as usual.
 */
static bool half_closed(hd_conn *conn)
{
    if (conn->state != HD_CONN_READING || conn->close_when_flushed ||
        (!hd_conn_owes_answers(conn) && conn->reader->held_input.len == 0))
        return false;
    /* What is held is read once the answers before it are written (hd_conn_resume_input). */
    conn->input_ended = true;
    uv_read_stop((uv_stream_t *)&conn->tcp);
    return true;
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    hd_conn *conn = (hd_conn *)stream;
    if (nread == UV_EOF && half_closed(conn))
        return;
    if (nread < 0) {
        hd_conn_set_end_reason(conn, nread == UV_EOF ? "client closed" : "read error");
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
    conn->reader = server->protocol->reader_new(conn);
    conn->reader->conn = conn;
    hd_strbuf_init(&conn->reader->held_input);
    hd_list_init(&conn->reader->request_node);
    hd_list_init(&conn->reader->answers);
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
    hd_conn_renew_read_deadline(conn);
}
