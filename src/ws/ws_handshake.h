/*
 * The pure parts of the RFC 6455 opening handshake (§4.2): key validation
 * and the Sec-WebSocket-Accept value (SHA-1 and base64 from OpenSSL).
 */
#ifndef HERALD_WS_HANDSHAKE_H
#define HERALD_WS_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>

#define HD_WS_ACCEPT_SIZE 29 /* 28 base64 characters and NUL */

/* A Sec-WebSocket-Key must be the base64 encoding of 16 bytes. */
bool hd_ws_key_valid(const char *key, size_t len);
/* base64(SHA-1(key + the RFC's GUID)), NUL-terminated. */
void hd_ws_accept_key(const char *key, size_t len, char out[HD_WS_ACCEPT_SIZE]);

#endif
