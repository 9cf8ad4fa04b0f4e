/*
 * Who may publish and subscribe to what (docs/protocol.md, Tokens): the `auth` settings plus
 * the token a request carries. With no token a client has the anonymous
 * rights the config grants; a valid token adds the topics its patterns name
 * (see jwt.h); an invalid token is refused outright, never treated as none.
 *
 * A request's token is, in order of preference: `Authorization: Bearer
 * <token>`, the `access_token` query parameter (EventSource cannot set
 * headers) or the `access_token` cookie.
 *
 * hd_auth is created on the main thread (at start, and anew by each
 * reload: herald/settings.h) and only read after: every worker uses it at
 * once. Nothing it returns points into it.
 */
#ifndef HERALD_AUTH_AUTH_H
#define HERALD_AUTH_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/jwt.h"
#include "herald/config.h"
#include "http/request.h"

typedef struct hd_auth hd_auth;

/* NULL with a sentence naming the key in err when a key cannot be loaded. */
hd_auth *hd_auth_new(const hd_config *config, char *err, size_t err_len);
void hd_auth_free(hd_auth *auth);

typedef enum hd_auth_action { HD_AUTH_PUBLISH, HD_AUTH_SUBSCRIBE } hd_auth_action;

/* One client's rights. Owned by whoever read it: release with hd_access_free. */
typedef struct hd_access {
    bool anonymous_publish;
    bool anonymous_subscribe;
    bool has_token;
    hd_jwt_grant grant;
} hd_access;

/*
 * Reads req's token, if any, into *access. Returns HD_JWT_OK when there is
 * none or it is valid; otherwise why it was refused (*access then grants
 * nothing). A NULL auth grants everything (servers built without one, as
 * in the fuzz targets).
 */
hd_jwt_result hd_auth_read(const hd_auth *auth, const hd_request *req, int64_t now_ms,
                           hd_access *access);
void hd_access_free(hd_access *access);

bool hd_access_allows(const hd_access *access, hd_auth_action action, const char *topic,
                      size_t topic_len);
/*
 * Whether access may act on every topic whose name starts with prefix ("":
 * every topic): anonymous access, or a pattern "Q*" (no other star) where
 * prefix starts with Q. For listings, which must not show topics a client
 * could not subscribe to.
 */
bool hd_access_allows_prefix(const hd_access *access, hd_auth_action action, const char *prefix,
                             size_t prefix_len);

#endif
