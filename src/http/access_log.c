#include "http/access_log.h"

#include <llhttp.h>
#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "herald/log.h"
#include "http/request.h"

/* The longest target logged; longer ones are cut (the limit on targets is max_header_bytes / 2). */
#define TARGET_LOG_MAX 2048

bool hd_access_log_on(const hd_conn *conn)
{
    return hd_conn_config(conn)->access_log && hd_log_enabled(HD_LOG_INFO);
}

static int hex_value(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Whether a query key, percent-decoded as auth reads it, is access_token. */
static bool is_token_key(const char *key, size_t len)
{
    static const char name[] = "access_token";
    size_t n = 0;
    for (size_t i = 0; i < len; i++, n++) {
        char c = key[i];
        if (c == '%' && i + 2 < len && hex_value(key[i + 1]) >= 0 && hex_value(key[i + 2]) >= 0) {
            c = (char)(hex_value(key[i + 1]) * 16 + hex_value(key[i + 2]));
            i += 2;
        }
        if (n >= sizeof(name) - 1 || c != name[n])
            return false;
    }
    return n == sizeof(name) - 1;
}

/* The target into out (cap bytes) without its access_token parameters; its length. */
static size_t redacted_target(const hd_request *req, char *out, size_t cap)
{
    const char *t = req->target.data;
    size_t len = req->target.len, n = 0;
    const char *query = t != NULL ? memchr(t, '?', len) : NULL;
    size_t path_len = query != NULL ? (size_t)(query - t) : len;
#define PUT(p, l)                                                                                  \
    do {                                                                                           \
        size_t take_ = (l) < cap - n ? (l) : cap - n;                                              \
        if (take_ > 0) /* a request that never had a target: p is NULL */                          \
            memcpy(out + n, (p), take_);                                                           \
        n += take_;                                                                                \
    } while (0)
    PUT(t, path_len);
    bool first = true;
    for (size_t at = path_len + 1; at < len;) {
        const char *end = memchr(t + at, '&', len - at);
        size_t param_len = end != NULL ? (size_t)(end - (t + at)) : len - at;
        const char *eq = memchr(t + at, '=', param_len);
        size_t key_len = eq != NULL ? (size_t)(eq - (t + at)) : param_len;
        if (!is_token_key(t + at, key_len)) {
            PUT(first ? "?" : "&", 1);
            PUT(t + at, param_len);
            first = false;
        }
        at += param_len + 1;
    }
#undef PUT
    return n;
}

/* "-" until the head is complete (a request refused before its method counted). */
static const char *method_name(const hd_request *req)
{
    return req->path != NULL ? llhttp_method_name((llhttp_method_t)req->method) : "-";
}

void hd_access_log_response(const hd_conn *conn, int status, size_t bytes)
{
    if (!hd_access_log_on(conn) || conn->request == NULL)
        return;
    char path[TARGET_LOG_MAX];
    size_t path_len = redacted_target(conn->request, path, sizeof(path));
    uint64_t since = conn->reader != NULL ? conn->reader->request_since_ms : 0;
    uint64_t now = hd_conn_now_ms(conn);
    const char *method = method_name(conn->request);
    hd_log_field fields[] = {
        HD_LOG_TEXT("method", method, strlen(method)),
        HD_LOG_TEXT("path", path, path_len),
        HD_LOG_NUMBER("status", status),
        HD_LOG_NUMBER("bytes", bytes),
        HD_LOG_NUMBER("duration_ms", since != 0 && now > since ? now - since : 0),
        HD_LOG_TEXT("peer", conn->peer, strlen(conn->peer)),
    };
    hd_log_event(HD_LOG_INFO, "request", fields, sizeof(fields) / sizeof(fields[0]));
}

void hd_access_stream_start(hd_access_stream *stream, const hd_conn *conn, int status)
{
    memset(stream, 0, sizeof(*stream));
    if (!hd_access_log_on(conn))
        return;
    char path[TARGET_LOG_MAX];
    size_t path_len = redacted_target(conn->request, path, sizeof(path));
    stream->path = hd_strndup(path, path_len);
    stream->method = method_name(conn->request);
    stream->status = status;
    stream->started_ms = hd_conn_now_ms(conn);
}

void hd_access_stream_end(hd_access_stream *stream, const hd_conn *conn, const char *transport)
{
    if (stream->path == NULL)
        return;
    const char *reason = conn->end_reason != NULL ? conn->end_reason : "closed";
    hd_log_field fields[] = {
        HD_LOG_TEXT("transport", transport, strlen(transport)),
        HD_LOG_TEXT("method", stream->method, strlen(stream->method)),
        HD_LOG_TEXT("path", stream->path, strlen(stream->path)),
        HD_LOG_NUMBER("status", stream->status),
        HD_LOG_NUMBER("duration_ms", hd_conn_now_ms(conn) - stream->started_ms),
        HD_LOG_TEXT("peer", conn->peer, strlen(conn->peer)),
        HD_LOG_TEXT("reason", reason, strlen(reason)),
    };
    /* Every line of the access log, streams included, is at info: access_log turns them off. */
    hd_log_event(HD_LOG_INFO, "stream ended", fields, sizeof(fields) / sizeof(fields[0]));
    free(stream->path);
    stream->path = NULL;
}
