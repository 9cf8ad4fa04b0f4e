#include "transport/catch_up.h"

#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"

/* Enough per batch to amortise the history read, few enough to stay fair. */
#define BATCH_MESSAGES 256

static void batch_on_gap(void *ctx, const hd_gap *gap)
{
    hd_catch_up *catch_up = ctx;
    catch_up->ops->send_gap(catch_up->ctx, gap);
}

static bool batch_on_message(void *ctx, hd_message *msg)
{
    hd_catch_up *catch_up = ctx;
    if (!catch_up->ops->send_message(catch_up->ctx, msg))
        return false;
    catch_up->last_seq = msg->seq;
    memcpy(catch_up->last_id, msg->id, msg->id_len + 1);
    uint64_t half = hd_conn_config(catch_up->conn)->limits.max_outbound_bytes / 2;
    return hd_conn_queued_bytes(catch_up->conn) < half;
}

static const hd_history_visitor batch_visitor = {
    .on_gap = batch_on_gap,
    .on_message = batch_on_message,
};

static void send_batch(hd_catch_up *catch_up, const hd_cursor *cursor)
{
    bool more = false;
    hd_hub_read_history(hd_conn_hub(catch_up->conn), (const char *const *)catch_up->topics,
                        catch_up->topic_lens, catch_up->topic_count, cursor, BATCH_MESSAGES,
                        &batch_visitor, catch_up, &more);
    if (!more)
        hd_catch_up_free(catch_up);
}

void hd_catch_up_start(hd_catch_up *catch_up, hd_conn *conn, const hd_catch_up_ops *ops, void *ctx,
                       char *const *topics, const size_t *topic_lens, size_t topic_count,
                       const hd_cursor *cursor)
{
    if (!cursor->present)
        return;
    catch_up->active = true;
    catch_up->conn = conn;
    catch_up->ops = ops;
    catch_up->ctx = ctx;
    catch_up->topics = hd_calloc(topic_count, sizeof(*catch_up->topics));
    catch_up->topic_lens = hd_calloc(topic_count, sizeof(*catch_up->topic_lens));
    catch_up->topic_count = topic_count;
    for (size_t i = 0; i < topic_count; i++) {
        catch_up->topics[i] = hd_strndup(topics[i], topic_lens[i]);
        catch_up->topic_lens[i] = topic_lens[i];
    }
    send_batch(catch_up, cursor);
}

void hd_catch_up_continue(hd_catch_up *catch_up)
{
    if (!catch_up->active)
        return;
    hd_cursor cursor = {
        .present = true,
        .seq = catch_up->last_seq,
        .text = catch_up->last_id,
        .text_len = strlen(catch_up->last_id),
    };
    send_batch(catch_up, &cursor);
}

bool hd_catch_up_holds(const hd_catch_up *catch_up, const hd_message *msg)
{
    if (!catch_up->active)
        return false;
    for (size_t i = 0; i < catch_up->topic_count; i++) {
        if (catch_up->topic_lens[i] == msg->topic_len &&
            memcmp(catch_up->topics[i], msg->topic, msg->topic_len) == 0)
            return true;
    }
    return false;
}

void hd_catch_up_free(hd_catch_up *catch_up)
{
    for (size_t i = 0; i < catch_up->topic_count; i++)
        free(catch_up->topics[i]);
    free(catch_up->topics);
    free(catch_up->topic_lens);
    memset(catch_up, 0, sizeof(*catch_up));
}
