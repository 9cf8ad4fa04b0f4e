/*
 * TLS for the listeners (docs/api.md, TLS): one OpenSSL context per process, and per
 * connection a TLS session that is pure bytes in, bytes out. herald's loop
 * owns the sockets, so a session never touches one: the connection hands it
 * the ciphertext it read and takes from it the ciphertext to write (memory
 * BIOs), and in between reads and writes plaintext.
 *
 * Error convention: functions that can fail return 0 or HD_TLS_ERROR; the
 * reason is written with the caller's buffer or logged at debug by the
 * caller (a handshake failure is the peer's problem, not the server's).
 *
 * Threading: a context is created on the main thread (at start, and by each
 * reload) and then only read, which OpenSSL allows from any thread; it may
 * be freed on any thread, while sessions made from it live on (each holds
 * its own reference to the SSL_CTX). A session belongs to the thread of its
 * connection's loop.
 */
#ifndef HERALD_NET_TLS_H
#define HERALD_NET_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include "herald/buf.h"

typedef struct hd_tls_ctx hd_tls_ctx;
typedef struct hd_tls hd_tls;

enum {
    HD_TLS_WANT = -1,   /* hd_tls_read: no complete record yet; feed more ciphertext */
    HD_TLS_CLOSED = -2, /* hd_tls_read: the peer sent close_notify */
    HD_TLS_ERROR = -3,  /* a handshake failure, a bad record, or not TLS at all */
};

/*
 * Loads the PEM certificate chain and private key and checks that they
 * match; TLS 1.2 is the minimum, no session tickets or renegotiation. NULL
 * with a one-line reason naming the config key (tls.cert or tls.key) in err.
 */
hd_tls_ctx *hd_tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t err_len);
void hd_tls_ctx_free(hd_tls_ctx *ctx);

/* A server-side session of ctx, waiting for the client's hello. Never NULL (aborts on OOM). */
hd_tls *hd_tls_new(const hd_tls_ctx *ctx);
void hd_tls_free(hd_tls *tls);

/* Ciphertext that arrived from the peer, copied into the session. */
void hd_tls_feed(hd_tls *tls, const char *cipher, size_t len);
/*
 * Decrypts into out, up to cap bytes (the handshake goes on here too):
 * returns the plaintext length (> 0), HD_TLS_WANT, HD_TLS_CLOSED or
 * HD_TLS_ERROR; reason, when not NULL, is then set to a static description.
 * Call it until it returns <= 0: ciphertext fed may hold several records.
 */
ssize_t hd_tls_read(hd_tls *tls, char *out, size_t cap, const char **reason);
/* Encrypts len bytes of plaintext (all of them, or HD_TLS_ERROR when the session is broken). */
int hd_tls_write(hd_tls *tls, const char *plain, size_t len);
/* Bytes of ciphertext (handshake records, alerts, data) waiting to go to the socket. */
size_t hd_tls_pending(const hd_tls *tls);
/*
 * Takes every pending byte of ciphertext as a new buffer (one reference, the
 * caller's), or NULL when there is none. It lives on its own until written,
 * whatever happens to the session meanwhile.
 */
hd_buf *hd_tls_take(hd_tls *tls);
/* Queues close_notify (taken with hd_tls_take), if the handshake completed. */
void hd_tls_shutdown(hd_tls *tls);

#endif
