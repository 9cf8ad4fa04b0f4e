/*
 * The per-loop server: the per-iteration flush pass, the timeout sweep,
 * other workers' wake-ups, settings reloads and graceful shutdown.
 * Connections live in conn.c, the listening sockets in listener.c.
 */
#include "herald/server.h"

#include <stdint.h>
#include <stdlib.h>

#include "herald/alloc.h"
#include "herald/clock.h"
#include "herald/log.h"
#include "herald/worker.h"
#include "net/conn.h"
#include "net/server_internal.h"

#define SWEEP_INTERVAL_MS 250
/* Connections written per flush pass (about 0.5 ms of writes here) before the loop reads again. */
#define FLUSH_SLICE 128

uint64_t hd_server_now(const hd_server *server)
{
    return uv_now(server->loop);
}

static hd_server_group *group_new(void)
{
    hd_server_group *group = hd_calloc(1, sizeof(*group));
    pthread_mutex_init(&group->lock, NULL);
    group->ip_counts = hd_ip_count_new();
    group->capacity = hd_worker_count();
    group->servers = hd_calloc(group->capacity, sizeof(*group->servers));
    return group;
}

static void group_leave(hd_server_group *group)
{
    if (--group->alive > 0)
        return;
    hd_ip_count_free(group->ip_counts);
    pthread_mutex_destroy(&group->lock);
    free(group->servers);
    free(group);
}

/* Takes the caller's reference to settings. */
static void use_settings(hd_server *server, hd_settings *settings)
{
    server->settings = settings;
    server->config = &settings->config;
    server->auth = settings->auth;
    server->tls = settings->tls;
}

hd_server *hd_server_new(uv_loop_t *loop, hd_settings *settings, hd_hub *hub,
                         struct hd_engine *engine, hd_server *sibling,
                         const hd_conn_protocol *protocol, void *context)
{
    hd_server *server = hd_calloc(1, sizeof(*server));
    server->loop = loop;
    server->protocol = protocol;
    server->context = context;
    use_settings(server, hd_settings_ref(settings));
    server->hub = hub;
    server->engine = engine;
    server->group = sibling != NULL ? sibling->group : group_new();
    server->index = server->group->size;
    server->group->servers[server->group->size++] = server;
    server->group->alive++;
    hd_list_init(&server->connections);
    hd_list_init(&server->flush_list);
    hd_list_init(&server->close_list);
    hd_list_init(&server->detach_list);
    hd_list_init(&server->wake_list);
    hd_list_init(&server->resume_list);
    hd_list_init(&server->header_wait);
    hd_list_init(&server->request_wait);
    hd_list_init(&server->stream_idle);
    hd_list_init(&server->refused_drain);
    server->reserve_fd = -1;
    hd_list_init(&server->close_wait);
    return server;
}

/* ------------------------------------------------------------------------ */
/* The flush pass: one gathered write per connection per loop iteration.    */

static void process_closes(hd_server *server)
{
    /* Outside any hub delivery, so transports may unsubscribe here. */
    while (!hd_list_empty(&server->detach_list))
        hd_conn_detach_stream(hd_container_of(server->detach_list.next, hd_conn, detach_node));
    while (!hd_list_empty(&server->close_list)) {
        hd_conn *conn = hd_container_of(server->close_list.next, hd_conn, close_node);
        hd_conn_finish_close(conn);
    }
}

/* Transports woken by a delivery answer here, outside it; then input held meanwhile is read. */
static void process_wakes(hd_server *server)
{
    /* Parsing held input may start another wait that asks for a wake at once: loop until both are
     * empty. */
    while (!hd_list_empty(&server->wake_list) || !hd_list_empty(&server->resume_list)) {
        while (!hd_list_empty(&server->wake_list)) {
            hd_conn *conn = hd_container_of(server->wake_list.next, hd_conn, wake_node);
            hd_list_unlink(&conn->wake_node);
            if (conn->stream_ops != NULL && conn->stream_ops->on_wake != NULL)
                conn->stream_ops->on_wake(conn, conn->stream_session);
        }
        while (!hd_list_empty(&server->resume_list))
            hd_conn_resume_input(hd_container_of(server->resume_list.next, hd_conn, wake_node));
    }
}

/* Writes up to limit connections of the flush list, oldest first; returns whether any remain. */
static bool flush_connections(hd_server *server, size_t limit)
{
    while (!hd_list_empty(&server->flush_list) && limit-- > 0) {
        hd_conn *conn = hd_container_of(server->flush_list.next, hd_conn, flush_node);
        hd_list_unlink(&conn->flush_node);
        hd_conn_flush(conn);
    }
    return !hd_list_empty(&server->flush_list);
}

static void server_on_flush_rest(uv_idle_t *idle)
{
    (void)idle; /* only keeps the loop from blocking: the next prepare pass goes on */
}

