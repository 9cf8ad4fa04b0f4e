#include "ops/metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static const char *const transport_names[HD_TRANSPORT_COUNT] = {"sse", "websocket", "poll"};
static const char *const refusal_names[HD_REFUSED_COUNT] = {
    "max_connections", "max_connections_per_ip", "file_descriptors"};
static const char *const accept_error_names[HD_ACCEPT_ERROR_COUNT] = {"emfile", "enfile", "other"};
static const char *const protocol_names[HD_PROTOCOL_COUNT] = {"http", "websocket"};
static const char *const auth_refusal_names[HD_AUTH_REFUSAL_COUNT] = {"no_token", "invalid",
                                                                      "expired", "forbidden"};
static const int status_codes[HD_HTTP_STATUS_COUNT] = {
    101, 200, 201, 204, 304, 400, 401, 403, 404, 405, 408,
    413, 414, 415, 426, 429, 431, 500, 501, 503, 505, 0, /* 0: any other */
};
const double hd_flush_bounds[HD_FLUSH_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                  0.25,  0.5,    1,     2.5,  5,     10};

void hd_metrics_count_response(hd_metrics *metrics, int status)
{
    int i = 0;
    while (i < HD_HTTP_STATUS_COUNT - 1 && status_codes[i] != status)
        i++;
    hd_metric_add(&metrics->http_responses[i], 1);
}

void hd_metrics_observe_publish_to_flush(hd_metrics *metrics, uint64_t ms)
{
    int i = 0;
    while (i < HD_FLUSH_BUCKETS && (double)ms > hd_flush_bounds[i] * 1000)
        i++;
    if (i < HD_FLUSH_BUCKETS)
        hd_metric_add(&metrics->publish_to_flush_buckets[i], 1);
    hd_metric_add(&metrics->publish_to_flush_count, 1);
    hd_metric_add(&metrics->publish_to_flush_sum_ms, ms);
}

