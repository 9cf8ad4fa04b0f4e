/*
 * RFC 6455 framing, pure: bytes in, events out, no I/O. The reader parses
 * incrementally across reads of any size, reassembles fragmented messages
 * (bounded by max_message_bytes), validates text as UTF-8 as it arrives
 * (failing fast), inflates permessage-deflate messages through the
 * connection's hd_ws_inflater, and reports the first protocol violation as
 * the close code the RFC prescribes. The writer builds server frames
 * (never masked).
 *
 * Ownership: the reader owns its reassembly buffer; payloads handed to the
 * callbacks are borrowed for the duration of the call.
 */
#ifndef HERALD_WS_FRAME_H
#define HERALD_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/buf.h"
#include "herald/utf8.h"
#include "ws/ws_deflate.h"

typedef enum hd_ws_opcode {
    HD_WS_CONTINUATION = 0x0,
    HD_WS_TEXT = 0x1,
    HD_WS_BINARY = 0x2,
    HD_WS_CLOSE = 0x8,
    HD_WS_PING = 0x9,
    HD_WS_PONG = 0xA,
} hd_ws_opcode;

enum {
    HD_WS_CLOSE_NORMAL = 1000,
    HD_WS_CLOSE_GOING_AWAY = 1001,
    HD_WS_CLOSE_PROTOCOL_ERROR = 1002,
    HD_WS_CLOSE_UNSUPPORTED_DATA = 1003,
    HD_WS_CLOSE_NO_STATUS = 1005, /* never sent: "the close frame had no code" */
    HD_WS_CLOSE_INVALID_DATA = 1007,
    HD_WS_CLOSE_POLICY = 1008,
    HD_WS_CLOSE_TOO_BIG = 1009,
    HD_WS_CLOSE_INTERNAL = 1011,
    HD_WS_CLOSE_TRY_AGAIN = 1013,
};

typedef struct hd_ws_reader_callbacks {
    /* A complete text or binary message (inflated, and for text valid UTF-8). */
    void (*on_message)(void *ctx, hd_ws_opcode opcode, const char *data, size_t len);
    /*
     * A ping, pong or close frame. For close, code is the received status
     * (HD_WS_CLOSE_NO_STATUS when the frame had none) and payload/len the
     * reason, already validated (code allowed, reason UTF-8).
     */
    void (*on_control)(void *ctx, hd_ws_opcode opcode, uint16_t code, const char *payload,
                       size_t len);
} hd_ws_reader_callbacks;

typedef struct hd_ws_reader hd_ws_reader;

/*
 * A reader for one connection. inflater may be NULL (no extension
 * negotiated: any RSV bit is then a protocol error); it is borrowed.
 */
hd_ws_reader *hd_ws_reader_new(size_t max_message_bytes, hd_ws_inflater *inflater);
void hd_ws_reader_free(hd_ws_reader *reader);

/*
 * Feeds bytes. Returns 0 while the stream is valid, or the close code of the
 * first violation (1002, 1007, 1009) with *reason set to a static sentence;
 * after a non-zero return the reader must not be fed again. Callbacks run
 * synchronously from inside this call; a callback may ask the reader to stop
 * with hd_ws_reader_stop (e.g. after a close frame), in which case feed
 * returns 0 and ignores the rest of the input (and of any later call).
 */
uint16_t hd_ws_reader_feed(hd_ws_reader *reader, const void *bytes, size_t len,
                           const hd_ws_reader_callbacks *callbacks, void *ctx, const char **reason);
void hd_ws_reader_stop(hd_ws_reader *reader);
/* Whether a message or frame has begun and not yet completed (its bytes are held). */
bool hd_ws_reader_in_message(const hd_ws_reader *reader);
/* Between frames and messages, holding nothing: the reader may be freed and made anew. */
bool hd_ws_reader_idle(const hd_ws_reader *reader);
/* Bytes of memory the message being received holds (its reassembly buffer, inflated). */
size_t hd_ws_reader_held_bytes(const hd_ws_reader *reader);

/* Bytes of a server frame header for a payload of len (2, 4 or 10). */
size_t hd_ws_frame_header_size(size_t len);
/* Writes a final, unmasked frame header into out; returns its size. */
size_t hd_ws_frame_write_header(char *out, hd_ws_opcode opcode, bool compressed, size_t len);
/* A complete final unmasked frame in one new buffer (one reference). */
hd_buf *hd_ws_frame_build(hd_ws_opcode opcode, bool compressed, const void *payload, size_t len);
/*
 * A close frame with code and reason (reason may be NULL; cut to 123 bytes
 * on a UTF-8 character boundary so the payload fits 125). Code
 * HD_WS_CLOSE_NO_STATUS builds an empty close frame, the only way to say
 * "no status" on the wire.
 */
hd_buf *hd_ws_frame_build_close(uint16_t code, const char *reason);

/* Whether a received close code is one a peer may send (RFC 6455 §7.4). */
bool hd_ws_close_code_valid(uint16_t code);

#endif
