/*
 * The HTTP face of auth/auth.h: reading a request's token and checking a
 * topic, answering 401 or 403 when the client may not go on.
 *
 *   401 unauthorized  the token is refused (expired, bad signature, ...), or
 *                     there is none and anonymous clients may not do this
 *   403 forbidden     a valid token that does not name this topic
 */
#ifndef HERALD_TRANSPORT_AUTHORIZE_H
#define HERALD_TRANSPORT_AUTHORIZE_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/auth.h"
#include "net/conn.h"

/* Reads the request's rights into *access (the caller frees it); false: answered 401. */
bool hd_authorize_request(hd_conn *conn, hd_access *access);

/*
 * Whether access may act on the topic; false: answered 401 or 403. where
 * prefixes the message (e.g. "Item 3: "), "" for none.
 */
bool hd_authorize_topic(hd_conn *conn, const hd_access *access, hd_auth_action action,
                        const char *topic, size_t topic_len, const char *where);

/*
 * Answers a request its rights do not cover: 401 with a Bearer challenge
 * when it carried no token (message_no_token), else 403 insufficient_scope
 * (message_forbidden).
 */
void hd_authorize_refuse(hd_conn *conn, const hd_access *access, const char *message_no_token,
                         const char *message_forbidden);

#endif
