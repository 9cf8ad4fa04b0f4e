/*
 * JSON Web Token verification (RFC 7519, JWS compact serialization, RFC
 * 7515) for herald's auth: HS256 with a shared secret, RS256 and ES256 with a
 * public key. Only what a token grants is read from it: its expiry, its
 * not-before time and herald's own claim, the topic patterns it may publish
 * and subscribe to:
 *
 *   {"exp": 1764003600, "herald": {"publish": ["chat.*"], "subscribe": ["*"]}}
 *
 * A pattern is a topic name in which `*` stands for any run of characters
 * (topic names cannot contain `*` themselves).
 */
#ifndef HERALD_AUTH_JWT_H
#define HERALD_AUTH_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest token looked at; a longer one is malformed (it must fit a header anyway). */
#define HD_JWT_MAX_BYTES 8192

typedef struct hd_jwt_keys hd_jwt_keys;

/*
 * secret: the HS256 key ("" accepts no HS256 token). public_key: a PEM
 * public key, as text or as the path of a file holding it ("" accepts no
 * RS256/ES256 token); its type decides which of the two it verifies. Returns
 * NULL with a sentence in err when the key cannot be used. The keys are only
 * read after this, so every worker thread may verify with them at once.
 */
hd_jwt_keys *hd_jwt_keys_new(const char *secret, const char *public_key, char *err, size_t err_len);
void hd_jwt_keys_free(hd_jwt_keys *keys);

typedef enum hd_jwt_result {
    HD_JWT_OK,
    HD_JWT_MALFORMED,
    HD_JWT_UNSUPPORTED_ALGORITHM,
    HD_JWT_CRITICAL_EXTENSION, /* RFC 7515 §4.1.11: refused, herald understands none */
    HD_JWT_BAD_SIGNATURE,
    HD_JWT_EXPIRED,
    HD_JWT_NOT_YET_VALID,
    HD_JWT_BAD_CLAIMS,
} hd_jwt_result;

/* What a verified token allows. Owned by the caller: release with hd_jwt_grant_free. */
typedef struct hd_jwt_grant {
    char **publish;
    size_t publish_count;
    char **subscribe;
    size_t subscribe_count;
    int64_t expires_ms; /* 0: the token does not expire */
} hd_jwt_grant;

/*
 * Verifies len bytes of token at now_ms (Unix milliseconds). On HD_JWT_OK
 * *grant holds the token's patterns; on any other result it is empty (and
 * still safe to free).
 */
hd_jwt_result hd_jwt_verify(const hd_jwt_keys *keys, const char *token, size_t len, int64_t now_ms,
                            hd_jwt_grant *grant);
void hd_jwt_grant_free(hd_jwt_grant *grant);

/* A sentence for a client saying why its token was refused. */
const char *hd_jwt_result_message(hd_jwt_result result);

/* Whether one of the patterns matches the topic. */
bool hd_jwt_patterns_match(char *const *patterns, size_t count, const char *topic,
                           size_t topic_len);

#endif
