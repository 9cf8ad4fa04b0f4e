/*
 * RFC 6455 framing: an incremental reader and the server-side writer.
 *
 * The reader is a two-state machine (collecting a frame header, consuming a
 * frame payload) that keeps everything it needs between calls, so input may
 * be split at any byte. Every rule is checked as early as the bytes allow:
 * framing rules and size limits at the header (a 2^62-byte frame is refused
 * after 14 bytes, not after buffering), UTF-8 as each payload chunk arrives
 * (Autobahn 6.4.x expects a connection to fail before the message ends).
 *
 * Data payloads are unmasked straight into the reassembly buffer: unmasking
 * needs writable memory anyway, so that copy is the only one and there is no
 * separate zero-copy path for unfragmented frames. Compressed payloads are
 * unmasked into a small stack buffer and inflated into the reassembly
 * buffer, so the buffer only ever holds the message as delivered.
 */
#include "ws/ws_frame.h"

#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"

enum {
    MAX_HEADER_BYTES = 14,     /* 2 + 8 (64-bit length) + 4 (mask key) */
    MAX_CONTROL_PAYLOAD = 125, /* RFC 6455 §5.5 */
    /*
     * Reassembly buffers larger than this are released after each message:
     * most client messages are small JSON control operations, and an idle
     * connection should not keep the memory of its largest message.
     */
    KEEP_BUFFER_BYTES = 4096,
    INFLATE_CHUNK_BYTES = 8192, /* unmasked compressed bytes per inflate call */
};

enum read_state {
    READ_HEADER,  /* collecting the 2..14 header bytes */
    READ_PAYLOAD, /* consuming the current frame's payload */
    READ_STOPPED, /* hd_ws_reader_stop was called: input is ignored */
    READ_FAILED,  /* a violation was reported: the same answer forever */
};

struct hd_ws_reader {
    size_t max_message_bytes;
    hd_ws_inflater *inflater; /* borrowed; NULL when no extension was negotiated */
    enum read_state state;
    uint16_t fail_code;
    const char *fail_reason;

    /* The frame being read. */
    uint8_t header[MAX_HEADER_BYTES];
    size_t header_len;
    uint8_t opcode;
    bool fin;
    uint8_t mask[4];
    size_t mask_phase; /* index into mask of the next payload byte's key byte */
    uint64_t remaining;

    /* A control frame's unmasked payload (control frames are never fragmented). */
    uint8_t control[MAX_CONTROL_PAYLOAD];
    size_t control_len;

    /* The data message in progress, if any. */
    bool in_message;
    bool compressed;
    uint8_t message_opcode;
    uint64_t compressed_bytes; /* wire bytes of a compressed message so far */
    hd_utf8_state utf8;
    hd_strbuf message; /* unmasked and inflated; len never exceeds max_message_bytes */
};

hd_ws_reader *hd_ws_reader_new(size_t max_message_bytes, hd_ws_inflater *inflater)
{
    hd_ws_reader *r = hd_calloc(1, sizeof(*r));
    r->max_message_bytes = max_message_bytes;
    r->inflater = inflater;
    r->state = READ_HEADER;
    hd_strbuf_init(&r->message);
    return r;
}

void hd_ws_reader_free(hd_ws_reader *reader)
{
    if (reader == NULL)
        return;
    hd_strbuf_free(&reader->message);
    free(reader);
}

bool hd_ws_reader_in_message(const hd_ws_reader *reader)
{
    return reader->in_message || reader->state == READ_PAYLOAD;
}

bool hd_ws_reader_idle(const hd_ws_reader *reader)
{
    return reader->state == READ_HEADER && reader->header_len == 0 && !reader->in_message;
}

size_t hd_ws_reader_held_bytes(const hd_ws_reader *reader)
{
    return reader->message.cap;
}

void hd_ws_reader_stop(hd_ws_reader *reader)
{
    if (reader->state != READ_FAILED)
        reader->state = READ_STOPPED;
}

