/*
 * One HTTP request as the parser glue collects it: method, target, headers
 * (names lower-cased) and body, copied out of the read buffer because the
 * read buffer is reused for the next read. Everything is bounded by the
 * limits checked in http1.c as bytes arrive.
 */
#ifndef HERALD_HTTP_REQUEST_H
#define HERALD_HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "herald/buf.h"

typedef struct hd_request {
    int method;        /* llhttp_method_t */
    hd_strbuf target;  /* request target as sent */
    hd_strbuf headers; /* "name\0value\0" pairs, names lower-cased */
    size_t header_count;
    size_t header_bytes; /* counted against limits.max_header_bytes */
    hd_strbuf body;
    bool keep_alive;
    /* Filled by hd_request_split_target once the head is complete. */
    const char *path;
    size_t path_len;
    const char *query;
    size_t query_len;
} hd_request;

void hd_request_init(hd_request *req);
/* Empties the request for the next one on the connection, keeping capacity. */
void hd_request_reset(hd_request *req);
void hd_request_free(hd_request *req);
/*
 * Sets path and query from the target. An absolute-form target
 * ("http://host/path?query", RFC 9112 §3.2.2) is routed by its path and
 * query; its authority is ignored, like the Host header.
 */
void hd_request_split_target(hd_request *req);

/* Whether a comma-separated header value lists token (case-insensitive). */
bool hd_header_has_token(const char *value, size_t len, const char *token);
/* Whether every member of a comma-separated header value is token (empty members aside). */
bool hd_header_only_token(const char *value, size_t len, const char *token);

/* The first header with this lower-case name, or NULL; *len (if not NULL) gets its length. */
const char *hd_request_header(const hd_request *req, const char *name, size_t *len);
/* The next header with this name after the value prev returned by either function, or NULL. */
const char *hd_request_header_next(const hd_request *req, const char *name, const char *prev,
                                   size_t *len);

/*
 * Iterates the query string, one percent-decoded ('+' as space) parameter
 * per call. Keys longer than the key buffer are cut short, which only makes
 * them match no known parameter. A malformed escape decodes as the raw text.
 * param->value stays valid until the next call.
 */
typedef struct hd_query_param {
    char key[64];
    size_t key_len;
    char *value; /* decoded into storage owned by the iterator */
    size_t value_len;
} hd_query_param;

typedef struct hd_query_iter {
    const char *query;
    size_t len;
    size_t pos;
    hd_strbuf value;
} hd_query_iter;

void hd_query_iter_init(hd_query_iter *it, const hd_request *req);
bool hd_query_next(hd_query_iter *it, hd_query_param *param);
void hd_query_iter_free(hd_query_iter *it);

/*
 * Percent-decodes len bytes of in into out (out must hold len bytes);
 * returns the decoded length, or -1 on a malformed escape. plus_is_space
 * applies to query strings only.
 */
long hd_percent_decode(const char *in, size_t len, char *out, bool plus_is_space);

#endif
