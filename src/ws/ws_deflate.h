/*
 * permessage-deflate (RFC 7692) with zlib: negotiation, per-connection
 * inflation with the size limit applied to the inflated size, and deflation
 * of outbound messages.
 *
 * Outbound policy: herald always answers with server_no_context_takeover,
 * so a message's compressed frame depends only on the message and is
 * produced once and shared by every subscriber (HD_WIRE_WS_DEFLATE), never
 * recompressed per connection. Connections whose client asked for
 * server_max_window_bits below 15 receive messages uncompressed (always
 * allowed: RSV1 is per message).
 */
#ifndef HERALD_WS_DEFLATE_H
#define HERALD_WS_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "herald/buf.h"

typedef struct hd_ws_deflate_params {
    bool enabled;                    /* an offer was accepted */
    bool client_no_context_takeover; /* the inflater resets after each message */
    int client_max_window_bits;      /* 8..15: the window the client compresses with */
    int server_max_window_bits;      /* 8..15: what the client allows us */
} hd_ws_deflate_params;

/*
 * Picks the first acceptable offer from a Sec-WebSocket-Extensions request
 * header (which may list several extensions and offers). On acceptance sets
 * params->enabled and writes the response header value (e.g.
 * "permessage-deflate; server_no_context_takeover") into response. Offers
 * with unknown or malformed parameters are declined (RFC 7692 §5), not
 * failed. The answer always includes client_no_context_takeover (RFC 7692
 * §7.1.1.2 allows it unsolicited), so an accepted offer always sets
 * params->client_no_context_takeover and the inflater keeps no window
 * between messages. Returns 0.
 */
int hd_ws_deflate_negotiate(const char *header, size_t len, hd_ws_deflate_params *params,
                            char *response, size_t response_len);

/* Per-connection inflation state; its zlib stream is allocated lazily. */
typedef struct hd_ws_inflater hd_ws_inflater;

hd_ws_inflater *hd_ws_inflater_new(const hd_ws_deflate_params *params);
void hd_ws_inflater_free(hd_ws_inflater *inflater);
/*
 * Inflates one chunk of a compressed message, appending to out; final marks
 * the last chunk of the message (the 0x00 0x00 0xff 0xff tail is then added,
 * per RFC 7692 §7.2.2). Returns 0, -1 on corrupt data, or -2 when out would
 * grow beyond limit bytes (a zip bomb is stopped there, not inflated).
 */
int hd_ws_inflate(hd_ws_inflater *inflater, const void *in, size_t len, bool final, hd_strbuf *out,
                  size_t limit);

/*
 * A reusable compressor (one per server, used from its loop only):
 * compresses a whole message without context takeover (window 15) and
 * returns a complete final frame of that opcode with RSV1 set (payload
 * without the trailing 0x00 0x00 0xff 0xff), as a new buffer with one
 * reference.
 */
typedef struct hd_ws_deflater hd_ws_deflater;

hd_ws_deflater *hd_ws_deflater_new(void);
void hd_ws_deflater_free(hd_ws_deflater *deflater);
hd_buf *hd_ws_deflate_frame(hd_ws_deflater *deflater, int opcode, const void *data, size_t len);

#endif
