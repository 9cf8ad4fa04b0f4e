/*
 * Drives the real connection state machine (llhttp glue, limits, router,
 * publish, SSE and WebSocket handlers, token checks with HS256 and the
 * secret "fuzz-secret") with arbitrary bytes, split into two reads at a
 * position taken from the first byte. When that byte's top bit is set,
 * clients without a token may do nothing; otherwise anything. No sockets: output stays in
 * the connection's queue and is freed when it closes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "herald/alloc.h"
#include "herald/config.h"
#include "herald/hub.h"
#include "herald/log.h"
#include "herald/settings.h"
#include "engine/memory.h"
#include "http/http1.h"
#include "net/conn.h"
#include "net/server_internal.h"
#include "transport/context.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fuzz limits and secret; anonymous clients may do everything, or nothing. */
static hd_settings *fuzz_settings(bool anonymous)
{
    hd_config config;
    hd_config_init(&config);
    config.limits.max_message_bytes = 4096;
    config.limits.max_request_bytes = 8192;
    config.limits.max_header_bytes = 2048;
    config.limits.max_topics_per_subscription = 4;
    config.history.max_messages = 8;
    free(config.auth.jwt_secret);
    config.auth.jwt_secret = hd_strdup("fuzz-secret");
    config.auth.anonymous_publish = config.auth.anonymous_subscribe = anonymous;
    char err[256];
    return hd_settings_new(&config, err, sizeof(err));
}

/* What a worker does when the hub wakes it (its loop is not run here): deliver what is queued. */
static void deliver_queued(hd_hub *hub)
{
    while (hd_hub_deliver_pending(hub, UINT64_MAX))
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hd_settings *settings_open, *settings_closed;
    static void *context; /* the transports' per-loop context, as main.c wires it */
    static int initialised;
    if (!initialised) {
        hd_log_set_level(HD_LOG_ERROR);
        settings_open = fuzz_settings(true);
        settings_closed = fuzz_settings(false);
        context = hd_transport_context_new();
        initialised = 1;
    }
    if (size == 0)
        return 0;
    uv_loop_t loop;
    uv_loop_init(&loop);
    hd_hub_options options = {.history_max_messages = 8, .history_max_bytes = 65536, .epoch = 1};
    hd_hub *hub = hd_hub_new(&options);
    hd_publish_item held = {.topic = "a", .topic_len = 1, .data = "held", .data_len = 4};
    hd_hub_publish_batch(hub, &held, 1, 0, NULL, NULL, NULL, NULL);
    hd_engine *engine = hd_engine_memory_new(hub);
    hd_server *server = hd_server_new(&loop, data[0] & 0x80 ? settings_closed : settings_open, hub,
                                      engine, NULL, &hd_http1_protocol, context);
    hd_conn *conn = hd_conn_new(server);

    size_t split = 1 + (size > 1 ? data[0] % (size - 1) : 0);
    hd_conn_feed(conn, (const char *)data + 1, split - 1);
    deliver_queued(hub);
    hd_conn_feed(conn, (const char *)data + split, size - split);
    deliver_queued(hub);

    hd_conn_close(conn);
    hd_conn_finish_close(conn);
    uv_run(&loop, UV_RUN_DEFAULT);
    hd_server_free(server);
    hd_engine_free(engine);
    hd_hub_free(hub);
    uv_loop_close(&loop);
    return 0;
}
