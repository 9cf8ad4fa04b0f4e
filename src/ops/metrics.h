/*
 * The server's counters and the Prometheus text rendering of GET /metrics.
 *
 * Counters are plain integers bumped by whoever sees the event (the
 * connection code, the transports); one hd_metrics belongs to one server and
 * so to one event loop, and is only touched from that loop's thread.
 */
#ifndef HERALD_OPS_METRICS_H
#define HERALD_OPS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "herald/buf.h"
#include "herald/hub.h"
#include "herald/worker.h"

/* Why a connection was answered 503 and closed. */
typedef enum hd_refusal {
    HD_REFUSED_MAX_CONNECTIONS,
    HD_REFUSED_MAX_CONNECTIONS_PER_IP,
    HD_REFUSED_FILE_DESCRIPTORS, /* accept() hit EMFILE/ENFILE: answered from the reserve */
    HD_REFUSED_COUNT
} hd_refusal;

/* accept() failures, by errno. */
typedef enum hd_accept_error {
    HD_ACCEPT_EMFILE, /* the process is out of descriptors */
    HD_ACCEPT_ENFILE, /* the system is */
    HD_ACCEPT_OTHER,
    HD_ACCEPT_ERROR_COUNT
} hd_accept_error;

/* Why a request's token or rights were refused (401 or 403, or a WebSocket command's error). */
typedef enum hd_auth_refusal {
    HD_AUTH_REFUSED_NO_TOKEN,  /* none, and anonymous clients may not do this */
    HD_AUTH_REFUSED_INVALID,   /* malformed, bad signature, unknown algorithm, not yet valid */
    HD_AUTH_REFUSED_EXPIRED,   /* past its exp */
    HD_AUTH_REFUSED_FORBIDDEN, /* valid, but its patterns do not name the topic */
    HD_AUTH_REFUSAL_COUNT
} hd_auth_refusal;

/* The status codes herald answers with (http/response.c), one counter each. */
#define HD_HTTP_STATUS_COUNT 22

/* Upper bounds (seconds) of herald_publish_to_flush_seconds; +Inf is the count. */
#define HD_FLUSH_BUCKETS 13
extern const double hd_flush_bounds[HD_FLUSH_BUCKETS];

typedef enum hd_protocol { HD_PROTOCOL_HTTP, HD_PROTOCOL_WEBSOCKET, HD_PROTOCOL_COUNT } hd_protocol;

/*
 * Each counter has one writer, its server's thread, and any reader (GET
 * /metrics on any worker sums them): relaxed atomic loads and stores keep
 * that race-free at the cost of plain moves.
 */
typedef struct hd_metrics {
    uint64_t connections_accepted;
    uint64_t connections_refused[HD_REFUSED_COUNT];
    uint64_t accept_errors[HD_ACCEPT_ERROR_COUNT];
    uint64_t http_requests;
    uint64_t bytes_read;
    uint64_t bytes_written;
    uint64_t deliveries[HD_TRANSPORT_COUNT];
    uint64_t slow_consumer_disconnects[HD_TRANSPORT_COUNT];
    uint64_t protocol_errors[HD_PROTOCOL_COUNT];
    /* Bodies refused (503) and WebSocket messages closed (1013) over max_pending_body_bytes. */
    uint64_t pending_body_refusals[HD_PROTOCOL_COUNT];
    /* Gauge: connections a transport holds (streams, waiting polls). */
    uint64_t transport_connections[HD_TRANSPORT_COUNT];
    uint64_t http_responses[HD_HTTP_STATUS_COUNT]; /* by hd_metrics_count_response's index */
    uint64_t auth_refusals[HD_AUTH_REFUSAL_COUNT];
    /* Not cumulative: each observation counts in the first bucket whose bound holds it. */
    uint64_t publish_to_flush_buckets[HD_FLUSH_BUCKETS];
    uint64_t publish_to_flush_count;
    uint64_t publish_to_flush_sum_ms;
} hd_metrics;

/* Adds n (which may be (uint64_t)-1 to count a gauge down); only from the owner's thread. */
static inline void hd_metric_add(uint64_t *counter, uint64_t n)
{
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* Counts a response (a status line written) with this status. */
void hd_metrics_count_response(hd_metrics *metrics, int status);
/* Counts one observation of herald_publish_to_flush_seconds, in milliseconds. */
void hd_metrics_observe_publish_to_flush(hd_metrics *metrics, uint64_t ms);

/* Adds every counter of src to dst (a private total), reading src from any thread. */
void hd_metrics_accumulate(hd_metrics *dst, const hd_metrics *src);

/* What the renderer needs besides the counters. */
typedef struct hd_metrics_gauges {
    size_t connections; /* all open connections */
    unsigned workers;
    uint64_t worker_connections[HD_WORKERS_MAX]; /* open connections of each worker */
    bool draining;
    uint64_t pending_body_bytes; /* held by bodies and WebSocket messages being received */
    hd_hub_stats hub;
    /* Cluster mode only (cluster set): the engine's state and counters. */
    bool cluster;
    const char *engine_state; /* "up", "connecting", "down" */
    hd_engine_stats engine;
} hd_metrics_gauges;

/* Appends the whole exposition (format 0.0.4) to out. */
void hd_metrics_render(const hd_metrics *metrics, const hd_metrics_gauges *gauges, hd_strbuf *out);

#endif
