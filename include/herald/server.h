/*
 * The HTTP server: listeners, connections and the routes that lead to the
 * transports. One hd_server runs on one libuv loop and serves one hub.
 *
 * Ownership: the caller owns loop, config, hub, auth and tls and keeps them alive
 * until hd_server_free. The server owns its connections.
 */
#ifndef HERALD_SERVER_H
#define HERALD_SERVER_H

#include <uv.h>

#include "herald/config.h"
#include "herald/hub.h"

typedef struct hd_server hd_server;
typedef struct hd_auth hd_auth;
typedef struct hd_tls_ctx hd_tls_ctx;

/*
 * sibling: NULL for the first (or only) server; otherwise a server created
 * earlier for another worker, whose group this one joins: the connection
 * limits count across the group, its listeners share the first one's
 * listening sockets, and GET /metrics sums the group. Servers
 * of a group are created and started from one thread before any of their
 * loops runs; the group may hold hd_worker_count() servers. auth: who may
 * publish and subscribe (auth/auth.h); NULL lets everyone do everything.
 * tls: the TLS context every listener serves with (net/tls.h), shared by
 * all workers; NULL serves plain HTTP.
 */
hd_server *hd_server_new(uv_loop_t *loop, const hd_config *config, hd_hub *hub, const hd_auth *auth,
                         const hd_tls_ctx *tls, hd_server *sibling);
/*
 * Binds every config->listen address (the first server of a group; the others
 * share its sockets) and starts accepting; logs "listening on ADDR:PORT".
 * -1 with err set when an address cannot be bound (in use: by another herald).
 */
int hd_server_start(hd_server *server, char *err, size_t err_len);
/*
 * Graceful shutdown: stop accepting, end every stream and connection after
 * flushing what is queued, and force-close what is left after
 * config->shutdown_grace_s. When every handle is closed, on_done runs (from
 * the loop); the loop then has nothing left of the server.
 */
void hd_server_shutdown(hd_server *server, void (*on_done)(void *ctx), void *ctx);
/* Sets what hd_server_request_shutdown passes to hd_server_shutdown; before the loop runs. */
void hd_server_on_stopped(hd_server *server, void (*on_stopped)(void *ctx), void *ctx);
/* Thread-safe: makes the server's own loop call hd_server_shutdown. */
void hd_server_request_shutdown(hd_server *server);
/* Frees the server after hd_server_shutdown has completed. */
void hd_server_free(hd_server *server);

#endif
