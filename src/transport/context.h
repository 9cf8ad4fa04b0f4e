/*
 * The context of one worker's loop (hd_server_new's, reached from a
 * connection with hd_conn_context): the HTTP handlers requests go to, and
 * what the transports keep once per loop rather than per connection. It is
 * where an engine handle for the loop would live too.
 *
 * Ownership and threading: made on the thread that creates the servers,
 * before their loops run (hd_workers_new), then used only on its loop's
 * thread; freed after its server.
 */
#ifndef HERALD_TRANSPORT_CONTEXT_H
#define HERALD_TRANSPORT_CONTEXT_H

#include "net/conn.h"
#include "ws/ws_deflate.h"

/* A new context (void *: the type hd_workers_service asks for). */
void *hd_transport_context_new(void);
void hd_transport_context_free(void *context);

/* The compressor for permessage-deflate frames of the connection's loop. */
hd_ws_deflater *hd_transport_ws_deflater(const hd_conn *conn);

#endif
