/*
 * A client connection and its state machine: the one place where a
 * connection changes state.
 *
 *   READING    the server's protocol (hd_conn_protocol: HTTP/1.x) reads
 *              requests; each is answered in order (keep-alive and
 *              pipelining), an answer deferred meanwhile (hd_conn_defer)
 *              in its place
 *   WAITING    a transport holds the answer to the current request back
 *              (long-poll); the request stays readable, input that arrives
 *              meanwhile is held (bounded) and parsed after the answer, and
 *              EOF closes the connection at once
 *   STREAMING  a transport took the connection over (SSE); input is only
 *              watched for EOF
 *   CLOSING    marked for close; unlinked and freed in two phases (the
 *              transport's on_close, then uv_close and its callback)
 *
 * Writes never go straight to the socket: hd_conn_send queues a reference to
 * a shared buffer and links the connection into the server's flush list; the
 * server's flush passes (a slice of the list per loop iteration) issue one
 * gathered uv_write per connection. The queue is bounded by
 * limits.max_outbound_bytes. Only the buffer the socket took part of is
 * ever in flight past a flush, so a connection that is told to go can
 * still drop everything behind it: buffers are whole frames or events.
 *
 * net/ knows no protocol: it moves bytes, bounds them and keeps deadlines.
 * What the bytes mean, and what a client is told when it breaks a rule or a
 * deadline, is the protocol's, given to hd_server_new with a context per
 * loop (hd_conn_context) for it and the handlers behind it.
 *
 * Private to the server, the protocol and the transports (not in include/):
 * transports use the functions below, and read only the fields `request`
 * (until the stream starts) and `peer`; every other field is the
 * connection's own.
 */
#ifndef HERALD_NET_CONN_H
#define HERALD_NET_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "herald/buf.h"
#include "herald/config.h"
#include "herald/hub.h"
#include "herald/list.h"
#include "net/ip_count.h"
#include "net/outq.h"
#include "net/tls.h"
#include "ops/metrics.h"

typedef struct hd_server hd_server;
typedef struct hd_conn hd_conn;
/* The request being read (http/request.h): the protocol fills it, net/ only holds the pointer. */
typedef struct hd_request hd_request;

typedef enum hd_conn_state {
    HD_CONN_READING,
    HD_CONN_WAITING,
    HD_CONN_STREAMING,
    HD_CONN_CLOSING,
} hd_conn_state;

/* What a transport that takes a connection over (or holds its answer back) must provide. */
typedef struct hd_stream_ops {
    /* The connection is closing: detach from the hub and free the session. */
    void (*on_close)(hd_conn *conn, void *session);
    /* Nothing was sent for heartbeat_s: send the transport's keep-alive. */
    void (*on_heartbeat)(hd_conn *conn, void *session);
    /* The queue fell to half its limit or below (for catching up from history). */
    void (*on_drain)(hd_conn *conn, void *session);
    /* Bytes that arrived after the request that started the stream; NULL: discarded. */
    void (*on_data)(hd_conn *conn, void *session, const char *bytes, size_t len);
    /*
     * The queue passed limits.max_outbound_bytes and the stream is being
     * ended (see hd_conn_send): queue a last word with hd_conn_send_last
     * (WebSocket: close 1013). NULL: nothing more (SSE ends after the event
     * in progress).
     */
    void (*on_slow_consumer)(hd_conn *conn, void *session);
    /* The server is draining; NULL: the stream is ended after a flush. */
    void (*on_shutdown)(hd_conn *conn, void *session);
    /* Called from the server's pass after hd_conn_wake, outside any hub delivery. */
    void (*on_wake)(hd_conn *conn, void *session);
    /*
     * true: on_heartbeat fires after heartbeat_s without output (SSE comments);
     * false: every heartbeat_s regardless (WebSocket pings, which also check the peer).
     */
    bool heartbeat_when_idle;
    hd_transport transport; /* for the connection gauges of GET /metrics */
} hd_stream_ops;

#define HD_CONN_WRITE_BATCH 64

/*
 * What a connection needs only while it reads requests; freed when a stream
 * takes over. The protocol's reader embeds it first (hd_conn_protocol's
 * reader_new) and adds its own state after it; these fields are net/'s.
 */
