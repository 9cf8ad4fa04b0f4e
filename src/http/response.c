#include "http/response.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "herald/config.h"
#include "http/access_log.h"

const char *hd_status_reason(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

void hd_response_append_cors(hd_strbuf *head, const hd_conn *conn)
{
    size_t origin_len;
    const char *origin = hd_request_header(conn->request, "origin", &origin_len);
    if (origin == NULL)
        return;
    const hd_strings *allowed = &hd_conn_config(conn)->cors.allow_origins;
    if (hd_strings_contains(allowed, "*", 1)) {
        hd_strbuf_append_str(head, "Access-Control-Allow-Origin: *\r\n");
    } else if (hd_strings_contains(allowed, origin, origin_len)) {
        hd_strbuf_append_str(head, "Access-Control-Allow-Origin: ");
        hd_strbuf_append(head, origin, origin_len);
        hd_strbuf_append_str(head, "\r\nVary: Origin\r\n");
        /*
         * An origin listed by name may send cookies (fetch with credentials:
         * "include"): the access_token cookie counts for it (auth.c). Never
         * with "*", which browsers refuse together with credentials anyway.
         */
        hd_strbuf_append_str(head, "Access-Control-Allow-Credentials: true\r\n");
    } else {
        return;
    }
    /*
     * A page must be able to tell a refused token (401) from a missing one,
     * and herald.js honours Retry-After on a 503.
     */
    hd_strbuf_append_str(
        head, "Access-Control-Expose-Headers: Content-Type, WWW-Authenticate, Retry-After\r\n");
}

bool hd_response_append_head(hd_strbuf *out, hd_conn *conn, int status, const char *content_type,
                             const char *extra_headers, size_t body_len, int flags)
{
    /* Draining, the last of the deferred answers owed closes (hd_conn_defer). */
    bool close = (flags & HD_RESPONSE_CLOSE) || !conn->request->keep_alive ||
                 (hd_conn_server_draining(conn) && !hd_conn_answers_follow(conn));
    hd_strbuf_printf(out, "HTTP/1.1 %d %s\r\n", status, hd_status_reason(status));
    if (content_type != NULL)
        hd_strbuf_printf(out, "Content-Type: %s\r\n", content_type);
    hd_strbuf_printf(out, "Content-Length: %zu\r\n", body_len);
    /*
     * An idle keep-alive connection is closed after header_timeout_s; saying
     * so keeps clients (fetch/undici, browsers) from reusing one just as it
     * closes.
     */
    if (close)
        hd_strbuf_append_str(out, "Connection: close\r\n");
    else
        hd_strbuf_printf(out, "Keep-Alive: timeout=%u\r\n",
                         hd_conn_config(conn)->limits.header_timeout_s);
    hd_response_append_cors(out, conn);
    if (extra_headers != NULL)
        hd_strbuf_append_str(out, extra_headers);
    hd_strbuf_append(out, "\r\n", 2);
    return close;
}

hd_buf *hd_response_closing(const hd_buf *answer)
{
    static const char keep_alive[] = "\r\nKeep-Alive: ", close[] = "Connection: close\r\n";
    const char *data = answer->data;
    size_t len = answer->len;
    /* Within the head only: up to the blank line. */
    for (size_t at = 0; at + 4 <= len && memcmp(data + at, "\r\n\r\n", 4) != 0; at++) {
        if (at + sizeof(keep_alive) - 1 > len ||
            memcmp(data + at, keep_alive, sizeof(keep_alive) - 1) != 0)
            continue;
        size_t line = at + 2, end = line;
        while (end + 2 <= len && memcmp(data + end, "\r\n", 2) != 0)
            end++;
        size_t rest = end + 2 <= len ? end + 2 : len;
        hd_strbuf out;
        hd_strbuf_init(&out);
        hd_strbuf_reserve(&out, len + sizeof(close));
        hd_strbuf_append(&out, data, line);
        hd_strbuf_append(&out, close, sizeof(close) - 1);
        hd_strbuf_append(&out, data + rest, len - rest);
        return hd_strbuf_finish(&out);
    }
    return NULL;
}

void hd_response_sent(hd_conn *conn, int status, size_t bytes)
{
    hd_metrics_count_response(hd_conn_metrics(conn), status);
    hd_access_log_response(conn, status, bytes);
}

void hd_response_send(hd_conn *conn, int status, const char *content_type,
                      const char *extra_headers, const void *body, size_t body_len, int flags)
{
    hd_strbuf out;
    hd_strbuf_init(&out);
    hd_strbuf_reserve(&out, 256 + body_len);
    bool close =
        hd_response_append_head(&out, conn, status, content_type, extra_headers, body_len, flags);
    if (conn->request->method != HTTP_HEAD)
        hd_strbuf_append(&out, body, body_len);
    hd_response_sent(conn, status, out.len);
    hd_conn_send_owned(conn, hd_strbuf_finish(&out));
    if (close)
        hd_conn_close_after_flush(conn);
}

static void send_error(hd_conn *conn, int status, const char *extra_headers, const char *code,
                       int flags, const char *message)
{
    hd_strbuf body;
    hd_strbuf_init(&body);
    hd_strbuf_append_str(&body, "{\"error\":");
    hd_strbuf_append_json_string(&body, code, strlen(code));
    hd_strbuf_append_str(&body, ",\"message\":");
    hd_strbuf_append_json_string(&body, message, strlen(message));
    hd_strbuf_append_str(&body, "}\n");
    hd_response_send(conn, status, "application/json", extra_headers, body.data, body.len, flags);
    hd_strbuf_free(&body);
}

void hd_response_error(hd_conn *conn, int status, const char *code, int flags, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    send_error(conn, status, NULL, code, flags, message);
}

void hd_response_error_with(hd_conn *conn, int status, const char *extra_headers, const char *code,
                            const char *message)
{
    send_error(conn, status, extra_headers, code, 0, message);
}

void hd_response_method_not_allowed(hd_conn *conn, const char *allow)
{
    char header[128], message[128];
    snprintf(header, sizeof(header), "Allow: %s\r\n", allow);
    snprintf(message, sizeof(message), "Use %s.", allow);
    send_error(conn, 405, header, "method_not_allowed", 0, message);
}
