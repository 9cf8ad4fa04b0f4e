/*
 * The server of one loop: listeners, connections, their deadlines and
 * writes. It knows no protocol and no handler by name: what reads requests
 * off its connections, and the context of its loop for that and the
 * handlers behind it, are given to hd_server_new (main.c wires HTTP/1 and
 * the transports in). One hd_server runs on one libuv loop and serves one
 * hub, through one engine (engine/engine.h) for what is stored.
 *
 * Ownership: the caller owns loop, hub, engine and context and keeps them
 * alive until hd_server_free. The server holds a reference to the settings
 * it serves with (herald/settings.h) and owns its connections.
 */
#ifndef HERALD_SERVER_H
#define HERALD_SERVER_H

#include <uv.h>

#include "herald/config.h"
#include "herald/hub.h"
#include "herald/settings.h"

typedef struct hd_server hd_server;
struct hd_engine;
/* What reads requests off a connection (src/net/conn.h; HTTP/1: src/http/http1.h). */
struct hd_conn_protocol;

/*
 * sibling: NULL for the first (or only) server; otherwise a server created
 * earlier for another worker, whose group this one joins: the connection
 * limits count across the group, its listeners share the first one's
 * listening sockets, and GET /metrics sums the group. Servers
 * of a group are created and started from one thread before any of their
 * loops runs; the group may hold hd_worker_count() servers. settings: the
 * config, the token keys and the TLS context every listener serves with
 * (NULL: plain HTTP); the server takes a reference. Its listen addresses
 * and the choice of TLS or plain stay those of the first settings for the
 * server's life. protocol reads requests off every connection; context is
 * this loop's, for it and the handlers behind it (hd_conn_context).
 */
hd_server *hd_server_new(uv_loop_t *loop, hd_settings *settings, hd_hub *hub,
                         struct hd_engine *engine, hd_server *sibling,
                         const struct hd_conn_protocol *protocol, void *context);
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
/* Thread-safe: makes the server's own loop call hd_server_shutdown. */
void hd_server_request_shutdown(hd_server *server);
/*
 * Thread-safe, after hd_server_start: the server's own loop switches to
 * settings (taking a reference) before its next callback, and lets go of
 * the ones it had; settings a newer call replaced before the loop took them
 * are let go unused. Requests and streams already going on read the new
 * limits from then on; what they settled at their start stays (a TLS
 * session's certificate, a WebSocket's token rights).
 */
void hd_server_use_settings(hd_server *server, hd_settings *settings);
/* Frees the server after hd_server_shutdown has completed. */
void hd_server_free(hd_server *server);

#endif
