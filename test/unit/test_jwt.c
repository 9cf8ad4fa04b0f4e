/*
 * Tests for src/auth/jwt.c: RFC 7515's HS256 example, tokens built here
 * with OpenSSL (HS256, and ES256 whose DER signature is turned into JWS's
 * r || s), every refusal with its reason, the shape of herald's claim, and
 * the `*` patterns.
 */
#include "auth/jwt.h"

#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/base64url.h"
#include "test.h"

#define NOW_MS INT64_C(1764000000000)

/* ------------------------------------------------------------ helpers */

/* "<b64url(header)>.<b64url(payload)>" into out. */
static void signing_input(const char *header, const char *payload, char *out)
{
    test_base64url((const unsigned char *)header, strlen(header), out);
    size_t n = strlen(out);
    out[n++] = '.';
    test_base64url((const unsigned char *)payload, strlen(payload), out + n);
}

static void append_signature(char *token, const unsigned char *signature, size_t len)
{
    size_t n = strlen(token);
    token[n++] = '.';
    test_base64url(signature, len, token + n);
}

static void hs256_token(const char *header, const char *payload, const char *secret, char *out)
{
    signing_input(header, payload, out);
    unsigned char mac[32];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)out, strlen(out), mac,
         &mac_len);
    append_signature(out, mac, mac_len);
}

/* The key's public half as PEM text, the form auth.jwt_public_key also takes. */
static void public_pem(EVP_PKEY *key, char *out, size_t size)
{
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, key);
    int len = BIO_read(bio, out, (int)size - 1);
    out[len > 0 ? len : 0] = '\0';
    BIO_free(bio);
}

static hd_jwt_keys *keys_or_die(const char *secret, const char *public_key)
{
    char err[256] = "";
    hd_jwt_keys *keys = hd_jwt_keys_new(secret, public_key, err, sizeof(err));
    if (keys == NULL) {
        fprintf(stderr, "keys: %s\n", err);
        exit(1);
    }
    return keys;
}

static hd_jwt_result verify(const hd_jwt_keys *keys, const char *token, int64_t now_ms)
{
    hd_jwt_grant grant;
    hd_jwt_result result = hd_jwt_verify(keys, token, strlen(token), now_ms, &grant);
    hd_jwt_grant_free(&grant);
    return result;
}

static hd_jwt_result verify_hs(const char *header, const char *payload)
{
    hd_jwt_keys *keys = keys_or_die("s3cret", "");
    char token[4096];
    hs256_token(header, payload, "s3cret", token);
    hd_jwt_result result = verify(keys, token, NOW_MS);
    hd_jwt_keys_free(keys);
    return result;
}

#define HS_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* ------------------------------------------------------------ tests */

/* RFC 7515 Appendix A.1: the example token, its key, and its exp of 1300819380. */
static void test_rfc7515_example(void)
{
    static const unsigned char key[] = {
        0x03, 0x23, 0x35, 0x4b, 0x2b, 0x0f, 0xa5, 0xbc, 0x83, 0x7e, 0x06, 0x65, 0x77,
        0x7b, 0xa6, 0x8f, 0x5a, 0xb3, 0x28, 0xe6, 0xf0, 0x54, 0xc9, 0x28, 0xa9, 0x0f,
        0x84, 0xb2, 0xd2, 0x50, 0x2e, 0xbf, 0xd3, 0xfb, 0x5a, 0x92, 0xd2, 0x06, 0x47,
        0xef, 0x96, 0x8a, 0xb4, 0xc3, 0x77, 0x62, 0x3d, 0x22, 0x3d, 0x2e, 0x21, 0x72,
        0x05, 0x2e, 0x4f, 0x08, 0xc0, 0xcd, 0x9a, 0xf5, 0x67, 0xd0, 0x80, 0xa3, 0x00};
    static const char token[] =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0"
        "cnVlfQ"
        ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    hd_jwt_keys *keys = keys_or_die((const char *)key, "");
    hd_jwt_grant grant;
    CHECK_EQ_INT(hd_jwt_verify(keys, token, strlen(token), INT64_C(1300819379000), &grant),
                 HD_JWT_OK);
    CHECK(grant.expires_ms == INT64_C(1300819380000));
    CHECK_EQ_INT(grant.publish_count, 0);
    CHECK_EQ_INT(grant.subscribe_count, 0);
    hd_jwt_grant_free(&grant);
    /* exp is the first instant at which the token is no longer accepted. */
    CHECK_EQ_INT(verify(keys, token, INT64_C(1300819380000)), HD_JWT_EXPIRED);

    char tampered[sizeof(token)];
    memcpy(tampered, token, sizeof(token));
    /* Inside the signature, where every bit is data (the last character has spare bits). */
    tampered[sizeof(token) - 10] = tampered[sizeof(token) - 10] == 'k' ? 'j' : 'k';
    CHECK_EQ_INT(verify(keys, tampered, INT64_C(1300819379000)), HD_JWT_BAD_SIGNATURE);
    hd_jwt_keys_free(keys);

    hd_jwt_keys *other = keys_or_die("not the key", "");
    CHECK_EQ_INT(verify(other, token, INT64_C(1300819379000)), HD_JWT_BAD_SIGNATURE);
    hd_jwt_keys_free(other);
}

