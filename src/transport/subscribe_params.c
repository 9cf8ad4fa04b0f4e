#include "transport/subscribe_params.h"

#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "http/response.h"
#include "transport/authorize.h"

static bool is_cursor_param(const char *key, const char *const *names)
{
    for (size_t i = 0; names[i] != NULL; i++) {
        if (strcmp(key, names[i]) == 0)
            return true;
    }
    return false;
}

static int fail(hd_conn *conn, hd_subscribe_params *params, const char *code, const char *message)
{
    hd_subscribe_params_free(params);
    hd_response_error(conn, 400, code, 0, "%s", message);
    return -1;
}

static int authorize_topics(hd_conn *conn, hd_subscribe_params *params, hd_access *keep_access)
{
    hd_access access;
    bool allowed = hd_authorize_request(conn, &access);
    for (size_t i = 0; allowed && i < params->topic_count; i++)
        allowed = hd_authorize_topic(conn, &access, HD_AUTH_SUBSCRIBE, params->topics[i],
                                     params->topic_lens[i], "");
    params->token_expires_ms = access.grant.expires_ms;
    if (allowed && keep_access != NULL) {
        *keep_access = access;
        return 0;
    }
    hd_access_free(&access);
    if (allowed)
        return 0;
    hd_subscribe_params_free(params);
    return -1;
}

int hd_subscribe_params_parse(hd_conn *conn, const char *cursor_header,
                              const char *const *cursor_params, bool topics_required,
                              hd_subscribe_params *params, hd_access *keep_access)
{
    const hd_config *config = hd_conn_config(conn);
    memset(params, 0, sizeof(*params));
    if (keep_access != NULL)
        memset(keep_access, 0, sizeof(*keep_access));
    size_t cap = config->limits.max_topics_per_subscription;
    params->topics = hd_calloc(cap, sizeof(*params->topics));
    params->topic_lens = hd_calloc(cap, sizeof(*params->topic_lens));

    size_t header_len = 0;
    const char *header =
        cursor_header ? hd_request_header(conn->request, cursor_header, &header_len) : NULL;
    if (header != NULL)
        params->cursor_text = hd_strndup(header, header_len);

    hd_query_iter it;
    hd_query_param param;
    hd_query_iter_init(&it, conn->request);
    int rc = 0;
    while (rc == 0 && hd_query_next(&it, &param)) {
        if (strcmp(param.key, "topic") == 0) {
            if (!hd_topic_name_valid(param.value, param.value_len)) {
                rc = fail(conn, params, "invalid_topic", HD_TOPIC_NAME_RULE);
            } else if (params->topic_count == cap) {
                rc = fail(conn, params, "too_many_topics",
                          "More topics than limits.max_topics_per_subscription.");
            } else {
                params->topics[params->topic_count] = hd_strndup(param.value, param.value_len);
                params->topic_lens[params->topic_count++] = param.value_len;
            }
        } else if (params->cursor_text == NULL && is_cursor_param(param.key, cursor_params)) {
            params->cursor_text = hd_strndup(param.value, param.value_len);
        }
    }
    hd_query_iter_free(&it);
    if (rc != 0)
        return rc;
    if (params->topic_count == 0 && topics_required)
        return fail(conn, params, "missing_topic", "Name at least one topic with topic=NAME.");
    if (params->cursor_text == NULL)
        params->cursor_text = hd_strdup("");
    if (hd_hub_parse_cursor(hd_conn_hub(conn), params->cursor_text, strlen(params->cursor_text),
                            &params->cursor) != HD_HUB_OK)
        return fail(conn, params, "invalid_cursor",
                    "The cursor is not an id herald issued: malformed, or beyond the newest id.");
    return authorize_topics(conn, params, keep_access);
}

void hd_subscribe_params_free(hd_subscribe_params *params)
{
    for (size_t i = 0; i < params->topic_count; i++)
        free(params->topics[i]);
    free(params->topics);
    free(params->topic_lens);
    free(params->cursor_text);
    memset(params, 0, sizeof(*params));
}
