#include "transport/publish.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herald/alloc.h"
#include "herald/clock.h"
#include "herald/json_text.h"
#include "herald/utf8.h"
#include "engine/engine.h"
#include "http/response.h"
#include "transport/authorize.h"
#include "transport/topics.h"

#define EVENT_MAX 64

void hd_publish_append_result(hd_strbuf *sb, const hd_publish_outcome *outcome, size_t i)
{
    const hd_message *msg = outcome->messages[i];
    hd_strbuf_append_str(sb, "\"id\":");
    hd_strbuf_append_json_string(sb, msg->id, msg->id_len);
    hd_strbuf_append_str(sb, ",\"topic\":");
    hd_strbuf_append_json_string(sb, msg->topic, msg->topic_len);
    hd_strbuf_printf(sb, ",\"subscribers\":%zu", outcome->subscribers[i]);
    if (hd_publish_repeated(outcome, i))
        hd_strbuf_append_str(sb, ",\"duplicate\":true");
}

bool hd_publish_repeated(const hd_publish_outcome *outcome, size_t i)
{
    return outcome->repeated != NULL && outcome->repeated[i];
}

hd_publish_refusal hd_publish_refusal_of(hd_hub_status status)
{
    switch (status) {
    case HD_HUB_BAD_TOPIC:
        return (hd_publish_refusal){400, "invalid_topic", HD_TOPIC_NAME_RULE, NULL};
    case HD_HUB_BAD_EVENT:
        return (hd_publish_refusal){400, "invalid_event", HD_EVENT_NAME_RULE, NULL};
    case HD_HUB_BAD_IDEMPOTENCY_KEY:
        return (hd_publish_refusal){400, "invalid_idempotency_key", HD_IDEMPOTENCY_KEY_RULE, NULL};
    case HD_HUB_TOO_MANY_TOPICS:
        return (hd_publish_refusal){503, "topic_limit",
                                    "The server holds limits.max_topics topics already.", NULL};
    case HD_HUB_UNAVAILABLE:
        return (hd_publish_refusal){503, "unavailable",
                                    "The message store cannot be reached: nothing was published.",
                                    "Retry-After: 1\r\n"};
    case HD_HUB_OUTCOME_UNKNOWN:
        return (hd_publish_refusal){
            503, "outcome_unknown",
            "The message store did not confirm the publish: it may have been published.",
            "Retry-After: 1\r\n"};
    default:
        return (hd_publish_refusal){500, "internal", "Unexpected hub status.", NULL};
    }
}

/* Answers the error a hub status stands for; where prefixes the message ("Item 2: "). */
static void answer_hub_status(hd_conn *conn, hd_hub_status status, const char *where)
{
    hd_publish_refusal refusal = hd_publish_refusal_of(status);
    char message[256];
    snprintf(message, sizeof(message), "%s%s", where, refusal.message);
    hd_response_error_with(conn, refusal.http_status, refusal.headers, refusal.code, message);
}

/*
 * GET /topics and GET /topics/{t} with an engine that answers later
 * (engine/engine.h) leave the request held (WAITING, so that a pipelined
 * request behind it is answered after it); the answer is queued from its
 * callback, and a connection that closes first cancels it. Counted with the
 * waiting polls in the connection gauges: both are requests whose answer is
 * held back. The memory engine answers before the call returns, so none of
 * this runs with it.
 */
static void held_publish_on_close(hd_conn *conn, void *request)
{
    hd_engine_cancel(hd_conn_engine(conn), request);
}

static void held_publish_on_shutdown(hd_conn *conn, void *request)
{
    /* The answer is on its way; the shutdown's grace period bounds the wait. */
    (void)conn;
    (void)request;
}

static const hd_stream_ops held_publish_ops = {
    .on_close = held_publish_on_close,
    .on_shutdown = held_publish_on_shutdown,
    .transport = HD_TRANSPORT_POLL,
};

void hd_publish_hold_for_engine(hd_conn *conn, hd_engine_request *request)
{
    if (request != NULL)
        hd_conn_start_wait(conn, &held_publish_ops, request);
}

/*
 * A publish the engine answers later (cluster mode) defers its answer
 * (hd_conn_defer) instead of holding the connection: publishes pipelined
 * behind it reach the engine before it answers, to go to Redis in the same
 * script call, and the answers still leave in request order. A connection
 * that closes first cancels the call. The memory engine answers before the
 * call returns: its publishes take none of this.
 */
typedef struct deferred_publish {
    hd_conn *conn;
    hd_conn_answer *answer; /* NULL while the engine call runs */
    hd_engine_request *request;
    hd_engine_publish_cb answer_with; /* with the connection as ctx */
} deferred_publish;