static void test_grant(void)
{
    hd_jwt_keys *keys = keys_or_die("s3cret", "");
    char token[4096];
    hs256_token(HS_HEADER,
                "{\"sub\":\"u1\",\"exp\":1764003600,\"nbf\":1763999999,"
                "\"herald\":{\"publish\":[\"chat.*\"],\"subscribe\":[\"chat.*\",\"news\"]}}",
                "s3cret", token);
    hd_jwt_grant grant;
    CHECK_EQ_INT(hd_jwt_verify(keys, token, strlen(token), NOW_MS, &grant), HD_JWT_OK);
    CHECK(grant.expires_ms == INT64_C(1764003600000));
    CHECK_EQ_INT(grant.publish_count, 1);
    CHECK_EQ_STR(grant.publish[0], "chat.*");
    CHECK_EQ_INT(grant.subscribe_count, 2);
    CHECK_EQ_STR(grant.subscribe[1], "news");
    CHECK(hd_jwt_patterns_match(grant.subscribe, grant.subscribe_count, "news", 4));
    CHECK(!hd_jwt_patterns_match(grant.publish, grant.publish_count, "news", 4));
    hd_jwt_grant_free(&grant);
    CHECK_EQ_INT(verify(keys, token, INT64_C(1763999998999)), HD_JWT_NOT_YET_VALID);
    CHECK_EQ_INT(verify(keys, token, INT64_C(1764003600000)), HD_JWT_EXPIRED);
    hd_jwt_keys_free(keys);
}

static void test_refusals(void)
{
    CHECK_EQ_INT(verify_hs("{\"alg\":\"none\"}", "{}"), HD_JWT_UNSUPPORTED_ALGORITHM);
    CHECK_EQ_INT(verify_hs("{\"alg\":\"HS512\"}", "{}"), HD_JWT_UNSUPPORTED_ALGORITHM);
    CHECK_EQ_INT(verify_hs("{\"alg\":\"hs256\"}", "{}"), HD_JWT_UNSUPPORTED_ALGORITHM);
    CHECK_EQ_INT(verify_hs("{\"typ\":\"JWT\"}", "{}"), HD_JWT_UNSUPPORTED_ALGORITHM);
    CHECK_EQ_INT(verify_hs("{\"alg\":\"HS256\",\"crit\":[\"b64\"]}", "{}"),
                 HD_JWT_CRITICAL_EXTENSION);
    /* An RS256/ES256 header is refused when no public key is configured. */
    CHECK_EQ_INT(verify_hs("{\"alg\":\"RS256\"}", "{}"), HD_JWT_UNSUPPORTED_ALGORITHM);
    CHECK_EQ_INT(verify_hs("{\"alg\":\"ES256\"}", "{}"), HD_JWT_UNSUPPORTED_ALGORITHM);
    CHECK_EQ_INT(verify_hs("[1]", "{}"), HD_JWT_MALFORMED);
    CHECK_EQ_INT(verify_hs("not json", "{}"), HD_JWT_MALFORMED);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "[]"), HD_JWT_MALFORMED);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "{"), HD_JWT_MALFORMED);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "{\"exp\":\"tomorrow\"}"), HD_JWT_BAD_CLAIMS);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "{\"nbf\":-1}"), HD_JWT_BAD_CLAIMS);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "{\"exp\":1}"), HD_JWT_EXPIRED);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "{\"herald\":[]}"), HD_JWT_BAD_CLAIMS);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "{\"herald\":{\"publish\":\"chat\"}}"), HD_JWT_BAD_CLAIMS);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "{\"herald\":{\"publish\":[1]}}"), HD_JWT_BAD_CLAIMS);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "{\"herald\":{\"publish\":[\"\"]}}"), HD_JWT_BAD_CLAIMS);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "{\"herald\":{\"subscribe\":[\"a b\"]}}"), HD_JWT_BAD_CLAIMS);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "{\"herald\":{\"subscribe\":[\"ok\",\"bad?\"]}}"),
                 HD_JWT_BAD_CLAIMS);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "{\"herald\":{}}"), HD_JWT_OK);
    CHECK_EQ_INT(verify_hs(HS_HEADER, "{\"herald\":{\"publish\":[\"*\"],\"other\":1}}"), HD_JWT_OK);

    char many[8192] = "{\"herald\":{\"subscribe\":[";
    for (int i = 0; i < 257; i++)
        strcat(many, i ? ",\"t\"" : "\"t\"");
    strcat(many, "]}}");
    CHECK_EQ_INT(verify_hs(HS_HEADER, many), HD_JWT_BAD_CLAIMS);

    /* No secret configured: HS256 is not verified at all, whatever the signature. */
    hd_jwt_keys *no_secret = keys_or_die("", "");
    char token[4096];
    hs256_token(HS_HEADER, "{}", "", token);
    CHECK_EQ_INT(verify(no_secret, token, NOW_MS), HD_JWT_UNSUPPORTED_ALGORITHM);
    hd_jwt_keys_free(no_secret);
}

