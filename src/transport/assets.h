/*
 * Static files served from bytes compiled into the binary: GET and HEAD of
 * /herald.js (the browser client) and /herald.d.ts, and of the console
 * (/, /console.js, /console.css, /console.svg, while ui.enabled; with a
 * Content-Security-Policy), with a strong ETag, If-None-Match (304),
 * Cache-Control: no-cache and the usual CORS headers. The files are rows
 * of the table in assets.c.
 */
#ifndef HERALD_TRANSPORT_ASSETS_H
#define HERALD_TRANSPORT_ASSETS_H

#include <stdbool.h>

#include "http/request.h"
#include "net/conn.h"

/* Whether the request's path names an embedded file served under the connection's config. */
bool hd_assets_has(const hd_conn *conn);
/* Answers GET or HEAD of an embedded file (the path must be one: hd_assets_has). */
void hd_assets_handle(hd_conn *conn);

#endif
