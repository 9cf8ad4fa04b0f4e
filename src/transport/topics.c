#include "transport/topics.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "http/response.h"
#include "transport/authorize.h"
#include "transport/publish.h"

int hd_topics_name_from_path(hd_conn *conn, char out[HD_TOPIC_NAME_MAX + 1], size_t *len)
{
    const hd_request *req = conn->request;
    size_t prefix = strlen("/topics/");
    const char *raw = req->path + prefix;
    size_t raw_len = req->path_len - prefix;
    /* Each decoded byte takes one to three raw ones: a longer path cannot be a topic. */
    char decoded[3 * (HD_TOPIC_NAME_MAX + 1)];
    long n = raw_len < sizeof(decoded) ? hd_percent_decode(raw, raw_len, decoded, false) : -1;
    if (n < 0 || (size_t)n > HD_TOPIC_NAME_MAX || !hd_topic_name_valid(decoded, (size_t)n)) {
        hd_response_error(conn, 400, "invalid_topic", 0, HD_TOPIC_NAME_RULE);
        return -1;
    }
    memcpy(out, decoded, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    return 0;
}

static void append_last_id(hd_strbuf *body, const hd_topic_info *info)
{
    hd_strbuf_append_str(body, ",\"last_id\":");
    if (info->last_id[0] != '\0')
        hd_strbuf_append_json_string(body, info->last_id, strlen(info->last_id));
    else
        hd_strbuf_append_str(body, "null");
}

/* Queues the answer of an engine query: a held request reads on after it. */
static bool answer_query(hd_conn *conn, hd_hub_status status)
{
    hd_conn_end_wait(conn); /* nothing to end when the engine answered at once */
    if (status == HD_HUB_OK)
        return true;
    hd_response_error_with(conn, 503, "Retry-After: 1\r\n", "unavailable",
                           "The message store cannot be reached: try again shortly.");
    return false;
}

static void on_described(void *ctx, const hd_topic_description *description)
{
    hd_conn *conn = ctx;
    if (!answer_query(conn, description->status))
        return;
    if (!description->found) {
        hd_response_error(conn, 404, "not_found", 0,
                          "No such topic: it has no history and no subscribers.");
        return;
    }
    char topic[HD_TOPIC_NAME_MAX + 1];
    size_t topic_len;
    if (hd_topics_name_from_path(conn, topic, &topic_len) != 0)
        return; /* checked before the engine was asked: cannot fail now */
    const hd_topic_info *info = &description->info;
    hd_strbuf body;
    hd_strbuf_init(&body);
    hd_strbuf_append_str(&body, "{\"topic\":");
    hd_strbuf_append_json_string(&body, topic, topic_len);
    hd_strbuf_printf(&body,
                     ",\"subscribers\":%zu,\"subscribers_by_transport\":{\"sse\":%zu,"
                     "\"websocket\":%zu,\"poll\":%zu}",
                     info->subscribers, info->subscribers_by_transport[HD_TRANSPORT_SSE],
                     info->subscribers_by_transport[HD_TRANSPORT_WEBSOCKET],
                     info->subscribers_by_transport[HD_TRANSPORT_POLL]);
    hd_strbuf_printf(&body, ",\"history\":{\"messages\":%zu,\"bytes\":%" PRIu64 "}",
                     info->history_messages, info->history_bytes);
    append_last_id(&body, info);
    hd_strbuf_append_str(&body, "}\n");
    hd_response_send(conn, 200, "application/json", NULL, body.data, body.len, 0);
    hd_strbuf_free(&body);
}

void hd_topics_handle_info(hd_conn *conn)
{
    char topic[HD_TOPIC_NAME_MAX + 1];
    size_t topic_len;
    if (hd_topics_name_from_path(conn, topic, &topic_len) != 0)
        return;
    /* Asked before the topic is looked up, so that its existence is not told either. */
    hd_access access;
    bool allowed = hd_authorize_request(conn, &access) &&
                   hd_authorize_topic(conn, &access, HD_AUTH_SUBSCRIBE, topic, topic_len, "");
    hd_access_free(&access);
    if (!allowed)
        return;
    hd_publish_hold_for_engine(
        conn, hd_engine_describe(hd_conn_engine(conn), topic, topic_len, on_described, conn));
}

#define LIST_DEFAULT_LIMIT 100
#define LIST_MAX_LIMIT HD_ENGINE_LIST_MAX

typedef struct list_query {
    char prefix[HD_TOPIC_NAME_MAX + 1];
    size_t prefix_len;
    char after[HD_TOPIC_NAME_MAX + 1];
    size_t after_len;
    size_t limit;
} list_query;

/* prefix and after are compared with topic names, so nothing longer than a name can match. */
static const char *parse_list_query(hd_conn *conn, list_query *query)
{
    hd_query_iter it;
    hd_query_param param;
    const char *error = NULL;
    query->limit = LIST_DEFAULT_LIMIT;
    hd_query_iter_init(&it, conn->request);
    while (error == NULL && hd_query_next(&it, &param)) {
        bool is_prefix = strcmp(param.key, "prefix") == 0;
        if (is_prefix || strcmp(param.key, "after") == 0) {
            if (param.value_len > HD_TOPIC_NAME_MAX) {
                error = "prefix and after are at most 200 bytes, like topic names.";
                continue;
            }
            if (param.value_len > 0 && !hd_topic_name_valid(param.value, param.value_len)) {
                error = "prefix and after are made of topic-name characters: A-Z a-z 0-9 . _ ~ : / "
                        "@ -.";
                continue;
            }
            memcpy(is_prefix ? query->prefix : query->after, param.value, param.value_len);
            *(is_prefix ? &query->prefix_len : &query->after_len) = param.value_len;
        } else if (strcmp(param.key, "limit") == 0) {
            size_t value = 0, i = 0;
            while (i < param.value_len && param.value[i] >= '0' && param.value[i] <= '9' &&
                   value <= LIST_MAX_LIMIT)
                value = value * 10 + (size_t)(param.value[i++] - '0');
            if (param.value_len == 0 || i < param.value_len || value < 1 || value > LIST_MAX_LIMIT)
                error = "limit must be a whole number from 1 to 1000.";
            else
                query->limit = value;
        }
    }
    hd_query_iter_free(&it);
    return error;
}

/* A listing shows only topics the client could subscribe to: all of them, under the prefix. */
static bool may_list(hd_conn *conn, const list_query *query)
{
    hd_access access;
    if (!hd_authorize_request(conn, &access))
        return false;
    bool allowed =
        hd_access_allows_prefix(&access, HD_AUTH_SUBSCRIBE, query->prefix, query->prefix_len);
    if (!allowed) {
        char forbidden[512];
        snprintf(forbidden, sizeof(forbidden),
                 "The token does not allow subscribing to every topic under prefix '%.*s' (a "
                 "subscribe pattern such as \"%.*s*\" would).",
                 (int)query->prefix_len, query->prefix, (int)query->prefix_len, query->prefix);
        hd_authorize_refuse(conn, &access, "A token is required to list topics.", forbidden);
    }
    hd_access_free(&access);
    return allowed;
}

static void on_listed(void *ctx, const hd_topic_list *list)
{
    hd_conn *conn = ctx;
    if (!answer_query(conn, list->status))
        return;
    const hd_topic_summary *topics = list->topics;
    size_t count = list->count;
    hd_strbuf body;
    hd_strbuf_init(&body);
    hd_strbuf_append_str(&body, "{\"topics\":[");
    for (size_t i = 0; i < count; i++) {
        hd_strbuf_append_str(&body, i ? ",{\"topic\":" : "{\"topic\":");
        hd_strbuf_append_json_string(&body, topics[i].name, topics[i].name_len);
        hd_strbuf_printf(&body, ",\"subscribers\":%zu,\"history_messages\":%zu",
                         topics[i].info.subscribers, topics[i].info.history_messages);
        append_last_id(&body, &topics[i].info);
        hd_strbuf_append_str(&body, "}");
    }
    hd_strbuf_append_str(&body, "],\"next\":");
    if (list->more && count > 0)
        hd_strbuf_append_json_string(&body, topics[count - 1].name, topics[count - 1].name_len);
    else
        hd_strbuf_append_str(&body, "null");
    hd_strbuf_append_str(&body, "}\n");
    hd_response_send(conn, 200, "application/json", NULL, body.data, body.len, 0);
    hd_strbuf_free(&body);
}

void hd_topics_handle_list(hd_conn *conn)
{
    list_query query = {0};
    const char *error = parse_list_query(conn, &query);
    if (error != NULL) {
        hd_response_error(conn, 400, "invalid_parameter", 0, "%s", error);
        return;
    }
    if (!may_list(conn, &query))
        return;
    hd_topic_list_query q = {
        .prefix = query.prefix,
        .prefix_len = query.prefix_len,
        .after = query.after,
        .after_len = query.after_len,
        .limit = query.limit,
    };
    hd_publish_hold_for_engine(conn, hd_engine_list(hd_conn_engine(conn), &q, on_listed, conn));
}
