/*
 * Each topic's history: a bounded ring in seq order, evicted by the topic's
 * limits, the hub-wide byte budget and TTL, and read after a cursor across
 * topics.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "hub/hub_internal.h"

#define MIN_RING 4

static hd_message *history_at(const hd_topic *t, size_t i)
{
    return t->ring[(t->ring_head + i) & (t->ring_cap - 1)];
}

static void history_drop_oldest(hd_hub *hub, hd_topic *t)
{
    hd_message *msg = history_at(t, 0);
    t->ring_head = (t->ring_head + 1) & (t->ring_cap - 1);
    t->ring_len--;
    t->history_bytes -= hd_message_cost(msg);
    hub->history_bytes -= hd_message_cost(msg);
    hub->history_messages--;
    hub->stats.history_evicted++;
    hd_list_unlink(&msg->history_node);
    t->lost_upto = msg->seq; /* the oldest goes first, so this only grows */
    hd_message_release(msg);
}

/* Unrolls the ring into a buffer twice as large, oldest first. */
static void history_grow(hd_topic *t)
{
    size_t cap = t->ring_cap ? t->ring_cap * 2 : MIN_RING;
    hd_message **ring = hd_alloc(cap * sizeof(*ring));
    for (size_t i = 0; i < t->ring_len; i++)
        ring[i] = history_at(t, i);
    free(t->ring);
    t->ring = ring;
    t->ring_cap = cap;
    t->ring_head = 0;
}

/*
 * Evicting everything makes room for any message, so one larger than
 * history.max_bytes is kept alone, and limits of 0 behave like 1.
 */
void hd_history_push(hd_hub *hub, hd_topic *t, hd_message *msg)
{
    size_t cost = hd_message_cost(msg);
    while (t->ring_len > 0 && (t->ring_len >= hub->options.history_max_messages ||
                               t->history_bytes + cost > hub->options.history_max_bytes))
        history_drop_oldest(hub, t);
    if (t->ring_len == t->ring_cap)
        history_grow(t);
    t->ring[(t->ring_head + t->ring_len) & (t->ring_cap - 1)] = msg;
    t->ring_len++;
    t->history_bytes += cost;
    hub->history_bytes += cost;
    hub->history_messages++;
    /*
     * Seq order: at the tail, except for a message a cluster's engine
     * fetched late (a pub/sub message it lost), which goes a few places back.
     */
    hd_list *after = hub->history_order.prev;
    while (after != &hub->history_order &&
           hd_container_of(after, hd_message, history_node)->seq > msg->seq)
        after = after->prev;
    hd_list_insert_tail(after->next, &msg->history_node);
    t->last_seq = msg->seq;
}

