/*
 * Routes each request to its handler: the handlers HTTP/1 (http/http1.h)
 * hands every request to, once per request, in request order. The table
 * goes into each loop's context (transport/context.h).
 */
#ifndef HERALD_TRANSPORT_ROUTER_H
#define HERALD_TRANSPORT_ROUTER_H

#include "http/http1.h"

extern const hd_http_handlers hd_router_handlers;

#endif
