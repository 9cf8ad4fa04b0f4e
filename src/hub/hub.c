#include "herald/hub.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <pthread.h>

#include "herald/alloc.h"
#include "herald/log.h"
#include "herald/mailbox.h"
#include "herald/worker.h"

/*
 * A topic: its subscribers and its history. The name is stored inline, so a
 * topic is one allocation plus its history ring.
 *
 * The history is a ring of message pointers, oldest at ring[ring_head],
 * ordered by seq. The ring grows by doubling up to history.max_messages and
 * is freed when TTL expiry empties it, so idle topics cost no history slots.
 */
struct hd_topic {
    hd_topic *bucket_next; /* chain in the hub's hash table */
    uint64_t hash;

    hd_list *subscribers; /* per worker, of hd_subscription.node; each only walked by its worker */
    size_t subscriber_count;
    size_t subscribers_by_transport[HD_TRANSPORT_COUNT];

    hd_message **ring;
    size_t ring_cap; /* 0 or a power of two */
    size_t ring_head;
    size_t ring_len;
    uint64_t history_bytes; /* sum of hd_message_cost over the ring */

    uint64_t lost_upto; /* seq of the newest message of this topic evicted or expired */
    uint64_t last_seq;  /* seq of the newest message ever published here, 0 if none */

    size_t name_len;
    char name[];
};

/*
 * Every field is guarded by lock, except what each worker owns alone: its
 * subscribers' subscription arrays and their seen_seq, which only its thread
 * touches (it walks its subscriber lists without the lock while delivering,
 * which is safe because only it adds to or removes from them).
 */
struct hd_hub {
    pthread_mutex_t lock;
    unsigned workers;
    /*
     * One per worker: the messages its subscribers are owed, in seq order,
     * one reference each, until its thread delivers them. Guarded by lock.
     */
    hd_mailbox *inboxes;
    hd_hub_options options;
    uint32_t epoch;
    uint64_t seq; /* the last seq assigned */
    /*
     * The newest lost seq of any topic that was freed. A topic created later
     * starts with lost_upto = forgotten_upto: it cannot know whether the
     * freed topic was one of its earlier incarnations, so it assumes so (a
     * gap too many, never one too few; see docs/api.md).
     */
    uint64_t forgotten_upto;

    /*
     * Topics by name: a chained hash table with a power-of-two bucket count,
     * doubled when the load passes 1 and halved when it falls under 1/4.
     * Topic names come from clients, so the hash is seeded per hub.
     */
    uint64_t hash_seed;
    hd_topic **buckets;
    size_t bucket_count;
    size_t topic_count;
    size_t subscription_count;

    /*
     * Every held message of every topic, oldest first (seq order), with their
     * total cost: the hub-wide budget evicts from its head, and TTL expiry
     * stops at the first message still young enough.
     */
    hd_list history_order;
    uint64_t history_bytes;
    size_t history_messages;

    hd_hub_stats stats; /* the counters; gauges are filled in by hd_hub_get_stats */
};

/* The lock is not part of the hub's logical state: const readers take it too. */
static void hub_lock(const hd_hub *hub)
{
    pthread_mutex_lock((pthread_mutex_t *)&hub->lock);
}

static void hub_unlock(const hd_hub *hub)
{
    pthread_mutex_unlock((pthread_mutex_t *)&hub->lock);
}

#define MIN_BUCKETS 16
#define MIN_RING 4

/* ---------------------------------------------------------------- ids */

static size_t format_id(uint32_t epoch, uint64_t seq, char out[HD_ID_MAX])
{
    int n = snprintf(out, HD_ID_MAX, "%08" PRIx32 "-%" PRIu64, epoch, seq);
    assert(n > 0 && n < HD_ID_MAX);
    return (size_t)n;
}

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
    if (len < 1 || len > 200)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!is_ascii_alnum(c) && c != '.' && c != '_' && c != '~' && c != ':' && c != '/' &&
            c != '@' && c != '-')
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

static uint64_t hash_name(const hd_hub *hub, const char *name, size_t len)
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

