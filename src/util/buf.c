#include "herald/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"

hd_buf *hd_buf_new(size_t len)
{
    hd_buf *buf = hd_alloc(sizeof(*buf) + len);
    buf->refs = 1;
    buf->len = len;
    return buf;
}

hd_buf *hd_buf_copy(const void *bytes, size_t len)
{
    hd_buf *buf = hd_buf_new(len);
    if (len)
        memcpy(buf->data, bytes, len);
    return buf;
}

hd_buf *hd_buf_retain(hd_buf *buf)
{
    __atomic_fetch_add(&buf->refs, 1, __ATOMIC_RELAXED);
    return buf;
}

void hd_buf_release(hd_buf *buf)
{
    if (buf != NULL && __atomic_sub_fetch(&buf->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(buf);
}

/*
 * The string builder keeps room for an hd_buf header in front of its bytes,
 * so hd_strbuf_finish hands the same allocation over without a copy.
 */
#define HEADER offsetof(hd_buf, data)

void hd_strbuf_init(hd_strbuf *sb)
{
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
}

void hd_strbuf_reserve(hd_strbuf *sb, size_t extra)
{
    if (sb->data != NULL && sb->len + extra <= sb->cap)
        return;
    size_t cap = sb->cap ? sb->cap : 64;
    while (cap < sb->len + extra)
        cap *= 2;
    char *block = hd_realloc(sb->data ? sb->data - HEADER : NULL, HEADER + cap);
    sb->data = block + HEADER;
    sb->cap = cap;
}

void hd_strbuf_append(hd_strbuf *sb, const void *bytes, size_t len)
{
    if (len == 0)
        return;
    hd_strbuf_reserve(sb, len);
    memcpy(sb->data + sb->len, bytes, len);
    sb->len += len;
}

void hd_strbuf_append_str(hd_strbuf *sb, const char *str)
{
    hd_strbuf_append(sb, str, strlen(str));
}

void hd_strbuf_printf(hd_strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    hd_strbuf_reserve(sb, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

void hd_strbuf_append_json_string(hd_strbuf *sb, const char *str, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    hd_strbuf_reserve(sb, len + 2);
    sb->data[sb->len++] = '"';
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)str[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        hd_strbuf_append(sb, str + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t esc_len = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            esc_len = 6;
        }
        hd_strbuf_append(sb, esc, esc_len);
    }
    hd_strbuf_append(sb, str + run, len - run);
    hd_strbuf_append(sb, "\"", 1);
}

hd_buf *hd_strbuf_finish(hd_strbuf *sb)
{
    hd_buf *buf;
    if (sb->data == NULL) {
        buf = hd_buf_new(0);
    } else {
        buf = (hd_buf *)(sb->data - HEADER);
        buf->refs = 1;
        buf->len = sb->len;
    }
    hd_strbuf_init(sb);
    return buf;
}

void hd_strbuf_free(hd_strbuf *sb)
{
    if (sb->data != NULL)
        free(sb->data - HEADER);
    hd_strbuf_init(sb);
}
