/* The per-loop context of the transports (see context.h). */
#include "transport/context.h"

#include <stdlib.h>

#include "herald/alloc.h"
#include "transport/router.h"
#include "ws/ws_handshake.h"

typedef struct transport_context {
    hd_http_context http; /* first: HTTP/1 finds its handlers here (http/http1.h) */
    /* WebSocket compression is done once per message, by one compressor per loop. */
    hd_ws_deflater *ws_deflater;
} transport_context;

void *hd_transport_context_new(void)
{
    transport_context *context = hd_calloc(1, sizeof(*context));
    context->http.handlers = &hd_router_handlers;
    context->ws_deflater = hd_ws_deflater_new();
    /*
     * OpenSSL sets up its SHA-1 provider on first use (about 170 KiB): do it
     * before any client comes, rather than during the first handshake (the
     * contexts after the first find it done).
     */
    char accept[HD_WS_ACCEPT_SIZE];
    hd_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, accept);
    return context;
}

void hd_transport_context_free(void *opaque)
{
    transport_context *context = opaque;
    if (context == NULL)
        return;
    hd_ws_deflater_free(context->ws_deflater);
    free(context);
}

hd_ws_deflater *hd_transport_ws_deflater(const hd_conn *conn)
{
    const transport_context *context = hd_conn_context(conn);
    return context->ws_deflater;
}