static hd_topic *find_topic(const hd_hub *hub, const char *name, size_t len)
{
    uint64_t hash = hash_name(hub, name, len);
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
    *found = find_topic(hub, name, len);
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
    t->hash = hash_name(hub, name, len);
    t->subscribers = hd_calloc(hub->workers, sizeof(*t->subscribers));
    for (unsigned w = 0; w < hub->workers; w++)
        hd_list_init(&t->subscribers[w]);
    t->lost_upto = hub->forgotten_upto;

    if (hub->topic_count >= hub->bucket_count)
        resize_table(hub, hub->bucket_count * 2);
    hd_topic **bucket = &hub->buckets[t->hash & (hub->bucket_count - 1)];
    t->bucket_next = *bucket;
    *bucket = t;
    hub->topic_count++;
    return t;
}

static hd_message *history_at(const hd_topic *t, size_t i);

/* Drops the topic's history and frees it; the caller has unlinked it from the table. */
static void topic_destroy(hd_topic *t)
{
    assert(t->subscriber_count == 0);
    free(t->subscribers);
    for (size_t i = 0; i < t->ring_len; i++) {
        hd_message *msg = history_at(t, i);
        hd_list_unlink(&msg->history_node);
        hd_message_release(msg);
    }
    free(t->ring);
    free(t);
}

/* Called whenever a topic may have lost its last subscriber or message. */
static void topic_free_if_unused(hd_hub *hub, hd_topic *t)
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

/* ---------------------------------------------------------------- history */

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
 * Appends msg (taking over its reference), first evicting the oldest
 * messages until it fits the limits. Evicting everything makes room for any
 * message, so one larger than history.max_bytes is kept alone, and limits of
 * 0 behave like 1.
 */
static void history_push(hd_hub *hub, hd_topic *t, hd_message *msg)
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
    hd_list_insert_tail(&hub->history_order, &msg->history_node);
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
    topic_free_if_unused(hub, t);
}

/* Drops the oldest message of the whole hub (the head of history_order). */
static void history_drop_hub_oldest(hd_hub *hub)
{
    hd_message *msg = hd_container_of(hub->history_order.next, hd_message, history_node);
    hd_topic *t = find_topic(hub, msg->topic, msg->topic_len);
    /* Both orders are seq order, so the hub's oldest is its topic's oldest. */
    assert(t != NULL && history_at(t, 0) == msg);
    history_drop_oldest(hub, t);
    if (t->ring_len == 0)
        history_emptied(hub, t);
}

/*
 * Keeps the hub within history_max_total_bytes, oldest first, but never
 * drops keep (the message just published: like a topic's own limit, the
 * budget makes room for any one message).
 */
static void history_enforce_total(hd_hub *hub, const hd_message *keep)
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
    pthread_mutex_destroy(&hub->lock);
    free(hub);
}

uint32_t hd_hub_epoch(const hd_hub *hub)
{
    return hub->epoch;
}

size_t hd_hub_last_id(const hd_hub *hub, char *out)
{
    hub_lock(hub);
    uint64_t seq = hub->seq;
    hub_unlock(hub);
    return format_id(hub->epoch, seq, out);
}

size_t hd_hub_topic_count(const hd_hub *hub)
{
    hub_lock(hub);
    size_t count = hub->topic_count;
    hub_unlock(hub);
    return count;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* uppercase too: herald never issues it, so it is not an id */
}

