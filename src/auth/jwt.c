#include "auth/jwt.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "herald/hub.h"

#define MAX_PATTERNS 256
#define ES256_SIGNATURE_BYTES 64

struct hd_jwt_keys {
    char *secret;
    size_t secret_len;
    EVP_PKEY *rsa_key; /* RS256, or NULL */
    EVP_PKEY *ec_key;  /* ES256 (P-256), or NULL */
};

static void set_error(char *err, size_t err_len, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(err, err_len, fmt, args);
    va_end(args);
}

/* ------------------------------------------------------------------------ */
/* Keys                                                                     */

static BIO *open_public_key(const char *public_key)
{
    if (strncmp(public_key, "-----BEGIN", 10) == 0)
        return BIO_new_mem_buf(public_key, -1);
    return BIO_new_file(public_key, "r");
}

static int load_public_key(hd_jwt_keys *keys, const char *public_key, char *err, size_t err_len)
{
    BIO *bio = open_public_key(public_key);
    if (bio == NULL) {
        set_error(err, err_len, "auth.jwt_public_key: cannot read the file '%s'", public_key);
        return -1;
    }
    EVP_PKEY *key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (key == NULL) {
        set_error(err, err_len, "auth.jwt_public_key: not a PEM public key");
        return -1;
    }
    if (EVP_PKEY_is_a(key, "RSA") && EVP_PKEY_get_bits(key) >= 2048) {
        keys->rsa_key = key;
        return 0;
    }
    char group[32] = "";
    if (EVP_PKEY_is_a(key, "EC") &&
        EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof(group), NULL) == 1 &&
        strcmp(group, "prime256v1") == 0) {
        keys->ec_key = key;
        return 0;
    }
    EVP_PKEY_free(key);
    set_error(err, err_len,
              "auth.jwt_public_key: must be an RSA key of 2048 bits or more (RS256) or a P-256 "
              "EC key (ES256)");
    return -1;
}

hd_jwt_keys *hd_jwt_keys_new(const char *secret, const char *public_key, char *err, size_t err_len)
{
    hd_jwt_keys *keys = hd_calloc(1, sizeof(*keys));
    keys->secret = hd_strdup(secret);
    keys->secret_len = strlen(secret);
    if (public_key[0] != '\0' && load_public_key(keys, public_key, err, err_len) != 0) {
        hd_jwt_keys_free(keys);
        return NULL;
    }
    return keys;
}

void hd_jwt_keys_free(hd_jwt_keys *keys)
{
    if (keys == NULL)
        return;
    OPENSSL_cleanse(keys->secret, keys->secret_len);
    free(keys->secret);
    EVP_PKEY_free(keys->rsa_key);
    EVP_PKEY_free(keys->ec_key);
    free(keys);
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                 */

static int base64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/*
 * Unpadded base64url (RFC 7515 §2) into out, which holds len bytes; returns
 * the decoded length or -1. Non-zero bits left over at the end are refused,
 * so every value has exactly one spelling.
 */
static long base64url_decode(const char *in, size_t len, unsigned char *out)
{
    if (len % 4 == 1)
        return -1;
    uint32_t bits = 0;
    int held = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = base64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        bits = bits << 6 | (uint32_t)v;
        held += 6;
        if (held >= 8) {
            held -= 8;
            out[n++] = (unsigned char)(bits >> held);
        }
    }
    if ((bits & ((1u << held) - 1)) != 0)
        return -1;
    return (long)n;
}

/* Decodes one part of the token and parses it as a JSON object. */
static cJSON *decode_json_part(const char *part, size_t len)
{
    unsigned char *text = hd_alloc(len + 1);
    long n = base64url_decode(part, len, text);
    cJSON *json = NULL;
    if (n >= 0) {
        json = cJSON_ParseWithLength((const char *)text, (size_t)n);
        if (json != NULL && !cJSON_IsObject(json)) {
            cJSON_Delete(json);
            json = NULL;
        }
    }
    free(text);
    return json;
}

/* ------------------------------------------------------------------------ */
/* Signatures                                                               */

static bool verify_hmac(const hd_jwt_keys *keys, const char *input, size_t input_len,
                        const unsigned char *signature, size_t signature_len)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha256(), keys->secret, (int)keys->secret_len, (const unsigned char *)input,
             input_len, mac, &mac_len) == NULL)
        return false;
    return signature_len == mac_len && CRYPTO_memcmp(mac, signature, mac_len) == 0;
}

