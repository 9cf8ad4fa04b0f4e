/*
 * Immutable, reference-counted byte buffers.
 *
 * A message is encoded once per wire format into an hd_buf, and every
 * subscriber's write shares those bytes by holding a reference: whoever
 * calls hd_buf_retain() owns one reference and must drop it with
 * hd_buf_release(); the last release frees the buffer.
 *
 * Threading: reference counts are atomic, because a message's cached
 * encoding may lose its last reference on another worker's thread (when the
 * message leaves history there). The bytes are immutable once shared.
 */
#ifndef HERALD_BUF_H
#define HERALD_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct hd_buf {
    uint32_t refs;
    size_t len;
    char data[];
} hd_buf;

/* A new buffer of len bytes (contents undefined) holding one reference. */
hd_buf *hd_buf_new(size_t len);
/* A new buffer holding a copy of bytes, with one reference. */
hd_buf *hd_buf_copy(const void *bytes, size_t len);
hd_buf *hd_buf_retain(hd_buf *buf);
void hd_buf_release(hd_buf *buf);

/*
 * A growable byte string used while building an encoding or a response;
 * hd_strbuf_finish() turns it into an hd_buf without copying more than once.
 * Allocation failures abort (see hd_alloc).
 */
typedef struct hd_strbuf {
    char *data;
    size_t len;
    size_t cap;
} hd_strbuf;

void hd_strbuf_init(hd_strbuf *sb);
/* Makes room for extra more bytes after len (data is then non-NULL). */
void hd_strbuf_reserve(hd_strbuf *sb, size_t extra);
void hd_strbuf_append(hd_strbuf *sb, const void *bytes, size_t len);
void hd_strbuf_append_str(hd_strbuf *sb, const char *str);
void hd_strbuf_printf(hd_strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends str as a JSON string literal, quotes included. */
void hd_strbuf_append_json_string(hd_strbuf *sb, const char *str, size_t len);
/* Returns the contents as a new hd_buf (one reference) and empties sb. */
hd_buf *hd_strbuf_finish(hd_strbuf *sb);
void hd_strbuf_free(hd_strbuf *sb);

#endif
