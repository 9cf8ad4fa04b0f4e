#include "herald/message.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "herald/worker.h"

/*
 * Copies len bytes to dst, adds a NUL (so the strings can be logged as C
 * strings, although their lengths are what counts) and returns the next free
 * byte.
 */
static char *copy_string(char *dst, const char *src, size_t len)
{
    if (len)
        memcpy(dst, src, len);
    dst[len] = '\0';
    return dst + len + 1;
}

hd_message *hd_message_new(const char *topic, size_t topic_len, const char *event, size_t event_len,
                           const char *data, size_t data_len, uint64_t seq, uint32_t epoch,
                           int64_t time_ms)
{
    if (event == NULL)
        event_len = 0;
    size_t slots = (size_t)hd_worker_count() * HD_WIRE_COUNT;
    size_t strings = topic_len + 1 + (event ? event_len + 1 : 0) + data_len + 1;
    hd_message *msg = hd_calloc(1, sizeof(*msg) + slots * sizeof(hd_buf *) + strings);
    msg->refs = 1;
    hd_list_init(&msg->history_node);
    msg->seq = seq;
    msg->time_ms = time_ms;
    msg->wire = (hd_buf **)(msg + 1);

    char *p = (char *)(msg->wire + slots);
    msg->topic = p;
    msg->topic_len = topic_len;
    p = copy_string(p, topic, topic_len);
    if (event != NULL) {
        msg->event = p;
        msg->event_len = event_len;
        p = copy_string(p, event, event_len);
    }
    msg->data = p;
    msg->data_len = data_len;
    copy_string(p, data, data_len);

    msg->epoch = epoch;
    msg->id_len = hd_id_format(epoch, seq, msg->id);
    return msg;
}

hd_message *hd_message_retain(hd_message *msg)
{
    __atomic_fetch_add(&msg->refs, 1, __ATOMIC_RELAXED);
    return msg;
}

void hd_message_release(hd_message *msg)
{
    if (msg == NULL || __atomic_sub_fetch(&msg->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    /* Buffers a transport still queues hold their own references. */
    size_t slots = (size_t)hd_worker_count() * HD_WIRE_COUNT;
    for (size_t i = 0; i < slots; i++)
        hd_buf_release(msg->wire[i]);
    free(msg);
}

/*
 * The fixed part is the size of the message struct itself (id, time, lengths
 * and the encoding slots), so a flood of empty messages is bounded by
 * history.max_bytes too, not only by history.max_messages. Cached encodings
 * are not counted: they are built on demand and roughly proportional to the
 * data.
 */
size_t hd_message_cost(const hd_message *msg)
{
    return sizeof(hd_message) + msg->topic_len + msg->event_len + msg->data_len;
}

hd_buf *hd_message_encoded(hd_message *msg, hd_wire wire, hd_wire_encoder encode, void *ctx)
{
    assert(wire < HD_WIRE_COUNT);
    unsigned self = hd_worker_index();
    assert(self != HD_WORKER_NONE); /* a thread with no slots of its own (herald/worker.h) */
    hd_buf **slot = &msg->wire[self * HD_WIRE_COUNT + wire];
    if (*slot == NULL)
        *slot = encode(msg, ctx);
    return *slot;
}

void hd_message_append_envelope(const hd_message *msg, hd_strbuf *sb)
{
    hd_strbuf_append_str(sb, "{\"type\":\"message\",\"topic\":");
    hd_strbuf_append_json_string(sb, msg->topic, msg->topic_len);
    hd_strbuf_append_str(sb, ",\"id\":");
    hd_strbuf_append_json_string(sb, msg->id, msg->id_len);
    if (msg->event != NULL) {
        hd_strbuf_append_str(sb, ",\"event\":");
        hd_strbuf_append_json_string(sb, msg->event, msg->event_len);
    }
    hd_strbuf_append_str(sb, ",\"data\":");
    hd_strbuf_append_json_string(sb, msg->data, msg->data_len);
    hd_strbuf_printf(sb, ",\"time\":%" PRId64 "}", msg->time_ms);
}

hd_buf *hd_message_encode_envelope(const hd_message *msg, void *ctx)
{
    (void)ctx;
    hd_strbuf sb;
    hd_strbuf_init(&sb);
    hd_strbuf_reserve(&sb, msg->data_len + msg->topic_len + msg->event_len + 96);
    hd_message_append_envelope(msg, &sb);
    return hd_strbuf_finish(&sb);
}
