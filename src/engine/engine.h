/*
 * The engine: where messages are stored and how they reach every node.
 *
 * Transports publish and read history only through an engine. The local
 * registry (herald/hub.h) keeps the subscriptions of this node, delivers to
 * them, and answers introspection; an engine decides where the sequence and
 * history live. It is a small ops table, like nchan's nchan_store_t: the
 * memory engine (engine/memory.h) is the hub itself and completes every
 * call before returning; an engine that stores elsewhere (Redis) runs on its
 * own thread and completes later. Callers are written for both.
 *
 * Completion. publish, read, describe and list take a callback and its ctx, and call it
 * exactly once, on the thread of the worker that called, unless the request
 * is cancelled first:
 *   - An engine that can answer at once calls it inside the call and returns
 *     NULL. NULL therefore means "already done": the caller must not touch
 *     what its callback may have freed.
 *   - Otherwise it returns a request, and calls back later from the worker's
 *     loop (through a mailbox: herald/mailbox.h), never from inside another
 *     call into the engine. Until then the caller holds the request, and
 *     cancels it if it goes away first (a connection that closes).
 * Why callbacks and not a "would block" answer: a caller written this way
 * has one path for both engines, and the memory engine, which answers on
 * the caller's stack, costs no allocation and no thread hop.
 *
 * Arguments: the items, the query and everything they point to are the
 * caller's and need only live during the call; an engine that answers later
 * copies what it needs. What a callback receives (outcome, result, their
 * messages and gaps) is borrowed for the callback: retain a message to keep
 * it. A result may point into the query (the memory engine's gaps name its
 * topics and cursor text): a callback that frees what the query pointed to
 * does so after it is done with the result.
 *
 * Threading: publish, read, describe, list and cancel are called on worker threads
 * (hd_worker_index()), each worker on its own requests. state may be called
 * from any thread. interest is called by the hub, with its lock held (see
 * hd_hub_set_interest): it may only hand the news over (to the engine's own
 * thread), never call back into the hub or block.
 */
#ifndef HERALD_ENGINE_ENGINE_H
#define HERALD_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/hub.h"

typedef struct hd_engine hd_engine;
/* A call still under way: the engine's own, opaque to callers. */
typedef struct hd_engine_request hd_engine_request;

/* Most messages one read returns: a query's limit is 1 to this. */
#define HD_ENGINE_READ_MAX 1024

/* What a publish came to. */
typedef struct hd_publish_outcome {
    /*
     * HD_HUB_OK: every item was published. Otherwise none was: a name or
     * the topic limit (the item at fault is failed), or, from an engine
     * that stores elsewhere, HD_HUB_UNAVAILABLE (nothing was sent) or
     * HD_HUB_OUTCOME_UNKNOWN (sent, but whether it was stored is not known).
     */
    hd_hub_status status;
    size_t failed;
    size_t count;                /* HD_HUB_OK: the number of items */
    hd_message *const *messages; /* HD_HUB_OK: one per item, in item order */
    const size_t *subscribers;   /* HD_HUB_OK: each item's topic's subscribers on this node */
    /*
     * HD_HUB_OK: per item, whether it repeated an idempotency key (SPEC §5):
     * nothing was published for it, and its message only carries the first
     * publish's id and the topic.
     */
    const bool *repeated;
} hd_publish_outcome;

typedef void (*hd_engine_publish_cb)(void *ctx, const hd_publish_outcome *outcome);

/*
 * What a read found: hd_hub_read_history's answer as one result. An engine
 * that cannot read now (its store is unreachable) calls back once it can;
 * a caller that stops waiting cancels.
 */
typedef struct hd_history_result {
    /*
     * HD_HUB_OK, or HD_HUB_UNAVAILABLE: the store refused the read, or could
     * not take it now (too many reads wait for it, or too much is in
     * flight); nothing else is set. The caller must not go on as if nothing
     * lay after its cursor: it says so (503, or ends the stream) instead.
     */
    hd_hub_status status;
    const hd_gap *gaps; /* first, one per topic whose lost range the cursor reaches into */
    size_t gap_count;
    hd_message *const *messages; /* after the cursor, in seq order (merged across topics) */
    size_t count;
    bool more; /* the limit cut the read short: more is held after the last message */
    /*
     * The newest seq of the whole sequence as of the read, and its epoch:
     * everything of these topics up to cut was read (or reported lost). A
     * poll answers "<epoch>-<cut>" as its next cursor when !more; a catch-up
     * is complete only once a read's cut reaches every live message it
     * skipped meanwhile (catch_up.c).
     */
    uint32_t epoch;
    uint64_t cut;
} hd_history_result;

typedef void (*hd_engine_read_cb)(void *ctx, const hd_history_result *result);

/*
 * What describe found (GET /topics/{t}): subscribers are this node's, history
 * and last id the store's (the memory engine's are the hub's own).
 */
