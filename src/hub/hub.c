/*
 * The registry: topics by name, subscriptions, publishing and fan-out to
 * each worker's inbox, and introspection. Each topic's history is in
 * history.c; the structures both share are in hub_internal.h.
 */
#include "herald/hub.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "herald/alloc.h"
#include "herald/log.h"
#include "herald/worker.h"
#include "hub/hub_internal.h"

#define MIN_BUCKETS 16

static void random_bytes(void *out, size_t len)
{
    /* Like running out of memory, a broken RNG leaves nothing sensible to do. */
    if (RAND_bytes(out, (int)len) != 1) {
        hd_log_error("hub: no random bytes available from OpenSSL");
        abort();
    }
}

/* ---------------------------------------------------------------- names */

static bool is_ascii_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

bool hd_topic_name_valid(const char *name, size_t len)
{
    if (len < 1 || len > HD_TOPIC_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!is_ascii_alnum(c) && c != '.' && c != '_' && c != '~' && c != ':' && c != '/' &&
            c != '@' && c != '-')
            return false;
    }
    return true;
}

bool hd_idempotency_key_valid(const char *key, size_t len)
{
    if (len < 1 || len > HD_IDEMPOTENCY_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (key[i] < 0x20 || key[i] > 0x7e)
            return false;
    }
    return true;
}

bool hd_event_name_valid(const char *name, size_t len)
{
    if (len < 1 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!is_ascii_alnum(c) && c != '_' && c != '.' && c != ':' && c != '-')
            return false;
    }
    return true;
}

/* ---------------------------------------------------------------- topic table */

uint64_t hd_hub_hash(const hd_hub *hub, const char *name, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ hub->hash_seed; /* FNV-1a, seeded */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)name[i];
        h *= 0x100000001b3ULL;
    }
    /*
     * murmur3's finaliser: FNV's low bits depend only on the low bits of the
     * seed and the input, and the bucket index is the low bits.
     */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb93fe53a87e5ULL;
    h ^= h >> 33;
    return h;
}

hd_topic *hd_topic_find(const hd_hub *hub, const char *name, size_t len)
{
    uint64_t hash = hd_hub_hash(hub, name, len);
    for (hd_topic *t = hub->buckets[hash & (hub->bucket_count - 1)]; t; t = t->bucket_next) {
        if (t->hash == hash && t->name_len == len && memcmp(t->name, name, len) == 0)
            return t;
    }
    return NULL;
}

static void resize_table(hd_hub *hub, size_t bucket_count)
{
    hd_topic **buckets = hd_calloc(bucket_count, sizeof(*buckets));
    for (size_t i = 0; i < hub->bucket_count; i++) {
        hd_topic *next;
        for (hd_topic *t = hub->buckets[i]; t; t = next) {
            next = t->bucket_next;
            size_t b = t->hash & (bucket_count - 1);
            t->bucket_next = buckets[b];
            buckets[b] = t;
        }
    }
    free(hub->buckets);
    hub->buckets = buckets;
    hub->bucket_count = bucket_count;
}

/* Finds a topic by name; *found is NULL when it does not exist and may be created. */
static hd_hub_status find_or_check_limit(const hd_hub *hub, const char *name, size_t len,
                                         hd_topic **found)
{
    *found = hd_topic_find(hub, name, len);
    if (*found == NULL && hub->options.max_topics != 0 &&
        hub->topic_count >= hub->options.max_topics)
        return HD_HUB_TOO_MANY_TOPICS;
    return HD_HUB_OK;
}

static hd_topic *topic_create(hd_hub *hub, const char *name, size_t len)
{
    hd_topic *t = hd_calloc(1, sizeof(*t) + len);
    memcpy(t->name, name, len);
    t->name_len = len;
    t->hash = hd_hub_hash(hub, name, len);
    t->subscribers = hd_calloc(hub->workers, sizeof(*t->subscribers));
    for (unsigned w = 0; w < hub->workers; w++)
        hd_list_init(&t->subscribers[w]);
    t->lost_upto = hub->forgotten_upto;
    t->cover_from = HD_HUB_UNCOVERED;

    if (hub->topic_count >= hub->bucket_count)
        resize_table(hub, hub->bucket_count * 2);
    hd_topic **bucket = &hub->buckets[t->hash & (hub->bucket_count - 1)];
    t->bucket_next = *bucket;
    *bucket = t;
    hub->topic_count++;
    return t;
}

/* Drops the topic's history and frees it; the caller has unlinked it from the table. */
static void topic_destroy(hd_topic *t)
{
    assert(t->subscriber_count == 0);
    free(t->subscribers);
    hd_history_free(t);
    free(t);
}