/*
 * One write per socket costs microseconds in the kernel, so writing 1,000
 * subscribers takes milliseconds. A pass writes a slice of them, then lets
 * the loop read (without blocking) before the next slice: a message
 * published meanwhile joins the queues of the subscribers not yet written,
 * instead of waiting for the whole walk to end. That bounds its latency by
 * about one walk rather than two.
 */
static void server_on_flush_pass(uv_prepare_t *prepare)
{
    hd_server *server = prepare->data;
    process_closes(server);
    process_wakes(server);
    if (flush_connections(server, FLUSH_SLICE))
        uv_idle_start(&server->flush_rest, server_on_flush_rest);
    else
        uv_idle_stop(&server->flush_rest);
    /* A failed write marks its connection; close it before the loop blocks. */
    process_closes(server);
}

/* ------------------------------------------------------------------------ */
/* The sweep: expired heads of the timeout lists, and history TTL.          */

static void sweep_list(hd_server *server, hd_list *list, uint64_t timeout_ms,
                       void (*on_expired)(hd_conn *conn))
{
    uint64_t now = hd_server_now(server);
    while (!hd_list_empty(list)) {
        hd_conn *conn = hd_container_of(list->next, hd_conn, timeout_node);
        if (conn->timeout_since_ms + timeout_ms > now)
            break;
        hd_list_unlink(&conn->timeout_node);
        on_expired(conn);
    }
}

/* Requests still under way request_timeout_s after their first byte (one list of readers). */
static void sweep_requests(hd_server *server, uint64_t timeout_ms)
{
    uint64_t now = hd_server_now(server);
    while (!hd_list_empty(&server->request_wait)) {
        hd_conn_reader *reader =
            hd_container_of(server->request_wait.next, hd_conn_reader, request_node);
        if (reader->request_since_ms + timeout_ms > now)
            break;
        hd_list_unlink(&reader->request_node);
        hd_conn_on_request_timeout(reader->conn);
    }
}

static void server_on_sweep(uv_timer_t *timer)
{
    hd_server *server = timer->data;
    const hd_config *config = server->config;
    sweep_list(server, &server->header_wait, (uint64_t)config->limits.header_timeout_s * 1000,
               hd_conn_on_header_timeout);
    sweep_requests(server, (uint64_t)config->limits.request_timeout_s * 1000);
    sweep_list(server, &server->stream_idle, (uint64_t)config->heartbeat_s * 1000,
               hd_conn_on_idle_stream);
    sweep_list(server, &server->refused_drain, HD_REFUSED_DRAIN_MS, hd_conn_close);
    sweep_list(server, &server->close_wait, (uint64_t)config->limits.close_timeout_s * 1000,
               hd_conn_on_close_timeout);
    uint64_t now = hd_server_now(server);
    hd_listeners_sweep(server, now);
    /* The hub is shared: one worker expires it for all. */
    if (server->index == 0 && config->history.ttl_s > 0 && now - server->last_expire_ms >= 1000) {
        server->last_expire_ms = now;
        hd_hub_expire(server->hub, hd_clock_wall_ms());
    }
    process_closes(server);
}

/* ------------------------------------------------------------------------ */
/* Other workers: deliveries they published, and shutdown requests          */

/* Called by the hub, from any thread, with its lock held. */
static void notify_inbox(void *ctx)
{
    hd_server *server = ctx;
    uv_async_send(&server->inbox_async);
}

/*
 * A burst of messages is delivered in slices of a quarter of the outbound
 * limit, with a write to every socket in between: a subscriber that reads is
 * never taken for a slow consumer because a burst came all at once.
 */
static void server_on_inbox(uv_async_t *async)
{
    hd_server *server = async->data;
    uint64_t slice = server->config->limits.max_outbound_bytes / 4;
    for (int slices = 0; hd_hub_deliver_pending(server->hub, slice); slices++) {
        flush_connections(server, SIZE_MAX);
        /*
         * Other workers may publish faster than this one fans out: give the
         * loop back (reads, timers, closes) and come back for the rest.
         */
        if (slices == 16) {
            uv_async_send(&server->inbox_async);
            return;
        }
    }
}

/*
 * Settings handed over by hd_server_use_settings: whoever takes them out of
 * next_settings (this loop, or a newer hand-over) owns that reference. The
 * last worker to switch says the reload is complete.
 */
static void server_on_settings(uv_async_t *async)
{
    hd_server *server = async->data;
    hd_settings *next = __atomic_exchange_n(&server->next_settings, NULL, __ATOMIC_ACQ_REL);
    if (next == NULL)
        return;
    hd_settings *previous = server->settings;
    use_settings(server, next);
    hd_settings_release(previous);
    unsigned workers = server->group->size;
    if (hd_settings_take(next) == workers)
        hd_log_info("reload complete: the new configuration is in force on %s",
                    workers == 1 ? "the worker" : "every worker");
}

void hd_server_use_settings(hd_server *server, hd_settings *settings)
{
    hd_settings *superseded =
        __atomic_exchange_n(&server->next_settings, hd_settings_ref(settings), __ATOMIC_ACQ_REL);
    hd_settings_release(superseded);
    uv_async_send(&server->settings_async);
}