bool hd_ws_close_code_valid(uint16_t code)
{
    /*
     * RFC 6455 §7.4.1 defines 1000-1003 and 1007-1011 for the wire and
     * forbids 1005, 1006 and 1015 there; IANA has since registered 1012-1014
     * (service restart, try again later, bad gateway), which browsers send
     * and herald itself sends (1013). Autobahn 7.7 expects 1000-1003,
     * 1007-1011 and 3000-4999 to be accepted; its current 7.9 list (0, 999,
     * 1004, 1005, 1006, 1016, 1100, 2000, 2999) no longer includes
     * 1012-1014. Everything else below 3000 is reserved or unassigned.
     */
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* ------------------------------------------------------------ unmasking */

/*
 * XORs n bytes of src with the mask key into dst (which may equal src),
 * starting at key byte *phase, and advances *phase. Eight bytes per step
 * with the key rotated to the phase and repeated into a 64-bit word: eight
 * is a multiple of four, so the word is the same for every step.
 */
static void unmask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4],
                        size_t *phase)
{
    uint8_t rotated[8];
    for (size_t i = 0; i < sizeof(rotated); i++)
        rotated[i] = mask[(*phase + i) & 3];
    uint64_t key;
    memcpy(&key, rotated, sizeof(key));

    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, src + i, sizeof(word)); /* unaligned-safe; one load */
        word ^= key;
        memcpy(dst + i, &word, sizeof(word));
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ rotated[i & 3];
    *phase = (*phase + n) & 3;
}

/* ------------------------------------------------------------ reader */

static uint16_t reader_fail(hd_ws_reader *r, uint16_t code, const char *why, const char **reason)
{
    r->state = READ_FAILED;
    r->fail_code = code;
    r->fail_reason = why;
    *reason = why;
    return code;
}

/* Header bytes this frame needs, judged from the bytes collected so far. */
static size_t header_size(const uint8_t *header, size_t have)
{
    if (have < 2)
        return 2;
    size_t size = 2;
    uint8_t len7 = header[1] & 0x7f;
    if (len7 == 126)
        size += 2;
    else if (len7 == 127)
        size += 8;
    if (header[1] & 0x80)
        size += 4;
    return size;
}

/*
 * Deflate can only expand incompressible data by a few bytes per block and
 * per flush, so a compressed message much larger on the wire than the
 * inflated limit is a peer padding its stream with empty blocks: refuse it
 * at the frame header like an uncompressed one, with room for any honest
 * compressor (12.5% plus a fixed allowance covers a sync flush every
 * 40 bytes).
 */
static uint64_t compressed_budget(size_t max_message_bytes)
{
    uint64_t max = max_message_bytes;
    uint64_t budget = max + max / 8 + 1024;
    return budget < max ? UINT64_MAX : budget;
}

/* Whether a frame of len more payload bytes keeps the message within its limit. */
static bool message_has_room(const hd_ws_reader *r, uint64_t len)
{
    if (r->compressed)
        return len <= compressed_budget(r->max_message_bytes) - r->compressed_bytes;
    return len <= r->max_message_bytes - r->message.len;
}

/*
 * Called once the whole header is collected: applies every framing rule of
 * RFC 6455 §5 and the message limit, and sets up the frame.
 */
static uint16_t frame_begin(hd_ws_reader *r, const char **reason)
{
    const uint8_t *h = r->header;
    r->fin = (h[0] & 0x80) != 0;
    bool rsv1 = (h[0] & 0x40) != 0;
    r->opcode = h[0] & 0x0f;

    if (h[0] & 0x30)
        return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR, "RSV2 or RSV3 set", reason);
    if (!(h[1] & 0x80))
        return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR, "client frame not masked", reason);

    uint64_t len = h[1] & 0x7f;
    size_t at = 2;
    if (len == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
        at = 4;
    } else if (len == 127) {
        len = 0;
        for (size_t i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
        at = 10;
        if (len >> 63)
            return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR, "frame length has its top bit set",
                               reason);
    }
    /*
     * RFC 6455 §5.2 tells senders to use the shortest length encoding but
     * gives receivers no rule; a longer encoding is unambiguous, so it is
     * accepted.
     */
    memcpy(r->mask, h + at, 4);
    r->mask_phase = 0;
    r->remaining = len;

    switch (r->opcode) {
    case HD_WS_CLOSE:
    case HD_WS_PING:
    case HD_WS_PONG:
        if (!r->fin)
            return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR, "fragmented control frame", reason);
        if (len > MAX_CONTROL_PAYLOAD)
            return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR,
                               "control frame payload longer than 125 bytes", reason);
        if (rsv1)
            return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR, "RSV1 set on a control frame",
                               reason);
        r->control_len = 0;
        return 0;
    case HD_WS_CONTINUATION:
        if (!r->in_message)
            return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR,
                               "continuation frame without a message in progress", reason);
        if (rsv1)
            return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR, "RSV1 set on a continuation frame",
                               reason);
        break;
    case HD_WS_TEXT:
    case HD_WS_BINARY:
        if (r->in_message)
            return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR,
                               "new data frame while a fragmented message is in progress", reason);
        if (rsv1 && r->inflater == NULL)
            return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR,
                               "RSV1 set without a negotiated extension", reason);
        r->in_message = true;
        r->compressed = rsv1;
        r->message_opcode = r->opcode;
        r->compressed_bytes = 0;
        hd_utf8_reset(&r->utf8);
        break;
    default:
        return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR, "reserved opcode", reason);
    }

    if (!message_has_room(r, len))
        return reader_fail(r, HD_WS_CLOSE_TOO_BIG, "message too big", reason);
    r->compressed_bytes += r->compressed ? len : 0;
    return 0;
}