/* Called whenever a topic may have lost its last subscriber or message. */
void hd_topic_free_if_unused(hd_hub *hub, hd_topic *t)
{
    if (t->subscriber_count > 0 || t->ring_len > 0)
        return;
    if (t->lost_upto > hub->forgotten_upto)
        hub->forgotten_upto = t->lost_upto;

    hd_topic **link = &hub->buckets[t->hash & (hub->bucket_count - 1)];
    while (*link != t)
        link = &(*link)->bucket_next;
    *link = t->bucket_next;
    hub->topic_count--;
    topic_destroy(t);

    if (hub->bucket_count > MIN_BUCKETS && hub->topic_count < hub->bucket_count / 4)
        resize_table(hub, hub->bucket_count / 2);
}

/* ---------------------------------------------------------------- hub */

hd_hub *hd_hub_new(const hd_hub_options *options)
{
    hd_hub *hub = hd_calloc(1, sizeof(*hub));
    pthread_mutex_init(&hub->lock, NULL);
    hub->workers = hd_worker_count();
    hub->inboxes = hd_calloc(hub->workers, sizeof(*hub->inboxes));
    for (unsigned w = 0; w < hub->workers; w++)
        hd_mailbox_init(&hub->inboxes[w], &hub->lock);
    hub->options = *options;
    hub->epoch = options->epoch;
    while (hub->epoch == 0)
        random_bytes(&hub->epoch, sizeof(hub->epoch));
    random_bytes(&hub->hash_seed, sizeof(hub->hash_seed));
    hub->bucket_count = MIN_BUCKETS;
    hub->buckets = hd_calloc(hub->bucket_count, sizeof(*hub->buckets));
    hd_list_init(&hub->history_order);
    hd_list_init(&hub->idem_order);
    return hub;
}

void hd_hub_free(hd_hub *hub)
{
    if (hub == NULL)
        return;
    for (size_t i = 0; i < hub->bucket_count; i++) {
        hd_topic *next;
        for (hd_topic *t = hub->buckets[i]; t; t = next) {
            next = t->bucket_next;
            topic_destroy(t);
        }
    }
    for (unsigned w = 0; w < hub->workers; w++) {
        size_t count;
        void *const *queued = hd_mailbox_peek_locked(&hub->inboxes[w], &count);
        for (size_t i = 0; i < count; i++)
            hd_message_release(queued[i]);
        hd_mailbox_destroy(&hub->inboxes[w]);
    }
    free(hub->inboxes);
    free(hub->buckets);
    hd_idem_free(hub);
    pthread_mutex_destroy(&hub->lock);
    free(hub);
}

uint32_t hd_hub_epoch(const hd_hub *hub)
{
    return __atomic_load_n(&hub->epoch, __ATOMIC_RELAXED);
}

bool hd_hub_epoch_known(const hd_hub *hub)
{
    return !hub->options.cluster || __atomic_load_n(&hub->store_reached, __ATOMIC_RELAXED);
}

size_t hd_hub_newest_id(const hd_hub *hub, char *out)
{
    hub_lock(hub);
    uint64_t seq = hub->seq;
    uint32_t epoch = hub->epoch;
    hub_unlock(hub);
    return hd_id_format(epoch, seq, out);
}

hd_hub_status hd_hub_parse_cursor(const hd_hub *hub, const char *text, size_t len, hd_cursor *out)
{
    if (!hd_cursor_parse(text, len, hd_hub_epoch(hub), out))
        return HD_HUB_BAD_CURSOR;
    if (!out->present || out->earliest || out->foreign || hub->options.cluster)
        return HD_HUB_OK;
    /*
     * A seq beyond the newest one assigned was never issued: a poll would
     * hand it back as its cursor forever and never see a message. The seq
     * only grows and is assigned under the lock, so any id a client has seen,
     * from whichever worker, is at most the seq read here.
     */
    hub_lock(hub);
    bool issued = out->seq <= hub->seq;
    hub_unlock(hub);
    return issued ? HD_HUB_OK : HD_HUB_BAD_CURSOR;
}

/* Input errors (names) come before capacity errors (topic limit). */
static hd_hub_status check_publish(const hd_hub *hub, const char *topic, size_t topic_len,
                                   const char *event, size_t event_len, hd_topic **found)
{
    if (!hd_topic_name_valid(topic, topic_len))
        return HD_HUB_BAD_TOPIC;
    if (event != NULL && !hd_event_name_valid(event, event_len))
        return HD_HUB_BAD_EVENT;
    return find_or_check_limit(hub, topic, topic_len, found);
}

