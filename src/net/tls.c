/*
 * TLS sessions over memory BIOs (see tls.h). The connection (conn.c) owns
 * the socket and the write queue; this file only turns ciphertext into
 * plaintext and back, so it knows nothing of libuv or HTTP.
 */
#include "net/tls.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A memory BIO keeps the capacity of the largest burst it ever held. Past
 * this, an emptied BIO is replaced by a fresh one, so an idle connection
 * that once took a large message does not keep its buffer.
 */
#define BIO_KEEP_BYTES 16384

/* The context is an SSL_CTX and a session an SSL: the names only keep OpenSSL out of headers. */
struct hd_tls_ctx {
    SSL_CTX *ssl_ctx;
};

/* Its address marks a session whose peer tried to renegotiate (SSL app data). */
static const char renegotiation_refused[] = "the client asked to renegotiate";

static SSL *session(hd_tls *tls)
{
    return (SSL *)tls;
}

/* The most specific reason OpenSSL queued, for a one-line message. */
static const char *openssl_reason(void)
{
    unsigned long code = ERR_peek_last_error();
    const char *reason = code != 0 ? ERR_reason_error_string(code) : NULL;
    return reason != NULL ? reason : "unknown OpenSSL error";
}

/* An encrypted key would make OpenSSL prompt on the terminal: refuse it instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf, (void)size, (void)rwflag, (void)userdata;
    return 0;
}

/* A missing or unreadable file is named by the errno text, which says more than OpenSSL's. */
static int check_readable(const char *key, const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_len, "%s: cannot read '%s': %s", key, path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

/*
 * A TLS 1.2 client may ask for a new handshake at any time; OpenSSL answers
 * each request with a no_renegotiation warning and carries on, so a client
 * that never reads could make the server write without end. The warning
 * marks the session, and the read that produced it fails it.
 */
static void on_tls_info(const SSL *ssl, int where, int ret)
{
    if ((where & SSL_CB_WRITE_ALERT) && (ret & 0xff) == SSL_AD_NO_RENEGOTIATION)
        SSL_set_app_data((SSL *)ssl, (void *)renegotiation_refused);
}

hd_tls_ctx *hd_tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t err_len)
{
    if (check_readable("tls.cert", cert_file, err, err_len) != 0 ||
        check_readable("tls.key", key_file, err, err_len) != 0)
        return NULL;
    SSL_CTX *ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (ssl_ctx == NULL) {
        snprintf(err, err_len, "tls.cert: cannot create a TLS context: %s", openssl_reason());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
    /*
     * No tickets and no session cache: resumption saves a handshake per
     * reconnect, which for long-lived streams is not worth the key
     * management. No renegotiation: a client could make the server work
     * at will. Released buffers keep an idle session at a few hundred bytes.
     */
    SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION |
                                     SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* TLS 1.2: forward-secret AEAD suites only (TLS 1.3's are all of that kind). */
    SSL_CTX_set_cipher_list(ssl_ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
    SSL_CTX_set_info_callback(ssl_ctx, on_tls_info);
    SSL_CTX_set_num_tickets(ssl_ctx, 0);
    SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_default_passwd_cb(ssl_ctx, no_passphrase);
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx, cert_file) != 1) {
        snprintf(err, err_len, "tls.cert: cannot load a PEM certificate chain from '%s': %s",
                 cert_file, openssl_reason());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ssl_ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, err_len,
                 "tls.key: cannot use '%s' as the private key of tls.cert: %s (an unencrypted "
                 "PEM key matching the certificate is needed)",
                 key_file, openssl_reason());
        goto fail;
    }
    if (SSL_CTX_check_private_key(ssl_ctx) != 1) {
        snprintf(err, err_len, "tls.key: '%s' does not match the certificate in tls.cert: %s",
                 key_file, openssl_reason());
        goto fail;
    }
    ERR_clear_error();
    hd_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        abort();
    ctx->ssl_ctx = ssl_ctx;
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ssl_ctx);
    return NULL;
}

