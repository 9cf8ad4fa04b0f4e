/*
 * permessage-deflate (RFC 7692) on zlib raw deflate streams.
 *
 * Inbound policy: herald's answer always carries client_no_context_takeover,
 * which RFC 7692 §7.1.1.2 lets a server add even when the client did not
 * offer it. Each message then inflates from an empty window, so the zlib
 * stream (about 40 KiB with its 32 KiB window) is freed after every message
 * and an idle connection holds none; clients mostly send small control
 * operations, which gain little from a shared window. The inflater itself
 * still supports context takeover for whoever builds params by hand.
 *
 * Inflation always uses window bits 15: a window that large decodes data
 * compressed with any smaller one, so client_max_window_bits never needs to
 * be answered.
 */
#include "ws/ws_deflate.h"

#define ZLIB_CONST /* next_in is then const, as the input it points to */
#include <zlib.h>

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herald/alloc.h"
#include "ws/ws_frame.h"

enum {
    MAX_WINDOW_BITS = 15,
    MIN_WINDOW_BITS = 8,
    INFLATE_MIN_GROWTH = 4096,
    /* The deflater keeps its scratch buffer between messages up to this size. */
    KEEP_SCRATCH_BYTES = 256 * 1024,
};

/* RFC 7692 §7.2.1: the empty stored block that ends a sync flush, stripped on the wire. */
static const uint8_t flush_tail[4] = {0x00, 0x00, 0xff, 0xff};

/* zlib allocates through hd_alloc so that out-of-memory aborts like everywhere else. */
static voidpf zlib_alloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    return hd_alloc((size_t)items * size);
}

static void zlib_free(voidpf opaque, voidpf ptr)
{
    (void)opaque;
    free(ptr);
}

static void zlib_init_failed(const char *what, int rc)
{
    fprintf(stderr, "herald: %s failed (%d)\n", what, rc);
    abort();
}

/* ------------------------------------------------------------ negotiation */

/*
 * The header grammar is RFC 6455 §9.1:
 *   extension-list = 1#( extension-token *( ";" extension-param ) )
 *   extension-param = token [ "=" ( token | quoted-string ) ]
 * where a quoted value must, once unescaped, be a token too.
 */
typedef struct cursor {
    const char *p;
    const char *end;
} cursor;

/* A parameter value: long enough for every value permessage-deflate knows. */
typedef struct param_value {
    char text[8];
    size_t len;
    bool too_long;
} param_value;

/* What one offer asked for. */
typedef struct offer {
    bool is_deflate;
    bool acceptable; /* every parameter known, valid and given once */
    bool server_no_context_takeover;
    bool client_no_context_takeover;
    bool client_max_window_bits;
    bool server_max_window_bits;
    int client_bits;
    int server_bits;
} offer;