hd_hub_status hd_hub_check_publish(const hd_hub *hub, const char *topic, size_t topic_len,
                                   const char *event, size_t event_len)
{
    hd_topic *found;
    hub_lock(hub);
    hd_hub_status status = check_publish(hub, topic, topic_len, event, event_len, &found);
    hub_unlock(hub);
    return status;
}

void hd_hub_set_notify(hd_hub *hub, unsigned worker, void (*notify)(void *ctx), void *ctx)
{
    hd_mailbox_set_notify(&hub->inboxes[worker], notify, ctx);
}

/* Appends msg (its reference taken) to t's history and queues it for every worker subscribed. */
static void append_and_post_locked(hd_hub *hub, hd_topic *t, hd_message *msg)
{
    hd_history_push(hub, t, msg);
    hd_history_enforce_total(hub, msg);
    hub->stats.messages_published++;
    for (unsigned w = 0; w < hub->workers; w++) {
        if (!hd_list_empty(&t->subscribers[w]))
            hd_mailbox_post_locked(&hub->inboxes[w], hd_message_retain(msg));
    }
}

/*
 * Appends one checked item to history and queues it for every worker with
 * subscribers of its topic. Queued under the lock, so every inbox is in seq
 * order: per-topic order holds on every worker whoever published. Woken
 * under it too, so a worker that unregistered (shutting down) is never woken
 * afterwards.
 */
static void publish_locked(hd_hub *hub, const hd_publish_item *item, int64_t now_ms,
                           hd_message **out, size_t *subscribers)
{
    hd_topic *t = hd_topic_find(hub, item->topic, item->topic_len);
    if (t == NULL)
        t = topic_create(hub, item->topic, item->topic_len);
    hd_message *msg = hd_message_new(item->topic, item->topic_len, item->event, item->event_len,
                                     item->data, item->data_len, ++hub->seq, hub->epoch, now_ms);
    if (subscribers != NULL)
        *subscribers = t->subscriber_count;
    if (out != NULL)
        *out = hd_message_retain(msg);
    append_and_post_locked(hub, t, msg);
}

/*
 * An item whose idempotency key is held for its topic: answers the first
 * publish's id, publishes nothing. Returns false when the item is new.
 */
static bool repeat_locked(hd_hub *hub, const hd_publish_item *item, int64_t now_ms,
                          hd_message **out, size_t *subscribers)
{
    uint64_t seq;
    if (item->idempotency_key == NULL || hub->options.idempotency_ttl_s == 0 ||
        !hd_idem_find(hub, item, now_ms, &seq))
        return false;
    hd_topic *t = hd_topic_find(hub, item->topic, item->topic_len);
    if (subscribers != NULL)
        *subscribers = t != NULL ? t->subscriber_count : 0;
    if (out != NULL)
        *out =
            hd_message_new(item->topic, item->topic_len, NULL, 0, "", 0, seq, hub->epoch, now_ms);
    return true;
}

hd_hub_status hd_hub_publish_batch(hd_hub *hub, const hd_publish_item *items, size_t count,
                                   int64_t now_ms, hd_message **out, size_t *subscribers,
                                   bool *repeated, size_t *failed)
{
    hub_lock(hub);
    size_t new_topics = 0;
    for (size_t i = 0; i < count; i++) {
        hd_topic *t;
        hd_hub_status status = check_publish(hub, items[i].topic, items[i].topic_len,
                                             items[i].event, items[i].event_len, &t);
        if (status == HD_HUB_OK && items[i].idempotency_key != NULL &&
            !hd_idempotency_key_valid(items[i].idempotency_key, items[i].idempotency_key_len))
            status = HD_HUB_BAD_IDEMPOTENCY_KEY;
        /* Repeated new topics count each time: conservative, and known before anything changes. */
        new_topics += t == NULL;
        if (status == HD_HUB_OK && t == NULL && hub->options.max_topics != 0 &&
            hub->topic_count + new_topics > hub->options.max_topics)
            status = HD_HUB_TOO_MANY_TOPICS;
        if (status != HD_HUB_OK) {
            hub_unlock(hub);
            if (failed != NULL)
                *failed = i;
            return status;
        }
    }
    for (size_t i = 0; i < count; i++) {
        hd_message **out_i = out ? &out[i] : NULL;
        size_t *subscribers_i = subscribers ? &subscribers[i] : NULL;
        bool repeat = repeat_locked(hub, &items[i], now_ms, out_i, subscribers_i);
        if (repeated != NULL)
            repeated[i] = repeat;
        if (repeat)
            continue;
        publish_locked(hub, &items[i], now_ms, out_i, subscribers_i);
        if (items[i].idempotency_key != NULL && hub->options.idempotency_ttl_s != 0)
            hd_idem_record(hub, &items[i], hub->seq, now_ms);
    }
    hub_unlock(hub);
    return HD_HUB_OK;
}

