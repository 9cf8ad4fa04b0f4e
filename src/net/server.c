/*
 * Listeners, the per-iteration flush pass, the timeout sweep and graceful
 * shutdown. Connections themselves live in conn.c.
 */
#define _GNU_SOURCE /* accept4 */
#include "herald/server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "herald/alloc.h"
#include "herald/clock.h"
#include "herald/log.h"
#include "herald/worker.h"
#include "net/conn.h"
#include "net/server_internal.h"
#include "ws/ws_deflate.h"
#include "ws/ws_handshake.h"

#define SWEEP_INTERVAL_MS 250
/* Connections written per flush pass (about 0.5 ms of writes here) before the loop reads again. */
#define FLUSH_SLICE 128

static void sweep_logs(hd_server *server, uint64_t now);
static void resume_listeners(hd_server *server);

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
                         struct hd_engine *engine, hd_server *sibling)
{
    hd_server *server = hd_calloc(1, sizeof(*server));
    server->loop = loop;
    use_settings(server, hd_settings_ref(settings));
    server->hub = hub;
    server->engine = engine;
    server->group = sibling != NULL ? sibling->group : group_new();
    server->index = server->group->size;
    server->group->servers[server->group->size++] = server;
    server->group->alive++;
    server->ws_deflater = hd_ws_deflater_new();
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
    hd_conn_init_http_settings(&server->http_settings);
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

/* Transports woken by a delivery answer here, outside it; then input held meanwhile is parsed. */
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
        hd_conn_on_request_timeout(reader->parser.data);
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
    sweep_logs(server, now);
    if (!server->draining)
        resume_listeners(server);
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

/* ------------------------------------------------------------------------ */
/* Refusals and accept failures, logged in bursts                           */

#define LOG_BURST_MS 1000

static const char *const refusal_reasons[HD_REFUSED_COUNT] = {
    "limits.max_connections reached", "limits.max_connections_per_ip reached",
    "out of file descriptors"};

/* Whether this occurrence gets its own line now; otherwise it is counted for the summary. */
static bool log_burst_take(hd_log_burst *burst, uint64_t now)
{
    if (burst->written && now - burst->last_ms < LOG_BURST_MS) {
        burst->suppressed++;
        return false;
    }
    burst->written = true;
    burst->last_ms = now;
    return true;
}

/* From the sweep: the number of occurrences not written, once a second at most. */
static void log_burst_summary(hd_log_burst *burst, uint64_t now, const char *what)
{
    if (burst->suppressed == 0 || now - burst->last_ms < LOG_BURST_MS)
        return;
    hd_log_warn("%s: %llu more in the last %llu ms", what, (unsigned long long)burst->suppressed,
                (unsigned long long)(now - burst->last_ms));
    burst->suppressed = 0;
    burst->last_ms = now;
}

void hd_server_note_refusal(hd_server *server, hd_refusal reason, const char *peer)
{
    hd_metric_add(&server->metrics.connections_refused[reason], 1);
    if (log_burst_take(&server->refusal_log[reason], hd_server_now(server)))
        hd_log_warn("refusing %s: %s", peer, refusal_reasons[reason]);
}

size_t hd_server_refusal_answer(const hd_server *server, hd_refusal reason, char *out, size_t cap)
{
    /* A TLS client would take plain text for a broken handshake: it only sees the close. */
    if (server->tls != NULL)
        return 0;
    char body[160];
    int body_len =
        snprintf(body, sizeof(body), "{\"error\":\"too_many_connections\",\"message\":\"%s.\"}\n",
                 refusal_reasons[reason]);
    int len = snprintf(out, cap,
                       "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                       "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                       body_len, body);
    return len > 0 && (size_t)len < cap ? (size_t)len : 0;
}

static void sweep_logs(hd_server *server, uint64_t now)
{
    for (int r = 0; r < HD_REFUSED_COUNT; r++) {
        char what[96];
        snprintf(what, sizeof(what), "refusing connections: %s", refusal_reasons[r]);
        log_burst_summary(&server->refusal_log[r], now, what);
    }
    log_burst_summary(&server->accept_error_log, now, "accept failed");
}

/* ------------------------------------------------------------------------ */
/* Listeners                                                                */

/* Connections accepted per readiness event before the loop does other work. */
#define ACCEPT_BATCH 64

/*
 * Running out of file descriptors. accept() then fails with EMFILE (or
 * ENFILE) and the connection stays in the backlog, where a level-triggered
 * poll reports it again at once: a busy loop, while the client waits for
 * nothing. libuv's answer (uv_listen) is a descriptor held in reserve,
 * closed to accept and close every waiting connection, then reopened; but
 * it does so silently, and the client sees a bare close (or a reset, when it
 * had sent its request). herald accepts itself to do the same, like nginx
 * and libuv users before it, but says why: the reserve descriptor is closed,
 * one connection accepted, answered 503 with its write side shut down, what
 * it already sent read out (so that close sends FIN, not a reset), closed,
 * and the reserve reopened; each such refusal is counted and logged in
 * bursts. It cannot linger as other refused connections do (see
 * HD_REFUSED_DRAIN_BYTES): its descriptor is the reserve's. When there is no reserve (another
 * thread took the freed slot, or reopening it failed) the listener pauses
 * until the next sweep: connections wait in the backlog, unharmed, until
 * descriptors are free again.
 */
static void reopen_reserve(hd_server *server)
{
    if (server->reserve_fd < 0)
        server->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

typedef enum shed_result {
    SHED_ANSWERED,     /* a waiting connection was answered 503 and closed */
    SHED_NONE_WAITING, /* the backlog was empty (another worker took the connection) */
    SHED_FAILED,       /* no reserve, or the slot it freed was taken by another thread */
} shed_result;

static shed_result shed_connection(hd_listener *l)
{
    hd_server *server = l->server;
    if (server->reserve_fd < 0)
        return SHED_FAILED;
    close(server->reserve_fd);
    server->reserve_fd = -1;
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int accept_errno = errno;
    if (fd >= 0) {
        char peer[56] = "?";
        struct sockaddr_storage addr;
        socklen_t len = sizeof(addr);
        if (getpeername(fd, (struct sockaddr *)&addr, &len) == 0)
            uv_ip_name((const struct sockaddr *)&addr, peer, sizeof(peer));
        hd_server_note_refusal(server, HD_REFUSED_FILE_DESCRIPTORS, peer);
        char answer[320];
        size_t answer_len =
            hd_server_refusal_answer(server, HD_REFUSED_FILE_DESCRIPTORS, answer, sizeof(answer));
        if (answer_len > 0 && send(fd, answer, answer_len, MSG_NOSIGNAL) > 0)
            hd_metric_add(&server->metrics.bytes_written, answer_len);
        shutdown(fd, SHUT_WR);
        for (size_t drained = 0; drained < HD_REFUSED_DRAIN_BYTES;) {
            ssize_t n = recv(fd, server->read_buffer, sizeof(server->read_buffer), 0);
            if (n <= 0)
                break;
            drained += (size_t)n;
        }
        close(fd);
    }
    reopen_reserve(server);
    if (fd >= 0)
        return SHED_ANSWERED;
    return accept_errno == EAGAIN || accept_errno == EWOULDBLOCK ? SHED_NONE_WAITING : SHED_FAILED;
}

/* Keeps the loop from polling a socket whose connections cannot be accepted now. */
static void pause_listener(hd_listener *l)
{
    l->paused = true;
    uv_poll_stop(&l->poll);
}

/* Returns whether to go on accepting. */
static bool on_accept_failed(hd_listener *l, int error)
{
    hd_server *server = l->server;
    hd_accept_error kind = error == EMFILE   ? HD_ACCEPT_EMFILE
                           : error == ENFILE ? HD_ACCEPT_ENFILE
                                             : HD_ACCEPT_OTHER;
    shed_result shed = kind != HD_ACCEPT_OTHER ? shed_connection(l) : SHED_FAILED;
    /*
     * accept() looks for a free descriptor before it looks at the backlog, so
     * it fails with EMFILE when there was nothing to accept, as for every
     * worker woken with the one that took the connection: no failure then.
     */
    if (shed == SHED_NONE_WAITING)
        return false;
    hd_metric_add(&server->metrics.accept_errors[kind], 1);
    if (shed == SHED_FAILED)
        pause_listener(l);
    if (log_burst_take(&server->accept_error_log, hd_server_now(server)))
        hd_log_warn("accept failed: %s; %s", uv_strerror(uv_translate_sys_error(error)),
                    shed == SHED_ANSWERED
                        ? "answering new connections 503 until descriptors are free"
                        : "not accepting for a moment");
    return shed == SHED_ANSWERED;
}

static void listener_on_readable(uv_poll_t *poll, int status, int events)
{
    (void)events;
    hd_listener *l = poll->data;
    if (status < 0) {
        on_accept_failed(l, -status);
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            hd_conn_accept(l->server, fd);
        else if (errno == EAGAIN || errno == EWOULDBLOCK)
            return; /* taken by another worker, or none left */
        else if (errno != EINTR && errno != ECONNABORTED && !on_accept_failed(l, errno))
            return;
    }
}

/* From the sweep: listeners paused for want of descriptors try again. */
static void resume_listeners(hd_server *server)
{
    reopen_reserve(server);
    for (size_t i = 0; i < server->listener_count; i++) {
        hd_listener *l = &server->listeners[i];
        if (l->paused && !uv_is_closing((uv_handle_t *)&l->poll)) {
            l->paused = false;
            uv_poll_start(&l->poll, UV_READABLE, listener_on_readable);
        }
    }
}

/*
 * An address in use is most often another process (another herald), but an
 * earlier entry of the same list on the same port can hold it too: a
 * wildcard (0.0.0.0:P, [::]:P) overlaps every address of its port, which the
 * config's duplicate check does not call a duplicate.
 */
static void describe_address_in_use(const hd_config *config, size_t index, char *err,
                                    size_t err_len)
{
    const char *address = config->listen.items[index];
    char host[64];
    int port, other_port;
    hd_config_parse_address(address, host, sizeof(host), &port);
    for (size_t j = 0; j < index; j++) {
        if (hd_config_parse_address(config->listen.items[j], host, sizeof(host), &other_port) ==
                0 &&
            other_port == port && port != 0) {
            snprintf(err, err_len,
                     "cannot listen on %s: address already in use, by listen[%zu] '%s' of this "
                     "configuration on the same port (a wildcard address covers every address)",
                     address, j, config->listen.items[j]);
            return;
        }
    }
    snprintf(err, err_len, "cannot listen on %s: address already in use (another herald?)",
             address);
}

/*
 * One listening socket per address, made by the first worker and shared by
 * every worker (each polls its own dup of it and accepts from it; the kernel
 * wakes them all, and whoever accepts first serves the connection).
 *
 * Not one SO_REUSEPORT socket per worker, though the kernel would spread
 * connections over those: SO_REUSEPORT lets any process of the same user
 * join the group, so a second herald started on the same address would
 * start without error and the kernel would split new clients between two
 * unrelated hubs (different epochs, messages published on one never reach
 * subscribers of the other). A guard socket does not close that hole on
 * Linux: bound without SO_REUSEADDR it keeps the workers' own SO_REUSEPORT
 * sockets from binding; bound with it (and not listening), it does not stop
 * a foreign SO_REUSEPORT socket either (checked on Linux 6.18). A
 * single socket without SO_REUSEPORT makes the kernel refuse a second
 * instance (EADDRINUSE), whatever `workers` is. SO_REUSEADDR stays: a restart
 * must not wait for the last run's TIME_WAIT connections. What it costs: a
 * new connection wakes every worker and one wins the accept (the others get
 * EAGAIN), and the share each worker takes is decided by who is free first
 * rather than by a hash, which also means a busy worker leaves connections
 * to the others instead of queueing them.
 */
static int open_listening_socket(const struct sockaddr *addr)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t len =
        addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, addr, len) != 0 || listen(fd, 1024) != 0) {
        int err = uv_translate_sys_error(errno);
        close(fd);
        return err;
    }
    return fd;
}