/* The index of the first held message with a seq greater than seq. */
static size_t history_first_after(const hd_topic *t, uint64_t seq)
{
    size_t lo = 0, hi = t->ring_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (history_at(t, mid)->seq <= seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* A topic whose history just became empty gives back its ring, and goes if unused. */
static void history_emptied(hd_hub *hub, hd_topic *t)
{
    free(t->ring);
    t->ring = NULL;
    t->ring_cap = 0;
    t->ring_head = 0;
    hd_topic_free_if_unused(hub, t);
}

/* Drops the oldest message of the whole hub (the head of history_order). */
static void history_drop_hub_oldest(hd_hub *hub)
{
    hd_message *msg = hd_container_of(hub->history_order.next, hd_message, history_node);
    hd_topic *t = hd_topic_find(hub, msg->topic, msg->topic_len);
    /* Both orders are seq order, so the hub's oldest is its topic's oldest. */
    assert(t != NULL && history_at(t, 0) == msg);
    history_drop_oldest(hub, t);
    if (t->ring_len == 0)
        history_emptied(hub, t);
}

/* Oldest first; like a topic's own limit, the budget makes room for any one message. */
void hd_history_enforce_total(hd_hub *hub, const hd_message *keep)
{
    uint64_t budget = hub->options.history_max_total_bytes;
    while (budget != 0 && hub->history_bytes > budget &&
           hub->history_order.next != &keep->history_node)
        history_drop_hub_oldest(hub);
}

/*
 * Expires from the hub's oldest end only: messages are in seq order and
 * publish times follow it unless the clock steps back, in which case a
 * message may outlive its TTL until the older ones before it expire. The
 * walk stops at the first message young enough, so a sweep costs what it
 * expires, not the number of topics.
 */
void hd_hub_expire(hd_hub *hub, int64_t now_ms)
{
    if (hub->options.history_ttl_s == 0)
        return;
    int64_t cutoff = now_ms - (int64_t)hub->options.history_ttl_s * 1000;
    hub_lock(hub);
    while (!hd_list_empty(&hub->history_order)) {
        hd_message *oldest = hd_container_of(hub->history_order.next, hd_message, history_node);
        if (oldest->time_ms > cutoff)
            break;
        history_drop_hub_oldest(hub);
    }
    hub_unlock(hub);
}

void hd_history_clear(hd_hub *hub, hd_topic *t)
{
    uint64_t evicted = hub->stats.history_evicted;
    while (t->ring_len > 0)
        history_drop_oldest(hub, t);
    hub->stats.history_evicted = evicted;
    free(t->ring);
    t->ring = NULL;
    t->ring_cap = 0;
    t->ring_head = 0;
    t->lost_upto = 0;
    t->last_seq = 0;
    t->cover_from = HD_HUB_UNCOVERED;
}

void hd_history_free(hd_topic *t)
{
    for (size_t i = 0; i < t->ring_len; i++) {
        hd_message *msg = history_at(t, i);
        hd_list_unlink(&msg->history_node);
        hd_message_release(msg);
    }
    free(t->ring);
}

/* ---------------------------------------------------------------- reading */

static bool name_listed_before(const char *const *topics, const size_t *topic_lens, size_t i)
{
    for (size_t j = 0; j < i; j++) {
        if (topic_lens[j] == topic_lens[i] && memcmp(topics[j], topics[i], topic_lens[i]) == 0)
            return true;
    }
    return false;
}

/* A topic's position in a merged read. */
typedef struct history_reader {
    const hd_topic *topic;
    size_t pos;
} history_reader;

static bool readers_remaining(const history_reader *readers, size_t count)
{
    for (size_t r = 0; r < count; r++) {
        if (readers[r].pos < readers[r].topic->ring_len)
            return true;
    }
    return false;
}

/* One gap per topic whose lost range the cursor reaches into; readers for those holding some. */
static size_t start_readers(const hd_hub *hub, const hd_history_query *q,
                            const hd_history_visitor *visitor, void *ctx, history_reader *readers)
{
    const hd_cursor *cursor = &q->cursor;
    size_t reader_count = 0;
    for (size_t i = 0; i < q->topic_count; i++) {
        if (name_listed_before(q->topics, q->topic_lens, i))
            continue;
        const hd_topic *t = hd_topic_find(hub, q->topics[i], q->topic_lens[i]);
        /* An unknown topic is one that would be created now: it inherits forgotten_upto. */
        uint64_t lost_upto = t ? t->lost_upto : hub->forgotten_upto;
        if (!cursor->earliest && (cursor->foreign || cursor->seq < lost_upto)) {
            hd_gap gap = {
                .topic = q->topics[i],
                .topic_len = q->topic_lens[i],
                .from = cursor->text,
                .from_len = cursor->text_len,
                .to_seq = lost_upto,
            };
            gap.to_len = hd_id_format(hub->epoch, lost_upto, gap.to);
            visitor->on_gap(ctx, &gap);
        }
        if (t != NULL && t->ring_len > 0)
            readers[reader_count++] = (history_reader){
                .topic = t,
                .pos = cursor->foreign ? 0 : history_first_after(t, cursor->seq),
            };
    }
    return reader_count;
}

static size_t read_history_locked(const hd_hub *hub, const hd_history_query *q,
                                  const hd_history_visitor *visitor, void *ctx, bool *more)
{
    *more = false;
    if (!q->cursor.present || q->topic_count == 0)
        return 0;
    history_reader *readers = hd_alloc(q->topic_count * sizeof(*readers));
    size_t reader_count = start_readers(hub, q, visitor, ctx, readers);

    /* A k-way merge by min-scan: there are at most a few dozen topics. */
    size_t visited = 0;
    for (;;) {
        history_reader *next = NULL;
        hd_message *next_msg = NULL;
        for (size_t r = 0; r < reader_count; r++) {
            if (readers[r].pos == readers[r].topic->ring_len)
                continue;
            hd_message *m = history_at(readers[r].topic, readers[r].pos);
            if (next_msg == NULL || m->seq < next_msg->seq) {
                next = &readers[r];
                next_msg = m;
            }
        }
        if (next == NULL)
            break;
        if (q->limit != 0 && visited == q->limit) {
            *more = true;
            break;
        }
        next->pos++;
        visited++;
        if (!visitor->on_message(ctx, next_msg)) {
            *more = readers_remaining(readers, reader_count);
            break;
        }
    }
    free(readers);
    return visited;
}

size_t hd_hub_read_history(hd_hub *hub, const hd_history_query *query,
                           const hd_history_visitor *visitor, void *ctx, bool *more, uint64_t *cut)
{
    bool more_held;
    hub_lock(hub);
    size_t visited = read_history_locked(hub, query, visitor, ctx, &more_held);
    if (cut != NULL)
        *cut = hub->seq;
    hub_unlock(hub);
    if (more != NULL)
        *more = more_held;
    return visited;
}

/*
 * Whether the local history answers q exactly as the store would have at
 * the node's live position (docs/api.md, "Reads"): every topic covered
 * (hd_hub_cover) from at most the cursor, so every message after it up to
 * live_seq is held and no gap is owed; live_seq is the hub's seq, so no id
 * the node knows of is still on its way (a subscription made before starts
 * no later than it); and none of what would be read has expired. *seq gets
 * the cursor's seq (0 for "earliest" or none).
 */
static bool covered_locked(const hd_hub *hub, const hd_history_query *q, int64_t now_ms,
                           uint64_t *seq)
{
    *seq = 0;
    if (!q->may_lag || hub->live_seq != hub->seq)
        return false;
    uint32_t epoch;
    if (q->cursor.present && !q->cursor.earliest &&
        (!hd_id_parse(q->cursor.text, q->cursor.text_len, &epoch, seq) || epoch != hub->epoch ||
         *seq > hub->live_seq))
        return false;
    int64_t expired_at = hub->options.history_ttl_s
                             ? now_ms - (int64_t)hub->options.history_ttl_s * 1000
                             : INT64_MIN;
    for (size_t i = 0; i < q->topic_count; i++) {
        const hd_topic *t = hd_topic_find(hub, q->topics[i], q->topic_lens[i]);
        if (t == NULL || t->cover_from == HD_HUB_UNCOVERED)
            return false;
        if (!q->cursor.present)
            continue;
        if (*seq < t->cover_from || *seq < t->lost_upto)
            return false;
        for (size_t k = history_first_after(t, *seq); k < t->ring_len; k++) {
            if (history_at(t, k)->time_ms <= expired_at)
                return false;
        }
    }
    return true;
}

bool hd_hub_read_covered(hd_hub *hub, const hd_history_query *query,
                         const hd_history_visitor *visitor, void *ctx, int64_t now_ms, bool *more,
                         uint32_t *epoch, uint64_t *cut)
{
    hd_history_query local = *query;
    hub_lock(hub);
    bool covered = covered_locked(hub, query, now_ms, &local.cursor.seq);
    if (covered) {
        local.cursor.foreign = false;
        read_history_locked(hub, &local, visitor, ctx, more);
        *epoch = hub->epoch;
        *cut = hub->live_seq;
    }
    hub_unlock(hub);
    return covered;
}

void hd_gap_append_json_fields(const hd_gap *gap, hd_strbuf *sb)
{
    hd_strbuf_append_str(sb, "\"topic\":");
    hd_strbuf_append_json_string(sb, gap->topic, gap->topic_len);
    hd_strbuf_append_str(sb, ",\"from\":");
    hd_strbuf_append_json_string(sb, gap->from, gap->from_len);
    hd_strbuf_append_str(sb, ",\"to\":");
    hd_strbuf_append_json_string(sb, gap->to, gap->to_len);
}