static void test_malformed_shapes(void)
{
    hd_jwt_keys *keys = keys_or_die("s3cret", "");
    char good[4096];
    hs256_token(HS_HEADER, "{}", "s3cret", good);
    CHECK_EQ_INT(verify(keys, good, NOW_MS), HD_JWT_OK);

    CHECK_EQ_INT(verify(keys, "", NOW_MS), HD_JWT_MALFORMED);
    CHECK_EQ_INT(verify(keys, "abc", NOW_MS), HD_JWT_MALFORMED);
    CHECK_EQ_INT(verify(keys, "a.b", NOW_MS), HD_JWT_MALFORMED);
    CHECK_EQ_INT(verify(keys, "..", NOW_MS), HD_JWT_MALFORMED);

    char extra[4200];
    snprintf(extra, sizeof(extra), "%s.", good);
    CHECK_EQ_INT(verify(keys, extra, NOW_MS), HD_JWT_MALFORMED);
    /* Padding and the standard alphabet are not base64url. */
    snprintf(extra, sizeof(extra), "%s=", good);
    CHECK_EQ_INT(verify(keys, extra, NOW_MS), HD_JWT_MALFORMED);
    char *dot = strchr(good, '.');
    char plus[4200];
    snprintf(plus, sizeof(plus), "+%s", dot);
    CHECK_EQ_INT(verify(keys, plus, NOW_MS), HD_JWT_MALFORMED);

    /* The signature's last character carries 4 spare bits: only one spelling is accepted. */
    size_t n = strlen(good);
    char other_spelling[4096];
    memcpy(other_spelling, good, n + 1);
    other_spelling[n - 1] = other_spelling[n - 1] == 'A' ? 'B' : (char)(other_spelling[n - 1] ^ 1);
    CHECK(verify(keys, other_spelling, NOW_MS) != HD_JWT_OK);

    /* Too long to be looked at, though well-formed. */
    char payload[7000] = "{\"pad\":\"";
    memset(payload + 8, 'x', 6500);
    strcpy(payload + 6508, "\"}");
    char *long_token = malloc(12000);
    hs256_token(HS_HEADER, payload, "s3cret", long_token);
    CHECK(strlen(long_token) > HD_JWT_MAX_BYTES);
    CHECK_EQ_INT(verify(keys, long_token, NOW_MS), HD_JWT_MALFORMED);
    free(long_token);
    hd_jwt_keys_free(keys);
}

