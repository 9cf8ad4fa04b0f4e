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

#include "herald/buf.h"
#include "herald/hub.h"

typedef enum hd_refusal {
    HD_REFUSED_MAX_CONNECTIONS,
    HD_REFUSED_MAX_CONNECTIONS_PER_IP,
    HD_REFUSED_COUNT
} hd_refusal;

typedef enum hd_protocol { HD_PROTOCOL_HTTP, HD_PROTOCOL_WEBSOCKET, HD_PROTOCOL_COUNT } hd_protocol;

typedef struct hd_metrics {
    uint64_t connections_accepted;
    uint64_t connections_refused[HD_REFUSED_COUNT];
    uint64_t http_requests;
    uint64_t bytes_read;
    uint64_t bytes_written;
    uint64_t deliveries[HD_TRANSPORT_COUNT];
    uint64_t slow_consumer_disconnects[HD_TRANSPORT_COUNT];
    uint64_t protocol_errors[HD_PROTOCOL_COUNT];
    /* Gauge: connections a transport holds (streams, waiting polls). */
    size_t transport_connections[HD_TRANSPORT_COUNT];
} hd_metrics;

/* What the renderer needs besides the counters. */
typedef struct hd_metrics_gauges {
    size_t connections; /* all open connections */
    bool draining;
    hd_hub_stats hub;
} hd_metrics_gauges;

/* Appends the whole exposition (format 0.0.4) to out. */
void hd_metrics_render(const hd_metrics *metrics, const hd_metrics_gauges *gauges, hd_strbuf *out);

#endif
