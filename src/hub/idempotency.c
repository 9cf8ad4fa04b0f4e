/*
 * Idempotency keys of the memory engine (SPEC §5): which (topic, key) pairs
 * were published within publish.idempotency_ttl_s, and with which seq. The
 * hub checks and records them under its lock, in the same critical section
 * as the publish (hd_hub_publish_batch).
 *
 * Memory is bounded twice: a key lives idempotency_ttl_s, and at most
 * max_idempotency_keys are held; when full, the oldest is forgotten early
 * (a publish is never refused for it), so a repeat of that key publishes
 * again (docs/api.md).
 */
#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "hub/hub_internal.h"

/* Most buckets: beyond this the chains grow instead (a huge configured cap costs no more). */
#define MAX_BUCKETS (1u << 20)

typedef struct hd_idem_key {
    struct hd_idem_key *bucket_next;
    hd_list order; /* in hub->idem_order, oldest first */
    uint64_t hash;
    int64_t expires_ms;
    uint64_t seq;
    uint32_t epoch;
    size_t topic_len;
    size_t key_len;
    char text[]; /* the topic, then the key */
} hd_idem_key;

static uint64_t hash_pair(const hd_hub *hub, const hd_publish_item *item)
{
    uint64_t topic = hd_hub_hash(hub, item->topic, item->topic_len);
    return topic * 0x9e3779b97f4a7c15ULL ^
           hd_hub_hash(hub, item->idempotency_key, item->idempotency_key_len);
}

static hd_idem_key **bucket_of(const hd_hub *hub, uint64_t hash)
{
    return &hub->idem_buckets[hash & (hub->idem_bucket_count - 1)];
}

static void forget(hd_hub *hub, hd_idem_key *k)
{
    hd_idem_key **link = bucket_of(hub, k->hash);
    while (*link != k)
        link = &(*link)->bucket_next;
    *link = k->bucket_next;
    hd_list_unlink(&k->order);
    hub->idem_count--;
    free(k);
}

static hd_idem_key *oldest(const hd_hub *hub)
{
    return hd_list_empty(&hub->idem_order)
               ? NULL
               : hd_container_of(hub->idem_order.next, hd_idem_key, order);
}

static void forget_expired(hd_hub *hub, int64_t now_ms)
{
    hd_idem_key *k;
    while ((k = oldest(hub)) != NULL && k->expires_ms <= now_ms)
        forget(hub, k);
}

/* The key held for item's pair, or NULL. */
static hd_idem_key *lookup(const hd_hub *hub, const hd_publish_item *item, uint64_t hash)
{
    for (hd_idem_key *k = *bucket_of(hub, hash); k != NULL; k = k->bucket_next) {
        if (k->hash == hash && k->topic_len == item->topic_len &&
            k->key_len == item->idempotency_key_len &&
            memcmp(k->text, item->topic, item->topic_len) == 0 &&
            memcmp(k->text + k->topic_len, item->idempotency_key, k->key_len) == 0) {
            return k;
        }
    }
    return NULL;
}

bool hd_idem_find(hd_hub *hub, const hd_publish_item *item, int64_t now_ms, uint64_t *seq)
{
    if (hub->idem_count == 0)
        return false;
    forget_expired(hub, now_ms);
    hd_idem_key *k = lookup(hub, item, hash_pair(hub, item));
    /* A key of another epoch names an id whose message is gone: the publish is new. */
    if (k == NULL || k->epoch != hub->epoch)
        return false;
    *seq = k->seq;
    return true;
}

static void allocate_buckets(hd_hub *hub)
{
    size_t want = hub->options.max_idempotency_keys / 2;
    size_t count = 16;
    while (count < want && count < MAX_BUCKETS)
        count *= 2;
    hub->idem_buckets = hd_calloc(count, sizeof(*hub->idem_buckets));
    hub->idem_bucket_count = count;
}

void hd_idem_record(hd_hub *hub, const hd_publish_item *item, uint64_t seq, int64_t now_ms)
{
    if (hub->idem_buckets == NULL)
        allocate_buckets(hub);
    size_t cap = hub->options.max_idempotency_keys > 0 ? hub->options.max_idempotency_keys : 1;
    hd_idem_key *old;
    while (hub->idem_count >= cap && (old = oldest(hub)) != NULL)
        forget(hub, old);
    /* A key of an older epoch may still be held for the pair: the new one replaces it. */
    uint64_t hash = hash_pair(hub, item);
    hd_idem_key *stale = lookup(hub, item, hash);
    if (stale != NULL)
        forget(hub, stale);
    hd_idem_key *k = hd_alloc(sizeof(*k) + item->topic_len + item->idempotency_key_len);
    k->hash = hash;
    k->expires_ms = now_ms + (int64_t)hub->options.idempotency_ttl_s * 1000;
    k->seq = seq;
    k->epoch = hub->epoch;
    k->topic_len = item->topic_len;
    k->key_len = item->idempotency_key_len;
    memcpy(k->text, item->topic, item->topic_len);
    memcpy(k->text + k->topic_len, item->idempotency_key, k->key_len);
    hd_idem_key **bucket = bucket_of(hub, hash);
    k->bucket_next = *bucket;
    *bucket = k;
    hd_list_insert_tail(&hub->idem_order, &k->order);
    hub->idem_count++;
}

void hd_idem_free(hd_hub *hub)
{
    hd_list *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &hub->idem_order)
    {
        free(hd_container_of(pos, hd_idem_key, order));
    }
    free(hub->idem_buckets);
}
