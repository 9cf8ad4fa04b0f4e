#include "transport/assets.h"

#include <stdio.h>
#include <string.h>

#include "http/response.h"
#include "transport/assets_data.h"

typedef struct {
    const char *path;
    const char *content_type;
    const char *bytes;
    const size_t *len;
    const char *etag;
    bool console; /* part of the console: served only while ui.enabled */
} asset;

/*
 * The console's page runs nothing but its own files from herald's origin:
 * no inline script or style, no other host, not framed. connect-src 'self'
 * covers the WebSocket to the same host and port too (CSP Level 3).
 */
#define CONSOLE_POLICY                                                                             \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "                    \
    "frame-ancestors 'none'\r\nReferrer-Policy: no-referrer\r\n"

static const asset assets[] = {
    {"/herald.js", "text/javascript; charset=utf-8", hd_asset_herald_js, &hd_asset_herald_js_len,
     hd_asset_herald_js_etag, false},
    {"/herald.d.ts", "application/typescript; charset=utf-8", hd_asset_herald_d_ts,
     &hd_asset_herald_d_ts_len, hd_asset_herald_d_ts_etag, false},
    {"/", "text/html; charset=utf-8", hd_asset_index_html, &hd_asset_index_html_len,
     hd_asset_index_html_etag, true},
    {"/console.js", "text/javascript; charset=utf-8", hd_asset_console_js, &hd_asset_console_js_len,
     hd_asset_console_js_etag, true},
    {"/console.css", "text/css; charset=utf-8", hd_asset_console_css, &hd_asset_console_css_len,
     hd_asset_console_css_etag, true},
    {"/console.svg", "image/svg+xml", hd_asset_console_svg, &hd_asset_console_svg_len,
     hd_asset_console_svg_etag, true},
};

static const asset *find_asset(const hd_conn *conn)
{
    const hd_request *req = conn->request;
    for (size_t i = 0; i < sizeof(assets) / sizeof(assets[0]); i++) {
        size_t len = strlen(assets[i].path);
        if (req->path_len == len && memcmp(req->path, assets[i].path, len) == 0)
            return assets[i].console && !hd_conn_config(conn)->ui.enabled ? NULL : &assets[i];
    }
    return NULL;
}

bool hd_assets_has(const hd_conn *conn)
{
    return find_asset(conn) != NULL;
}

/*
 * Whether If-None-Match names the asset's tag: "*", or one of a list of
 * entity tags, compared weakly (a W/ prefix is ignored), as RFC 9110
 * §13.1.2 wants for this header.
 */
static bool none_match_hits(const char *value, size_t len, const char *etag)
{
    size_t etag_len = strlen(etag);
    size_t at = 0;
    while (at < len) {
        while (at < len && (value[at] == ' ' || value[at] == '\t' || value[at] == ','))
            at++;
        size_t start = at;
        while (at < len && value[at] != ',')
            at++;
        size_t end = at;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end - start == 1 && value[start] == '*')
            return true;
        if (end - start > 2 && memcmp(value + start, "W/", 2) == 0)
            start += 2;
        if (end - start == etag_len && memcmp(value + start, etag, etag_len) == 0)
            return true;
    }
    return false;
}

void hd_assets_handle(hd_conn *conn)
{
    const asset *a = find_asset(conn);
    /*
     * no-cache, not max-age: a page always revalidates (one 304 without a
     * body), so it runs the client of the herald it talks to, also just
     * after an upgrade.
     */
    char headers[512];
    int len =
        snprintf(headers, sizeof(headers),
                 "ETag: %s\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n%s",
                 a->etag, a->console ? CONSOLE_POLICY : "");
    if (len < 0 || (size_t)len >= sizeof(headers)) {
        /* A cut header line would end the head early: no answer beats a wrong one. */
        hd_response_error(conn, 500, "internal", 0, "The asset's headers do not fit.");
        return;
    }
    size_t match_len = 0;
    const char *match = hd_request_header(conn->request, "if-none-match", &match_len);
    if (match != NULL && none_match_hits(match, match_len, a->etag)) {
        hd_strbuf out;
        hd_strbuf_init(&out);
        /* A 304 has no body; its Content-Length is the one a 200 would have (RFC 9110 §8.6). */
        bool close = hd_response_append_head(&out, conn, 304, NULL, headers, *a->len, 0);
        hd_response_sent(conn, 304, out.len);
        hd_conn_send_owned(conn, hd_strbuf_finish(&out));
        if (close)
            hd_conn_close_after_flush(conn);
        return;
    }
    hd_response_send(conn, 200, a->content_type, headers, a->bytes, *a->len, 0);
}