/*
 * A new epoch's seqs start over, so the local history (a mirror of the
 * old epoch's) goes: its order would no longer be seq order. Topics left
 * with neither subscribers nor history are freed after the walk, which a
 * table resize would otherwise disturb.
 */
static void set_epoch_locked(hd_hub *hub, uint32_t epoch)
{
    __atomic_store_n(&hub->store_reached, true, __ATOMIC_RELAXED);
    if (epoch == hub->epoch)
        return;
    __atomic_store_n(&hub->epoch, epoch, __ATOMIC_RELAXED);
    hub->seq = 0;
    hub->live_seq = 0;
    /*
     * A marker (seq 0, no topic) tells each worker, in its inbox's order, to
     * send its subscribers a gap before the new epoch's messages.
     */
    if (hub->epoch_from_store) {
        for (unsigned w = 0; w < hub->workers; w++)
            hd_mailbox_post_locked(&hub->inboxes[w],
                                   hd_message_new("", 0, NULL, 0, "", 0, 0, epoch, 0));
    }
    hub->epoch_from_store = true;
    hub->forgotten_upto = 0;
    hd_topic **unused = hd_alloc((hub->topic_count + 1) * sizeof(*unused));
    size_t unused_count = 0;
    for (size_t b = 0; b < hub->bucket_count; b++) {
        for (hd_topic *t = hub->buckets[b]; t != NULL; t = t->bucket_next) {
            hd_history_clear(hub, t);
            if (t->subscriber_count == 0)
                unused[unused_count++] = t;
        }
    }
    for (size_t i = 0; i < unused_count; i++)
        hd_topic_free_if_unused(hub, unused[i]);
    free(unused);
}

void hd_hub_advance(hd_hub *hub, uint32_t epoch, uint64_t seq)
{
    hub_lock(hub);
    set_epoch_locked(hub, epoch);
    if (seq > hub->seq)
        hub->seq = seq;
    hub_unlock(hub);
}

/* hd_hub_ingest with the lock held; *topic is msg's topic (created if need be). */
static bool ingest_locked(hd_hub *hub, hd_message *msg, uint32_t epoch, hd_topic **topic)
{
    set_epoch_locked(hub, epoch);
    hd_topic *t = hd_topic_find(hub, msg->topic, msg->topic_len);
    /* The local history is a mirror: a topic beyond max_topics is delivered, not kept. */
    if (t == NULL)
        t = topic_create(hub, msg->topic, msg->topic_len);
    *topic = t;
    if (msg->seq <= t->last_seq) {
        hd_message_release(msg);
        return false;
    }
    if (msg->seq > hub->seq)
        hub->seq = msg->seq;
    append_and_post_locked(hub, t, msg);
    return true;
}

bool hd_hub_ingest(hd_hub *hub, hd_message *msg)
{
    uint32_t epoch;
    uint64_t seq;
    if (!hd_id_parse(msg->id, msg->id_len, &epoch, &seq)) {
        hd_message_release(msg);
        return false;
    }
    hd_topic *t;
    hub_lock(hub);
    bool taken = ingest_locked(hub, msg, epoch, &t);
    hub_unlock(hub);
    return taken;
}

static void pass_live_locked(hd_hub *hub, uint32_t epoch, uint64_t seq)
{
    if (epoch == hub->epoch && seq > hub->live_seq)
        hub->live_seq = seq;
}

bool hd_hub_ingest_live(hd_hub *hub, hd_message *msg, uint64_t cover_from)
{
    uint32_t epoch = msg->epoch;
    uint64_t seq = msg->seq;
    hd_topic *t;
    hub_lock(hub);
    bool taken = ingest_locked(hub, msg, epoch, &t);
    /* Not taken: the record lacks the message it was to be extended with. */
    t->cover_from = taken ? cover_from : HD_HUB_UNCOVERED;
    pass_live_locked(hub, epoch, seq);
    hub_unlock(hub);
    return taken;
}

void hd_hub_pass_live(hd_hub *hub, uint32_t epoch, uint64_t seq)
{
    hub_lock(hub);
    pass_live_locked(hub, epoch, seq);
    hub_unlock(hub);
}

void hd_hub_cover(hd_hub *hub, const char *topic, size_t topic_len, uint32_t epoch,
                  uint64_t cover_from)
{
    hub_lock(hub);
    hd_topic *t = hd_topic_find(hub, topic, topic_len);
    if (t != NULL)
        t->cover_from = epoch == hub->epoch ? cover_from : HD_HUB_UNCOVERED;
    hub_unlock(hub);
}

