/*
 * The worker threads: one libuv loop and one hd_server per worker, all
 * serving one hub. The caller's thread (main) keeps only the signals.
 *
 * Ownership: the caller owns config, hub, auth and tls and keeps them alive until
 * hd_workers_free; the workers own their loops and servers.
 */
#ifndef HERALD_WORKERS_H
#define HERALD_WORKERS_H

#include <stddef.h>

#include "herald/config.h"
#include "herald/hub.h"

typedef struct hd_workers hd_workers;
typedef struct hd_auth hd_auth;
typedef struct hd_tls_ctx hd_tls_ctx;

/*
 * count must equal hd_worker_count(), set before the hub was created. tls:
 * the TLS context of every listener (NULL: plain TCP), shared by the workers.
 */
hd_workers *hd_workers_new(const hd_config *config, hd_hub *hub, const hd_auth *auth,
                           const hd_tls_ctx *tls, unsigned count);
/*
 * Binds every listener of every worker (the first worker resolves port 0,
 * the others share its addresses), then starts the threads with SIGTERM and
 * SIGINT blocked, so that only the caller's thread takes them. On failure
 * nothing is left running and err says why.
 */
int hd_workers_start(hd_workers *workers, char *err, size_t err_len);
/* Thread-safe, once: every worker drains (hd_server_shutdown) and its thread ends. */
void hd_workers_shutdown(hd_workers *workers);
/* Waits for every thread to end, then frees the servers and loops. */
void hd_workers_free(hd_workers *workers);

#endif