/* Inflates a chunk of a compressed message and validates what it produced. */
static uint16_t inflate_chunk(hd_ws_reader *r, const uint8_t *bytes, size_t n, bool final,
                              const char **reason)
{
    size_t before = r->message.len;
    int rc = hd_ws_inflate(r->inflater, bytes, n, final, &r->message, r->max_message_bytes);
    if (rc == -2)
        return reader_fail(r, HD_WS_CLOSE_TOO_BIG, "message too big after inflation", reason);
    if (rc != 0)
        /* RFC 7692 names no code; 1007 (data inconsistent with its type) as ws does. */
        return reader_fail(r, HD_WS_CLOSE_INVALID_DATA, "invalid compressed data", reason);
    if (r->message_opcode == HD_WS_TEXT && r->message.len > before &&
        !hd_utf8_feed(&r->utf8, r->message.data + before, r->message.len - before))
        return reader_fail(r, HD_WS_CLOSE_INVALID_DATA, "invalid UTF-8 in text message", reason);
    return 0;
}

/* Consumes n payload bytes of the current frame. */
static uint16_t frame_payload(hd_ws_reader *r, const uint8_t *p, size_t n, const char **reason)
{
    if (r->opcode >= HD_WS_CLOSE) {
        unmask_copy(r->control + r->control_len, p, n, r->mask, &r->mask_phase);
        r->control_len += n;
        return 0;
    }
    if (!r->compressed) {
        hd_strbuf_reserve(&r->message, n);
        uint8_t *dst = (uint8_t *)r->message.data + r->message.len;
        unmask_copy(dst, p, n, r->mask, &r->mask_phase);
        r->message.len += n;
        if (r->message_opcode == HD_WS_TEXT && !hd_utf8_feed(&r->utf8, dst, n))
            return reader_fail(r, HD_WS_CLOSE_INVALID_DATA, "invalid UTF-8 in text message",
                               reason);
        return 0;
    }
    uint8_t chunk[INFLATE_CHUNK_BYTES];
    while (n > 0) {
        size_t k = n < sizeof(chunk) ? n : sizeof(chunk);
        unmask_copy(chunk, p, k, r->mask, &r->mask_phase);
        uint16_t code = inflate_chunk(r, chunk, k, false, reason);
        if (code)
            return code;
        p += k;
        n -= k;
    }
    return 0;
}

/* Ends the message: big buffers go back to the allocator, small ones are reused. */
static void message_reset(hd_ws_reader *r)
{
    r->in_message = false;
    if (r->message.cap > KEEP_BUFFER_BYTES)
        hd_strbuf_free(&r->message);
    else
        r->message.len = 0;
}

static uint16_t control_end(hd_ws_reader *r, const hd_ws_reader_callbacks *cb, void *ctx,
                            const char **reason)
{
    const char *payload = (const char *)r->control;
    if (r->opcode != HD_WS_CLOSE) {
        cb->on_control(ctx, (hd_ws_opcode)r->opcode, 0, payload, r->control_len);
        return 0;
    }
    if (r->control_len == 0) {
        cb->on_control(ctx, HD_WS_CLOSE, HD_WS_CLOSE_NO_STATUS, payload, 0);
        return 0;
    }
    if (r->control_len == 1)
        return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload",
                           reason);
    uint16_t code = (uint16_t)(r->control[0] << 8 | r->control[1]);
    if (!hd_ws_close_code_valid(code))
        return reader_fail(r, HD_WS_CLOSE_PROTOCOL_ERROR, "invalid close code", reason);
    if (!hd_utf8_valid(r->control + 2, r->control_len - 2))
        return reader_fail(r, HD_WS_CLOSE_INVALID_DATA, "close reason is not valid UTF-8", reason);
    cb->on_control(ctx, HD_WS_CLOSE, code, payload + 2, r->control_len - 2);
    return 0;
}