bool hd_hub_uncover_unused(hd_hub *hub, const char *topic, size_t topic_len)
{
    hub_lock(hub);
    hd_topic *t = hd_topic_find(hub, topic, topic_len);
    bool unused = t == NULL || t->subscriber_count == 0;
    if (unused && t != NULL)
        t->cover_from = HD_HUB_UNCOVERED;
    hub_unlock(hub);
    return unused;
}

void hd_hub_uncover_all(hd_hub *hub)
{
    hub_lock(hub);
    for (size_t b = 0; b < hub->bucket_count; b++) {
        for (hd_topic *t = hub->buckets[b]; t != NULL; t = t->bucket_next)
            t->cover_from = HD_HUB_UNCOVERED;
    }
    hub_unlock(hub);
}

void hd_hub_ingest_loss(hd_hub *hub, const char *topic, size_t topic_len, uint32_t epoch,
                        uint64_t lost_upto)
{
    hub_lock(hub);
    set_epoch_locked(hub, epoch);
    hd_topic *t = hd_topic_find(hub, topic, topic_len);
    for (unsigned w = 0; t != NULL && w < hub->workers; w++) {
        if (hd_list_empty(&t->subscribers[w]))
            continue;
        hd_message *marker = hd_message_new(topic, topic_len, NULL, 0, "", 0, lost_upto, epoch, 0);
        marker->lost = true;
        hd_mailbox_post_locked(&hub->inboxes[w], marker);
    }
    hub_unlock(hub);
}

/* A loss marker reached worker self: a gap for each subscription of t that saw less. */
static void announce_loss(hd_topic *t, unsigned self, const hd_message *marker)
{
    hd_list *pos, *next;
    hd_list_foreach_safe(pos, next, &t->subscribers[self])
    {
        hd_subscription *s = hd_container_of(pos, hd_subscription, node);
        if (s->seen_epoch != marker->epoch || s->seen_seq >= marker->seq)
            continue;
        char from[HD_ID_MAX];
        hd_gap gap = {.topic = t->name, .topic_len = t->name_len, .from = from};
        gap.from_len = hd_id_format(s->seen_epoch, s->seen_seq, from);
        gap.to_len = hd_id_format(marker->epoch, marker->seq, gap.to);
        s->seen_seq = marker->seq;
        if (s->subscriber->ops->gap != NULL)
            s->subscriber->ops->gap(s->subscriber, &gap);
    }
}

void hd_hub_set_worker_hook(hd_hub *hub, void (*run)(void *ctx, unsigned worker), void *ctx)
{
    hub->worker_hook = run;
    hub->worker_hook_ctx = ctx;
}

void hd_hub_wake(hd_hub *hub, unsigned worker)
{
    hub_lock(hub);
    hd_mailbox *inbox = &hub->inboxes[worker];
    if (inbox->notify != NULL)
        inbox->notify(inbox->notify_ctx);
    hub_unlock(hub);
}

/*
 * Takes the calling worker's inbox, resolving each message's topic under the
 * lock, then delivers without it. A resolved topic cannot go away meanwhile:
 * it has subscribers of this worker, and only this worker removes them (and
 * deliver callbacks may not). A subscription that was made after a message
 * was published, or that a catch-up already served it from history, has a
 * seen_seq at or past it and skips it.
 */
/*
 * The hub moved to epoch: every subscription of worker self that saw the
 * old one gets a gap from what it saw, and starts over in the new one.
 */
static void announce_epoch(hd_hub *hub, unsigned self, uint32_t epoch)
{
    hub_lock(hub);
    for (size_t b = 0; b < hub->bucket_count; b++) {
        for (hd_topic *t = hub->buckets[b]; t != NULL; t = t->bucket_next) {
            hd_list *pos, *next;
            hd_list_foreach_safe(pos, next, &t->subscribers[self])
            {
                hd_subscription *s = hd_container_of(pos, hd_subscription, node);
                if (s->seen_epoch == epoch)
                    continue;
                char from[HD_ID_MAX];
                hd_gap gap = {.topic = t->name, .topic_len = t->name_len, .from = from};
                gap.from_len = hd_id_format(s->seen_epoch, s->seen_seq, from);
                gap.to_len = hd_id_format(epoch, 0, gap.to);
                s->seen_epoch = epoch;
                s->seen_seq = 0;
                if (s->subscriber->ops->gap != NULL)
                    s->subscriber->ops->gap(s->subscriber, &gap);
            }
        }
    }
    hub_unlock(hub);
}

/* Messages taken from an inbox at a time: the slice lives on the stack, no allocation per publish.
 */
#define SLICE_MESSAGES 256