typedef struct hd_conn_reader {
    hd_conn *conn;
    /*
     * Arrived while WAITING, or while the protocol waits for deferred
     * answers (hd_conn_wait_for_answers); handed to it once it may read on.
     */
    hd_strbuf held_input;
    /* In server->request_wait from hd_conn_start_request_deadline until it is stopped. */
    hd_list request_node;
    uint64_t request_since_ms;
    /* Deferred answers (hd_conn_defer) and the answers queued behind them, in request order. */
    hd_list answers;
    struct hd_conn_answer *answering; /* between hd_conn_answer_begin and _end */
    uint64_t answers_bytes;           /* queued behind a deferred answer, not yet in outq */
    bool waiting_for_answers;         /* the protocol reads on once a deferred answer is written */
    bool closing_after_answers; /* hd_conn_close_after_flush waits for the answers before it */
} hd_conn_reader;

/*
 * What reads requests off a connection (HTTP/1.x: http/http1.h), given to
 * hd_server_new. net/ calls up into the layers above only through this table
 * and the stream ops. Every function runs on the connection's loop.
 */
typedef struct hd_conn_protocol {
    /*
     * A new connection: its reader, allocated with hd_conn_reader first
     * (net/ sets up that part after this returns). The protocol may point
     * conn->request into it.
     */
    hd_conn_reader *(*reader_new)(hd_conn *conn);
    /*
     * The reader goes (the connection closed, or a stream took over, once
     * on_data returned): free what it holds, and it. conn->reader and
     * conn->request are NULL by then.
     */
    void (*reader_free)(hd_conn *conn, hd_conn_reader *reader);
    /*
     * Input while READING. Returns how much of it was consumed: all of it,
     * unless a request handed the connection over (hd_conn_start_wait: the
     * rest is held and handed back after the answer; hd_conn_start_stream:
     * the rest goes to the stream's on_data).
     */
    size_t (*on_data)(hd_conn *conn, const char *bytes, size_t len);
    /* limits.header_timeout_s passed without input while READING: close, or answer. */
    void (*on_read_timeout)(hd_conn *conn);
    /* limits.request_timeout_s passed since hd_conn_start_request_deadline. */
    void (*on_request_timeout)(hd_conn *conn);
    /* hd_conn_close_after_flush with a reader: a request cut short lets go of what it holds. */
    void (*on_ending)(hd_conn *conn);
    /*
     * The current request's answer is deferred (hd_conn_defer): take the
     * request out of the reader and return it, keeping what answering it
     * needs (its head; not the body, which the handler has handed on). It is
     * conn->request again while the answer is given, and goes back with
     * release_request once the answer is queued or dropped.
     */
    hd_request *(*keep_request)(hd_conn *conn);
    void (*release_request)(hd_conn *conn, hd_request *request);
    /*
     * An answer queued behind deferred ones becomes the last of the
     * connection after it was made (shutdown began): a copy of it that says
     * the connection closes, or NULL when it says so already (or is no
     * answer of its own, such as an interim one). May be NULL.
     */
    hd_buf *(*closing_answer)(const hd_buf *answer);
    /* Whether a request is under way: shutdown leaves it to be answered (then closed). */
    bool (*request_under_way)(const hd_conn *conn);
    /*
     * What a client refused over a connection limit is sent before the close
     * (why: a phrase naming the limit), into out; its length, 0 for nothing.
     */
    size_t (*refusal)(const char *why, char *out, size_t cap);
} hd_conn_protocol;

/*
 * Kept small: an idle subscriber is one of these, its session and its
 * subscriptions. Whatever only some connections need some of the time (the
 * request parser, a write request for a partial write, a shutdown request)
 * is allocated when needed.
 */
struct hd_conn {
    uv_tcp_t tcp; /* first, so the handle pointer is the connection */
    hd_server *server;
    hd_conn_state state;
    hd_list server_node;  /* every connection, for shutdown */
    hd_list flush_node;   /* in server->flush_list while output waits */
    hd_list close_node;   /* in server->close_list once CLOSING */
    hd_list timeout_node; /* in the header-timeout, heartbeat or close-timeout list */
    hd_list detach_node;  /* in server->detach_list while an ending stream awaits detaching */
    hd_list wake_node;    /* in server->wake_list (WAITING) or resume_list (held input) */
    uint64_t timeout_since_ms;

    hd_conn_reader *reader; /* the protocol's; NULL once a stream took over */
    hd_request *request;    /* the protocol's request being read, NULL with the reader */

    hd_outq outq;          /* bounded by limits.max_outbound_bytes: see hd_conn_send */
    uv_write_t *write_req; /* only while the socket did not take a write at once */
    bool close_when_flushed;
    bool reading_paused; /* answers pile up past the limit: read again once written */
    bool input_ended;    /* EOF while requests read were still to answer (a half-close) */

