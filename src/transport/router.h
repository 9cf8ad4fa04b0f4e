/*
 * Routes a complete request to its handler. Called by the connection's
 * state machine, once per request, in request order.
 */
#ifndef HERALD_TRANSPORT_ROUTER_H
#define HERALD_TRANSPORT_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "net/conn.h"

/* The body size the request's route accepts, known once the head is parsed. */
uint64_t hd_router_body_limit(const hd_conn *conn);
/*
 * Whether the request may go on to send its body, judged from its head
 * (method, path, query, headers) before the body is read: false after
 * answering the refusal the head alone earns (404, 405, 401, 403, 415...).
 * For Expect: 100-continue; the request is dispatched as usual later.
 */
bool hd_router_head_acceptable(hd_conn *conn);
/* Answers the request, or hands the connection to a streaming transport. */
void hd_router_dispatch(hd_conn *conn);

#endif
