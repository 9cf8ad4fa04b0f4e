/*
 * Server-Sent Events on GET /events (docs/protocol.md): the handler, the subscriber
 * that feeds a connection from the hub, and the wire encoders, each of which
 * builds one immutable buffer that every SSE subscriber shares.
 */
#ifndef HERALD_TRANSPORT_SSE_H
#define HERALD_TRANSPORT_SSE_H

#include "herald/buf.h"
#include "herald/hub.h"
#include "herald/message.h"
#include "net/conn.h"

void hd_sse_handle(hd_conn *conn);

/* "id:", "event:", one "data:" line per line of data, blank line. */
hd_buf *hd_sse_encode_message(const hd_message *msg, void *ctx);
/* The same event with the JSON envelope as its data (format=json). */
hd_buf *hd_sse_encode_envelope(const hd_message *msg, void *ctx);
/* "event: herald-gap" with {"topic","from","to"}; no id, so Last-Event-ID stays put. */
hd_buf *hd_sse_encode_gap(const hd_gap *gap);

#endif