    /*
     * The TLS session on a TLS listener, NULL on a plain one. With it the
     * queue holds plaintext until a flush encrypts it all into one buffer of
     * ciphertext, which is then the queue's only (in-flight) entry.
     */
    hd_tls *tls;

    const hd_stream_ops *stream_ops; /* NULL once the stream is detached */
    void *stream_session;

    /* Why a stream ended, for its log line (a static phrase; the first one set wins). */
    const char *end_reason;
    /* Publish time (Unix ms) of the oldest live message queued since the queue was last empty. */
    int64_t oldest_publish_ms;

    char peer[56]; /* "[IPv6 address]:port" at most */
    hd_ip ip;
    bool ip_counted;          /* counted in server->ip_counts */
    bool refused;             /* answered 503: holds no place under the connection limits */
    bool refused_draining;    /* its input is read out before close (server->refused_drain) */
    uint32_t refused_drained; /* bytes read out so far */
};

/*
 * Queues a reference to buf (retained here; the caller keeps its own).
 * Returns 0, or -1 when buf was not queued: the connection is closing, or
 * the queue of a stream would exceed limits.max_outbound_bytes. The stream
 * is then ended as a slow consumer: what was queued and not started is
 * dropped, the buffer in progress is finished, ops->on_slow_consumer adds
 * its last word, and the connection closes once that is written (within
 * limits.close_timeout_s). An empty queue accepts any one buffer, so the
 * bound is the limit or one message, whichever is larger. Answers to
 * requests (READING) are never dropped: reading pauses instead. Safe to
 * call from a hub deliver callback.
 */
int hd_conn_send(hd_conn *conn, hd_buf *buf);
/* Like hd_conn_send, but takes over the caller's reference. */
int hd_conn_send_owned(hd_conn *conn, hd_buf *buf);
/* Bytes queued or in flight. */
uint64_t hd_conn_queued_bytes(const hd_conn *conn);
/*
 * Closes once everything queued has been written (an answer, then close):
 * the write side is shut down and input drained for a moment first, so the
 * client reads the answer instead of a reset. The client has
 * limits.close_timeout_s to read what is queued; past that the connection
 * is reset. Input that arrives meanwhile is discarded.
 */
void hd_conn_close_after_flush(hd_conn *conn);
/* Marks the connection for close now; queued output is dropped. Idempotent. */
void hd_conn_close(hd_conn *conn);
/*
 * Hands the connection to a streaming transport: no more requests are read,
 * the heartbeat timer applies, ops->on_close runs when it closes. The
 * request is freed: read what the stream needs from it before this call.
 */
void hd_conn_start_stream(hd_conn *conn, const hd_stream_ops *ops, void *session);

/*
 * Holds the answer to the current request back (long-poll): the connection
 * is WAITING until hd_conn_end_wait; ops->on_close runs if it closes first,
 * ops->on_shutdown when the server drains. Unlike a stream, the request
 * stays readable (the answer, when it is finally sent, reads it).
 */
void hd_conn_start_wait(hd_conn *conn, const hd_stream_ops *ops, void *session);
/* Asks for ops->on_wake in the server's next pass (safe from a hub deliver callback). */
void hd_conn_wake(hd_conn *conn);
/*
 * Back to READING: the session is forgotten (on_close will not run), the
 * caller queues the answer next, and requests that arrived meanwhile are
 * parsed after it, in the server's pass.
 */
void hd_conn_end_wait(hd_conn *conn);

/*
 * Pipelining: an answer that comes later while the connection reads on (a
 * publish the Redis engine answers). hd_conn_defer makes the current
 * request's place in the order of answers and keeps its request (the
 * protocol's keep_request); the requests behind it are read and dispatched
 * meanwhile, and what is queued for them (hd_conn_send, even a closing
 * error) waits behind it, so that answers leave strictly in request order.
 * The answer is given between hd_conn_answer_begin, which makes its request
 * conn->request again, and hd_conn_answer_end; a connection that closes
 * first calls cancel(conn, ctx) instead, before it is freed, and never
 * begins the answer. hd_conn_close_after_flush while answers are owed
 * closes after them (after the one being given, or the last one owed).
 * The client's EOF (or TLS close_notify) while answers are owed or input
 * is held is a half-close, not a close: what was read is answered, then
 * the connection ends. Input held behind owed answers is bounded by
 * limits.max_header_bytes (plus one read). Which requests may be
 * dispatched while answers are owed, and how many, is the protocol's: it
 * stops with hd_conn_wait_for_answers.
 */
typedef struct hd_conn_answer hd_conn_answer;
typedef void (*hd_conn_answer_cancel)(hd_conn *conn, void *ctx);