static bool is_tchar(unsigned char c)
{
    /* RFC 7230 §3.2.6 tchar. */
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void skip_whitespace(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

/* Consumes a token; returns its length (0 when there is none). */
static size_t take_token(cursor *c, const char **start)
{
    *start = c->p;
    while (c->p < c->end && is_tchar((unsigned char)*c->p))
        c->p++;
    return (size_t)(c->p - *start);
}

static void value_push(param_value *v, char ch)
{
    if (v->len < sizeof(v->text))
        v->text[v->len++] = ch;
    else
        v->too_long = true;
}

/*
 * Consumes a token or a quoted-string into v (unescaped). Returns false on a
 * syntax error; a quoted value that is not a token leaves v empty so that
 * whoever reads it declines the offer.
 */
static bool take_value(cursor *c, param_value *v)
{
    memset(v, 0, sizeof(*v));
    if (c->p < c->end && *c->p == '"') {
        c->p++;
        bool token = true;
        for (;;) {
            if (c->p >= c->end)
                return false;
            char ch = *c->p++;
            if (ch == '"')
                break;
            if (ch == '\\') {
                if (c->p >= c->end)
                    return false;
                ch = *c->p++;
            }
            token = token && is_tchar((unsigned char)ch);
            value_push(v, ch);
        }
        if (!token || v->len == 0)
            v->too_long = true;
        return true;
    }
    const char *start;
    size_t len = take_token(c, &start);
    for (size_t i = 0; i < len; i++)
        value_push(v, start[i]);
    return len > 0;
}

/* RFC 7692 §7.1.2: a decimal 8..15 without leading zeros; 0 when invalid. */
static int window_bits(const param_value *v)
{
    if (v->too_long || v->len == 0 || v->len > 2 || v->text[0] == '0')
        return 0;
    int bits = 0;
    for (size_t i = 0; i < v->len; i++) {
        if (v->text[i] < '0' || v->text[i] > '9')
            return 0;
        bits = bits * 10 + (v->text[i] - '0');
    }
    return bits >= MIN_WINDOW_BITS && bits <= MAX_WINDOW_BITS ? bits : 0;
}

static bool name_is(const char *name, size_t len, const char *expected)
{
    return strlen(expected) == len && strncasecmp(name, expected, len) == 0;
}

/* Applies one permessage-deflate parameter to o, declining the offer if it is bad. */
static void offer_apply(offer *o, const char *name, size_t len, bool has_value,
                        const param_value *v)
{
    bool *seen;
    int *bits = NULL;
    bool value_required = false;
    bool value_allowed = false;
    if (name_is(name, len, "server_no_context_takeover")) {
        seen = &o->server_no_context_takeover;
    } else if (name_is(name, len, "client_no_context_takeover")) {
        seen = &o->client_no_context_takeover;
    } else if (name_is(name, len, "server_max_window_bits")) {
        seen = &o->server_max_window_bits;
        bits = &o->server_bits;
        value_required = value_allowed = true;
    } else if (name_is(name, len, "client_max_window_bits")) {
        seen = &o->client_max_window_bits;
        bits = &o->client_bits;
        value_allowed = true;
    } else {
        o->acceptable = false; /* RFC 7692 §5: unknown parameters decline the offer */
        return;
    }
    if (*seen || (has_value && !value_allowed) || (!has_value && value_required)) {
        o->acceptable = false;
        return;
    }
    *seen = true;
    if (has_value) {
        *bits = window_bits(v);
        if (*bits == 0)
            o->acceptable = false;
    }
}

/*
 * Parses one list element (an extension and its parameters) up to the next
 * top-level comma or the end. Returns false on a syntax error. An empty
 * element is allowed (the #rule tolerates "a, , b") and is not an offer.
 */
static bool parse_element(cursor *c, offer *o)
{
    memset(o, 0, sizeof(*o));
    o->acceptable = true;
    skip_whitespace(c);
    const char *name;
    size_t name_len = take_token(c, &name);
    skip_whitespace(c);
    if (name_len == 0)
        return c->p >= c->end || *c->p == ',';
    o->is_deflate = name_is(name, name_len, "permessage-deflate");

    while (c->p < c->end && *c->p == ';') {
        c->p++;
        skip_whitespace(c);
        const char *param;
        size_t param_len = take_token(c, &param);
        if (param_len == 0)
            return false;
        skip_whitespace(c);
        bool has_value = false;
        param_value value = {0};
        if (c->p < c->end && *c->p == '=') {
            c->p++;
            skip_whitespace(c);
            if (!take_value(c, &value))
                return false;
            has_value = true;
            skip_whitespace(c);
        }
        if (o->is_deflate)
            offer_apply(o, param, param_len, has_value, &value);
    }
    return c->p >= c->end || *c->p == ',';
}

/* Writes the answer to an accepted offer; false when response_len is too small. */
static bool write_response(const offer *o, char *response, size_t response_len)
{
    char server_bits[32] = "";
    if (o->server_max_window_bits)
        snprintf(server_bits, sizeof(server_bits), "; server_max_window_bits=%d", o->server_bits);
    int n = snprintf(response, response_len,
                     "permessage-deflate; server_no_context_takeover; client_no_context_takeover%s",
                     server_bits);
    return n > 0 && (size_t)n < response_len;
}

int hd_ws_deflate_negotiate(const char *header, size_t len, hd_ws_deflate_params *params,
                            char *response, size_t response_len)
{
    params->enabled = false;
    params->client_no_context_takeover = false;
    params->client_max_window_bits = MAX_WINDOW_BITS;
    params->server_max_window_bits = MAX_WINDOW_BITS;
    if (response_len > 0)
        response[0] = '\0';
    if (header == NULL)
        return 0;

    cursor c = {header, header + len};
    for (;;) {
        offer o;
        /* A malformed header declines whatever is left of it. */
        if (!parse_element(&c, &o))
            return 0;
        if (o.is_deflate && o.acceptable) {
            if (!write_response(&o, response, response_len)) {
                if (response_len > 0)
                    response[0] = '\0';
                return 0;
            }
            params->enabled = true;
            params->client_no_context_takeover = true; /* always answered: see the top */
            if (o.client_bits)
                params->client_max_window_bits = o.client_bits;
            if (o.server_bits)
                params->server_max_window_bits = o.server_bits;
            return 0;
        }
        if (c.p >= c.end)
            return 0;
        c.p++; /* the comma */
    }
}

/* ------------------------------------------------------------ inflater */

struct hd_ws_inflater {
    z_stream zs;
    bool live;                /* zs is initialised (it is allocated on first use) */
    bool stream_ended;        /* the message contained a block with BFINAL set */
    bool no_context_takeover; /* free the stream after each message */
};

hd_ws_inflater *hd_ws_inflater_new(const hd_ws_deflate_params *params)
{
    hd_ws_inflater *inf = hd_calloc(1, sizeof(*inf));
    inf->no_context_takeover = params->client_no_context_takeover;
    return inf;
}

static void inflater_release(hd_ws_inflater *inf)
{
    if (inf->live)
        inflateEnd(&inf->zs);
    inf->live = false;
}

void hd_ws_inflater_free(hd_ws_inflater *inflater)
{
    if (inflater == NULL)
        return;
    inflater_release(inflater);
    free(inflater);
}

/*
 * Runs inflate over zs's pending input, appending to out without letting
 * out->len pass limit. Once out holds limit bytes, a one-byte probe tells
 * whether the data wants to produce more: then the message is over the
 * limit (-2), and nothing beyond limit was ever allocated for it.
 */
static int inflate_pending(hd_ws_inflater *inf, hd_strbuf *out, size_t limit)
{
    z_stream *zs = &inf->zs;
    for (;;) {
        size_t room = limit - out->len;
        uint8_t probe;
        size_t given;
        if (room == 0) {
            zs->next_out = &probe;
            given = 1;
        } else {
            /*
             * Use the spare capacity while there is a useful amount of it,
             * then grow geometrically, never reserving past the limit.
             */
            size_t spare = out->data != NULL ? out->cap - out->len : 0;
            if (spare < INFLATE_MIN_GROWTH && spare < room) {
                size_t want = out->len > INFLATE_MIN_GROWTH ? out->len : INFLATE_MIN_GROWTH;
                hd_strbuf_reserve(out, want < room ? want : room);
            }
            given = out->cap - out->len;
            given = given < room ? given : room;
            given = given < UINT_MAX ? given : UINT_MAX;
            zs->next_out = (Bytef *)out->data + out->len;
        }
        zs->avail_out = (uInt)given;
        int rc = inflate(zs, Z_SYNC_FLUSH);
        size_t produced = given - zs->avail_out;
        if (room == 0 && produced > 0)
            return -2;
        if (room > 0)
            out->len += produced;
        if (rc == Z_STREAM_END) {
            /*
             * A block with BFINAL set ends the deflate stream; what follows
             * in this message (at least the appended tail) is ignored, and
             * the next message starts a new stream (RFC 7692 §7.2.3.4 shows
             * such a message).
             */
            inf->stream_ended = true;
            return 0;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return -1;
        /* Room left over means inflate ran out of input with all output flushed. */
        if (zs->avail_out > 0)
            return 0;
    }
}

static int inflate_bytes(hd_ws_inflater *inf, const uint8_t *in, size_t len, hd_strbuf *out,
                         size_t limit)
{
    do {
        if (inf->stream_ended)
            return 0;
        size_t chunk = len < UINT_MAX ? len : UINT_MAX;
        inf->zs.next_in = in;
        inf->zs.avail_in = (uInt)chunk;
        int rc = inflate_pending(inf, out, limit);
        if (rc != 0)
            return rc;
        len -= chunk;
        if (len > 0)
            in += chunk;
    } while (len > 0);
    return 0;
}

int hd_ws_inflate(hd_ws_inflater *inf, const void *in, size_t len, bool final, hd_strbuf *out,
                  size_t limit)
{
    if (!inf->live) {
        memset(&inf->zs, 0, sizeof(inf->zs));
        inf->zs.zalloc = zlib_alloc;
        inf->zs.zfree = zlib_free;
        int rc = inflateInit2(&inf->zs, -MAX_WINDOW_BITS);
        if (rc != Z_OK)
            zlib_init_failed("inflateInit2", rc);
        inf->live = true;
        inf->stream_ended = false;
    }
    int rc = inflate_bytes(inf, in, len, out, limit);
    if (rc == 0 && final)
        rc = inflate_bytes(inf, flush_tail, sizeof(flush_tail), out, limit);
    if (rc != 0 || (final && inf->no_context_takeover)) {
        /* A failed stream is never reused; an idle one without takeover is not kept. */
        inflater_release(inf);
    } else if (final && inf->stream_ended) {
        inflateReset(&inf->zs);
        inf->stream_ended = false;
    }
    return rc;
}

/* ------------------------------------------------------------ deflater */

struct hd_ws_deflater {
    z_stream zs;
    hd_strbuf scratch; /* the compressed payload, before it is framed */
};

hd_ws_deflater *hd_ws_deflater_new(void)
{
    hd_ws_deflater *d = hd_calloc(1, sizeof(*d));
    d->zs.zalloc = zlib_alloc;
    d->zs.zfree = zlib_free;
    /*
     * Level 6 (zlib's default): each message is compressed once and the
     * result shared by every subscriber, so the better ratio is paid for
     * once and saved on every connection. Window 15 and memLevel 8 are
     * zlib's defaults (about 256 KiB, once per server).
     */
    int rc = deflateInit2(&d->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WINDOW_BITS, 8,
                          Z_DEFAULT_STRATEGY);
    if (rc != Z_OK)
        zlib_init_failed("deflateInit2", rc);
    hd_strbuf_init(&d->scratch);
    return d;
}

void hd_ws_deflater_free(hd_ws_deflater *deflater)
{
    if (deflater == NULL)
        return;
    deflateEnd(&deflater->zs);
    hd_strbuf_free(&deflater->scratch);
    free(deflater);
}

/* Compresses data into d->scratch as one sync-flushed deflate stream. */
static void deflate_message(hd_ws_deflater *d, const uint8_t *data, size_t len)
{
    z_stream *zs = &d->zs;
    hd_strbuf *out = &d->scratch;
    out->len = 0;
    /* deflateBound assumes Z_FINISH; the sync flush adds at most a few bytes. */
    hd_strbuf_reserve(out, deflateBound(zs, len) + 16);
    for (;;) {
        size_t chunk = len < UINT_MAX ? len : UINT_MAX;
        zs->next_in = data;
        zs->avail_in = (uInt)chunk;
        int flush = chunk == len ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        do {
            if (out->cap == out->len)
                hd_strbuf_reserve(out, out->cap);
            size_t given = out->cap - out->len;
            given = given < UINT_MAX ? given : UINT_MAX;
            zs->next_out = (Bytef *)out->data + out->len;
            zs->avail_out = (uInt)given;
            deflate(zs, flush); /* cannot fail: the stream and its parameters are valid */
            out->len += given - zs->avail_out;
        } while (zs->avail_out == 0);
        if (flush == Z_SYNC_FLUSH)
            return;
        data += chunk;
        len -= chunk;
    }
}

hd_buf *hd_ws_deflate_frame(hd_ws_deflater *d, int opcode, const void *data, size_t len)
{
    /* No context takeover: each message starts from an empty window. */
    deflateReset(&d->zs);
    deflate_message(d, data, len);

    /*
     * A sync flush always ends with the empty stored block 00 00 ff ff,
     * which RFC 7692 §7.2.1 removes. An empty message thus becomes the
     * single byte 0x00 that §7.2.3.6 describes.
     */
    size_t payload_len = d->scratch.len - sizeof(flush_tail);
    size_t header_len = hd_ws_frame_header_size(payload_len);
    hd_buf *buf = hd_buf_new(header_len + payload_len);
    hd_ws_frame_write_header(buf->data, (hd_ws_opcode)opcode, true, payload_len);
    memcpy(buf->data + header_len, d->scratch.data, payload_len);

    if (d->scratch.cap > KEEP_SCRATCH_BYTES)
        hd_strbuf_free(&d->scratch);
    return buf;
}