/* Called when the current frame's payload is complete. */
static uint16_t frame_end(hd_ws_reader *r, const hd_ws_reader_callbacks *cb, void *ctx,
                          const char **reason)
{
    if (r->opcode >= HD_WS_CLOSE)
        return control_end(r, cb, ctx, reason);
    if (!r->fin)
        return 0;
    if (r->compressed) {
        /* The end of the message: hd_ws_inflate adds the stripped 00 00 ff ff. */
        uint16_t code = inflate_chunk(r, NULL, 0, true, reason);
        if (code)
            return code;
    }
    if (r->message_opcode == HD_WS_TEXT && !hd_utf8_complete(&r->utf8))
        return reader_fail(r, HD_WS_CLOSE_INVALID_DATA, "text message ends inside a UTF-8 sequence",
                           reason);
    const char *data = r->message.data != NULL ? r->message.data : "";
    cb->on_message(ctx, (hd_ws_opcode)r->message_opcode, data, r->message.len);
    message_reset(r);
    return 0;
}

uint16_t hd_ws_reader_feed(hd_ws_reader *r, const void *bytes, size_t len,
                           const hd_ws_reader_callbacks *callbacks, void *ctx, const char **reason)
{
    if (r->state == READ_FAILED) {
        *reason = r->fail_reason;
        return r->fail_code;
    }
    const uint8_t *p = bytes;
    size_t left = len;
    while (left > 0 && r->state != READ_STOPPED) {
        uint16_t code;
        if (r->state == READ_HEADER) {
            size_t need = header_size(r->header, r->header_len);
            size_t take = need - r->header_len < left ? need - r->header_len : left;
            memcpy(r->header + r->header_len, p, take);
            r->header_len += take;
            p += take;
            left -= take;
            /* The first two bytes tell how many more the header has. */
            if (r->header_len < header_size(r->header, r->header_len))
                continue;
            r->header_len = 0;
            code = frame_begin(r, reason);
            if (code == 0 && r->remaining == 0)
                code = frame_end(r, callbacks, ctx, reason);
            else if (code == 0)
                r->state = READ_PAYLOAD;
        } else {
            size_t n = r->remaining < left ? (size_t)r->remaining : left;
            code = frame_payload(r, p, n, reason);
            p += n;
            left -= n;
            r->remaining -= n;
            if (code == 0 && r->remaining == 0) {
                /* Set first: a callback in frame_end may stop the reader. */
                r->state = READ_HEADER;
                code = frame_end(r, callbacks, ctx, reason);
            }
        }
        if (code)
            return code;
    }
    return 0;
}

/* ------------------------------------------------------------ writer */

size_t hd_ws_frame_header_size(size_t len)
{
    if (len < 126)
        return 2;
    return len <= 0xffff ? 4 : 10;
}

size_t hd_ws_frame_write_header(char *out, hd_ws_opcode opcode, bool compressed, size_t len)
{
    uint8_t *o = (uint8_t *)out;
    o[0] = (uint8_t)(0x80 | (compressed ? 0x40 : 0) | (opcode & 0x0f));
    if (len < 126) {
        o[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        o[1] = 126;
        o[2] = (uint8_t)(len >> 8);
        o[3] = (uint8_t)len;
        return 4;
    }
    o[1] = 127;
    uint64_t wide = len;
    for (size_t i = 0; i < 8; i++)
        o[2 + i] = (uint8_t)(wide >> (56 - 8 * i));
    return 10;
}

hd_buf *hd_ws_frame_build(hd_ws_opcode opcode, bool compressed, const void *payload, size_t len)
{
    hd_buf *buf = hd_buf_new(hd_ws_frame_header_size(len) + len);
    size_t at = hd_ws_frame_write_header(buf->data, opcode, compressed, len);
    if (len > 0)
        memcpy(buf->data + at, payload, len);
    return buf;
}

hd_buf *hd_ws_frame_build_close(uint16_t code, const char *reason)
{
    /* 1005 means "no status": the frame that says so is an empty close. */
    if (code == HD_WS_CLOSE_NO_STATUS)
        return hd_ws_frame_build(HD_WS_CLOSE, false, NULL, 0);
    size_t reason_len = reason != NULL ? strlen(reason) : 0;
    if (reason_len > MAX_CONTROL_PAYLOAD - 2) {
        /* Cut before the character that would cross the limit, not inside it. */
        reason_len = MAX_CONTROL_PAYLOAD - 2;
        while (reason_len > 0 && ((uint8_t)reason[reason_len] & 0xc0) == 0x80)
            reason_len--;
    }
    size_t len = 2 + reason_len;
    hd_buf *buf = hd_buf_new(2 + len);
    size_t at = hd_ws_frame_write_header(buf->data, HD_WS_CLOSE, false, len);
    buf->data[at] = (char)(code >> 8);
    buf->data[at + 1] = (char)(code & 0xff);
    if (reason_len > 0)
        memcpy(buf->data + at + 2, reason, reason_len);
    return buf;
}