static bool verify_with_key(EVP_PKEY *key, const char *input, size_t input_len,
                            const unsigned char *signature, size_t signature_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
              EVP_DigestVerify(ctx, signature, signature_len, (const unsigned char *)input,
                               input_len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* JWS carries an ES256 signature as r || s (RFC 7518 §3.4); OpenSSL wants DER. */
static bool verify_es256(EVP_PKEY *key, const char *input, size_t input_len,
                         const unsigned char *signature, size_t signature_len)
{
    if (signature_len != ES256_SIGNATURE_BYTES)
        return false;
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(signature, 32, NULL);
    BIGNUM *s = BN_bin2bn(signature + 32, 32, NULL);
    unsigned char *der = NULL;
    int der_len = -1;
    if (sig != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(sig, r, s) == 1) {
        r = s = NULL; /* owned by sig now */
        der_len = i2d_ECDSA_SIG(sig, &der);
    }
    bool ok = der_len > 0 && verify_with_key(key, input, input_len, der, (size_t)der_len);
    OPENSSL_free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Claims                                                                   */

static bool pattern_valid(const char *pattern, size_t len)
{
    if (len == 0 || len > 200)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (pattern[i] != '*' && !hd_topic_name_valid(pattern + i, 1))
            return false;
    }
    return true;
}

/* Reads an array of patterns; a missing claim is an empty list. */
static bool read_patterns(const cJSON *claim, const char *name, char ***out, size_t *count)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(claim, name);
    if (list == NULL)
        return true;
    int size = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : -1;
    if (size < 0 || size > MAX_PATTERNS)
        return false;
    *out = hd_calloc((size_t)size + 1, sizeof(**out));
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        if (!cJSON_IsString(item) || !pattern_valid(item->valuestring, strlen(item->valuestring)))
            return false;
        (*out)[(*count)++] = hd_strdup(item->valuestring);
    }
    return true;
}

/* A NumericDate (RFC 7519 §2) in seconds, as Unix milliseconds; false when absent. */
static bool read_time(const cJSON *payload, const char *name, int64_t *ms, bool *bad)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(payload, name);
    if (item == NULL)
        return false;
    if (!cJSON_IsNumber(item) || item->valuedouble < 0 || item->valuedouble > 1e13) {
        *bad = true;
        return false;
    }
    *ms = (int64_t)(item->valuedouble * 1000);
    return true;
}

static hd_jwt_result read_claims(const cJSON *payload, int64_t now_ms, hd_jwt_grant *grant)
{
    bool bad = false;
    int64_t expires_ms = 0, not_before_ms = 0;
    bool expires = read_time(payload, "exp", &expires_ms, &bad);
    bool not_before = read_time(payload, "nbf", &not_before_ms, &bad);
    if (bad)
        return HD_JWT_BAD_CLAIMS;
    if (expires && now_ms >= expires_ms)
        return HD_JWT_EXPIRED;
    if (not_before && now_ms < not_before_ms)
        return HD_JWT_NOT_YET_VALID;
    grant->expires_ms = expires ? expires_ms : 0;
    const cJSON *claim = cJSON_GetObjectItemCaseSensitive(payload, "herald");
    if (claim == NULL)
        return HD_JWT_OK;
    if (!cJSON_IsObject(claim) ||
        !read_patterns(claim, "publish", &grant->publish, &grant->publish_count) ||
        !read_patterns(claim, "subscribe", &grant->subscribe, &grant->subscribe_count))
        return HD_JWT_BAD_CLAIMS;
    return HD_JWT_OK;
}

/* ------------------------------------------------------------------------ */
/* Verification                                                             */

typedef enum algorithm { ALG_NONE, ALG_HS256, ALG_RS256, ALG_ES256 } algorithm;

/* The header's algorithm, if it is one these keys can verify. */
static algorithm header_algorithm(const hd_jwt_keys *keys, const cJSON *header)
{
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(header, "alg");
    if (!cJSON_IsString(alg))
        return ALG_NONE;
    if (strcmp(alg->valuestring, "HS256") == 0 && keys->secret_len > 0)
        return ALG_HS256;
    if (strcmp(alg->valuestring, "RS256") == 0 && keys->rsa_key != NULL)
        return ALG_RS256;
    if (strcmp(alg->valuestring, "ES256") == 0 && keys->ec_key != NULL)
        return ALG_ES256;
    return ALG_NONE;
}