typedef struct hd_topic_description {
    /* HD_HUB_OK, or HD_HUB_UNAVAILABLE: the store cannot be reached now (nothing waits for it). */
    hd_hub_status status;
    bool found; /* HD_HUB_OK: the store holds history of it, or it has subscribers on this node */
    hd_topic_info info; /* found */
} hd_topic_description;

typedef void (*hd_engine_describe_cb)(void *ctx, const hd_topic_description *description);

/* One page of topics (GET /topics): hd_hub_list_topics's arguments. */
typedef struct hd_topic_list_query {
    const char *prefix;
    size_t prefix_len;
    const char *after; /* after_len 0: from the first */
    size_t after_len;
    size_t limit; /* 1 to HD_ENGINE_LIST_MAX */
} hd_topic_list_query;

/* Most topics one page lists. */
#define HD_ENGINE_LIST_MAX 1000

/*
 * What list found: the topics in byte order of their names that start with
 * the prefix and sort after `after`, at most limit, and whether more follow.
 * A topic is listed when describe would find it, with the same counts.
 */
typedef struct hd_topic_list {
    hd_hub_status status; /* as for describe */
    const hd_topic_summary *topics;
    size_t count;
    bool more;
} hd_topic_list;

typedef void (*hd_engine_list_cb)(void *ctx, const hd_topic_list *list);

typedef enum hd_engine_state {
    HD_ENGINE_UP,         /* publishes and reads are served */
    HD_ENGINE_CONNECTING, /* not yet, or no longer, connected: publishes are refused */
    HD_ENGINE_DOWN,       /* gave up until the next attempt: publishes are refused */
} hd_engine_state;

/* Why an engine that links nodes moved to a new epoch (hd_engine_stats.epoch_changes). */
typedef enum hd_engine_epoch_reason {
    HD_EPOCH_LOST,     /* this node found the store without its epoch (flushed, evicted) */
    HD_EPOCH_ROLLBACK, /* this node found the store behind what was seen */
    HD_EPOCH_RESTART,  /* this node found the store restarted */
    HD_EPOCH_OBSERVED, /* another node started the epoch: this one followed */
    HD_EPOCH_REASONS,
} hd_engine_epoch_reason;

/* Why a publish failed (hd_engine_stats.publish_failures). */
typedef enum hd_engine_publish_failure {
    HD_PUBLISH_UNAVAILABLE,     /* not connected (or the store is loading): not sent */
    HD_PUBLISH_FULL,            /* too many bytes already in flight: not sent */
    HD_PUBLISH_OUTCOME_UNKNOWN, /* sent, then the connection broke */
    HD_PUBLISH_TIMEOUT,         /* sent, then the store stopped answering */
    HD_PUBLISH_OOM,             /* the store is out of memory */
    HD_PUBLISH_BUSY,            /* the store is busy running a script */
    HD_PUBLISH_ERROR,           /* any other refusal, or an answer that makes no sense */
    HD_PUBLISH_FAILURES,
} hd_engine_publish_failure;

/* Label values of the reasons above, in their order. */
extern const char *const hd_engine_epoch_reason_names[HD_EPOCH_REASONS];
extern const char *const hd_engine_publish_failure_names[HD_PUBLISH_FAILURES];

/* Upper bounds (seconds) of the round-trip histogram's buckets, ascending (+Inf not included). */
#define HD_ENGINE_RTT_BUCKETS 12
extern const double hd_engine_rtt_bounds[HD_ENGINE_RTT_BUCKETS];

/* What an engine that links nodes counts, for /metrics. */
typedef struct hd_engine_stats {
    uint64_t reconnects; /* times its store came back after being reached */
    uint64_t lost_reads; /* reads of what its fan-out did not bring (lost, missed while away) */
    uint64_t catchup_messages; /* messages those reads delivered */
    uint64_t late_messages;    /* of an epoch it had left (sent before a rotation): dropped */
    uint64_t held_overflows;   /* catch-ups given up (a gap) as live messages held ran over */
    uint64_t epoch_changes[HD_EPOCH_REASONS];
    uint64_t publish_failures[HD_PUBLISH_FAILURES]; /* publish calls (a batch counts once) */
    /* Round trips of commands to the store: rtt_buckets[i] within hd_engine_rtt_bounds[i]. */
    uint64_t rtt_buckets[HD_ENGINE_RTT_BUCKETS]; /* cumulative, as Prometheus has them */
    uint64_t rtt_count;
    double rtt_sum_s;
    uint64_t subscribed_topics;  /* topics whose fan-out this node is subscribed to */
    bool store_config_ok;        /* the store is set up not to lose data on its own */
    uint64_t store_evicted_keys; /* keys the store evicted since it started */
} hd_engine_stats;