/* ES256: OpenSSL signs in DER; JWS carries r || s, 32 bytes each. */
static void test_es256(void)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char pem[2048];
    public_pem(key, pem, sizeof(pem));

    char token[4096];
    signing_input("{\"alg\":\"ES256\"}", "{\"herald\":{\"subscribe\":[\"*\"]}}", token);
    unsigned char der[128];
    size_t der_len = sizeof(der);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key);
    EVP_DigestSign(ctx, der, &der_len, (const unsigned char *)token, strlen(token));
    EVP_MD_CTX_free(ctx);
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    unsigned char raw[64];
    BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32);
    ECDSA_SIG_free(sig);
    append_signature(token, raw, sizeof(raw));

    hd_jwt_keys *keys = keys_or_die("", pem);
    hd_jwt_grant grant;
    CHECK_EQ_INT(hd_jwt_verify(keys, token, strlen(token), NOW_MS, &grant), HD_JWT_OK);
    CHECK(hd_jwt_patterns_match(grant.subscribe, grant.subscribe_count, "any.topic", 9));
    hd_jwt_grant_free(&grant);

    /* The DER form itself is not what JWS carries. */
    char der_token[4096];
    signing_input("{\"alg\":\"ES256\"}", "{\"herald\":{\"subscribe\":[\"*\"]}}", der_token);
    append_signature(der_token, der, der_len);
    CHECK_EQ_INT(verify(keys, der_token, NOW_MS), HD_JWT_BAD_SIGNATURE);
    /* HS256 is not accepted with only a public key, even "signed" with its PEM text. */
    char confused[4096];
    hs256_token("{\"alg\":\"HS256\"}", "{}", pem, confused);
    CHECK_EQ_INT(verify(keys, confused, NOW_MS), HD_JWT_UNSUPPORTED_ALGORITHM);
    hd_jwt_keys_free(keys);
    EVP_PKEY_free(key);
}

static void test_keys(void)
{
    char err[256] = "";
    CHECK(hd_jwt_keys_new("", "-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----\n",
                          err, sizeof(err)) == NULL);
    CHECK(strstr(err, "auth.jwt_public_key") != NULL);
    err[0] = '\0';
    CHECK(hd_jwt_keys_new("", "/nonexistent/key.pem", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "/nonexistent/key.pem") != NULL);

    /* Too weak for RS256, and a curve other than P-256 for ES256. */
    static const char *const refused[][2] = {{"RSA", "1024"}, {"EC", "P-384"}};
    for (size_t i = 0; i < 2; i++) {
        EVP_PKEY *key = i == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024)
                               : EVP_PKEY_Q_keygen(NULL, NULL, "EC", refused[i][1]);
        char pem[2048];
        public_pem(key, pem, sizeof(pem));
        EVP_PKEY_free(key);
        err[0] = '\0';
        CHECK(hd_jwt_keys_new("", pem, err, sizeof(err)) == NULL);
        CHECK(strstr(err, "RS256") != NULL);
    }
}

static bool matches(const char *pattern, const char *topic)
{
    char *patterns[] = {(char *)pattern};
    return hd_jwt_patterns_match(patterns, 1, topic, strlen(topic));
}

static void test_patterns(void)
{
    CHECK(matches("*", "a"));
    CHECK(matches("*", "chat.room/1"));
    CHECK(matches("chat.*", "chat.room"));
    CHECK(matches("chat.*", "chat."));
    CHECK(!matches("chat.*", "chat"));
    CHECK(!matches("chat.*", "xchat.room"));
    CHECK(matches("news", "news"));
    CHECK(!matches("news", "news2"));
    CHECK(!matches("news", "new"));
    CHECK(matches("*.log", "app.log"));
    CHECK(!matches("*.log", "app.logs"));
    CHECK(matches("a*b*c", "abc"));
    CHECK(matches("a*b*c", "aXbYc"));
    CHECK(matches("a*b*c", "abbbc"));
    CHECK(!matches("a*b*c", "acb"));
    CHECK(matches("**", ""));
    CHECK(!matches("a", ""));
    /* No pattern, nothing allowed. */
    CHECK(!hd_jwt_patterns_match(NULL, 0, "a", 1));
    /* The topic is a length, not a C string: bytes after it do not count. */
    CHECK(matches("ab", "abc") == false);
    char *ab[] = {"ab"};
    CHECK(hd_jwt_patterns_match(ab, 1, "abc", 2));
    /* Many stars against a long topic without the final letter stays fast (iterative glob). */
    char topic[201];
    memset(topic, 'a', 200);
    topic[200] = '\0';
    CHECK(!matches("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", topic));
}

int main(void)
{
    RUN_TEST(test_rfc7515_example);
    RUN_TEST(test_grant);
    RUN_TEST(test_refusals);
    RUN_TEST(test_malformed_shapes);
    RUN_TEST(test_es256);
    RUN_TEST(test_keys);
    RUN_TEST(test_patterns);
    return test_summary();
}