bool hd_hub_deliver_pending(hd_hub *hub, uint64_t max_bytes)
{
    unsigned self = hd_worker_index();
    hd_mailbox *inbox = &hub->inboxes[self];
    if (hub->worker_hook != NULL)
        hub->worker_hook(hub->worker_hook_ctx, self);
    hub_lock(hub);
    size_t queued, count = 0;
    void *const *pending = hd_mailbox_peek_locked(inbox, &queued);
    hd_message *messages[SLICE_MESSAGES];
    uint64_t bytes = 0;
    while (count < queued && count < SLICE_MESSAGES && (count == 0 || bytes < max_bytes)) {
        messages[count] = pending[count];
        bytes += messages[count++]->data_len;
    }
    if (count == 0) {
        hub_unlock(hub);
        return false;
    }
    hd_topic *topics[SLICE_MESSAGES];
    hd_mailbox_consume_locked(inbox, count);
    bool more = queued > count;
    for (size_t i = 0; i < count; i++) {
        hd_topic *t = messages[i]->seq == 0
                          ? NULL
                          : hd_topic_find(hub, messages[i]->topic, messages[i]->topic_len);
        topics[i] = t != NULL && !hd_list_empty(&t->subscribers[self]) ? t : NULL;
    }
    hub_unlock(hub);

    for (size_t i = 0; i < count; i++) {
        hd_message *msg = messages[i];
        if (msg->seq == 0)
            announce_epoch(hub, self, msg->epoch);
        if (topics[i] != NULL && msg->lost) {
            announce_loss(topics[i], self, msg);
        } else if (topics[i] != NULL) {
            hd_list *pos, *next;
            hd_list_foreach_safe(pos, next, &topics[i]->subscribers[self])
            {
                hd_subscription *s = hd_container_of(pos, hd_subscription, node);
                if (s->seen_epoch == msg->epoch && s->seen_seq >= msg->seq)
                    continue;
                s->seen_epoch = msg->epoch;
                s->seen_seq = msg->seq;
                s->subscriber->ops->deliver(s->subscriber, msg);
            }
        }
        hd_message_release(msg);
    }
    return more;
}

/* ---------------------------------------------------------------- subscriptions */

/*
 * A subscriber's subscriptions live in one array whose elements are linked
 * into topic lists, so moving an element (realloc, or filling a hole with
 * the last element) leaves its neighbours pointing at the old address. This
 * repairs them. The neighbours are never in the same array, because a
 * subscriber has at most one node in any topic's list, so they are valid.
 */
static void subscription_moved(hd_subscription *s)
{
    s->node.prev->next = &s->node;
    s->node.next->prev = &s->node;
}

static void subscription_remove(hd_hub *hub, hd_subscriber *sub, size_t i)
{
    hd_subscription *s = &sub->subscriptions[i];
    hd_topic *t = s->topic;
    hd_list_unlink(&s->node);
    if (--t->subscriber_count == 0 && hub->on_interest != NULL)
        hub->on_interest(hub->interest_ctx, t->name, t->name_len, false);
    t->subscribers_by_transport[sub->ops->transport]--;
    hub->subscription_count--;
    size_t last = --sub->subscription_count;
    if (i != last) {
        *s = sub->subscriptions[last];
        subscription_moved(s);
    }
    hd_topic_free_if_unused(hub, t);
}

static size_t subscription_index(const hd_subscriber *sub, const hd_topic *t)
{
    size_t i = 0;
    while (i < sub->subscription_count && sub->subscriptions[i].topic != t)
        i++;
    return i;
}

void hd_subscriber_init(hd_subscriber *sub, const hd_subscriber_ops *ops)
{
    sub->ops = ops;
    sub->worker = hd_worker_index();
    assert(sub->worker != HD_WORKER_NONE); /* only a worker delivers (herald/worker.h) */
    sub->subscriptions = NULL;
    sub->subscription_count = 0;
    sub->subscription_cap = 0;
}