typedef struct hd_engine_ops {
    const char *name; /* "memory", "redis": for logs, /healthz and /metrics */
    /*
     * Publishes items all or nothing (see hd_publish_outcome), with now_ms
     * as their time. Names and idempotency keys are checked by the engine;
     * data must already be valid UTF-8 within limits.max_message_bytes. An
     * item that repeats an idempotency key of its topic (also one earlier
     * in the batch) publishes nothing, atomically with the rest.
     */
    hd_engine_request *(*publish)(hd_engine *engine, const hd_publish_item *items, size_t count,
                                  int64_t now_ms, hd_engine_publish_cb done, void *ctx);
    /* Reads history (hd_history_query; limit 1 to HD_ENGINE_READ_MAX). */
    hd_engine_request *(*read)(hd_engine *engine, const hd_history_query *query,
                               hd_engine_read_cb done, void *ctx);
    /*
     * GET /topics/{t} and GET /topics: answered like read, but never held
     * while the store is unreachable (HD_HUB_UNAVAILABLE at once instead).
     */
    hd_engine_request *(*describe)(hd_engine *engine, const char *topic, size_t topic_len,
                                   hd_engine_describe_cb done, void *ctx);
    hd_engine_request *(*list)(hd_engine *engine, const hd_topic_list_query *query,
                               hd_engine_list_cb done, void *ctx);
    /* The callback of request will not be called. NULL: the engine never returns a request. */
    void (*cancel)(hd_engine *engine, hd_engine_request *request);
    /*
     * A topic got its first subscriber on this node (interested), or lost its
     * last: an engine that distributes through a shared store subscribes to
     * the topic there. NULL: the engine does not care (the hub then reports
     * nothing). Called as hd_hub_set_interest says.
     */
    void (*interest)(hd_engine *engine, const char *topic, size_t topic_len, bool interested);
    hd_engine_state (*state)(const hd_engine *engine);
    /* Counters for /metrics (any thread). NULL: the engine has none (a single node). */
    void (*stats)(const hd_engine *engine, hd_engine_stats *out);
    /* After every worker has stopped: nothing is under way any more. */
    void (*free)(hd_engine *engine);
} hd_engine_ops;

/* Every engine's first member. */
struct hd_engine {
    const hd_engine_ops *ops;
    hd_hub *hub; /* this node's registry: the engine delivers through it; not owned */
};

/*
 * For an engine's constructor: fills in the base and, when ops->interest is
 * set, has the hub report interest to it (hd_hub_set_interest), so an engine
 * that needs no interest costs subscriptions nothing.
 */
void hd_engine_init(hd_engine *engine, const hd_engine_ops *ops, hd_hub *hub);

const char *hd_engine_state_name(hd_engine_state state); /* "up", "connecting", "down" */

/*
 * For an engine's read: answers query from this node's hub at once (calls
 * done, on the caller's stack, and returns true). covered_only: only when
 * the hub's history answers it as the store would (hd_hub_read_covered,
 * cluster mode; the result's epoch and cut are then the node's live
 * position); otherwise it calls nothing and returns false.
 */
bool hd_engine_read_hub(hd_engine *engine, const hd_history_query *query, bool covered_only,
                        hd_engine_read_cb done, void *ctx);

static inline hd_engine_request *hd_engine_publish(hd_engine *engine, const hd_publish_item *items,
                                                   size_t count, int64_t now_ms,
                                                   hd_engine_publish_cb done, void *ctx)
{
    return engine->ops->publish(engine, items, count, now_ms, done, ctx);
}

static inline hd_engine_request *hd_engine_read(hd_engine *engine, const hd_history_query *query,
                                                hd_engine_read_cb done, void *ctx)
{
    return engine->ops->read(engine, query, done, ctx);
}

static inline hd_engine_request *hd_engine_describe(hd_engine *engine, const char *topic,
                                                    size_t topic_len, hd_engine_describe_cb done,
                                                    void *ctx)
{
    return engine->ops->describe(engine, topic, topic_len, done, ctx);
}

static inline hd_engine_request *hd_engine_list(hd_engine *engine, const hd_topic_list_query *query,
                                                hd_engine_list_cb done, void *ctx)
{
    return engine->ops->list(engine, query, done, ctx);
}

/*
 * Whether a subscription is in place as soon as the hub has it (the memory
 * engine), or only once the engine confirmed it: an engine that subscribes
 * elsewhere (interest) answers a read sent after the subscription only once
 * everything newer than that read's cut reaches this node, so a transport
 * acknowledges a subscription after such a read (catch_up.h).
 */
static inline bool hd_engine_subscribes_at_once(const hd_engine *engine)
{
    return engine->ops->interest == NULL;
}

/* Whether every call completes before it returns (the memory engine): nothing is ever held. */
static inline bool hd_engine_answers_at_once(const hd_engine *engine)
{
    return engine->ops->cancel == NULL;
}

/* NULL-safe: a caller cancels what it holds, which is NULL once the callback ran. */
static inline void hd_engine_cancel(hd_engine *engine, hd_engine_request *request)
{
    if (request != NULL)
        engine->ops->cancel(engine, request);
}

static inline hd_engine_state hd_engine_get_state(const hd_engine *engine)
{
    return engine->ops->state(engine);
}

static inline const char *hd_engine_name(const hd_engine *engine)
{
    return engine->ops->name;
}

/* NULL-safe. */
void hd_engine_free(hd_engine *engine);

#endif
