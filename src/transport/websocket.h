/*
 * WebSocket on /ws (docs/protocol.md): the opening handshake, then a session that
 * speaks the JSON control protocol and receives every message of its topics
 * as the shared, encoded-once envelope frame. The same session in echo mode
 * (websocket.echo_path) answers every message with itself instead, through
 * the same handshake, codec, UTF-8 checks, deflate and close handling, so
 * that conformance suites can drive herald's real WebSocket stack.
 */
#ifndef HERALD_TRANSPORT_WEBSOCKET_H
#define HERALD_TRANSPORT_WEBSOCKET_H

#include <stdbool.h>

#include "herald/buf.h"
#include "herald/message.h"
#include "net/conn.h"

void hd_websocket_handle(hd_conn *conn, bool echo);

/* The envelope as one uncompressed text frame (HD_WIRE_WS). ctx unused. */
hd_buf *hd_websocket_encode_message(const hd_message *msg, void *ctx);

#endif
