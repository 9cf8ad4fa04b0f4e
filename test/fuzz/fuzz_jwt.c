/*
 * JWT verification: the input as a whole token, and the input as header and
 * payload signed here with the fuzzer's HS256 key, so that the claims parser
 * (reached only after a valid signature) is fuzzed too.
 */
#include <openssl/hmac.h>
#include <stdint.h>
#include <string.h>

#include "auth/jwt.h"
#include "../common/base64url.h"

#define SECRET "fuzz-secret"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const hd_jwt_keys *keys, const char *token, size_t len)
{
    hd_jwt_grant grant;
    if (hd_jwt_verify(keys, token, len, INT64_C(1764000000000), &grant) == HD_JWT_OK) {
        hd_jwt_patterns_match(grant.publish, grant.publish_count, "chat.room", 9);
        hd_jwt_patterns_match(grant.subscribe, grant.subscribe_count, "a", 1);
    }
    hd_jwt_grant_free(&grant);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hd_jwt_keys *keys;
    if (keys == NULL) {
        char err[256];
        keys = hd_jwt_keys_new(SECRET, "", err, sizeof(err));
    }
    check(keys, (const char *)data, size);

    /* "header JSON \n payload JSON" -> a correctly signed HS256 token. */
    if (size > 2048)
        return 0;
    const uint8_t *newline = memchr(data, '\n', size);
    size_t header_len = newline ? (size_t)(newline - data) : size;
    const uint8_t *payload = newline ? newline + 1 : data + size;
    size_t payload_len = size - header_len - (newline ? 1 : 0);
    char token[2048 * 2 + 128];
    test_base64url(data, header_len, token);
    size_t n = strlen(token);
    token[n++] = '.';
    test_base64url(payload, payload_len, token + n);
    n = strlen(token);
    unsigned char mac[32];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)token, n, mac, &mac_len);
    token[n++] = '.';
    test_base64url(mac, mac_len, token + n);
    check(keys, token, strlen(token));
    return 0;
}
