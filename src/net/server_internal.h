/*
 * The server's private state, shared by server.c (loop passes, timers,
 * shutdown), listener.c (listening sockets, accepting, refusals) and conn.c
 * (the per-connection state machine).
 */
#ifndef HERALD_NET_SERVER_INTERNAL_H
#define HERALD_NET_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <uv.h>

#include "herald/buf.h"
#include "herald/config.h"
#include "herald/hub.h"
#include "herald/list.h"
#include "herald/server.h"
#include "net/conn.h"
#include "net/ip_count.h"
#include "net/tls.h"
#include "ops/metrics.h"

#define HD_READ_BUFFER_SIZE 65536

/*
 * A worker's watch on one listening socket. Every worker of the group holds
 * its own descriptor (a dup) of the same socket, and accepts from it itself
 * (accept4, not uv_listen: see server.c on running out of descriptors).
 */
typedef struct hd_listener {
    uv_poll_t poll; /* readable: connections wait in the backlog */
    int fd;
    hd_server *server;
    bool paused; /* accept failed with nothing to shed: the sweep resumes it */
} hd_listener;

/*
 * A log line a flood would repeat (one per refused connection): the first in
 * a second is written at once, the rest only counted, and the sweep writes
 * their number once a second.
 */
typedef struct hd_log_burst {
    uint64_t last_ms;    /* when a line was last written */
    uint64_t suppressed; /* occurrences since then, not written */
    bool written;        /* a line was ever written */
} hd_log_burst;

/*
 * What the servers of all workers share: the limits that are per process
 * (connections in total and per client address) and the list of servers,
 * for GET /metrics to sum. Created with the first server, freed with the
 * last; the member list is complete before any worker thread starts.
 */
typedef struct hd_server_group {
    pthread_mutex_t lock; /* guards ip_counts */
    hd_ip_count *ip_counts;
    uint64_t connections; /* of all servers, atomic */
    bool stopping;        /* atomic: shutdown was requested, before each worker gets to it */
    /* Held by bodies and WebSocket messages still being received, atomic (hd_conn_hold_pending). */
    uint64_t pending_body_bytes;
    hd_server **servers;
    unsigned size;
    unsigned capacity;
    unsigned alive;
} hd_server_group;

struct hd_server {
    uv_loop_t *loop;
    const hd_config *config;
    hd_hub *hub;
    /* What transports publish and read history through. */
    struct hd_engine *engine;
    const hd_auth *auth;   /* shared by every worker, read only */
    const hd_tls_ctx *tls; /* every listener speaks TLS with it; NULL: plain TCP */
    /*
     * config, auth and tls are the parts of settings (one reference). Only
     * this loop's thread switches them (server_on_settings), between two
     * callbacks: read them afresh in each callback, keep no pointer.
     * next_settings (atomic) were handed over by another thread and not yet
     * taken; settings_async wakes the loop for them.
     */
    hd_settings *settings;
    hd_settings *next_settings;
    uv_async_t settings_async;
    /* What reads requests off every connection, and this loop's context for it (the caller's). */
    const hd_conn_protocol *protocol;
    void *context;

    hd_listener *listeners;
    size_t listener_count;

    hd_server_group *group;
    unsigned index; /* the worker it serves, its place in the group */
    hd_list connections;
    uint64_t connection_count; /* this server's; atomic, GET /metrics on any worker reads it */
    hd_list flush_list;        /* connections with output to write this pass */
    hd_list close_list;        /* connections marked CLOSING, not yet uv_close'd */
    hd_list detach_list;       /* ending streams to detach from their transport */
    hd_list wake_list;         /* WAITING connections whose transport asked for on_wake */
    hd_list resume_list;       /* connections with input held while they were WAITING */
    hd_list header_wait;       /* READING connections by time they started waiting */
    hd_list request_wait;      /* readers of a request under way, by time of its first byte */
    hd_list stream_idle;       /* STREAMING connections by time of their last output */
    hd_list refused_drain;     /* refused connections reading their input out, by time refused */
    unsigned refused_draining; /* how many: at most HD_REFUSED_DRAIN_MAX */
    hd_list close_wait;        /* connections closing once their queue is written, by time */