static hd_hub_status subscribe_locked(hd_hub *hub, hd_subscriber *sub, const char *topic,
                                      size_t topic_len)
{
    hd_topic *t;
    hd_hub_status status = find_or_check_limit(hub, topic, topic_len, &t);
    if (status != HD_HUB_OK)
        return status;
    if (t == NULL)
        t = topic_create(hub, topic, topic_len);
    else if (subscription_index(sub, t) < sub->subscription_count)
        return HD_HUB_OK;

    if (sub->subscription_count == sub->subscription_cap) {
        /* Most subscribers have one topic: start with room for exactly one. */
        sub->subscription_cap = sub->subscription_cap ? sub->subscription_cap * 2 : 1;
        sub->subscriptions =
            hd_realloc(sub->subscriptions, sub->subscription_cap * sizeof(*sub->subscriptions));
        for (size_t i = 0; i < sub->subscription_count; i++)
            subscription_moved(&sub->subscriptions[i]);
    }
    hd_subscription *s = &sub->subscriptions[sub->subscription_count++];
    s->topic = t;
    s->subscriber = sub;
    /* Live delivery starts after what is published now; a catch-up serves the rest. */
    s->seen_seq = hub->seq;
    s->seen_epoch = hub->epoch;
    hd_list_insert_tail(&t->subscribers[sub->worker], &s->node);
    if (++t->subscriber_count == 1 && hub->on_interest != NULL)
        hub->on_interest(hub->interest_ctx, t->name, t->name_len, true);
    t->subscribers_by_transport[sub->ops->transport]++;
    hub->subscription_count++;
    return HD_HUB_OK;
}

void hd_hub_position_locked(const hd_hub *hub, uint32_t *epoch, uint64_t *seq)
{
    *epoch = hub->epoch;
    *seq = hub->seq;
}

void hd_hub_set_interest(hd_hub *hub,
                         void (*on_interest)(void *ctx, const char *topic, size_t topic_len,
                                             bool interested),
                         void *ctx)
{
    hub->on_interest = on_interest;
    hub->interest_ctx = ctx;
}

hd_hub_status hd_hub_subscribe(hd_hub *hub, hd_subscriber *sub, const char *topic, size_t topic_len)
{
    if (!hd_topic_name_valid(topic, topic_len))
        return HD_HUB_BAD_TOPIC;
    hub_lock(hub);
    hd_hub_status status = subscribe_locked(hub, sub, topic, topic_len);
    hub_unlock(hub);
    return status;
}

void hd_hub_unsubscribe(hd_hub *hub, hd_subscriber *sub, const char *topic, size_t topic_len)
{
    hub_lock(hub);
    hd_topic *t = hd_topic_find(hub, topic, topic_len);
    size_t i = t != NULL ? subscription_index(sub, t) : sub->subscription_count;
    if (i < sub->subscription_count)
        subscription_remove(hub, sub, i);
    hub_unlock(hub);
}

void hd_hub_unsubscribe_all(hd_hub *hub, hd_subscriber *sub)
{
    hub_lock(hub);
    /* From the end, so no element has to move. */
    while (sub->subscription_count > 0)
        subscription_remove(hub, sub, sub->subscription_count - 1);
    hub_unlock(hub);
    free(sub->subscriptions);
    sub->subscriptions = NULL;
    sub->subscription_cap = 0;
}

/* ---------------------------------------------------------------- introspection */

static void fill_topic_info(const hd_hub *hub, const hd_topic *t, hd_topic_info *out)
{
    out->subscribers = t->subscriber_count;
    memcpy(out->subscribers_by_transport, t->subscribers_by_transport,
           sizeof(out->subscribers_by_transport));
    out->history_messages = t->ring_len;
    out->history_bytes = t->history_bytes;
    if (t->last_seq != 0)
        hd_id_format(hub->epoch, t->last_seq, out->last_id);
    else
        out->last_id[0] = '\0';
}

bool hd_hub_topic_info(const hd_hub *hub, const char *topic, size_t topic_len, hd_topic_info *out)
{
    hub_lock(hub);
    const hd_topic *t = hd_topic_find(hub, topic, topic_len);
    if (t != NULL)
        fill_topic_info(hub, t, out);
    hub_unlock(hub);
    return t != NULL;
}

/* Byte order of names, a shorter name before the longer ones it starts. */
static int compare_names(const char *a, size_t a_len, const char *b, size_t b_len)
{
    int c = memcmp(a, b, a_len < b_len ? a_len : b_len);
    if (c != 0)
        return c;
    return a_len < b_len ? -1 : a_len > b_len;
}

static int compare_topics(const hd_topic *a, const hd_topic *b)
{
    return compare_names(a->name, a->name_len, b->name, b->name_len);
}

/* Restores the max-heap property (largest name at the root) below slot i. */
static void heap_sift_down(const hd_topic **heap, size_t len, size_t i)
{
    for (;;) {
        size_t largest = i, left = 2 * i + 1, right = left + 1;
        if (left < len && compare_topics(heap[left], heap[largest]) > 0)
            largest = left;
        if (right < len && compare_topics(heap[right], heap[largest]) > 0)
            largest = right;
        if (largest == i)
            return;
        const hd_topic *tmp = heap[i];
        heap[i] = heap[largest];
        heap[largest] = tmp;
        i = largest;
    }
}

