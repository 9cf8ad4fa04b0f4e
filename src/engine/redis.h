/*
 * The Redis engine (SPEC §5, ../shared/design/redis-engine.md part B):
 * nodes that share one Redis act as one hub. Ids, history and the epoch
 * live in Redis; a publish is one EVALSHA of redis_publish.lua (publishes
 * that queue while one is under way go together as the next: group
 * commit, each request with its own ids and outcome), a read one
 * of redis_read.lua, GET /topics/{t} and GET /topics one or a few of
 * redis_topics.lua (subscribers are this node's, history the cluster's;
 * refused at once while the link is down, like a publish); every node
 * delivers what any node published from its pub/sub subscription to the
 * topic's channel.
 *
 * Threading: one engine thread with its own uv loop owns the Redis link
 * (redis_link.h) and every piece of state below. Workers hand it their
 * calls through a mailbox woken by uv_async; it hands the completions back
 * through one mailbox per worker, woken with hd_hub_wake (once per worker
 * and pass of the engine's loop) and run by the worker
 * (hd_hub_set_worker_hook), so callbacks run on the calling worker's
 * thread as engine.h requires. The engine thread has no worker
 * index (HD_WORKER_NONE) and never encodes a message.
 *
 * Ordering: what this node delivers comes only from pub/sub, never from a
 * publish's reply, so it is handed to the hub (hd_hub_ingest) in the one
 * pub/sub connection's order, which is the global seq order. A topic's
 * message whose prev is newer than the last one ingested reveals a lost
 * pub/sub message: later messages wait while the missing range is read
 * from Redis. What is read back (that, what was missed while the link was
 * down, a new topic's seam) is merged with the held live messages by seq,
 * across topics, before it is handed on (redis.c, "catch-up rounds").
 *
 * Publishing while the link is not up is refused at once (unavailable); a
 * publish whose connection broke before the answer is outcome_unknown;
 * Redis's -OOM and -BUSY are unavailable. A read while the link is down
 * (or full) waits until it is up again (or has room), WAITING_MAX reads at
 * most; one Redis refuses fails (hd_history_result.status), and the read
 * script refuses a topic whose keys are of another type alone, so that a
 * catch-up round reads the others. A read the node's own history provably
 * answers (hd_hub_read_covered: the engine tells the hub which topics'
 * history has no hole, see topic_state in redis.c) completes at once, on
 * the caller's stack, without Redis.
 */
#ifndef HERALD_ENGINE_REDIS_H
#define HERALD_ENGINE_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/redis_sentinel.h"
#include "engine/redis_url.h"

typedef struct hd_engine_redis_options {
    hd_redis_url url;
    /*
     * Redis Sentinel (cluster.sentinels, sentinel_count > 0): the master is
     * found through these sentinels by the name sentinel_master (url's host
     * and port are then unused; its password and db are the master's).
     * Copied by hd_engine_redis_new.
     */
    const hd_sentinel_addr *sentinels;
    size_t sentinel_count;
    const char *sentinel_master;
    const char *sentinel_password; /* AUTH to the sentinels ("" = none) */
    const char *prefix;            /* cluster.prefix: keys are "{prefix}:..." */
    uint32_t timeout_ms;           /* cluster.timeout_ms */
    /* The history bounds every node passes to the publish script (history.*). */
    uint32_t history_max_messages;
    uint64_t history_max_bytes;
    uint32_t history_ttl_s;
    /*
     * cluster.trust_redis_persistence: a Redis restart (a new run_id) keeps
     * the epoch; false: it starts a new one.
     */
    bool trust_redis_persistence;
    /*
     * cluster.max_held_messages: live messages held back while topics catch
     * up; past it the catch-up is given up, with a gap (0: 65536).
     */
    uint32_t max_held_messages;
    uint32_t idempotency_ttl_s; /* publish.idempotency_ttl_s: 0 = keys are not remembered */
    /* cluster.max_inflight_bytes: commands in flight to Redis (and publishes queued); 0: 64 MiB */
    uint64_t max_inflight_bytes;
} hd_engine_redis_options;

/*
 * Starts the engine thread, which connects (and keeps reconnecting) on its
 * own. The hub must have been created with options.cluster. Never NULL.
 */