static int resolve_address(const char *address, struct sockaddr_storage *addr)
{
    char host[256];
    int port;
    if (hd_config_parse_address(address, host, sizeof(host), &port) != 0)
        return UV_EINVAL;
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    return strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)addr)
                             : uv_ip4_addr(host, port, (struct sockaddr_in *)addr);
}

/* A TLS listener is logged with its scheme, so that operators (and tests) see what it speaks. */
static void log_listening(const struct sockaddr_storage *bound, bool tls)
{
    char name[INET6_ADDRSTRLEN] = "?";
    const char *scheme = tls ? "https://" : "";
    if (bound->ss_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)bound, name, sizeof(name));
        hd_log_info("listening on %s[%s]:%d", scheme, name,
                    ntohs(((const struct sockaddr_in6 *)bound)->sin6_port));
    } else {
        uv_ip4_name((const struct sockaddr_in *)bound, name, sizeof(name));
        hd_log_info("listening on %s%s:%d", scheme, name,
                    ntohs(((const struct sockaddr_in *)bound)->sin_port));
    }
}

/* The first worker binds what the config says (port 0: any); the others share its socket. */
static int listen_on(hd_server *server, size_t i, char *err, size_t err_len)
{
    hd_listener *l = &server->listeners[i];
    const char *address = server->config->listen.items[i];
    hd_server *first = server->group->servers[0];
    int fd;
    if (first == server) {
        struct sockaddr_storage addr;
        if (resolve_address(address, &addr) != 0) {
            snprintf(err, err_len, "invalid listen address '%s'", address);
            return -1;
        }
        fd = open_listening_socket((const struct sockaddr *)&addr);
        if (fd == UV_EADDRINUSE) {
            describe_address_in_use(server->config, i, err, err_len);
            return -1;
        }
    } else {
        fd = fcntl(first->listeners[i].fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            fd = uv_translate_sys_error(errno);
    }
    if (fd < 0) {
        snprintf(err, err_len, "cannot listen on %s: %s", address, uv_strerror(fd));
        return -1;
    }
    int rc = uv_poll_init_socket(server->loop, &l->poll, fd);
    if (rc != 0) {
        close(fd);
        snprintf(err, err_len, "cannot listen on %s: %s", address, uv_strerror(rc));
        return -1;
    }
    l->fd = fd;
    l->server = server;
    l->poll.data = l;
    server->handles_open++;
    uv_poll_start(&l->poll, UV_READABLE, listener_on_readable);
    if (first == server) {
        struct sockaddr_storage bound;
        socklen_t len = sizeof(bound);
        getsockname(fd, (struct sockaddr *)&bound, &len);
        log_listening(&bound, server->tls != NULL);
    }
    return 0;
}

int hd_server_start(hd_server *server, char *err, size_t err_len)
{
    /*
     * OpenSSL sets up its SHA-1 provider on first use (about 170 KiB): do it
     * at start, once, rather than during the first client's handshake.
     */
    if (server->index == 0) {
        char accept[HD_WS_ACCEPT_SIZE];
        hd_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, accept);
    }
    const hd_config *config = server->config;
    server->listeners = hd_calloc(config->listen.count, sizeof(*server->listeners));
    server->listener_count = config->listen.count;

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
    reopen_reserve(server);

    for (size_t i = 0; i < config->listen.count; i++) {
        if (listen_on(server, i, err, err_len) != 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Shutdown                                                                 */

static void handle_closed(hd_server *server)
{
    if (--server->handles_open == 0 && server->on_shutdown_done != NULL)
        server->on_shutdown_done(server->shutdown_ctx);
}

static void server_on_handle_closed(uv_handle_t *handle)
{
    handle_closed(handle->data);
}

static void listener_on_closed(uv_handle_t *handle)
{
    hd_listener *l = handle->data;
    close(l->fd);
    handle_closed(l->server);
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
    for (size_t i = 0; i < server->listener_count; i++) {
        uv_handle_t *handle = (uv_handle_t *)&server->listeners[i].poll;
        if (handle->data != NULL && !uv_is_closing(handle))
            uv_close(handle, listener_on_closed);
    }
    hd_list *node, *next;
    hd_list_foreach_safe(node, next, &server->connections)
    {
        hd_conn *conn = hd_container_of(node, hd_conn, server_node);
        if (conn->state == HD_CONN_CLOSING)
            continue;
        if (conn->state == HD_CONN_READING && conn->request_started)
            continue; /* answered with Connection: close, or cut by the header timeout */
        if (conn->state == HD_CONN_READING && conn->outq.count == 0)
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
    hd_ws_deflater_free(server->ws_deflater);
    if (server->reserve_fd >= 0)
        close(server->reserve_fd);
    group_leave(server->group);
    free(server->listeners);
    free(server);
}