static void heap_sift_up(const hd_topic **heap, size_t i)
{
    while (i > 0 && compare_topics(heap[(i - 1) / 2], heap[i]) < 0) {
        const hd_topic *tmp = heap[i];
        heap[i] = heap[(i - 1) / 2];
        heap[(i - 1) / 2] = tmp;
        i = (i - 1) / 2;
    }
}

/*
 * One pass over the table keeping the limit + 1 smallest matching names in a
 * max-heap: O(topics x log limit) time and O(limit) memory, however many
 * topics there are. The extra one tells whether there is a next page.
 */
static size_t list_topics_locked(const hd_hub *hub, const char *prefix, size_t prefix_len,
                                 const char *after, size_t after_len, size_t limit,
                                 bool subscribed_only, hd_topic_summary *out, bool *more)
{
    size_t cap = limit + 1, len = 0;
    const hd_topic **heap = hd_alloc(cap * sizeof(*heap));
    for (size_t b = 0; b < hub->bucket_count; b++) {
        for (const hd_topic *t = hub->buckets[b]; t != NULL; t = t->bucket_next) {
            if (t->name_len < prefix_len || memcmp(t->name, prefix, prefix_len) != 0)
                continue;
            if (subscribed_only && t->subscriber_count == 0)
                continue;
            if (after_len > 0 && compare_names(t->name, t->name_len, after, after_len) <= 0)
                continue;
            if (len < cap) {
                heap[len] = t;
                heap_sift_up(heap, len++);
            } else if (compare_topics(t, heap[0]) < 0) {
                heap[0] = t;
                heap_sift_down(heap, len, 0);
            }
        }
    }
    *more = len > limit;
    /* Heap-sort in place: pop the largest to the end until sorted ascending. */
    for (size_t end = len; end > 1; end--) {
        const hd_topic *top = heap[0];
        heap[0] = heap[end - 1];
        heap[end - 1] = top;
        heap_sift_down(heap, end - 1, 0);
    }
    size_t count = len < limit ? len : limit;
    for (size_t i = 0; i < count; i++) {
        memcpy(out[i].name, heap[i]->name, heap[i]->name_len);
        out[i].name_len = heap[i]->name_len;
        fill_topic_info(hub, heap[i], &out[i].info);
    }
    free(heap);
    return count;
}

size_t hd_hub_list_topics(const hd_hub *hub, const char *prefix, size_t prefix_len,
                          const char *after, size_t after_len, size_t limit, hd_topic_summary *out,
                          bool *more)
{
    hub_lock(hub);
    size_t count =
        list_topics_locked(hub, prefix, prefix_len, after, after_len, limit, false, out, more);
    hub_unlock(hub);
    return count;
}

size_t hd_hub_list_subscribed_topics(const hd_hub *hub, const char *prefix, size_t prefix_len,
                                     const char *after, size_t after_len, size_t limit,
                                     hd_topic_summary *out, bool *more)
{
    hub_lock(hub);
    size_t count =
        list_topics_locked(hub, prefix, prefix_len, after, after_len, limit, true, out, more);
    hub_unlock(hub);
    return count;
}

void hd_hub_get_stats(const hd_hub *hub, hd_hub_stats *out)
{
    hub_lock(hub);
    *out = hub->stats;
    out->topics = hub->topic_count;
    out->subscriptions = hub->subscription_count;
    out->history_messages = hub->history_messages;
    out->history_bytes = hub->history_bytes;
    hub_unlock(hub);
}

void hd_subscriber_mark_seen(hd_subscriber *sub, const hd_message *msg)
{
    for (size_t i = 0; i < sub->subscription_count; i++) {
        hd_subscription *s = &sub->subscriptions[i];
        if (s->topic->name_len == msg->topic_len &&
            memcmp(s->topic->name, msg->topic, msg->topic_len) == 0) {
            if (s->seen_epoch != msg->epoch || s->seen_seq < msg->seq) {
                s->seen_epoch = msg->epoch;
                s->seen_seq = msg->seq;
            }
            return;
        }
    }
}

void hd_subscriber_move_seen(hd_subscriber *sub, const char *topic, size_t topic_len,
                             uint32_t epoch, uint64_t seq, bool forward)
{
    for (size_t i = 0; i < sub->subscription_count; i++) {
        hd_subscription *s = &sub->subscriptions[i];
        if (s->topic->name_len != topic_len || memcmp(s->topic->name, topic, topic_len) != 0)
            continue;
        bool move = forward ? s->seen_epoch == epoch && s->seen_seq < seq
                            : s->seen_epoch != epoch || s->seen_seq > seq;
        if (move) {
            s->seen_epoch = epoch;
            s->seen_seq = seq;
        }
        return;
    }
}
