/*
 * Tests for src/net/tls.c, bytes in and bytes out with no socket: a
 * self-signed P-256 certificate made here with OpenSSL, an OpenSSL client
 * over memory BIOs talking to an hd_tls session (handshake, both
 * directions, a 1 MiB burst, close_notify both ways), the outbound queue's
 * seal (net/outq.h) read back by the client, bytes that are not TLS, and the
 * context's refusals, each naming its config key.
 */
#include "net/tls.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "net/outq.h"
#include "test.h"

static char dir[] = "/tmp/herald-test-tls-XXXXXX";
static char cert_path[128], key_path[128], other_key_path[128];

/* ------------------------------------------------------------ helpers */

static EVP_PKEY *write_key(const char *path)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    FILE *f = fopen(path, "w");
    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    return key;
}

static void make_files(void)
{
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
    snprintf(other_key_path, sizeof(other_key_path), "%s/other.pem", dir);
    EVP_PKEY *key = write_key(key_path);
    EVP_PKEY_free(write_key(other_key_path));
    X509 *cert = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(cert, name);
    X509_sign(cert, key, EVP_sha256());
    FILE *f = fopen(cert_path, "w");
    PEM_write_X509(f, cert);
    fclose(f);
    X509_free(cert);
    EVP_PKEY_free(key);
}

static void remove_files(void)
{
    unlink(cert_path);
    unlink(key_path);
    unlink(other_key_path);
    rmdir(dir);
}

/* A client (plain OpenSSL over memory BIOs) and the server session under test. */
typedef struct pair {
    SSL_CTX *client_ctx;
    SSL *client;
    hd_tls *server;
} pair;

