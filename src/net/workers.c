#include "herald/workers.h"

#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <uv.h>

#include "herald/alloc.h"
#include "herald/server.h"
#include "herald/worker.h"

typedef struct worker {
    uv_loop_t loop;
    hd_server *server;
    void *context; /* the service's, for this loop */
    uv_thread_t thread;
    unsigned index;
    bool running;
} worker;

struct hd_workers {
    worker *workers;
    unsigned count;
    const hd_workers_service *service;
};

hd_workers *hd_workers_new(hd_settings *settings, hd_hub *hub, struct hd_engine *engine,
                           unsigned count, const hd_workers_service *service)
{
    hd_workers *w = hd_calloc(1, sizeof(*w));
    w->workers = hd_calloc(count, sizeof(*w->workers));
    w->count = count;
    w->service = service;
    for (unsigned i = 0; i < count; i++) {
        worker *k = &w->workers[i];
        k->index = i;
        uv_loop_init(&k->loop);
        k->context = service->context_new();
        k->server =
            hd_server_new(&k->loop, settings, hub, engine, i > 0 ? w->workers[0].server : NULL,
                          service->protocol, k->context);
    }
    return w;
}

static void worker_run(void *arg)
{
    worker *k = arg;
    hd_worker_set_index(k->index);
    uv_run(&k->loop, UV_RUN_DEFAULT);
}

/* A start that failed at worker `failed`: drain what was started, on this thread (none runs yet).
 */
static void stop_unstarted(hd_workers *w, unsigned failed)
{
    for (unsigned i = 0; i <= failed; i++) {
        hd_worker_set_index(i);
        hd_server_shutdown(w->workers[i].server, NULL, NULL);
        uv_run(&w->workers[i].loop, UV_RUN_DEFAULT);
    }
    hd_worker_set_index(0);
}

int hd_workers_start(hd_workers *w, const sigset_t *main_signals, char *err, size_t err_len)
{
    for (unsigned i = 0; i < w->count; i++) {
        if (hd_server_start(w->workers[i].server, err, err_len) != 0) {
            stop_unstarted(w, i);
            return -1;
        }
    }
    sigset_t previous;
    pthread_sigmask(SIG_BLOCK, main_signals, &previous);
    for (unsigned i = 0; i < w->count; i++) {
        worker *k = &w->workers[i];
        k->running = uv_thread_create(&k->thread, worker_run, k) == 0;
        if (!k->running)
            abort(); /* like running out of memory: nothing sensible is left to do */
    }
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    return 0;
}

void hd_workers_use_settings(hd_workers *w, hd_settings *settings)
{
    for (unsigned i = 0; i < w->count; i++)
        hd_server_use_settings(w->workers[i].server, settings);
}

void hd_workers_shutdown(hd_workers *w)
{
    for (unsigned i = 0; i < w->count; i++)
        hd_server_request_shutdown(w->workers[i].server);
}

void hd_workers_free(hd_workers *w)
{
    if (w == NULL)
        return;
    /* All threads first: a worker still draining may read another's server (GET /metrics). */
    for (unsigned i = 0; i < w->count; i++) {
        if (w->workers[i].running)
            uv_thread_join(&w->workers[i].thread);
    }
    for (unsigned i = 0; i < w->count; i++) {
        hd_server_free(w->workers[i].server);
        w->service->context_free(w->workers[i].context);
        uv_loop_close(&w->workers[i].loop);
    }
    free(w->workers);
    free(w);
}