hd_hub_status hd_hub_parse_cursor(const hd_hub *hub, const char *text, size_t len, hd_cursor *out)
{
    static const char earliest[] = "earliest";
    *out = (hd_cursor){.text = text, .text_len = len};
    if (len == 0)
        return HD_HUB_OK;
    if (len == sizeof(earliest) - 1 && memcmp(text, earliest, len) == 0) {
        out->present = true;
        out->earliest = true;
        return HD_HUB_OK;
    }
    if (len < 10 || text[8] != '-')
        return HD_HUB_BAD_CURSOR;

    uint32_t epoch = 0;
    for (size_t i = 0; i < 8; i++) {
        int d = hex_digit(text[i]);
        if (d < 0)
            return HD_HUB_BAD_CURSOR;
        epoch = epoch << 4 | (uint32_t)d;
    }

    const char *digits = text + 9;
    size_t n = len - 9;
    if (n > 1 && digits[0] == '0')
        return HD_HUB_BAD_CURSOR;
    uint64_t seq = 0;
    for (size_t i = 0; i < n; i++) {
        if (digits[i] < '0' || digits[i] > '9')
            return HD_HUB_BAD_CURSOR;
        unsigned d = (unsigned)(digits[i] - '0');
        if (seq > (UINT64_MAX - d) / 10)
            return HD_HUB_BAD_CURSOR;
        seq = seq * 10 + d;
    }

    out->present = true;
    out->foreign = epoch != hub->epoch;
    out->seq = seq;
    if (out->foreign)
        return HD_HUB_OK;
    /*
     * A seq beyond the newest one assigned was never issued: a poll would
     * hand it back as its cursor forever and never see a message. The seq
     * only grows and is assigned under the lock, so any id a client has seen,
     * from whichever worker, is at most the seq read here.
     */
    hub_lock(hub);
    bool issued = seq <= hub->seq;
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
    hd_topic *t = find_topic(hub, item->topic, item->topic_len);
    if (t == NULL)
        t = topic_create(hub, item->topic, item->topic_len);
    hd_message *msg = hd_message_new(item->topic, item->topic_len, item->event, item->event_len,
                                     item->data, item->data_len, ++hub->seq, hub->epoch, now_ms);
    history_push(hub, t, msg);
    history_enforce_total(hub, msg);
    hub->stats.messages_published++;
    if (subscribers != NULL)
        *subscribers = t->subscriber_count;
    if (out != NULL)
        *out = hd_message_retain(msg);
    for (unsigned w = 0; w < hub->workers; w++) {
        if (!hd_list_empty(&t->subscribers[w]))
            hd_mailbox_post_locked(&hub->inboxes[w], hd_message_retain(msg));
    }
}

hd_hub_status hd_hub_publish(hd_hub *hub, const char *topic, size_t topic_len, const char *event,
                             size_t event_len, const char *data, size_t data_len, int64_t now_ms,
                             hd_message **out, size_t *subscribers)
{
    hd_publish_item item = {topic, topic_len, event, event_len, data, data_len};
    return hd_hub_publish_batch(hub, &item, 1, now_ms, out, subscribers, NULL);
}

