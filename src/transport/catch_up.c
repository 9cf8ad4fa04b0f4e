#include "transport/catch_up.h"

#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"

struct hd_catch_up {
    char **topics; /* owned copies */
    size_t *topic_lens;
    uint64_t *gap_reported; /* per topic: 1 + the newest lost seq already reported, 0 = none */
    size_t topic_count;
    uint64_t last_seq;
    char last_id[HD_ID_MAX];
    hd_conn *conn;
    hd_subscriber *subscriber; /* told what history served, so queued live copies are skipped */
    const hd_catch_up_ops *ops;
    void *ctx;
};

/* Enough per batch to amortise the history read, few enough to stay fair. */
#define BATCH_MESSAGES 256

/*
 * Every batch asks the hub for gaps after its own cursor, so a loss already
 * reported by an earlier batch comes back: report each topic's loss once,
 * and again only if it grew.
 */
static void batch_on_gap(void *ctx, const hd_gap *gap)
{
    hd_catch_up *catch_up = ctx;
    uint64_t lost = gap->to_seq;
    for (size_t i = 0; i < catch_up->topic_count; i++) {
        if (catch_up->topic_lens[i] != gap->topic_len ||
            memcmp(catch_up->topics[i], gap->topic, gap->topic_len) != 0)
            continue;
        if (catch_up->gap_reported[i] > lost)
            return;
        catch_up->gap_reported[i] = lost + 1;
    }
    catch_up->ops->send_gap(catch_up->ctx, gap);
}

/* A batch read under the hub's lock, then encoded and queued after it: other workers wait less. */
typedef struct batch {
    hd_catch_up *catch_up;
    hd_message *messages[BATCH_MESSAGES]; /* one reference each */
    size_t count;
} batch;

static void batch_gap(void *ctx, const hd_gap *gap)
{
    batch_on_gap(((batch *)ctx)->catch_up, gap);
}

static bool batch_take(void *ctx, hd_message *msg)
{
    batch *b = ctx;
    b->messages[b->count++] = hd_message_retain(msg);
    return true;
}

static const hd_history_visitor batch_visitor = {
    .on_gap = batch_gap,
    .on_message = batch_take,
};

/*
 * Queues the batch until the connection is half full (the rest is read
 * again next time, from the last message sent). Returns whether all of it
 * was sent.
 */
static bool send_messages(hd_catch_up *catch_up, batch *b)
{
    uint64_t half = hd_conn_config(catch_up->conn)->limits.max_outbound_bytes / 2;
    size_t sent = 0;
    while (sent < b->count) {
        hd_message *msg = b->messages[sent];
        if (!catch_up->ops->send_message(catch_up->ctx, msg))
            break;
        sent++;
        hd_subscriber_mark_seen(catch_up->subscriber, msg);
        catch_up->last_seq = msg->seq;
        memcpy(catch_up->last_id, msg->id, msg->id_len + 1);
        if (hd_conn_queued_bytes(catch_up->conn) >= half)
            break;
    }
    for (size_t i = 0; i < b->count; i++)
        hd_message_release(b->messages[i]);
    return sent == b->count;
}

/* Returns whether more history is held after what this batch sent. */
static bool send_batch(hd_catch_up *catch_up, const hd_cursor *cursor)
{
    batch b = {.catch_up = catch_up};
    bool more = false;
    hd_history_query query = {
        .topics = (const char *const *)catch_up->topics,
        .topic_lens = catch_up->topic_lens,
        .topic_count = catch_up->topic_count,
        .cursor = *cursor,
        .limit = BATCH_MESSAGES,
    };
    hd_hub_read_history(hd_conn_hub(catch_up->conn), &query, &batch_visitor, &b, &more, NULL);
    return !send_messages(catch_up, &b) || more;
}

hd_catch_up *hd_catch_up_start(hd_conn *conn, hd_subscriber *subscriber, const hd_catch_up_ops *ops,
                               void *ctx, char *const *topics, const size_t *topic_lens,
                               size_t topic_count, const hd_cursor *cursor)
{
    if (!cursor->present)
        return NULL;
    hd_catch_up *catch_up = hd_calloc(1, sizeof(*catch_up));
    catch_up->conn = conn;
    catch_up->subscriber = subscriber;
    catch_up->ops = ops;
    catch_up->ctx = ctx;
    catch_up->topics = hd_calloc(topic_count, sizeof(*catch_up->topics));
    catch_up->topic_lens = hd_calloc(topic_count, sizeof(*catch_up->topic_lens));
    catch_up->gap_reported = hd_calloc(topic_count, sizeof(*catch_up->gap_reported));
    catch_up->topic_count = topic_count;
    for (size_t i = 0; i < topic_count; i++) {
        catch_up->topics[i] = hd_strndup(topics[i], topic_lens[i]);
        catch_up->topic_lens[i] = topic_lens[i];
    }
    if (!send_batch(catch_up, cursor))
        hd_catch_up_free(&catch_up);
    return catch_up;
}

void hd_catch_up_continue(hd_catch_up **catch_up)
{
    hd_catch_up *c = *catch_up;
    if (c == NULL)
        return;
    hd_cursor cursor = {
        .present = true,
        .seq = c->last_seq,
        .text = c->last_id,
        .text_len = strlen(c->last_id),
    };
    if (!send_batch(c, &cursor))
        hd_catch_up_free(catch_up);
}

void hd_catch_up_remove_topic(hd_catch_up **catch_up, const char *topic, size_t topic_len)
{
    hd_catch_up *c = *catch_up;
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->topic_count; i++) {
        if (c->topic_lens[i] != topic_len || memcmp(c->topics[i], topic, topic_len))
            continue;
        free(c->topics[i]);
        size_t last = --c->topic_count;
        c->topics[i] = c->topics[last];
        c->topic_lens[i] = c->topic_lens[last];
        c->gap_reported[i] = c->gap_reported[last];
        break;
    }
    if (c->topic_count == 0)
        hd_catch_up_free(catch_up);
}

bool hd_catch_up_holds(const hd_catch_up *catch_up, const hd_message *msg)
{
    if (catch_up == NULL)
        return false;
    for (size_t i = 0; i < catch_up->topic_count; i++) {
        if (catch_up->topic_lens[i] == msg->topic_len &&
            memcmp(catch_up->topics[i], msg->topic, msg->topic_len) == 0)
            return true;
    }
    return false;
}

void hd_catch_up_free(hd_catch_up **catch_up)
{
    hd_catch_up *c = *catch_up;
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->topic_count; i++)
        free(c->topics[i]);
    free(c->topics);
    free(c->topic_lens);
    free(c->gap_reported);
    free(c);
    *catch_up = NULL;
}
