/*
 * The subscription part of a request's query, shared by the transports that
 * subscribe over plain HTTP (SSE, long-poll): repeated topic=, and a cursor
 * from a header or one of several parameter names.
 */
#ifndef HERALD_TRANSPORT_SUBSCRIBE_PARAMS_H
#define HERALD_TRANSPORT_SUBSCRIBE_PARAMS_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/auth.h"
#include "herald/hub.h"
#include "net/conn.h"

typedef struct hd_subscribe_params {
    char **topics; /* owned, NUL-terminated */
    size_t *topic_lens;
    size_t topic_count;
    char *cursor_text;        /* owned; "" when none was given */
    hd_cursor cursor;         /* borrows cursor_text */
    int64_t token_expires_ms; /* when the request's token expires (Unix ms); 0: never */
} hd_subscribe_params;

/*
 * Reads topic= parameters and the cursor (header cursor_header when present,
 * else the first of cursor_params found in the query), validates them and
 * checks that the request's token (or anonymous access) may subscribe to
 * every topic. When something is wrong it answers the request with the
 * matching 400, 401 or 403 (returning -1, with params freed). Unknown
 * parameters are ignored, so transports read their own from the same query.
 * keep_access: NULL, or where the request's rights go for a session that
 * checks more later (the caller then frees them; left empty on -1).
 */
int hd_subscribe_params_parse(hd_conn *conn, const char *cursor_header,
                              const char *const *cursor_params, bool topics_required,
                              hd_subscribe_params *params, hd_access *keep_access);
void hd_subscribe_params_free(hd_subscribe_params *params);

#endif