hd_hub_status hd_hub_publish_batch(hd_hub *hub, const hd_publish_item *items, size_t count,
                                   int64_t now_ms, hd_message **out, size_t *subscribers,
                                   size_t *failed)
{
    hub_lock(hub);
    size_t new_topics = 0;
    for (size_t i = 0; i < count; i++) {
        hd_topic *t;
        hd_hub_status status = check_publish(hub, items[i].topic, items[i].topic_len,
                                             items[i].event, items[i].event_len, &t);
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
    for (size_t i = 0; i < count; i++)
        publish_locked(hub, &items[i], now_ms, out ? &out[i] : NULL,
                       subscribers ? &subscribers[i] : NULL);
    hub_unlock(hub);
    return HD_HUB_OK;
}

/*
 * Takes the calling worker's inbox, resolving each message's topic under the
 * lock, then delivers without it. A resolved topic cannot go away meanwhile:
 * it has subscribers of this worker, and only this worker removes them (and
 * deliver callbacks may not). A subscription that was made after a message
 * was published, or that a catch-up already served it from history, has a
 * seen_seq at or past it and skips it.
 */
/* Messages taken from an inbox at a time: the slice lives on the stack, no allocation per publish.
 */
#define SLICE_MESSAGES 256

bool hd_hub_deliver_pending(hd_hub *hub, uint64_t max_bytes)
{
    unsigned self = hd_worker_index();
    hd_mailbox *inbox = &hub->inboxes[self];
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
        hd_topic *t = find_topic(hub, messages[i]->topic, messages[i]->topic_len);
        topics[i] = t != NULL && !hd_list_empty(&t->subscribers[self]) ? t : NULL;
    }
    hub_unlock(hub);

    for (size_t i = 0; i < count; i++) {
        hd_message *msg = messages[i];
        if (topics[i] != NULL) {
            hd_list *pos, *next;
            hd_list_foreach_safe(pos, next, &topics[i]->subscribers[self])
            {
                hd_subscription *s = hd_container_of(pos, hd_subscription, node);
                if (s->seen_seq >= msg->seq)
                    continue;
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
    t->subscriber_count--;
    t->subscribers_by_transport[sub->ops->transport]--;
    hub->subscription_count--;
    size_t last = --sub->subscription_count;
    if (i != last) {
        *s = sub->subscriptions[last];
        subscription_moved(s);
    }
    topic_free_if_unused(hub, t);
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
    hd_list_insert_tail(&t->subscribers[sub->worker], &s->node);
    t->subscriber_count++;
    t->subscribers_by_transport[sub->ops->transport]++;
    hub->subscription_count++;
    return HD_HUB_OK;
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
    hd_topic *t = find_topic(hub, topic, topic_len);
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

/* ---------------------------------------------------------------- reading history */

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

static size_t read_history_locked(hd_hub *hub, const char *const *topics, const size_t *topic_lens,
                                  size_t topic_count, const hd_cursor *cursor, size_t limit,
                                  const hd_history_visitor *visitor, void *ctx, bool *more)
{
    if (more != NULL)
        *more = false;
    if (!cursor->present || topic_count == 0)
        return 0;

    history_reader *readers = hd_alloc(topic_count * sizeof(*readers));
    size_t reader_count = 0;
    for (size_t i = 0; i < topic_count; i++) {
        if (name_listed_before(topics, topic_lens, i))
            continue;
        const hd_topic *t = find_topic(hub, topics[i], topic_lens[i]);
        /* An unknown topic is one that would be created now: it inherits forgotten_upto. */
        uint64_t lost_upto = t ? t->lost_upto : hub->forgotten_upto;
        if (!cursor->earliest && (cursor->foreign || cursor->seq < lost_upto)) {
            hd_gap gap = {
                .topic = topics[i],
                .topic_len = topic_lens[i],
                .from = cursor->text,
                .from_len = cursor->text_len,
            };
            gap.to_len = format_id(hub->epoch, lost_upto, gap.to);
            visitor->on_gap(ctx, &gap);
        }
        if (t != NULL && t->ring_len > 0)
            readers[reader_count++] = (history_reader){
                .topic = t,
                .pos = cursor->foreign ? 0 : history_first_after(t, cursor->seq),
            };
    }

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
        if ((limit != 0 && visited == limit) ||
            (visitor->accepts != NULL && !visitor->accepts(ctx, next_msg))) {
            if (more != NULL)
                *more = true;
            break;
        }
        next->pos++;
        visited++;
        if (!visitor->on_message(ctx, next_msg)) {
            if (more != NULL)
                *more = readers_remaining(readers, reader_count);
            break;
        }
    }
    free(readers);
    return visited;
}

size_t hd_hub_read_history(hd_hub *hub, const char *const *topics, const size_t *topic_lens,
                           size_t topic_count, const hd_cursor *cursor, size_t limit,
                           const hd_history_visitor *visitor, void *ctx, bool *more)
{
    return hd_hub_read_history_newest(hub, topics, topic_lens, topic_count, cursor, limit, visitor,
                                      ctx, more, NULL);
}

size_t hd_hub_read_history_newest(hd_hub *hub, const char *const *topics, const size_t *topic_lens,
                                  size_t topic_count, const hd_cursor *cursor, size_t limit,
                                  const hd_history_visitor *visitor, void *ctx, bool *more,
                                  char *newest_id)
{
    hub_lock(hub);
    size_t visited = read_history_locked(hub, topics, topic_lens, topic_count, cursor, limit,
                                         visitor, ctx, more);
    if (newest_id != NULL)
        format_id(hub->epoch, hub->seq, newest_id);
    hub_unlock(hub);
    return visited;
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
        format_id(hub->epoch, t->last_seq, out->last_id);
    else
        out->last_id[0] = '\0';
}

bool hd_hub_topic_info(const hd_hub *hub, const char *topic, size_t topic_len, hd_topic_info *out)
{
    hub_lock(hub);
    const hd_topic *t = find_topic(hub, topic, topic_len);
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
                                 hd_topic_summary *out, bool *more)
{
    size_t cap = limit + 1, len = 0;
    const hd_topic **heap = hd_alloc(cap * sizeof(*heap));
    for (size_t b = 0; b < hub->bucket_count; b++) {
        for (const hd_topic *t = hub->buckets[b]; t != NULL; t = t->bucket_next) {
            if (t->name_len < prefix_len || memcmp(t->name, prefix, prefix_len) != 0)
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
    size_t count = list_topics_locked(hub, prefix, prefix_len, after, after_len, limit, out, more);
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
            if (s->seen_seq < msg->seq)
                s->seen_seq = msg->seq;
            return;
        }
    }
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