static bool signature_valid(const hd_jwt_keys *keys, algorithm alg, const char *input,
                            size_t input_len, const unsigned char *signature, size_t signature_len)
{
    switch (alg) {
    case ALG_HS256:
        return verify_hmac(keys, input, input_len, signature, signature_len);
    case ALG_RS256:
        return verify_with_key(keys->rsa_key, input, input_len, signature, signature_len);
    case ALG_ES256:
        return verify_es256(keys->ec_key, input, input_len, signature, signature_len);
    case ALG_NONE:
        break;
    }
    return false;
}

hd_jwt_result hd_jwt_verify(const hd_jwt_keys *keys, const char *token, size_t len, int64_t now_ms,
                            hd_jwt_grant *grant)
{
    memset(grant, 0, sizeof(*grant));
    if (len == 0 || len > HD_JWT_MAX_BYTES)
        return HD_JWT_MALFORMED;
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return HD_JWT_MALFORMED;
    const char *signature_part = dot2 + 1;
    size_t signature_part_len = len - (size_t)(signature_part - token);

    cJSON *header = decode_json_part(token, (size_t)(dot1 - token));
    if (header == NULL)
        return HD_JWT_MALFORMED;
    algorithm alg = header_algorithm(keys, header);
    bool critical = cJSON_GetObjectItemCaseSensitive(header, "crit") != NULL;
    cJSON_Delete(header);
    if (alg == ALG_NONE)
        return HD_JWT_UNSUPPORTED_ALGORITHM;
    if (critical)
        return HD_JWT_CRITICAL_EXTENSION;

    unsigned char signature[HD_JWT_MAX_BYTES];
    long signature_len = base64url_decode(signature_part, signature_part_len, signature);
    if (signature_len < 0)
        return HD_JWT_MALFORMED;
    if (!signature_valid(keys, alg, token, (size_t)(dot2 - token), signature,
                         (size_t)signature_len))
        return HD_JWT_BAD_SIGNATURE;

    /* Claims are read only once the signature says who wrote them. */
    cJSON *payload = decode_json_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (payload == NULL)
        return HD_JWT_MALFORMED;
    hd_jwt_result result = read_claims(payload, now_ms, grant);
    cJSON_Delete(payload);
    if (result != HD_JWT_OK)
        hd_jwt_grant_free(grant);
    return result;
}

static void free_patterns(char **patterns, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(patterns[i]);
    free(patterns);
}

void hd_jwt_grant_free(hd_jwt_grant *grant)
{
    free_patterns(grant->publish, grant->publish_count);
    free_patterns(grant->subscribe, grant->subscribe_count);
    memset(grant, 0, sizeof(*grant));
}

const char *hd_jwt_result_message(hd_jwt_result result)
{
    switch (result) {
    case HD_JWT_OK:
        return "The token is valid.";
    case HD_JWT_MALFORMED:
        return "The token is not a well-formed JWT.";
    case HD_JWT_UNSUPPORTED_ALGORITHM:
        return "The token's algorithm is not one this server verifies.";
    case HD_JWT_CRITICAL_EXTENSION:
        return "The token's header lists a critical extension (crit) this server does not know.";
    case HD_JWT_BAD_SIGNATURE:
        return "The token's signature does not verify.";
    case HD_JWT_EXPIRED:
        return "The token has expired.";
    case HD_JWT_NOT_YET_VALID:
        return "The token is not valid yet (nbf).";
    case HD_JWT_BAD_CLAIMS:
        return "The token's claims are malformed (exp, nbf or herald).";
    }
    return "The token was refused.";
}

/* ------------------------------------------------------------------------ */
/* Patterns                                                                 */

/* Glob with `*` only; iterative, so a pattern of many stars cannot blow the stack. */
static bool glob_match(const char *pattern, const char *text, size_t text_len)
{
    const char *star = NULL;
    size_t p = 0, t = 0, star_t = 0;
    size_t pattern_len = strlen(pattern);
    while (t < text_len) {
        if (p < pattern_len && pattern[p] == '*') {
            star = pattern + p++;
            star_t = t;
        } else if (p < pattern_len && pattern[p] == text[t]) {
            p++;
            t++;
        } else if (star != NULL) {
            p = (size_t)(star - pattern) + 1;
            t = ++star_t;
        } else {
            return false;
        }
    }
    while (p < pattern_len && pattern[p] == '*')
        p++;
    return p == pattern_len;
}

bool hd_jwt_patterns_match(char *const *patterns, size_t count, const char *topic, size_t topic_len)
{
    for (size_t i = 0; i < count; i++) {
        if (glob_match(patterns[i], topic, topic_len))
            return true;
    }
    return false;
}