/* While READING, from the request's handler, after which it must not read conn->request. */
hd_conn_answer *hd_conn_defer(hd_conn *conn, hd_conn_answer_cancel cancel, void *ctx);
hd_conn *hd_conn_answer_begin(hd_conn_answer *answer);
/* The answer is complete; frees it (once written in turn). */
void hd_conn_answer_end(hd_conn_answer *answer);
/* Whether answers deferred before now are not yet written (any, outside hd_conn_answer_begin). */
bool hd_conn_owes_answers(const hd_conn *conn);
/* Within hd_conn_answer_begin: whether answers to later requests follow the one being given. */
bool hd_conn_answers_follow(const hd_conn *conn);
/*
 * For the protocol: it stops reading until a deferred answer is written.
 * Input is held meanwhile (bounded as a WAITING connection's), and on_data
 * is called again then, with the held input or none.
 */
void hd_conn_wait_for_answers(hd_conn *conn);

/*
 * Queues buf (taking the caller's reference) past the outbound limit and
 * closes after flushing: for a last word such as a WebSocket close frame.
 */
void hd_conn_send_last(hd_conn *conn, hd_buf *buf);

/*
 * The config in force on the connection's loop. A reload (SIGHUP) may
 * replace it between two callbacks: read it where it is needed, and keep
 * no pointer into it (nor into hd_conn_auth's) past the callback.
 */
const hd_config *hd_conn_config(const hd_conn *conn);
/* The loop's monotonic clock in milliseconds (cached per loop iteration). */
uint64_t hd_conn_now_ms(const hd_conn *conn);
/* A wall-clock time (Unix ms) as a time of hd_conn_now_ms; 0 stays 0 (no deadline). */
uint64_t hd_conn_deadline_from_wall_ms(const hd_conn *conn, int64_t wall_ms);
/* Whether the server is shutting down (health checks then answer 503). */
bool hd_conn_server_draining(const hd_conn *conn);
/*
 * The context of the connection's loop, as given to hd_server_new: the
 * protocol's and its handlers' (transport/context.h), opaque to net/.
 */
void *hd_conn_context(const hd_conn *conn);
hd_hub *hd_conn_hub(const hd_conn *conn);
/* Where messages are published and history read (engine/engine.h). */
struct hd_engine *hd_conn_engine(const hd_conn *conn);
/* Who may publish and subscribe (auth/auth.h); NULL: everyone may do everything. */
const struct hd_auth *hd_conn_auth(const hd_conn *conn);
uv_loop_t *hd_conn_loop(const hd_conn *conn);
/* The server's counters (one set per loop, summed by GET /metrics). */
hd_metrics *hd_conn_metrics(const hd_conn *conn);
/* The counters of every worker's server summed into *total, and each one's connections. */
void hd_conn_group_metrics(const hd_conn *conn, hd_metrics *total, hd_metrics_gauges *gauges);
/* Connections all workers hold open, of every kind. */
size_t hd_conn_server_connections(const hd_conn *conn);
/*
 * Moves *reserved, this connection's share of limits.max_pending_body_bytes
 * (shared by every worker), to bytes: for a request body or WebSocket message
 * still being received. Returns false, changing nothing, when growing would
 * pass the limit; shrinking (to 0 when the message is done) always succeeds.
 * Safe from any worker thread.
 */
bool hd_conn_hold_pending(hd_conn *conn, uint64_t *reserved, uint64_t bytes);

/* Says why the stream ends (a static phrase), unless a reason was given already. */
void hd_conn_set_end_reason(hd_conn *conn, const char *reason);
/*
 * A live message published at publish_ms (Unix ms) was queued: once the
 * queue is all handed to the socket, the oldest such time since the queue
 * was last empty is observed in herald_publish_to_flush_seconds.
 */
void hd_conn_note_publish(hd_conn *conn, int64_t publish_ms);

/* For the protocol (see hd_conn_protocol). */

/* Whether the connection still reads requests: READING, and not ending. */
bool hd_conn_reads_requests(const hd_conn *conn);
/* Input arrived, or a request was answered: limits.header_timeout_s starts again. */
void hd_conn_renew_read_deadline(hd_conn *conn);
/*
 * A request's first byte arrived: on_request_timeout fires
 * limits.request_timeout_s from now, unless hd_conn_stop_request_deadline
 * comes first (or the connection closes).
 */
void hd_conn_start_request_deadline(hd_conn *conn);
void hd_conn_stop_request_deadline(hd_conn *conn);

#endif
