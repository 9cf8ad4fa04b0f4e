/*
 * When a catch-up may end. Live messages of its topics are skipped while it
 * runs (the subscription's seen_seq has moved past them), so it may only
 * end with a read that reached past every message it skipped: a read whose
 * cut (the newest seq as of the read) is at least the newest skipped seq,
 * and which left nothing unread (!more) and was sent whole. With the memory
 * engine that holds by construction: a read runs on the worker's thread
 * under the hub's lock, and every live message the worker was handed before
 * was published before it. An engine that reads later (Redis) can be
 * overtaken: live messages newer than the read's cut may arrive while it is
 * under way, and are skipped; then the catch-up reads once more from where
 * it stopped.
 */
#include "transport/catch_up.h"

#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "engine/engine.h"

struct hd_catch_up {
    char **topics; /* owned copies */
    size_t *topic_lens;
    uint64_t *gap_reported; /* per topic: 1 + the newest lost seq already reported, 0 = none */
    bool *fresh;            /* per topic: undone if the catch-up fails before it started */
    size_t topic_count;
    hd_cursor next; /* where the next batch reads from: the client's, then the last sent */
    char next_text[HD_ID_MAX]; /* next.text */
    uint64_t skipped_upto;     /* the newest seq of a live message skipped meanwhile */
    bool skipped_kept;         /* one of them was of a topic not fresh: a hole if it fails */
    hd_engine_request *read;   /* under way (an engine that answers later), or NULL */
    bool started;              /* the first read answered: ops->started was called */
    hd_catch_up **owner;       /* the session's pointer to it, cleared when it ends */
    hd_conn *conn;
    hd_subscriber *subscriber; /* told what history served, so queued live copies are skipped */
    const hd_catch_up_ops *ops;
    void *ctx;
};

/* Enough per batch to amortise the history read, few enough to stay fair. */
#define BATCH_MESSAGES 256

static void read_batch(hd_catch_up *catch_up);

/*
 * Every batch asks for gaps after its own cursor, so a loss already
 * reported by an earlier batch comes back: report each topic's loss once,
 * and again only if it grew.
 */
static void send_gap(hd_catch_up *catch_up, const hd_gap *gap)
{
    for (size_t i = 0; i < catch_up->topic_count; i++) {
        if (catch_up->topic_lens[i] != gap->topic_len ||
            memcmp(catch_up->topics[i], gap->topic, gap->topic_len) != 0)
            continue;
        if (catch_up->gap_reported[i] > gap->to_seq)
            return;
        catch_up->gap_reported[i] = gap->to_seq + 1;
    }
    catch_up->ops->send_gap(catch_up->ctx, gap);
}

static void advance(hd_catch_up *catch_up, const hd_message *msg)
{
    memcpy(catch_up->next_text, msg->id, msg->id_len + 1);
    catch_up->next = (hd_cursor){
        .present = true,
        .seq = msg->seq,
        .text = catch_up->next_text,
        .text_len = msg->id_len,
    };
}

/*
 * Queues the batch until the connection is half full (the rest is read
 * again next time, from the last message sent). Returns whether all of it
 * was sent.
 */
static bool send_messages(hd_catch_up *catch_up, const hd_history_result *result)
{
    uint64_t half = hd_conn_config(catch_up->conn)->limits.max_outbound_bytes / 2;
    for (size_t i = 0; i < result->count; i++) {
        hd_message *msg = result->messages[i];
        if (!catch_up->ops->send_message(catch_up->ctx, msg))
            return false;
        hd_subscriber_mark_seen(catch_up->subscriber, msg);
        advance(catch_up, msg);
        if (hd_conn_queued_bytes(catch_up->conn) >= half)
            return i + 1 == result->count;
    }
    return true;
}

/*
 * What the client saw (its cursor, now known valid) is never delivered
 * again, also when it reaches this node only after the subscription (an id
 * issued elsewhere) and a read answered at once (from the node's own
 * history) left it queued for live delivery.
 */
static void skip_seen(hd_catch_up *catch_up)
{
    uint32_t epoch;
    uint64_t seq;
    const hd_cursor *c = &catch_up->next;
    if (c->earliest || !hd_id_parse(c->text, c->text_len, &epoch, &seq))
        return;
    for (size_t i = 0; i < catch_up->topic_count; i++)
        hd_subscriber_move_seen(catch_up->subscriber, catch_up->topics[i], catch_up->topic_lens[i],
                                epoch, seq, true);
}

/*
 * The engine's first answer: the subscription is in place (its cut is the
 * cluster's, SPEC §5), so the cursor is checked against it and the
 * transport acknowledges. Without a cursor the catch-up goes on from the
 * cut only if live messages past it were held back meanwhile.
 */
static bool start(hd_catch_up *catch_up, const hd_history_result *result)
{
    catch_up->started = true;
    const hd_catch_up_ops *ops = catch_up->ops;
    void *ctx = catch_up->ctx;
    hd_cursor *c = &catch_up->next;
    if (hd_cursor_beyond(c, result->epoch, result->cut)) {
        hd_catch_up_free(catch_up->owner);
        ops->started(ctx, false);
        return false;
    }
    ops->started(ctx, true);
    if (c->present) {
        skip_seen(catch_up);
        return true;
    }
    c->present = true;
    c->seq = result->cut;
    c->text_len = hd_id_format(result->epoch, result->cut, catch_up->next_text);
    if (result->cut >= catch_up->skipped_upto) {
        hd_catch_up_free(catch_up->owner);
        return false;
    }
    read_batch(catch_up);
    return false;
}