    uv_prepare_t flush_pass; /* runs before the loop blocks: flushes, closes */
    uv_idle_t flush_rest;    /* active while the flush list holds connections for the next pass */
    uv_timer_t sweep_timer;  /* header timeouts, heartbeats, history TTL (worker 0) */
    uv_timer_t grace_timer;  /* shutdown deadline */
    uv_async_t inbox_async;  /* another worker published to our subscribers */
    uv_async_t stop_async;   /* hd_server_request_shutdown from another thread */
    uint64_t last_expire_ms;

    char read_buffer[HD_READ_BUFFER_SIZE]; /* shared: every read is consumed at once */

    hd_metrics metrics;
    hd_log_burst refusal_log[HD_REFUSED_COUNT];
    hd_log_burst accept_error_log;
    int reserve_fd; /* /dev/null, held to be closed when accept() runs out of descriptors */

    bool draining;
    int handles_open; /* server-owned handles still to be closed at shutdown */
    void (*on_shutdown_done)(void *ctx);
    void *shutdown_ctx;
};

/*
 * A refused connection is answered, its write side shut down, and what the
 * client sends is read and dropped until it closes: closing a socket with
 * unread input makes the kernel send a reset, which can reach the client
 * before the answer does (a client still uploading a body would see
 * ECONNRESET instead of the 503). Bounded: at most this many bytes and this
 * long (the sweep's resolution), and at most this many such connections per
 * worker; past that a refusal is closed at once. A draining connection holds
 * no place under the connection limits.
 */
#define HD_REFUSED_DRAIN_BYTES (256 * 1024)
#define HD_REFUSED_DRAIN_MS 2000
#define HD_REFUSED_DRAIN_MAX 256

/* conn.c entry points used by server.c and listener.c (and by the fuzz driver, which has no
 * sockets). */
hd_conn *hd_conn_new(hd_server *server);
/* A connection accepted under the limits: TLS session, reading, the header timeout. */
void hd_conn_serve(hd_conn *conn);
/* libuv's allocation callback for a connection: every read goes to the server's read buffer. */
void hd_conn_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
/* Puts conn at the end of one of the server's timeout lists, timed from now. */
void hd_conn_wait_in(hd_conn *conn, hd_list *list);
/* Gives the connection's places under max_connections and max_connections_per_ip back, once. */
void hd_conn_leave_limits(hd_conn *conn);
/* Input from the socket: for the protocol, held (WAITING), or the stream's that took over. */
void hd_conn_feed(hd_conn *conn, const char *bytes, size_t len);
void hd_conn_flush(hd_conn *conn);
void hd_conn_finish_close(hd_conn *conn);
/* Runs the transport's on_close (unsubscribing) while the connection lingers. */
void hd_conn_detach_stream(hd_conn *conn);
/* Parses the input held while the connection was WAITING (from the server's pass). */
void hd_conn_resume_input(hd_conn *conn);
void hd_conn_on_header_timeout(hd_conn *conn);
void hd_conn_on_request_timeout(hd_conn *conn);
void hd_conn_on_idle_stream(hd_conn *conn);
/* The queue of a connection closing after a flush was not written within limits.close_timeout_s. */
void hd_conn_on_close_timeout(hd_conn *conn);
uint64_t hd_server_now(const hd_server *server);
void hd_server_maybe_done(hd_server *server);
/* One of the server's handles closed during shutdown: the last one completes it. */
void hd_server_handle_closed(hd_server *server);

/* listener.c, for server.c. */
/* Opens the reserve descriptor and listens on every config->listen address (hd_server_start). */
int hd_listeners_start(hd_server *server, char *err, size_t err_len);
/* From the sweep: refusals and accept failures not logged yet are summed up; paused listeners
 * try again. */
void hd_listeners_sweep(hd_server *server, uint64_t now);
/* Shutdown: stops accepting; each listener closed counts as one of handles_open. */
void hd_listeners_close(hd_server *server);
/* With the server: the listeners and the reserve descriptor. */
void hd_listeners_free(hd_server *server);

#endif
