#include "transport/authorize.h"

#include <stdio.h>

#include "herald/clock.h"
#include "http/response.h"

bool hd_authorize_request(hd_conn *conn, hd_access *access)
{
    hd_jwt_result result =
        hd_auth_read(hd_conn_auth(conn), conn->request, hd_clock_wall_ms(), access);
    if (result == HD_JWT_OK)
        return true;
    hd_auth_refusal why =
        result == HD_JWT_EXPIRED ? HD_AUTH_REFUSED_EXPIRED : HD_AUTH_REFUSED_INVALID;
    hd_metric_add(&hd_conn_metrics(conn)->auth_refusals[why], 1);
    hd_response_error_with(conn, 401, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n",
                           "unauthorized", hd_jwt_result_message(result));
    return false;
}

void hd_authorize_refuse(hd_conn *conn, const hd_access *access, const char *message_no_token,
                         const char *message_forbidden)
{
    hd_auth_refusal why = access->has_token ? HD_AUTH_REFUSED_FORBIDDEN : HD_AUTH_REFUSED_NO_TOKEN;
    hd_metric_add(&hd_conn_metrics(conn)->auth_refusals[why], 1);
    if (!access->has_token)
        /* RFC 7235 §3.1: a 401 says which scheme would do. */
        hd_response_error_with(conn, 401, "WWW-Authenticate: Bearer\r\n", "unauthorized",
                               message_no_token);
    else
        hd_response_error_with(conn, 403,
                               "WWW-Authenticate: Bearer error=\"insufficient_scope\"\r\n",
                               "forbidden", message_forbidden);
}

bool hd_authorize_topic(hd_conn *conn, const hd_access *access, hd_auth_action action,
                        const char *topic, size_t topic_len, const char *where)
{
    if (hd_access_allows(access, action, topic, topic_len))
        return true;
    const char *verb = action == HD_AUTH_PUBLISH ? "publish" : "subscribe";
    int len = topic_len > HD_TOPIC_NAME_MAX ? HD_TOPIC_NAME_MAX : (int)topic_len;
    char no_token[320], forbidden[320];
    snprintf(no_token, sizeof(no_token), "%sA token is required to %s to '%.*s'.", where, verb, len,
             topic);
    snprintf(forbidden, sizeof(forbidden), "%sThe token does not allow you to %s to '%.*s'.", where,
             verb, len, topic);
    hd_authorize_refuse(conn, access, no_token, forbidden);
    return false;
}