void hd_tls_ctx_free(hd_tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

/* An empty read BIO must mean "wait for more", not end of file. */
static BIO *new_read_bio(void)
{
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        abort();
    BIO_set_mem_eof_return(bio, -1);
    return bio;
}

static BIO *new_write_bio(void)
{
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        abort();
    return bio;
}

hd_tls *hd_tls_new(const hd_tls_ctx *ctx)
{
    SSL *ssl = SSL_new(ctx->ssl_ctx);
    if (ssl == NULL)
        abort(); /* out of memory, like hd_alloc */
    SSL_set_bio(ssl, new_read_bio(), new_write_bio());
    SSL_set_accept_state(ssl);
    return (hd_tls *)ssl;
}

void hd_tls_free(hd_tls *tls)
{
    if (tls != NULL)
        SSL_free(session(tls)); /* and both BIOs */
}

/* Whether an emptied BIO grew past BIO_KEEP_BYTES (and should be replaced). */
static bool oversized(BIO *bio)
{
    BUF_MEM *mem = NULL;
    if (BIO_ctrl_pending(bio) != 0 || BIO_get_mem_ptr(bio, &mem) != 1 || mem == NULL)
        return false;
    return mem->max > BIO_KEEP_BYTES;
}

void hd_tls_feed(hd_tls *tls, const char *cipher, size_t len)
{
    BIO *rbio = SSL_get_rbio(session(tls));
    while (len > 0) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        int written = BIO_write(rbio, cipher, chunk);
        if (written <= 0)
            abort(); /* a memory BIO fails only when memory does */
        cipher += written;
        len -= (size_t)written;
    }
}

ssize_t hd_tls_read(hd_tls *tls, char *out, size_t cap, const char **reason)
{
    SSL *ssl = session(tls);
    /* The error queue is per thread and shared by every connection of this loop: start clean. */
    ERR_clear_error();
    int n = SSL_read(ssl, out, cap > INT_MAX ? INT_MAX : (int)cap);
    if (SSL_get_app_data(ssl) == renegotiation_refused) {
        if (reason != NULL)
            *reason = renegotiation_refused;
        ERR_clear_error();
        return HD_TLS_ERROR;
    }
    if (n > 0)
        return n;
    switch (SSL_get_error(ssl, n)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        /* Everything fed was consumed (SSL keeps partial records itself). */
        if (oversized(SSL_get_rbio(ssl)))
            SSL_set0_rbio(ssl, new_read_bio());
        return HD_TLS_WANT;
    case SSL_ERROR_ZERO_RETURN:
        return HD_TLS_CLOSED;
    default:
        if (reason != NULL)
            *reason = openssl_reason();
        ERR_clear_error();
        return HD_TLS_ERROR;
    }
}

int hd_tls_write(hd_tls *tls, const char *plain, size_t len)
{
    SSL *ssl = session(tls);
    ERR_clear_error();
    /* Without SSL_MODE_ENABLE_PARTIAL_WRITE and with a memory BIO, a write takes everything. */
    while (len > 0) {
        int n = SSL_write(ssl, plain, len > INT_MAX ? INT_MAX : (int)len);
        if (n <= 0) {
            ERR_clear_error();
            return HD_TLS_ERROR;
        }
        plain += n;
        len -= (size_t)n;
    }
    return 0;
}

size_t hd_tls_pending(const hd_tls *tls)
{
    return BIO_ctrl_pending(SSL_get_wbio((const SSL *)tls));
}

hd_buf *hd_tls_take(hd_tls *tls)
{
    SSL *ssl = session(tls);
    BIO *wbio = SSL_get_wbio(ssl);
    size_t pending = BIO_ctrl_pending(wbio);
    if (pending == 0)
        return NULL;
    hd_buf *buf = hd_buf_new(pending);
    size_t got = 0;
    while (got < pending) {
        int n = BIO_read(wbio, buf->data + got,
                         pending - got > INT_MAX ? INT_MAX : (int)(pending - got));
        if (n <= 0)
            abort(); /* a memory BIO holding pending bytes always gives them */
        got += (size_t)n;
    }
    if (oversized(wbio))
        SSL_set0_wbio(ssl, new_write_bio());
    return buf;
}

void hd_tls_shutdown(hd_tls *tls)
{
    SSL *ssl = session(tls);
    if (!SSL_is_init_finished(ssl))
        return;
    ERR_clear_error();
    SSL_shutdown(ssl);
    ERR_clear_error();
}
