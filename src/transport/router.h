/*
 * Routes a complete request to its handler. Called by the connection's
 * state machine, once per request, in request order.
 */
#ifndef HERALD_TRANSPORT_ROUTER_H
#define HERALD_TRANSPORT_ROUTER_H

#include <stdint.h>

#include "net/conn.h"

/* The body size the request's route accepts, known once the head is parsed. */
uint64_t hd_router_body_limit(const hd_conn *conn);
/* Answers the request, or hands the connection to a streaming transport. */
void hd_router_dispatch(hd_conn *conn);

#endif