static void deferred_on_published(void *ctx, const hd_publish_outcome *outcome)
{
    deferred_publish *deferred = ctx;
    if (deferred->answer == NULL) { /* answered at once (refused): the request is current */
        deferred->answer_with(deferred->conn, outcome);
        return;
    }
    deferred->answer_with(hd_conn_answer_begin(deferred->answer), outcome);
    hd_conn_answer_end(deferred->answer);
    free(deferred);
}

static void deferred_on_cancel(hd_conn *conn, void *ctx)
{
    deferred_publish *deferred = ctx;
    hd_engine_cancel(hd_conn_engine(conn), deferred->request);
    free(deferred);
}

/* Publishes items; answer_with(conn, outcome) answers the request, now or later. */
static void publish_and_answer(hd_conn *conn, const hd_publish_item *items, size_t count,
                               hd_engine_publish_cb answer_with)
{
    hd_engine *engine = hd_conn_engine(conn);
    if (hd_engine_answers_at_once(engine)) {
        hd_engine_publish(engine, items, count, hd_clock_wall_ms(), answer_with, conn);
        return;
    }
    deferred_publish *deferred = hd_calloc(1, sizeof(*deferred));
    deferred->conn = conn;
    deferred->answer_with = answer_with;
    deferred->request = hd_engine_publish(engine, items, count, hd_clock_wall_ms(),
                                          deferred_on_published, deferred);
    if (deferred->request == NULL) {
        free(deferred);
        return;
    }
    deferred->answer = hd_conn_defer(conn, deferred_on_cancel, deferred);
}

/* The event name from ?event= or else X-Event; NULL when neither is given. */
static const char *find_event(hd_conn *conn, char *storage, size_t *len)
{
    hd_query_iter it;
    hd_query_param param;
    const char *event = NULL;
    hd_query_iter_init(&it, conn->request);
    while (hd_query_next(&it, &param)) {
        if (strcmp(param.key, "event") == 0) {
            /* Longer names are invalid anyway; keep enough to fail validation. */
            *len = param.value_len > EVENT_MAX ? EVENT_MAX + 1 : param.value_len;
            memcpy(storage, param.value, *len > EVENT_MAX ? EVENT_MAX : *len);
            event = storage;
            break;
        }
    }
    hd_query_iter_free(&it);
    if (event == NULL)
        event = hd_request_header(conn->request, "x-event", len);
    return event;
}

/* Whether the request may publish to the topic; answers 401 or 403 when not. */
static bool may_publish(hd_conn *conn, const char *topic, size_t topic_len)
{
    hd_access access;
    bool allowed = hd_authorize_request(conn, &access) &&
                   hd_authorize_topic(conn, &access, HD_AUTH_PUBLISH, topic, topic_len, "");
    hd_access_free(&access);
    return allowed;
}

/* What a POST /topics/{topic} says before its body. */
typedef struct topic_head {
    char topic[HD_TOPIC_NAME_MAX + 1];
    size_t topic_len;
    char event_storage[EVENT_MAX + 1];
    const char *event; /* NULL: none; else in event_storage or the request's headers */
    size_t event_len;
    const char *idempotency_key; /* NULL: none; else in the request's headers */
    size_t idempotency_key_len;
} topic_head;

/* Reads and checks the topic, the token's right to publish and the event; false: answered. */
static bool read_topic_head(hd_conn *conn, topic_head *head)
{
    if (hd_topics_name_from_path(conn, head->topic, &head->topic_len) != 0)
        return false;
    if (!may_publish(conn, head->topic, head->topic_len))
        return false;
    head->event_len = 0;
    head->event = find_event(conn, head->event_storage, &head->event_len);
    if (head->event != NULL && !hd_event_name_valid(head->event, head->event_len)) {
        answer_hub_status(conn, HD_HUB_BAD_EVENT, "");
        return false;
    }
    head->idempotency_key_len = 0; /* left alone when the header is absent */
    head->idempotency_key =
        hd_request_header(conn->request, "idempotency-key", &head->idempotency_key_len);
    if (head->idempotency_key != NULL &&
        !hd_idempotency_key_valid(head->idempotency_key, head->idempotency_key_len)) {
        answer_hub_status(conn, HD_HUB_BAD_IDEMPOTENCY_KEY, "");
        return false;
    }
    return true;
}

bool hd_publish_topic_head_acceptable(hd_conn *conn)
{
    topic_head head;
    return read_topic_head(conn, &head);
}

