#include "auth/auth.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herald/alloc.h"

#define TOKEN_NAME "access_token"

struct hd_auth {
    hd_jwt_keys *keys;
    const hd_config *config; /* for the origins a cookie token may come from */
    /* Whether any key is set: without one, tokens are not looked at (a cookie or header
     * meant for another service must not lock clients out of a server without auth). */
    bool verifies;
    hd_access anonymous; /* what a request without a token may do */
};

hd_auth *hd_auth_new(const hd_config *config, char *err, size_t err_len)
{
    hd_jwt_keys *keys =
        hd_jwt_keys_new(config->auth.jwt_secret, config->auth.jwt_public_key, err, err_len);
    if (keys == NULL)
        return NULL;
    hd_auth *auth = hd_calloc(1, sizeof(*auth));
    auth->keys = keys;
    auth->config = config;
    auth->verifies = config->auth.jwt_secret[0] != '\0' || config->auth.jwt_public_key[0] != '\0';
    auth->anonymous.anonymous_publish = config->auth.anonymous_publish;
    auth->anonymous.anonymous_subscribe = config->auth.anonymous_subscribe;
    return auth;
}

void hd_auth_free(hd_auth *auth)
{
    if (auth == NULL)
        return;
    hd_jwt_keys_free(auth->keys);
    free(auth);
}

static bool starts_with_ci(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && strncasecmp(s, prefix, n) == 0;
}

/* The value of the access_token cookie in a Cookie header (RFC 6265 §4.2.1), or NULL. */
static const char *cookie_token(const char *cookies, size_t len, size_t *token_len)
{
    const char *end = cookies + len;
    const char *p = cookies;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ';'))
            p++;
        const char *pair_end = memchr(p, ';', (size_t)(end - p));
        if (pair_end == NULL)
            pair_end = end;
        size_t name_len = sizeof(TOKEN_NAME) - 1;
        if ((size_t)(pair_end - p) > name_len && memcmp(p, TOKEN_NAME, name_len) == 0 &&
            p[name_len] == '=') {
            const char *value = p + name_len + 1;
            size_t value_len = (size_t)(pair_end - value);
            /* A cookie-value may be DQUOTE'd (RFC 6265 §4.1.1). */
            if (value_len >= 2 && value[0] == '"' && value[value_len - 1] == '"') {
                value++;
                value_len -= 2;
            }
            *token_len = value_len;
            return value;
        }
        p = pair_end;
    }
    return NULL;
}

/*
 * A browser sends cookies with requests other sites make (a form's POST, a
 * WebSocket opened by any page): a cookie token counts only when the request
 * comes from no page (no Origin, as a same-origin GET) or from an origin the
 * config lists by name — cors.allow_origins, or websocket.allow_origins for
 * an upgrade — never merely through "*".
 */
static bool cookie_origin_trusted(const hd_auth *auth, const hd_request *req)
{
    size_t len = 0;
    const char *origin = hd_request_header(req, "origin", &len);
    if (origin == NULL)
        return true;
    size_t upgrade_len = 0;
    const char *upgrade = hd_request_header(req, "upgrade", &upgrade_len);
    bool websocket = upgrade != NULL && hd_header_has_token(upgrade, upgrade_len, "websocket");
    const hd_strings *origins =
        websocket ? &auth->config->websocket.allow_origins : &auth->config->cors.allow_origins;
    return hd_strings_contains(origins, origin, len);
}

/* The credentials of an Authorization header of the Bearer scheme (RFC 6750 §2.1), or NULL. */
static const char *bearer_credentials(const hd_request *req, size_t *len)
{
    size_t value_len = 0;
    const char *value = hd_request_header(req, "authorization", &value_len);
    if (value == NULL || !starts_with_ci(value, value_len, "Bearer") ||
        (value_len > 6 && value[6] != ' '))
        return NULL;
    /* "Bearer" with nothing after it is an empty token (refused), not the absence of one. */
    size_t skip = value_len > 6 ? 7 : 6;
    while (skip < value_len && value[skip] == ' ')
        skip++;
    *len = value_len - skip;
    return value + skip;
}

/* Verifies the first token source the request has; false when it has none. */
static bool read_token(const hd_auth *auth, const hd_request *req, int64_t now_ms,
                       hd_jwt_grant *grant, hd_jwt_result *result)
{
    size_t len = 0;
    const char *value = bearer_credentials(req, &len);
    if (value != NULL) {
        *result = hd_jwt_verify(auth->keys, value, len, now_ms, grant);
        return true;
    }
    hd_query_iter it;
    hd_query_param param;
    hd_query_iter_init(&it, req);
    bool found = false;
    while (!found && hd_query_next(&it, &param)) {
        if (strcmp(param.key, TOKEN_NAME) == 0) {
            *result = hd_jwt_verify(auth->keys, param.value, param.value_len, now_ms, grant);
            found = true;
        }
    }
    hd_query_iter_free(&it);
    if (found)
        return true;
    value = hd_request_header(req, "cookie", &len);
    const char *token = value ? cookie_token(value, len, &len) : NULL;
    if (token == NULL || !cookie_origin_trusted(auth, req))
        return false;
    *result = hd_jwt_verify(auth->keys, token, len, now_ms, grant);
    return true;
}

hd_jwt_result hd_auth_read(const hd_auth *auth, const hd_request *req, int64_t now_ms,
                           hd_access *access)
{
    memset(access, 0, sizeof(*access));
    if (auth == NULL) {
        access->anonymous_publish = access->anonymous_subscribe = true;
        return HD_JWT_OK;
    }
    hd_jwt_result result = HD_JWT_OK;
    access->has_token = auth->verifies && read_token(auth, req, now_ms, &access->grant, &result);
    if (result != HD_JWT_OK)
        return result;
    access->anonymous_publish = auth->anonymous.anonymous_publish;
    access->anonymous_subscribe = auth->anonymous.anonymous_subscribe;
    return HD_JWT_OK;
}

void hd_access_free(hd_access *access)
{
    hd_jwt_grant_free(&access->grant);
}

bool hd_access_allows(const hd_access *access, hd_auth_action action, const char *topic,
                      size_t topic_len)
{
    if (action == HD_AUTH_PUBLISH)
        return access->anonymous_publish ||
               hd_jwt_patterns_match(access->grant.publish, access->grant.publish_count, topic,
                                     topic_len);
    return access->anonymous_subscribe ||
           hd_jwt_patterns_match(access->grant.subscribe, access->grant.subscribe_count, topic,
                                 topic_len);
}

bool hd_access_allows_prefix(const hd_access *access, hd_auth_action action, const char *prefix,
                             size_t prefix_len)
{
    bool publish = action == HD_AUTH_PUBLISH;
    if (publish ? access->anonymous_publish : access->anonymous_subscribe)
        return true;
    char *const *patterns = publish ? access->grant.publish : access->grant.subscribe;
    size_t count = publish ? access->grant.publish_count : access->grant.subscribe_count;
    for (size_t i = 0; i < count; i++) {
        size_t stem = strlen(patterns[i]) - 1;
        if (patterns[i][stem] == '*' && memchr(patterns[i], '*', stem) == NULL &&
            prefix_len >= stem && memcmp(prefix, patterns[i], stem) == 0)
            return true;
    }
    return false;
}