static void server_on_stop_requested(uv_async_t *async)
{
    hd_server_shutdown(async->data, NULL, NULL);
}

void hd_server_request_shutdown(hd_server *server)
{
    __atomic_store_n(&server->group->stopping, true, __ATOMIC_RELEASE);
    uv_async_send(&server->stop_async);
}

int hd_server_start(hd_server *server, char *err, size_t err_len)
{
    uv_prepare_init(server->loop, &server->flush_pass);
    server->flush_pass.data = server;
    uv_prepare_start(&server->flush_pass, server_on_flush_pass);
    uv_idle_init(server->loop, &server->flush_rest);
    server->flush_rest.data = server;
    uv_timer_init(server->loop, &server->sweep_timer);
    server->sweep_timer.data = server;
    uv_timer_start(&server->sweep_timer, server_on_sweep, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
    uv_timer_init(server->loop, &server->grace_timer);
    server->grace_timer.data = server;
    uv_async_init(server->loop, &server->inbox_async, server_on_inbox);
    server->inbox_async.data = server;
    uv_async_init(server->loop, &server->stop_async, server_on_stop_requested);
    server->stop_async.data = server;
    uv_async_init(server->loop, &server->settings_async, server_on_settings);
    server->settings_async.data = server;
    server->handles_open += 7;
    hd_hub_set_notify(server->hub, server->index, notify_inbox, server);
    return hd_listeners_start(server, err, err_len);
}

/* ------------------------------------------------------------------------ */
/* Shutdown                                                                 */

void hd_server_handle_closed(hd_server *server)
{
    if (--server->handles_open == 0 && server->on_shutdown_done != NULL)
        server->on_shutdown_done(server->shutdown_ctx);
}

static void server_on_handle_closed(uv_handle_t *handle)
{
    hd_server_handle_closed(handle->data);
}

/* Called whenever a connection is freed: the last one during a drain finishes shutdown. */
void hd_server_maybe_done(hd_server *server)
{
    if (!server->draining || server->connection_count > 0 ||
        uv_is_closing((uv_handle_t *)&server->flush_pass))
        return;
    /* No other worker may wake this one once its handle is closing. */
    hd_hub_set_notify(server->hub, server->index, NULL, NULL);
    uv_close((uv_handle_t *)&server->flush_pass, server_on_handle_closed);
    uv_close((uv_handle_t *)&server->flush_rest, server_on_handle_closed);
    uv_close((uv_handle_t *)&server->sweep_timer, server_on_handle_closed);
    uv_close((uv_handle_t *)&server->grace_timer, server_on_handle_closed);
    uv_close((uv_handle_t *)&server->inbox_async, server_on_handle_closed);
    uv_close((uv_handle_t *)&server->stop_async, server_on_handle_closed);
    uv_close((uv_handle_t *)&server->settings_async, server_on_handle_closed);
}

static void server_on_grace_expired(uv_timer_t *timer)
{
    hd_server *server = timer->data;
    hd_list *node, *next;
    hd_log_warn("shutdown grace period over: closing %llu connection(s)",
                (unsigned long long)server->connection_count);
    hd_list_foreach_safe(node, next, &server->connections)
    {
        hd_conn_close(hd_container_of(node, hd_conn, server_node));
    }
    process_closes(server);
}

void hd_server_shutdown(hd_server *server, void (*on_done)(void *ctx), void *ctx)
{
    if (server->draining)
        return;
    server->draining = true;
    server->on_shutdown_done = on_done;
    server->shutdown_ctx = ctx;
    hd_listeners_close(server);
    hd_list *node, *next;
    hd_list_foreach_safe(node, next, &server->connections)
    {
        hd_conn *conn = hd_container_of(node, hd_conn, server_node);
        if (conn->state == HD_CONN_CLOSING)
            continue;
        if (conn->state == HD_CONN_READING && server->protocol->request_under_way(conn))
            continue; /* answered with Connection: close, or cut by the header timeout */
        hd_conn_set_end_reason(conn, "shutdown");
        if (conn->state == HD_CONN_READING && conn->outq.count == 0 && !hd_conn_owes_answers(conn))
            hd_conn_close(conn);
        else if (conn->stream_ops != NULL && conn->stream_ops->on_shutdown != NULL)
            conn->stream_ops->on_shutdown(conn, conn->stream_session);
        else
            hd_conn_close_after_flush(conn);
    }
    uv_timer_start(&server->grace_timer, server_on_grace_expired,
                   (uint64_t)server->config->shutdown_grace_s * 1000, 0);
    process_closes(server);
    hd_server_maybe_done(server);
}

void hd_server_free(hd_server *server)
{
    hd_settings_release(server->next_settings);
    hd_settings_release(server->settings);
    hd_listeners_free(server);
    group_leave(server->group);
    free(server);
}