static void topic_on_published(void *ctx, const hd_publish_outcome *outcome)
{
    hd_conn *conn = ctx;
    if (outcome->status != HD_HUB_OK) {
        answer_hub_status(conn, outcome->status, "");
        return;
    }
    hd_strbuf out;
    hd_strbuf_init(&out);
    hd_strbuf_append(&out, "{", 1);
    hd_publish_append_result(&out, outcome, 0);
    hd_strbuf_append(&out, "}\n", 2);
    hd_response_send(conn, hd_publish_repeated(outcome, 0) ? 200 : 201, "application/json", NULL,
                     out.data, out.len, 0);
    hd_strbuf_free(&out);
}

void hd_publish_handle_topic(hd_conn *conn)
{
    topic_head head;
    if (!read_topic_head(conn, &head))
        return;
    const hd_strbuf *body = &conn->request->body;
    const char *data = body->data ? body->data : "";
    if (!hd_utf8_valid(data, body->len)) {
        hd_response_error(conn, 415, "unsupported_media_type", 0,
                          "The message data must be valid UTF-8 text.");
        return;
    }
    hd_publish_item item = {
        .topic = head.topic,
        .topic_len = head.topic_len,
        .event = head.event,
        .event_len = head.event ? head.event_len : 0,
        .data = data,
        .data_len = body->len,
        .idempotency_key = head.idempotency_key,
        .idempotency_key_len = head.idempotency_key_len,
    };
    publish_and_answer(conn, &item, 1, topic_on_published);
}

/* ------------------------------------------------------------------------ */
/* POST /publish                                                            */

typedef struct batch_item {
    const char *topic;
    const char *event;
    const char *data;
    const char *idempotency_key;
} batch_item;

static bool is_json_content_type(const hd_conn *conn)
{
    size_t len;
    const char *type = hd_request_header(conn->request, "content-type", &len);
    static const char json[] = "application/json";
    size_t json_len = sizeof(json) - 1;
    return type != NULL && len >= json_len && strncasecmp(type, json, json_len) == 0 &&
           (len == json_len || type[json_len] == ';' || type[json_len] == ' ');
}

/* Checks one item; on error answers the client naming the index and returns -1. */
static int check_item(hd_conn *conn, const hd_access *access, const cJSON *item, size_t index,
                      batch_item *out)
{
    char where[48];
    snprintf(where, sizeof(where), "Item %zu: ", index);
    if (!cJSON_IsObject(item)) {
        hd_response_error(conn, 400, "invalid_json", 0, "%sexpected an object.", where);
        return -1;
    }
    memset(out, 0, sizeof(*out));
    for (const cJSON *field = item->child; field != NULL; field = field->next) {
        const char **slot = strcmp(field->string, "topic") == 0             ? &out->topic
                            : strcmp(field->string, "data") == 0            ? &out->data
                            : strcmp(field->string, "event") == 0           ? &out->event
                            : strcmp(field->string, "idempotency_key") == 0 ? &out->idempotency_key
                                                                            : NULL;
        if (slot == NULL || !cJSON_IsString(field)) {
            hd_response_error(conn, 400, "invalid_json", 0,
                              slot ? "%s\"%s\" must be a string." : "%sunknown field \"%s\".",
                              where, field->string);
            return -1;
        }
        *slot = field->valuestring;
    }
    if (out->topic == NULL || out->data == NULL) {
        hd_response_error(conn, 400, "invalid_json", 0, "%s\"topic\" and \"data\" are required.",
                          where);
        return -1;
    }
    /* Before anything the hub would say about the topic (such as the topic limit being full
     * for a topic that does not exist yet): a client without rights learns nothing from it. */
    if (!hd_authorize_topic(conn, access, HD_AUTH_PUBLISH, out->topic, strlen(out->topic), where))
        return -1;
    size_t data_len = strlen(out->data);
    if (data_len > hd_conn_config(conn)->limits.max_message_bytes) {
        hd_response_error(conn, 413, "payload_too_large", 0,
                          "%sthe data exceeds limits.max_message_bytes.", where);
        return -1;
    }
    if (!hd_utf8_valid(out->data, data_len)) {
        hd_response_error(conn, 415, "unsupported_media_type", 0, "%sdata must be valid UTF-8.",
                          where);
        return -1;
    }
    hd_hub_status status = hd_hub_check_publish(hd_conn_hub(conn), out->topic, strlen(out->topic),
                                                out->event, out->event ? strlen(out->event) : 0);
    if (status == HD_HUB_OK && out->idempotency_key != NULL &&
        !hd_idempotency_key_valid(out->idempotency_key, strlen(out->idempotency_key)))
        status = HD_HUB_BAD_IDEMPOTENCY_KEY;
    if (status != HD_HUB_OK) {
        answer_hub_status(conn, status, where);
        return -1;
    }
    return 0;
}

