/*
 * The worker threads: one libuv loop and one hd_server per worker, all
 * serving one hub through one engine. The caller's thread (main) keeps only
 * the signals.
 *
 * Ownership: the caller owns the hub and the engine and keeps them alive
 * until hd_workers_free; the workers own their loops and servers, and each holds
 * a reference to the settings it serves with (herald/settings.h).
 */
#ifndef HERALD_WORKERS_H
#define HERALD_WORKERS_H

#include <signal.h>
#include <stddef.h>

#include "herald/hub.h"
#include "herald/settings.h"

typedef struct hd_workers hd_workers;
struct hd_engine;
struct hd_conn_protocol;

/*
 * What every worker's server serves with (see hd_server_new): the protocol,
 * and a context made for each worker's loop, on the thread that calls
 * hd_workers_new, and freed with the worker.
 */
typedef struct hd_workers_service {
    const struct hd_conn_protocol *protocol;
    void *(*context_new)(void);
    void (*context_free)(void *context);
} hd_workers_service;

/*
 * count must equal hd_worker_count(), set before the hub was created. Every
 * worker starts with settings (its config, token keys and TLS context).
 */
hd_workers *hd_workers_new(hd_settings *settings, hd_hub *hub, struct hd_engine *engine,
                           unsigned count, const hd_workers_service *service);
/*
 * Binds every listener of every worker (the first worker resolves port 0,
 * the others share its addresses), then starts the threads with
 * main_signals blocked, so that only the caller's thread takes them. On
 * failure nothing is left running and err says why.
 */
int hd_workers_start(hd_workers *workers, const sigset_t *main_signals, char *err, size_t err_len);
/*
 * Thread-safe, between a successful start and hd_workers_shutdown: every
 * worker switches to settings on its own thread (hd_server_use_settings);
 * the last to do so logs "reload complete".
 */
void hd_workers_use_settings(hd_workers *workers, hd_settings *settings);
/* Thread-safe, once: every worker drains (hd_server_shutdown) and its thread ends. */
void hd_workers_shutdown(hd_workers *workers);
/* Waits for every thread to end, then frees the servers and loops. */
void hd_workers_free(hd_workers *workers);

#endif