static void family(hd_strbuf *out, const char *name, const char *type, const char *help)
{
    hd_strbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(hd_strbuf *out, const char *name, uint64_t value)
{
    hd_strbuf_printf(out, "%s %" PRIu64 "\n", name, value);
}

static void labelled(hd_strbuf *out, const char *name, const char *label, const char *label_value,
                     uint64_t value)
{
    hd_strbuf_printf(out, "%s{%s=\"%s\"} %" PRIu64 "\n", name, label, label_value, value);
}

static void counter(hd_strbuf *out, const char *name, const char *help, uint64_t value)
{
    family(out, name, "counter", help);
    sample(out, name, value);
}

static void gauge(hd_strbuf *out, const char *name, const char *help, uint64_t value)
{
    family(out, name, "gauge", help);
    sample(out, name, value);
}

/* A counter family with one sample per value of one label (names[i] for values[i]). */
static void counter_by(hd_strbuf *out, const char *name, const char *help, const char *label,
                       const char *const *names, const uint64_t *values, int count)
{
    family(out, name, "counter", help);
    for (int i = 0; i < count; i++)
        labelled(out, name, label, names[i], values[i]);
}

static void per_transport(hd_strbuf *out, const char *name, const uint64_t *values)
{
    for (int t = 0; t < HD_TRANSPORT_COUNT; t++)
        labelled(out, name, "transport", transport_names[t], values[t]);
}

static void render_connections(const hd_metrics *m, const hd_metrics_gauges *g, hd_strbuf *out)
{
    family(out, "herald_connections", "gauge", "Open client connections by transport.");
    size_t held = 0;
    for (int t = 0; t < HD_TRANSPORT_COUNT; t++)
        held += m->transport_connections[t];
    labelled(out, "herald_connections", "transport", "http",
             g->connections > held ? g->connections - held : 0);
    for (int t = 0; t < HD_TRANSPORT_COUNT; t++)
        labelled(out, "herald_connections", "transport", transport_names[t],
                 m->transport_connections[t]);
    family(out, "herald_worker_connections", "gauge", "Open client connections of each worker.");
    for (unsigned w = 0; w < g->workers; w++)
        hd_strbuf_printf(out, "herald_worker_connections{worker=\"%u\"} %" PRIu64 "\n", w,
                         g->worker_connections[w]);
    counter(out, "herald_connections_accepted_total", "Client connections accepted.",
            m->connections_accepted);
    counter_by(
        out, "herald_connections_refused_total",
        "Connections answered 503 and closed: a limit was reached, or file descriptors ran out.",
        "reason", refusal_names, m->connections_refused, HD_REFUSED_COUNT);
    counter_by(out, "herald_accept_errors_total",
               "accept() failures that met a waiting connection; emfile, enfile: out of file "
               "descriptors.",
               "error", accept_error_names, m->accept_errors, HD_ACCEPT_ERROR_COUNT);
}

static void render_hub(const hd_hub_stats *hub, hd_strbuf *out)
{
    gauge(out, "herald_subscriptions", "Topic subscriptions of all clients.", hub->subscriptions);
    gauge(out, "herald_topics", "Topics held (with history or subscribers).", hub->topics);
    gauge(out, "herald_history_messages", "Messages held in history, all topics.",
          hub->history_messages);
    gauge(out, "herald_history_bytes", "Bytes held in history, all topics.", hub->history_bytes);
    counter(out, "herald_messages_published_total", "Messages published.", hub->messages_published);
    counter(out, "herald_history_evicted_total",
            "Messages dropped from history by its limits or TTL.", hub->history_evicted);
}

static void render_traffic(const hd_metrics *m, hd_strbuf *out)
{
    family(out, "herald_deliveries_total", "counter", "Messages queued to subscribers.");
    per_transport(out, "herald_deliveries_total", m->deliveries);
    counter(out, "herald_http_requests_total", "HTTP requests routed.", m->http_requests);
    counter(out, "herald_bytes_read_total", "Bytes read from client sockets.", m->bytes_read);
    counter(out, "herald_bytes_written_total", "Bytes written to client sockets.",
            m->bytes_written);
    family(out, "herald_slow_consumer_disconnects_total", "counter",
           "Subscribers disconnected because their queue passed limits.max_outbound_bytes.");
    per_transport(out, "herald_slow_consumer_disconnects_total", m->slow_consumer_disconnects);
    counter_by(out, "herald_protocol_errors_total", "Malformed client input.", "protocol",
               protocol_names, m->protocol_errors, HD_PROTOCOL_COUNT);
}

static void render_http(const hd_metrics *m, hd_strbuf *out)
{
    family(out, "herald_http_responses_total", "counter",
           "HTTP responses by status code (streams count their 200 or 101 when they start).");
    for (int i = 0; i < HD_HTTP_STATUS_COUNT; i++) {
        if (status_codes[i] != 0)
            hd_strbuf_printf(out, "herald_http_responses_total{code=\"%d\"} %" PRIu64 "\n",
                             status_codes[i], m->http_responses[i]);
        else
            labelled(out, "herald_http_responses_total", "code", "other", m->http_responses[i]);
    }
    counter_by(out, "herald_auth_refusals_total",
               "Requests and WebSocket commands refused by auth: no token where one is needed, "
               "an invalid or expired token, or a token that does not name the topic.",
               "reason", auth_refusal_names, m->auth_refusals, HD_AUTH_REFUSAL_COUNT);
    family(out, "herald_publish_to_flush_seconds", "histogram",
           "From a live message's publish time to its subscriber's queue being handed to the "
           "socket; one observation per drained queue, for its oldest live message.");
    uint64_t cumulative = 0;
    for (int i = 0; i < HD_FLUSH_BUCKETS; i++) {
        cumulative += m->publish_to_flush_buckets[i];
        hd_strbuf_printf(out, "herald_publish_to_flush_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                         hd_flush_bounds[i], cumulative);
    }
    hd_strbuf_printf(out, "herald_publish_to_flush_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
                     m->publish_to_flush_count);
    hd_strbuf_printf(out, "herald_publish_to_flush_seconds_sum %.3f\n",
                     (double)m->publish_to_flush_sum_ms / 1000);
    sample(out, "herald_publish_to_flush_seconds_count", m->publish_to_flush_count);
}

static void render_pending(const hd_metrics *m, const hd_metrics_gauges *g, hd_strbuf *out)
{
    gauge(out, "herald_pending_body_bytes",
          "Bytes held by request bodies and WebSocket messages still being received.",
          g->pending_body_bytes);
    counter_by(out, "herald_pending_body_refusals_total",
               "Bodies answered 503 and WebSocket messages closed with 1013 because "
               "limits.max_pending_body_bytes was reached.",
               "protocol", protocol_names, m->pending_body_refusals, HD_PROTOCOL_COUNT);
}

static void render_cluster(const hd_metrics_gauges *g, hd_strbuf *out)
{
    static const char *const states[] = {"up", "connecting", "down"};
    bool up = strcmp(g->engine_state, "up") == 0;
    gauge(out, "herald_cluster_up", "1 while the Redis engine publishes and reads.", up);
    family(out, "herald_cluster_state", "gauge",
           "The Redis engine's state: 1 for the current one.");
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
        labelled(out, "herald_cluster_state", "state", states[i],
                 strcmp(g->engine_state, states[i]) == 0);
    const hd_engine_stats *s = &g->engine;
    counter(out, "herald_cluster_reconnects_total", "Times Redis was reached again after a loss.",
            s->reconnects);
    counter(out, "herald_cluster_lost_reads_total",
            "Reads of what pub/sub did not bring (lost, while away, before a SUBSCRIBE).",
            s->lost_reads);
    counter(out, "herald_cluster_catchup_messages_total",
            "Messages delivered from those reads rather than from pub/sub.", s->catchup_messages);
    counter(out, "herald_cluster_late_messages_total",
            "Pub/sub messages of an epoch this node had left (sent before the rotation), dropped.",
            s->late_messages);
    counter(out, "herald_cluster_held_overflows_total",
            "Catch-ups given up with a gap because cluster.max_held_messages live messages were "
            "held.",
            s->held_overflows);
    counter_by(out, "herald_cluster_epoch_changes_total",
               "New epochs: started by this node's scripts (lost, rollback, restart), or "
               "started by another node and followed (observed).",
               "reason", hd_engine_epoch_reason_names, s->epoch_changes, HD_EPOCH_REASONS);
    counter_by(out, "herald_cluster_publish_failures_total",
               "Publish calls (a batch counts once) that failed, by reason.", "reason",
               hd_engine_publish_failure_names, s->publish_failures, HD_PUBLISH_FAILURES);
    family(out, "herald_cluster_redis_rtt_seconds", "histogram",
           "Round trip of each command on the Redis command connection, from sending to the "
           "answer (queueing and script run time included).");
    for (int i = 0; i < HD_ENGINE_RTT_BUCKETS; i++)
        hd_strbuf_printf(out, "herald_cluster_redis_rtt_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                         hd_engine_rtt_bounds[i], s->rtt_buckets[i]);
    hd_strbuf_printf(out, "herald_cluster_redis_rtt_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
                     s->rtt_count);
    hd_strbuf_printf(out, "herald_cluster_redis_rtt_seconds_sum %.6f\n", s->rtt_sum_s);
    sample(out, "herald_cluster_redis_rtt_seconds_count", s->rtt_count);
    gauge(out, "herald_cluster_subscribed_topics",
          "Topic channels this node is subscribed to on Redis (lingering ones included).",
          s->subscribed_topics);
    gauge(out, "herald_cluster_redis_config_ok",
          "1 when Redis's maxmemory-policy is noeviction (0 otherwise, or not read yet).",
          s->store_config_ok);
    gauge(out, "herald_cluster_redis_evicted_keys",
          "Redis's evicted_keys (INFO stats): keys it evicted since it started.",
          s->store_evicted_keys);
}

/* Open descriptors (the entries of /proc/self/fd, less the one reading it) and the soft limit. */
static void render_fds(hd_strbuf *out)
{
    uint64_t open = 0;
    DIR *dir = opendir("/proc/self/fd");
    if (dir != NULL) {
        for (const struct dirent *e; (e = readdir(dir)) != NULL;)
            open += e->d_name[0] != '.';
        closedir(dir);
        open -= open > 0;
    }
    gauge(out, "process_open_fds", "Open file descriptors.", open);
    struct rlimit limit;
    uint64_t max = getrlimit(RLIMIT_NOFILE, &limit) == 0 ? (uint64_t)limit.rlim_cur : 0;
    gauge(out, "process_max_fds", "The soft limit on open file descriptors.", max);
}

/* The process metrics every Prometheus client library exports, read from /proc. */
static void render_process(hd_strbuf *out)
{
    long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    unsigned long long utime = 0, stime = 0, start_ticks = 0, boot_time = 0, pages = 0,
                       virtual_pages = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f != NULL) {
        char line[1024];
        /* The command name may contain spaces: fields are counted after its ')'. */
        char *rest = fgets(line, sizeof(line), f) ? strrchr(line, ')') : NULL;
        if (rest != NULL)
            sscanf(rest + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d "
                   "%*d %*d %*d %llu",
                   &utime, &stime, &start_ticks);
        fclose(f);
    }
    f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%llu %llu", &virtual_pages, &pages) != 2)
            virtual_pages = pages = 0;
        fclose(f);
    }
    f = fopen("/proc/stat", "r");
    if (f != NULL) {
        char line[256];
        while (fgets(line, sizeof(line), f) && sscanf(line, "btime %llu", &boot_time) != 1)
            ;
        fclose(f);
    }
    family(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
    hd_strbuf_printf(out, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / ticks);
    gauge(out, "process_resident_memory_bytes", "Resident memory size.",
          (uint64_t)pages * (uint64_t)page);
    gauge(out, "process_virtual_memory_bytes", "Virtual memory size.",
          (uint64_t)virtual_pages * (uint64_t)page);
    render_fds(out);
    family(out, "process_start_time_seconds", "gauge", "Start time since the Unix epoch.");
    hd_strbuf_printf(out, "process_start_time_seconds %.2f\n",
                     (double)boot_time + (double)start_ticks / ticks);
}

void hd_metrics_accumulate(hd_metrics *dst, const hd_metrics *src)
{
    /* The struct is nothing but uint64_t counters. */
    const uint64_t *from = (const uint64_t *)src;
    uint64_t *to = (uint64_t *)dst;
    for (size_t i = 0; i < sizeof(*src) / sizeof(uint64_t); i++)
        to[i] += __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

void hd_metrics_render(const hd_metrics *metrics, const hd_metrics_gauges *gauges, hd_strbuf *out)
{
    render_connections(metrics, gauges, out);
    render_hub(&gauges->hub, out);
    render_traffic(metrics, out);
    render_http(metrics, out);
    render_pending(metrics, gauges, out);
    if (gauges->cluster)
        render_cluster(gauges, out);
    gauge(out, "herald_draining", "1 while herald is shutting down.", gauges->draining);
    family(out, "herald_build_info", "gauge", "Always 1; the version is the label.");
    labelled(out, "herald_build_info", "version", HERALD_VERSION, 1);
    render_process(out);
}
