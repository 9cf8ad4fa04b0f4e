#include "transport/ws_control.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "herald/hub.h"
#include "herald/json_text.h"

#define REF_MAX 128

static int fail(hd_ws_command *command, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(hd_ws_command *command, const char *code, const char *fmt, ...)
{
    command->error = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(command->message, sizeof(command->message), fmt, ap);
    va_end(ap);
    return -1;
}

/*
 * JSON's interoperable integers (RFC 8259 §6, I-JSON): every client reads
 * them back exactly, where a larger number or a fraction may come back as
 * another value than it sent, and one beyond a double as null.
 */
#define REF_INTEGER_MAX 9007199254740991.0 /* 2^53 - 1 */

static bool is_safe_integer(double value)
{
    return value >= -REF_INTEGER_MAX && value <= REF_INTEGER_MAX && (double)(int64_t)value == value;
}

static int read_ref(const cJSON *root, hd_ws_command *command)
{
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(root, "ref");
    if (ref == NULL)
        return 0;
    if (cJSON_IsString(ref) && strlen(ref->valuestring) <= REF_MAX) {
        command->ref = cJSON_PrintUnformatted(ref);
        return 0;
    }
    if (cJSON_IsNumber(ref) && is_safe_integer(ref->valuedouble)) {
        char text[24];
        snprintf(text, sizeof(text), "%" PRId64, (int64_t)ref->valuedouble);
        command->ref = hd_strdup(text);
        return 0;
    }
    return fail(command, "invalid_ref",
                "ref must be a string of at most %d bytes or an integer from -(2^53-1) to "
                "2^53-1.",
                REF_MAX);
}

/* An optional string member: absent is fine, anything but a string is not. */
static int read_string(const cJSON *root, const char *name, const char **out,
                       hd_ws_command *command)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);
    if (item == NULL)
        return 0;
    if (!cJSON_IsString(item))
        return fail(command, "invalid_json", "\"%s\" must be a string.", name);
    *out = item->valuestring;
    return 0;
}

static int read_topics(const cJSON *root, size_t max_topics, hd_ws_command *command)
{
    const cJSON *topics = cJSON_GetObjectItemCaseSensitive(root, "topics");
    if (!cJSON_IsArray(topics) || cJSON_GetArraySize(topics) == 0)
        return fail(command, "invalid_json", "\"topics\" must be a non-empty array of names.");
    size_t count = (size_t)cJSON_GetArraySize(topics);
    if (count > max_topics)
        return fail(command, "too_many_topics",
                    "More than limits.max_topics_per_subscription (%zu) topics.", max_topics);
    command->topics = hd_calloc(count, sizeof(*command->topics));
    for (const cJSON *topic = topics->child; topic != NULL; topic = topic->next) {
        if (!cJSON_IsString(topic) ||
            !hd_topic_name_valid(topic->valuestring, strlen(topic->valuestring)))
            return fail(command, "invalid_topic", HD_TOPIC_NAME_RULE);
        command->topics[command->topic_count++] = topic->valuestring;
    }
    return 0;
}

static int read_publish(const cJSON *root, hd_ws_command *command)
{
    if (read_string(root, "topic", &command->topic, command) != 0 ||
        read_string(root, "event", &command->event, command) != 0 ||
        read_string(root, "data", &command->data, command) != 0 ||
        read_string(root, "idempotency_key", &command->idempotency_key, command) != 0)
        return -1;
    if (command->topic == NULL || command->data == NULL)
        return fail(command, "invalid_json", "publish needs \"topic\" and \"data\".");
    if (!hd_topic_name_valid(command->topic, strlen(command->topic)))
        return fail(command, "invalid_topic", HD_TOPIC_NAME_RULE);
    if (command->event != NULL && !hd_event_name_valid(command->event, strlen(command->event)))
        return fail(command, "invalid_event", HD_EVENT_NAME_RULE);
    if (command->idempotency_key != NULL &&
        !hd_idempotency_key_valid(command->idempotency_key, strlen(command->idempotency_key)))
        return fail(command, "invalid_idempotency_key", HD_IDEMPOTENCY_KEY_RULE);
    command->data_len = strlen(command->data);
    return 0;
}

int hd_ws_command_parse(const char *text, size_t len, size_t max_topics, hd_ws_command *command)
{
    memset(command, 0, sizeof(*command));
    cJSON *root = cJSON_ParseWithLength(text, len);
    command->tree = root;
    if (!cJSON_IsObject(root))
        return fail(command, "invalid_json", "A control message is one JSON object.");
    if (read_ref(root, command) != 0)
        return -1;
    /* Checked after the ref is read, so that the error can name it. */
    if (hd_json_text_has_nul(text, len))
        return fail(command, "invalid_json", "JSON strings must not contain U+0000.");
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(root, "op");
    const char *name = cJSON_IsString(op) ? op->valuestring : "";
    if (strcmp(name, "subscribe") == 0) {
        command->op = HD_WS_OP_SUBSCRIBE;
        if (read_topics(root, max_topics, command) != 0)
            return -1;
        /* Like any cursor that is not an id (SPEC §2), on every transport. */
        const cJSON *since = cJSON_GetObjectItemCaseSensitive(root, "since");
        if (since != NULL && !cJSON_IsString(since))
            return fail(command, "invalid_cursor", "since must be an id (a string).");
        command->since = since != NULL ? since->valuestring : NULL;
        return 0;
    }
    if (strcmp(name, "unsubscribe") == 0) {
        command->op = HD_WS_OP_UNSUBSCRIBE;
        return read_topics(root, max_topics, command);
    }
    if (strcmp(name, "publish") == 0) {
        command->op = HD_WS_OP_PUBLISH;
        return read_publish(root, command);
    }
    if (strcmp(name, "ping") == 0) {
        command->op = HD_WS_OP_PING;
        return 0;
    }
    return fail(command, "invalid_op",
                "\"op\" must be \"subscribe\", \"unsubscribe\", \"publish\" or \"ping\".");
}

void hd_ws_command_free(hd_ws_command *command)
{
    cJSON_Delete(command->tree);
    free(command->topics);
    free(command->ref);
    memset(command, 0, sizeof(*command));
}

void hd_ws_append_ref(const char *ref, hd_strbuf *sb)
{
    if (ref == NULL)
        return;
    hd_strbuf_append_str(sb, "\"ref\":");
    hd_strbuf_append_str(sb, ref);
    hd_strbuf_append(sb, ",", 1);
}