static void batch_on_read(void *ctx, const hd_history_result *result)
{
    hd_catch_up *catch_up = ctx;
    catch_up->read = NULL;
    if (result->status != HD_HUB_OK) {
        const hd_catch_up_ops *ops = catch_up->ops;
        void *session = catch_up->ctx;
        bool hole = catch_up->started || catch_up->skipped_kept;
        hd_catch_up_free(catch_up->owner);
        ops->failed(session, hole);
        return;
    }
    if (!catch_up->started && !start(catch_up, result))
        return;
    for (size_t i = 0; i < result->gap_count; i++)
        send_gap(catch_up, &result->gaps[i]);
    if (!send_messages(catch_up, result) || result->more)
        return; /* more once the connection drains */
    if (result->cut < catch_up->skipped_upto) {
        /* Overtaken by live messages it skipped (see above): read on from here. */
        read_batch(catch_up);
        return;
    }
    hd_catch_up_free(catch_up->owner);
}

static void read_batch(hd_catch_up *catch_up)
{
    hd_history_query query = {
        .topics = (const char *const *)catch_up->topics,
        .topic_lens = catch_up->topic_lens,
        .topic_count = catch_up->topic_count,
        .cursor = catch_up->next,
        .limit = BATCH_MESSAGES,
        .may_lag = true, /* live delivery follows */
    };
    hd_engine_request *read =
        hd_engine_read(hd_conn_engine(catch_up->conn), &query, batch_on_read, catch_up);
    if (read != NULL) /* else it was read already, and catch_up may be gone */
        catch_up->read = read;
}

void hd_catch_up_start(hd_catch_up **owner, hd_conn *conn, hd_subscriber *subscriber,
                       const hd_catch_up_ops *ops, void *ctx, char *const *topics,
                       const size_t *topic_lens, const bool *fresh, size_t topic_count,
                       const hd_cursor *cursor)
{
    /*
     * An engine that cannot confirm now (its store unreachable) accepts at
     * once: nothing is published meanwhile, and a cursor cannot be checked.
     */
    hd_engine *engine = hd_conn_engine(conn);
    bool at_once =
        hd_engine_subscribes_at_once(engine) || hd_engine_get_state(engine) != HD_ENGINE_UP;
    if (at_once)
        ops->started(ctx, true);
    if (!cursor->present && at_once)
        return;
    hd_catch_up *catch_up = hd_calloc(1, sizeof(*catch_up));
    catch_up->started = at_once;
    catch_up->owner = owner;
    catch_up->conn = conn;
    catch_up->subscriber = subscriber;
    catch_up->ops = ops;
    catch_up->ctx = ctx;
    catch_up->topics = hd_calloc(topic_count, sizeof(*catch_up->topics));
    catch_up->topic_lens = hd_calloc(topic_count, sizeof(*catch_up->topic_lens));
    catch_up->gap_reported = hd_calloc(topic_count, sizeof(*catch_up->gap_reported));
    catch_up->fresh = hd_calloc(topic_count, sizeof(*catch_up->fresh));
    catch_up->topic_count = topic_count;
    for (size_t i = 0; i < topic_count; i++) {
        catch_up->topics[i] = hd_strndup(topics[i], topic_lens[i]);
        catch_up->topic_lens[i] = topic_lens[i];
        catch_up->fresh[i] = fresh != NULL && fresh[i];
    }
    /* A cursor is an id or "earliest": it fits. */
    size_t len = cursor->text_len < HD_ID_MAX ? cursor->text_len : HD_ID_MAX - 1;
    memcpy(catch_up->next_text, cursor->text, len);
    catch_up->next = *cursor;
    catch_up->next.text = catch_up->next_text;
    catch_up->next.text_len = len;
    *owner = catch_up;
    read_batch(catch_up);
}

void hd_catch_up_continue(hd_catch_up **catch_up)
{
    hd_catch_up *c = *catch_up;
    if (c != NULL && c->read == NULL)
        read_batch(c);
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
        c->fresh[i] = c->fresh[last];
        break;
    }
    if (c->topic_count == 0 && c->started)
        hd_catch_up_free(catch_up);
}

void hd_catch_up_keep_topic(hd_catch_up *catch_up, const char *topic, size_t topic_len)
{
    if (catch_up == NULL)
        return;
    for (size_t i = 0; i < catch_up->topic_count; i++) {
        if (catch_up->topic_lens[i] == topic_len &&
            memcmp(catch_up->topics[i], topic, topic_len) == 0)
            catch_up->fresh[i] = false;
    }
}

bool hd_catch_up_holds(hd_catch_up *catch_up, const hd_message *msg)
{
    if (catch_up == NULL)
        return false;
    for (size_t i = 0; i < catch_up->topic_count; i++) {
        if (catch_up->topic_lens[i] == msg->topic_len &&
            memcmp(catch_up->topics[i], msg->topic, msg->topic_len) == 0) {
            if (msg->seq > catch_up->skipped_upto)
                catch_up->skipped_upto = msg->seq;
            catch_up->skipped_kept |= !catch_up->fresh[i];
            return true;
        }
    }
    return false;
}

void hd_catch_up_free(hd_catch_up **catch_up)
{
    hd_catch_up *c = *catch_up;
    if (c == NULL)
        return;
    hd_engine_cancel(hd_conn_engine(c->conn), c->read);
    for (size_t i = 0; i < c->topic_count; i++)
        free(c->topics[i]);
    free(c->topics);
    free(c->topic_lens);
    free(c->gap_reported);
    free(c->fresh);
    free(c);
    *catch_up = NULL;
}
