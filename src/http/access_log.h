/*
 * The access log (config access_log, at info): one line per HTTP response
 * and one per stream (SSE, WebSocket) when it ends. Fields: method, path
 * (the request target without its access_token query parameters; no
 * header is ever logged), status, bytes (of the response;
 * streams: none), duration_ms, peer, and for streams transport and reason.
 * Built in a stack buffer (herald/log.h): nothing is allocated per request,
 * and with access_log false or the level above info nothing is formatted.
 */
#ifndef HERALD_HTTP_ACCESS_LOG_H
#define HERALD_HTTP_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "net/conn.h"

/* Whether lines are written on conn's loop now (access_log and the level). */
bool hd_access_log_on(const hd_conn *conn);
/* A response of bytes bytes with this status was queued for conn's current request. */
void hd_access_log_response(const hd_conn *conn, int status, size_t bytes);

/* What a stream's end line needs from its request, read when the stream starts. */
typedef struct hd_access_stream {
    char *path;         /* redacted target (owned), NULL with the access log off */
    const char *method; /* static */
    int status;         /* 200 (SSE) or 101 (WebSocket) */
    uint64_t started_ms;
} hd_access_stream;

/* Reads conn's request into *stream (before hd_conn_start_stream frees it). */
void hd_access_stream_start(hd_access_stream *stream, const hd_conn *conn, int status);
/* Logs the stream's end (its reason: conn's end reason) and frees what it holds. */
void hd_access_stream_end(hd_access_stream *stream, const hd_conn *conn, const char *transport);

#endif