static void batch_on_published(void *ctx, const hd_publish_outcome *outcome)
{
    hd_conn *conn = ctx;
    if (outcome->status != HD_HUB_OK) {
        char where[64];
        snprintf(where, sizeof(where), "Item %zu: ", outcome->failed);
        answer_hub_status(conn, outcome->status, where);
        return;
    }
    hd_strbuf out;
    hd_strbuf_init(&out);
    hd_strbuf_append_str(&out, "{\"messages\":[");
    bool all_repeated = true;
    for (size_t i = 0; i < outcome->count; i++) {
        hd_strbuf_append(&out, i > 0 ? ",{" : "{", i > 0 ? 2 : 1);
        hd_publish_append_result(&out, outcome, i);
        hd_strbuf_append(&out, "}", 1);
        all_repeated = all_repeated && hd_publish_repeated(outcome, i);
    }
    hd_strbuf_append_str(&out, "]}\n");
    /* 201 when anything was published; 200 when the whole batch was a repeat (SPEC §5). */
    hd_response_send(conn, all_repeated ? 200 : 201, "application/json", NULL, out.data, out.len,
                     0);
    hd_strbuf_free(&out);
}

/*
 * Each item was checked alone; together they may still create more topics
 * than limits.max_topics allows, which the engine checks before it publishes
 * any (and, with several workers, under the same lock as the publishing).
 */
static void publish_items(hd_conn *conn, const batch_item *items, size_t count)
{
    hd_publish_item *publish = hd_calloc(count, sizeof(*publish));
    for (size_t i = 0; i < count; i++) {
        publish[i] = (hd_publish_item){
            .topic = items[i].topic,
            .topic_len = strlen(items[i].topic),
            .event = items[i].event,
            .event_len = items[i].event ? strlen(items[i].event) : 0,
            .data = items[i].data,
            .data_len = strlen(items[i].data),
            .idempotency_key = items[i].idempotency_key,
            .idempotency_key_len = items[i].idempotency_key ? strlen(items[i].idempotency_key) : 0,
        };
    }
    publish_and_answer(conn, publish, count, batch_on_published);
    free(publish); /* the engine copied what it needs */
}

/* Checks the content type and reads the token's rights (the caller frees them); false: answered. */
static bool read_batch_head(hd_conn *conn, hd_access *access)
{
    if (!is_json_content_type(conn)) {
        hd_response_error(conn, 415, "unsupported_media_type", 0,
                          "POST /publish takes Content-Type: application/json.");
        return false;
    }
    return hd_authorize_request(conn, access);
}

bool hd_publish_batch_head_acceptable(hd_conn *conn)
{
    hd_access access;
    if (!read_batch_head(conn, &access))
        return false;
    hd_access_free(&access);
    return true;
}

/* Whether only JSON whitespace follows the value cJSON parsed, up to end. */
static bool only_whitespace_after(const char *parsed_end, const char *end)
{
    for (const char *p = parsed_end; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return false;
    return true;
}

void hd_publish_handle_batch(hd_conn *conn)
{
    hd_access access;
    if (!read_batch_head(conn, &access))
        return;
    const hd_strbuf *body = &conn->request->body;
    const char *text = body->data ? body->data : "";
    if (hd_json_text_has_nul(text, body->len)) {
        hd_access_free(&access);
        hd_response_error(conn, 400, "invalid_json", 0, "JSON strings must not contain U+0000.");
        return;
    }
    /* cJSON stops after the first value; anything but whitespace after it is not one document. */
    const char *parsed_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, body->len, &parsed_end, false);
    if (root != NULL && !only_whitespace_after(parsed_end, text + body->len)) {
        cJSON_Delete(root);
        root = NULL;
    }
    if (!cJSON_IsArray(root) || cJSON_GetArraySize(root) == 0) {
        hd_response_error(conn, 400, "invalid_json", 0,
                          "The body must be a non-empty JSON array of "
                          "{\"topic\",\"data\",\"event\"?,\"idempotency_key\"?}.");
        cJSON_Delete(root);
        hd_access_free(&access);
        return;
    }
    size_t count = (size_t)cJSON_GetArraySize(root);
    batch_item *items = hd_calloc(count, sizeof(*items));
    size_t index = 0;
    int rc = 0;
    for (const cJSON *item = root->child; item != NULL && rc == 0; item = item->next, index++)
        rc = check_item(conn, &access, item, index, &items[index]);
    if (rc == 0)
        publish_items(conn, items, count);
    free(items);
    cJSON_Delete(root);
    hd_access_free(&access);
}