hd_engine *hd_engine_redis_new(hd_hub *hub, const hd_engine_redis_options *options);

/* ------------------------------------------------------------------ pure parts, for tests */

/* One pub/sub payload: "<epoch>:<seq>:<prev>:<ms>:<event length>:<event><data>". */
typedef struct hd_redis_payload {
    uint32_t epoch;
    uint64_t seq;
    uint64_t prev;
    int64_t time_ms;
    const char *event; /* NULL when none; points into the payload */
    size_t event_len;
    const char *data; /* points into the payload */
    size_t data_len;
} hd_redis_payload;

/* Returns false when text is not such a payload (a foreign publisher, a bug). */
bool hd_redis_payload_parse(const char *text, size_t len, hd_redis_payload *out);

/* An epoch as Redis holds it (8 lowercase hex digits), as herald's ids carry it. */
bool hd_redis_epoch_parse(const char *text, size_t len, uint32_t *out);

/* What the read script returned for one topic: its entries after the cursor, oldest first. */
typedef struct hd_redis_topic_read {
    const char *topic;
    size_t topic_len;
    uint64_t lost_upto;
    hd_message **messages;
    size_t count;
} hd_redis_topic_read;

/*
 * Whether reading topic after cursor (of the read's epoch, or another one)
 * runs into what was lost, and the gap to report: the cursor "earliest" has
 * none, one of another epoch always has one, one of this epoch has one when
 * it lies before lost_upto. gap borrows the topic and the cursor's text.
 */
bool hd_redis_read_gap(const hd_cursor *cursor, uint32_t cursor_epoch, uint32_t epoch,
                       const hd_redis_topic_read *topic, hd_gap *gap);

/*
 * Merges the topics' entries by seq into out (room for limit), at most
 * limit; returns how many, and *more when some were left out. Repeated
 * seqs (a topic named twice) are taken once. The messages are borrowed.
 */
size_t hd_redis_merge(const hd_redis_topic_read *topics, size_t topic_count, size_t limit,
                      hd_message **out, bool *more);

/*
 * How far a catch-up round may deliver the merge of its reads (count
 * topics' entries not delivered yet; paged[i]: topic i's read hit its limit,
 * so more may follow its last entry) while other topics still to be read
 * stand at positions (their entries may come anywhere after): the smallest
 * of those positions and of the last entries of the paged reads;
 * UINT64_MAX when there is none, everything read may go.
 */
uint64_t hd_redis_catch_up_bound(const hd_redis_topic_read *reads, const bool *paged, size_t count,
                                 const uint64_t *positions, size_t position_count);

/* What the topics script (redis_topics.lua) says of one topic. */
typedef struct hd_redis_topic_stats {
    bool exists;    /* its meta is of the current epoch */
    size_t count;   /* entries a read would return */
    uint64_t bytes; /* their topic, event and data bytes */
    uint64_t last;  /* the topic's newest seq in the epoch (0: none) */
} hd_redis_topic_stats;

/*
 * Sets info's history and last id from stats of epoch: bytes as the memory
 * engine counts them (hd_message_cost: overhead more per message); last id
 * "" unless the meta is of the epoch.
 */
void hd_redis_topic_fill(hd_topic_info *info, uint32_t epoch, const hd_redis_topic_stats *stats);

/*
 * One page of GET /topics from the cluster's index (topics with history,
 * subscribers 0) and the node's subscribed topics (subscribers this node's,
 * history filled in), each sorted by name: their union in byte order, a
 * name in both taken once (local subscribers, index history), at most
 * limit into out; *more when the union holds more. Each side may hold one
 * name more than limit, so *more is exact.
 */
size_t hd_redis_topics_merge(const hd_topic_summary *index, size_t index_count,
                             const hd_topic_summary *local, size_t local_count, size_t limit,
                             hd_topic_summary *out, bool *more);

/*
 * The ZRANGEBYLEX bounds of a page of names starting with prefix and sorting
 * after `after` (after_len 0: from the first): min into min_out, max into
 * max_out (each room for HD_TOPIC_NAME_MAX + 2), returning their lengths.
 */
void hd_redis_topics_range(const char *prefix, size_t prefix_len, const char *after,
                           size_t after_len, char *min_out, size_t *min_len, char *max_out,
                           size_t *max_len);

#endif
