/*
 * The registry's private parts, shared by the files of src/hub: hub.c
 * (topics, subscriptions, fan-out, introspection) and history.c (each
 * topic's bounded history, its eviction and TTL, and history reads).
 * Nothing outside src/hub includes it.
 */
#ifndef HERALD_HUB_INTERNAL_H
#define HERALD_HUB_INTERNAL_H

#include <pthread.h>

#include "herald/hub.h"
#include "herald/mailbox.h"

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
    /*
     * Cluster mode: the history holds every message of the topic after
     * cover_from up to the hub's live_seq, except those up to lost_upto,
     * as the engine said (hd_hub_cover); HD_HUB_UNCOVERED: no such claim.
     * Of the hub's epoch: a new one clears it (hd_history_clear).
     */
    uint64_t cover_from;

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
    uint32_t epoch; /* read and written atomically: a cluster's engine moves it (hd_hub_advance) */
    /* Cluster mode: the epoch came from the store, so a change is announced to subscribers. */
    bool epoch_from_store;
    /* Cluster mode: the store told an epoch (even the one the hub had). Read atomically. */
    bool store_reached;
    uint64_t seq; /* the last seq assigned (cluster mode: ingested) */
    /*
     * Cluster mode: the newest seq of the store's live feed this node
     * processed (hd_hub_ingest_live, hd_hub_pass_live), in seq's epoch. It
     * trails seq while the node knows of ids it has not received yet.
     */
    uint64_t live_seq;
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

    /*
     * Idempotency keys by (topic, key) (idempotency.c): a chained hash table
     * of a fixed bucket count allocated at the first key, and every key in
     * the order recorded, which is also the order they expire in (one TTL
     * for all), so expiry and eviction take from the head.
     */
    struct hd_idem_key **idem_buckets;
    size_t idem_bucket_count;
    size_t idem_count;
    hd_list idem_order;

    /* hd_hub_set_interest's; set before the workers run, read under the lock. */
    void (*on_interest)(void *ctx, const char *topic, size_t topic_len, bool interested);
    void *interest_ctx;
    /* hd_hub_set_worker_hook's; set before the workers run. */
    void (*worker_hook)(void *ctx, unsigned worker);
    void *worker_hook_ctx;
};

/* The lock is not part of the hub's logical state: const readers take it too. */
static inline void hub_lock(const hd_hub *hub)
{
    pthread_mutex_lock((pthread_mutex_t *)&hub->lock);
}

static inline void hub_unlock(const hd_hub *hub)
{
    pthread_mutex_unlock((pthread_mutex_t *)&hub->lock);
}

/* hub.c: the hub's seeded hash of a name (hash tables of client-chosen text). */
uint64_t hd_hub_hash(const hd_hub *hub, const char *name, size_t len);
/* hub.c: the topic named so, or NULL. Lock held. */
hd_topic *hd_topic_find(const hd_hub *hub, const char *name, size_t len);
/* hub.c: frees t when it has neither subscribers nor history left. Lock held. */
void hd_topic_free_if_unused(hd_hub *hub, hd_topic *t);

/* history.c, each with the lock held. */
/* Appends msg (taking over its reference), first evicting the oldest beyond the topic's limits. */
void hd_history_push(hd_hub *hub, hd_topic *t, hd_message *msg);
/* Keeps the hub within history.max_total_bytes, never dropping keep (the one just published). */
void hd_history_enforce_total(hd_hub *hub, const hd_message *keep);
/*
 * Drops the topic's whole history and forgets its seqs, without counting
 * it as evicted: the hub moved to a new epoch, whose seqs start over.
 */
void hd_history_clear(hd_hub *hub, hd_topic *t);
/* Drops the topic's whole history, without counting it as evicted: the topic is being freed. */
void hd_history_free(hd_topic *t);

/* idempotency.c, each with the lock held but hd_idem_free. */
/*
 * Whether key is held for topic (recorded within idempotency_ttl_s, in the
 * hub's epoch): *seq is the first publish's. Forgets expired keys first.
 */
bool hd_idem_find(hd_hub *hub, const hd_publish_item *item, int64_t now_ms, uint64_t *seq);
/* Remembers item's key for its topic as published with seq, forgetting the oldest when full. */
void hd_idem_record(hd_hub *hub, const hd_publish_item *item, uint64_t seq, int64_t now_ms);
/* Frees every key (hd_hub_free). */
void hd_idem_free(hd_hub *hub);

#endif
