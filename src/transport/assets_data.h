/*
 * The bytes of the web assets compiled into the binary, generated from the
 * repository's files by deps/embed.cmake (see CMakeLists.txt): each is
 * NUL-terminated, with its length (without the NUL) and its strong ETag
 * (quoted). Read-only, shared by every worker.
 */
#ifndef HERALD_TRANSPORT_ASSETS_DATA_H
#define HERALD_TRANSPORT_ASSETS_DATA_H

#include <stddef.h>

extern const char hd_asset_herald_js[];
extern const size_t hd_asset_herald_js_len;
extern const char hd_asset_herald_js_etag[];

extern const char hd_asset_herald_d_ts[];
extern const size_t hd_asset_herald_d_ts_len;
extern const char hd_asset_herald_d_ts_etag[];

/* The console (clients/console/). */
extern const char hd_asset_index_html[];
extern const size_t hd_asset_index_html_len;
extern const char hd_asset_index_html_etag[];

extern const char hd_asset_console_js[];
extern const size_t hd_asset_console_js_len;
extern const char hd_asset_console_js_etag[];

extern const char hd_asset_console_css[];
extern const size_t hd_asset_console_css_len;
extern const char hd_asset_console_css_etag[];

extern const char hd_asset_console_svg[];
extern const size_t hd_asset_console_svg_len;
extern const char hd_asset_console_svg_etag[];

#endif
