/*
 * The settings herald serves with: a validated configuration and what is
 * built from it (the token keys, the TLS context). A reload (SIGHUP) never
 * edits them in place: it builds and checks a whole new set on the main
 * thread, then hands it to every worker, which switches to it on its own
 * thread between two callbacks (hd_workers_use_settings).
 *
 * Ownership: immutable once made and reference-counted. Each worker holds
 * one reference to the set it serves with, main another to the newest;
 * whoever lets go last frees it, on whichever thread that is. Connections
 * never hold one: what must outlive a reload holds its own (a TLS session
 * keeps its SSL_CTX through OpenSSL's count, a WebSocket copies its rights).
 */
#ifndef HERALD_SETTINGS_H
#define HERALD_SETTINGS_H

#include <stddef.h>

#include "herald/config.h"

typedef struct hd_auth hd_auth;
typedef struct hd_tls_ctx hd_tls_ctx;

typedef struct hd_settings {
    hd_config config;
    hd_auth *auth;   /* built from config.auth; its cookie rule reads config's origin lists */
    hd_tls_ctx *tls; /* from tls.cert and tls.key; NULL: plain TCP */
    unsigned refs;   /* atomic */
    unsigned taken;  /* atomic: workers that switched to it (hd_settings_take) */
} hd_settings;

/*
 * Builds the keys and the TLS context of config, logging a warning for a
 * weak or missing token key. On success the settings own what config held
 * (it is left zeroed) and have one reference, the caller's. NULL with one
 * line naming the key in err when a key or certificate cannot be used;
 * config is then untouched.
 */
hd_settings *hd_settings_new(hd_config *config, char *err, size_t err_len);
/* Thread-safe: one more reference; returns settings. */
hd_settings *hd_settings_ref(hd_settings *settings);
/* Thread-safe: drops a reference, freeing everything with the last. NULL is ignored. */
void hd_settings_release(hd_settings *settings);
/* Thread-safe: counts one more worker switched to settings; returns how many have. */
unsigned hd_settings_take(hd_settings *settings);

#endif