static void pair_open(pair *p, const hd_tls_ctx *ctx)
{
    p->client_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(p->client_ctx, cert_path, NULL);
    SSL_CTX_set_verify(p->client_ctx, SSL_VERIFY_PEER, NULL);
    p->client = SSL_new(p->client_ctx);
    SSL_set_bio(p->client, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    BIO_set_mem_eof_return(SSL_get_rbio(p->client), -1);
    SSL_set_connect_state(p->client);
    p->server = hd_tls_new(ctx);
}

static void pair_close(pair *p)
{
    hd_tls_free(p->server);
    SSL_free(p->client);
    SSL_CTX_free(p->client_ctx);
}

/* Client output to the server. */
static void client_to_server(pair *p)
{
    char chunk[16384];
    int n;
    while ((n = BIO_read(SSL_get_wbio(p->client), chunk, sizeof(chunk))) > 0)
        hd_tls_feed(p->server, chunk, (size_t)n);
}

/* Server output to the client. */
static void server_to_client(pair *p)
{
    hd_buf *out = hd_tls_take(p->server);
    if (out == NULL)
        return;
    BIO_write(SSL_get_rbio(p->client), out->data, (int)out->len);
    hd_buf_release(out);
}

/* Decrypts everything pending on the server into out; returns the last hd_tls_read result. */
static ssize_t server_read_all(pair *p, char *out, size_t cap, size_t *got)
{
    *got = 0;
    for (;;) {
        ssize_t n = hd_tls_read(p->server, out + *got, cap - *got, NULL);
        if (n <= 0)
            return n;
        *got += (size_t)n;
    }
}

static bool handshake(pair *p)
{
    char scratch[64];
    size_t got;
    for (int round = 0; round < 10; round++) {
        int rc = SSL_do_handshake(p->client);
        client_to_server(p);
        server_read_all(p, scratch, sizeof(scratch), &got);
        server_to_client(p);
        if (rc == 1 && hd_tls_pending(p->server) == 0)
            return true;
    }
    return false;
}

/* ------------------------------------------------------------ tests */

static hd_tls_ctx *ctx;

static void test_round_trip(void)
{
    pair p;
    pair_open(&p, ctx);
    CHECK(handshake(&p));
    CHECK(SSL_version(p.client) >= TLS1_2_VERSION);

    /* Client to server: a request, decrypted whole. */
    static const char request[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    CHECK_EQ_INT(SSL_write(p.client, request, sizeof(request) - 1), sizeof(request) - 1);
    client_to_server(&p);
    char plain[256];
    size_t got;
    CHECK_EQ_INT(server_read_all(&p, plain, sizeof(plain), &got), HD_TLS_WANT);
    CHECK_EQ_MEM(plain, got, request, sizeof(request) - 1);

    /* Server to client: a 1 MiB burst in pieces, taken as one buffer of ciphertext. */
    size_t total = 1 << 20;
    char *burst = malloc(total);
    for (size_t i = 0; i < total; i++)
        burst[i] = (char)('a' + i % 26);
    for (size_t off = 0; off < total; off += 100000)
        CHECK_EQ_INT(
            hd_tls_write(p.server, burst + off, total - off < 100000 ? total - off : 100000), 0);
    CHECK(hd_tls_pending(p.server) > total);
    server_to_client(&p);
    CHECK_EQ_INT(hd_tls_pending(p.server), 0);
    char *back = malloc(total);
    size_t back_len = 0;
    int n;
    while (back_len < total &&
           (n = SSL_read(p.client, back + back_len, (int)(total - back_len))) > 0)
        back_len += (size_t)n;
    CHECK(back_len == total && memcmp(back, burst, total) == 0);
    free(burst);
    free(back);

    /* The session still works after its BIO was replaced. */
    CHECK_EQ_INT(hd_tls_write(p.server, "more", 4), 0);
    server_to_client(&p);
    char small[8];
    CHECK_EQ_INT(SSL_read(p.client, small, sizeof(small)), 4);

    /* close_notify: the server's reaches the client; the client's is CLOSED. */
    hd_tls_shutdown(p.server);
    server_to_client(&p);
    CHECK_EQ_INT(SSL_read(p.client, small, sizeof(small)), 0);
    CHECK_EQ_INT(SSL_get_error(p.client, 0), SSL_ERROR_ZERO_RETURN);
    SSL_shutdown(p.client);
    client_to_server(&p);
    CHECK_EQ_INT(hd_tls_read(p.server, plain, sizeof(plain), NULL), HD_TLS_CLOSED);
    pair_close(&p);
}

static void test_records_split_anywhere(void)
{
    pair p;
    pair_open(&p, ctx);
    CHECK(handshake(&p));
    static const char msg[] = "split across many feeds";
    SSL_write(p.client, msg, sizeof(msg) - 1);
    char cipher[512];
    int len = BIO_read(SSL_get_wbio(p.client), cipher, sizeof(cipher));
    CHECK(len > 0);
    char plain[64];
    size_t got = 0;
    for (int i = 0; i < len; i++) {
        hd_tls_feed(p.server, cipher + i, 1);
        ssize_t n = hd_tls_read(p.server, plain + got, sizeof(plain) - got, NULL);
        if (n > 0)
            got += (size_t)n;
        else
            CHECK_EQ_INT(n, HD_TLS_WANT);
    }
    CHECK_EQ_MEM(plain, got, msg, sizeof(msg) - 1);
    pair_close(&p);
}

/* Hands the queue's front buffer (ciphertext after a seal) to the client, as a write would. */
static void outq_front_to_client(pair *p, hd_outq *q)
{
    uv_buf_t buf;
    CHECK_EQ_INT(hd_outq_start(q, &buf, 1), 1);
    BIO_write(SSL_get_rbio(p->client), buf.base, (int)buf.len);
    hd_outq_finish(q);
}

/* Reads exactly len bytes of plaintext on the client into out; whether they all came. */
static bool client_read(pair *p, char *out, size_t len)
{
    size_t got = 0;
    int n;
    while (got < len && (n = SSL_read(p->client, out + got, (int)(len - got))) > 0)
        got += (size_t)n;
    return got == len;
}

/*
 * hd_outq_seal: queued plaintext (an empty buffer among it) becomes one
 * front buffer of ciphertext; past HD_OUTQ_SEAL_MAX the rest waits behind
 * it, still plaintext, for the next seal.
 */
static void test_outq_seal(void)
{
    pair p;
    pair_open(&p, ctx);
    CHECK(handshake(&p));
    hd_outq q = {0};
    hd_outq_push(&q, hd_buf_copy("first ", 6));
    hd_outq_push(&q, hd_buf_copy("", 0));
    hd_outq_push(&q, hd_buf_copy("second", 6));
    CHECK_EQ_INT(hd_outq_seal(&q, p.server), 0);
    CHECK_EQ_INT(q.count, 1);
    CHECK(q.bytes > 12); /* record overhead */
    CHECK_EQ_INT(hd_tls_pending(p.server), 0);
    outq_front_to_client(&p, &q);
    char small[16];
    CHECK(client_read(&p, small, 12));
    CHECK_EQ_MEM(small, 12, "first second", 12);
    CHECK_EQ_INT(q.bytes, 0);

    size_t piece = HD_OUTQ_SEAL_MAX / 2 + 1, total = 3 * piece;
    char *burst = malloc(total);
    for (size_t i = 0; i < total; i++)
        burst[i] = (char)('a' + i % 26);
    for (int i = 0; i < 3; i++)
        hd_outq_push(&q, hd_buf_copy(burst + i * piece, piece));
    CHECK_EQ_INT(hd_outq_seal(&q, p.server), 0);
    CHECK_EQ_INT(q.count, 2);
    outq_front_to_client(&p, &q);
    CHECK_EQ_INT(q.bytes, piece);
    CHECK_EQ_INT(hd_outq_seal(&q, p.server), 0);
    CHECK_EQ_INT(q.count, 1);
    outq_front_to_client(&p, &q);
    char *back = malloc(total);
    CHECK(client_read(&p, back, total) && memcmp(back, burst, total) == 0);
    free(burst);
    free(back);
    hd_outq_free(&q);
    pair_close(&p);
}

static void test_not_tls(void)
{
    hd_tls *server = hd_tls_new(ctx);
    static const char http[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    hd_tls_feed(server, http, sizeof(http) - 1);
    char plain[64];
    const char *reason = NULL;
    CHECK_EQ_INT(hd_tls_read(server, plain, sizeof(plain), &reason), HD_TLS_ERROR);
    CHECK(reason != NULL && reason[0] != '\0');
    hd_tls_free(server);

    /* A handshake record announcing a ClientHello, then noise. */
    server = hd_tls_new(ctx);
    static const unsigned char garbage[] = {0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00,
                                            0x00, 0x04, 0xde, 0xad, 0xbe, 0xef};
    hd_tls_feed(server, (const char *)garbage, sizeof(garbage));
    CHECK_EQ_INT(hd_tls_read(server, plain, sizeof(plain), NULL), HD_TLS_ERROR);
    hd_buf *alert = hd_tls_take(server);
    CHECK(alert != NULL && alert->data[0] == 0x15); /* an alert record */
    if (alert != NULL)
        hd_buf_release(alert);
    /* Before the handshake, shutdown says nothing. */
    hd_tls_shutdown(server);
    hd_tls_free(server);
}

static void expect_refused(const char *cert, const char *key, const char *key_named)
{
    char err[512] = "";
    hd_tls_ctx *bad = hd_tls_ctx_new(cert, key, err, sizeof(err));
    CHECK(bad == NULL);
    CHECK(strncmp(err, key_named, strlen(key_named)) == 0);
    if (strncmp(err, key_named, strlen(key_named)) != 0)
        fprintf(stderr, "  error was: %s\n", err);
    hd_tls_ctx_free(bad);
}

static void test_context_refusals(void)
{
    expect_refused("/nonexistent/cert.pem", key_path, "tls.cert:");
    expect_refused(cert_path, "/nonexistent/key.pem", "tls.key:");
    expect_refused(key_path, key_path, "tls.cert:");  /* a key is not a certificate */
    expect_refused(cert_path, cert_path, "tls.key:"); /* a certificate is not a key */
    expect_refused(cert_path, other_key_path, "tls.key:");
}

int main(void)
{
    make_files();
    char err[512];
    ctx = hd_tls_ctx_new(cert_path, key_path, err, sizeof(err));
    CHECK(ctx != NULL);
    if (ctx == NULL) {
        fprintf(stderr, "%s\n", err);
        remove_files();
        return test_summary();
    }
    RUN_TEST(test_round_trip);
    RUN_TEST(test_records_split_anywhere);
    RUN_TEST(test_outq_seal);
    RUN_TEST(test_not_tls);
    RUN_TEST(test_context_refusals);
    hd_tls_ctx_free(ctx);
    remove_files();
    return test_summary();
}
