/*
 * The listening sockets and what comes in through them: accepting (each
 * worker from its own descriptor of the shared socket), the connection
 * limits, refusals (the protocol's answer, the write side shut down, the
 * input read out for a moment), running out of descriptors, and the log lines for all of these,
 * aggregated in bursts. A connection accepted under the limits is handed to
 * conn.c (hd_conn_serve).
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "herald/alloc.h"
#include "herald/log.h"
#include "net/conn.h"
#include "net/server_internal.h"

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

/* Counts a refusal and logs it (aggregated: see hd_log_burst); peer names the client. */
static void note_refusal(hd_server *server, hd_refusal reason, const char *peer)
{
    hd_metric_add(&server->metrics.connections_refused[reason], 1);
    if (log_burst_take(&server->refusal_log[reason], hd_server_now(server)))
        hd_log_warn("refusing %s: %s", peer, refusal_reasons[reason]);
}

/* What a refused client is sent (the protocol's 503) into out; its length, 0: nothing. */
static size_t refusal_answer(const hd_server *server, hd_refusal reason, char *out, size_t cap)
{
    /* A TLS client would take plain text for a broken handshake: it only sees the close. */
    if (server->tls != NULL)
        return 0;
    return server->protocol->refusal(refusal_reasons[reason], out, cap);
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
        note_refusal(server, HD_REFUSED_FILE_DESCRIPTORS, peer);
        char answer[320];
        size_t answer_len =
            refusal_answer(server, HD_REFUSED_FILE_DESCRIPTORS, answer, sizeof(answer));
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

/* ------------------------------------------------------------------------ */
/* Accepting and refusing                                                   */

/* Names the client in conn->peer (for logs) and keeps its address for the per-address limit. */
static void describe_peer(hd_conn *conn)
{
    struct sockaddr_storage addr;
    int len = sizeof(addr);
    strcpy(conn->peer, "?");
    if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *)&addr, &len) != 0)
        return;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (addr.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&addr;
        conn->ip.bytes[10] = conn->ip.bytes[11] = 0xff;
        memcpy(&conn->ip.bytes[12], &in->sin_addr, 4);
        uv_ip4_name(in, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(conn->peer, sizeof(conn->peer), "%s:%d", host, port);
    } else if (addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&addr;
        memcpy(conn->ip.bytes, &in6->sin6_addr, 16);
        static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(conn->ip.bytes, v4_mapped, sizeof(v4_mapped)) != 0)
            memset(conn->ip.bytes + 8, 0, 8);
        uv_ip6_name(in6, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(conn->peer, sizeof(conn->peer), "[%s]:%d", host, port);
    }
}

/* A refused connection's input, read and dropped (see HD_REFUSED_DRAIN_BYTES). */
static void refused_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    hd_conn *conn = (hd_conn *)stream;
    if (nread < 0) {
        hd_conn_close(conn); /* EOF: the client read the answer and closed */
        return;
    }
    hd_metric_add(&conn->server->metrics.bytes_read, (uint64_t)nread);
    conn->refused_drained += (uint32_t)nread;
    if (conn->refused_drained > HD_REFUSED_DRAIN_BYTES)
        hd_conn_close(conn);
}

/*
 * A connection over a limit is told so in one non-blocking write, its write
 * side shut down, and its input drained for a moment (see
 * HD_REFUSED_DRAIN_BYTES): a flood must not hold places under the limits,
 * nor more than a bounded number of descriptors, for long.
 */
static void refuse(hd_conn *conn, hd_refusal reason)
{
    hd_server *server = conn->server;
    note_refusal(server, reason, conn->peer);
    hd_conn_leave_limits(conn);
    conn->refused = true;
    char answer[320];
    size_t len = refusal_answer(server, reason, answer, sizeof(answer));
    if (len > 0) {
        uv_buf_t buf = uv_buf_init(answer, (unsigned)len);
        int written = uv_try_write((uv_stream_t *)&conn->tcp, &buf, 1);
        if (written > 0)
            hd_metric_add(&server->metrics.bytes_written, (uint64_t)written);
    }
    /* Straight to the socket: nothing else is written to it, so libuv need not know. */
    uv_os_fd_t fd;
    if (server->refused_draining >= HD_REFUSED_DRAIN_MAX ||
        uv_fileno((uv_handle_t *)&conn->tcp, &fd) != 0 || shutdown(fd, SHUT_WR) != 0 ||
        uv_read_start((uv_stream_t *)&conn->tcp, hd_conn_on_alloc, refused_on_read) != 0) {
        hd_conn_close(conn);
        return;
    }
    server->refused_draining++;
    conn->refused_draining = true;
    hd_conn_wait_in(conn, &server->refused_drain);
}

/* Takes over fd, a socket just accepted: served, or refused over a connection limit. */
static void accept_connection(hd_server *server, int fd)
{
    hd_conn *conn = hd_conn_new(server);
    if (uv_tcp_open(&conn->tcp, fd) != 0) {
        close(fd);
        hd_conn_close(conn);
        return;
    }
    describe_peer(conn);
    hd_metric_add(&server->metrics.connections_accepted, 1);
    if (__atomic_load_n(&server->group->connections, __ATOMIC_RELAXED) >
        server->config->limits.max_connections) {
        refuse(conn, HD_REFUSED_MAX_CONNECTIONS);
        return;
    }
    const uint32_t per_ip = server->config->limits.max_connections_per_ip;
    if (per_ip > 0) {
        conn->ip_counted = true;
        pthread_mutex_lock(&server->group->lock);
        uint32_t count = hd_ip_count_add(server->group->ip_counts, &conn->ip);
        pthread_mutex_unlock(&server->group->lock);
        if (count > per_ip) {
            refuse(conn, HD_REFUSED_MAX_CONNECTIONS_PER_IP);
            return;
        }
    }
    hd_conn_serve(conn);
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
            accept_connection(l->server, fd);
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

/* ------------------------------------------------------------------------ */
/* Starting, sweeping and stopping                                          */

int hd_listeners_start(hd_server *server, char *err, size_t err_len)
{
    const hd_config *config = server->config;
    server->listeners = hd_calloc(config->listen.count, sizeof(*server->listeners));
    server->listener_count = config->listen.count;
    reopen_reserve(server);
    for (size_t i = 0; i < config->listen.count; i++) {
        if (listen_on(server, i, err, err_len) != 0)
            return -1;
    }
    return 0;
}

void hd_listeners_sweep(hd_server *server, uint64_t now)
{
    sweep_logs(server, now);
    if (!server->draining)
        resume_listeners(server);
}

static void listener_on_closed(uv_handle_t *handle)
{
    hd_listener *l = handle->data;
    close(l->fd);
    hd_server_handle_closed(l->server);
}

void hd_listeners_close(hd_server *server)
{
    for (size_t i = 0; i < server->listener_count; i++) {
        uv_handle_t *handle = (uv_handle_t *)&server->listeners[i].poll;
        if (handle->data != NULL && !uv_is_closing(handle))
            uv_close(handle, listener_on_closed);
    }
}

void hd_listeners_free(hd_server *server)
{
    if (server->reserve_fd >= 0)
        close(server->reserve_fd);
    free(server->listeners);
}
