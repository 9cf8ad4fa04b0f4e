/*
 * The topic registry: topics, bounded per-topic history, the hub-wide id
 * sequence, cursors and gaps, and fan-out to subscribers of any transport.
 *
 * The hub knows nothing of sockets. A transport embeds an hd_subscriber in its
 * connection, fills in an ops table, and attaches it to topics; the hub calls
 * ops->deliver for every message published to those topics. The hub never
 * switches on the transport. Transports publish and read history through
 * the engine (engine/engine.h), never here: the memory engine is this hub,
 * and an engine that stores elsewhere will feed it what other nodes publish.
 *
 * Ids: every message gets "<epoch>-<seq>" where epoch is 8 lowercase hex
 * digits chosen when the hub is created (so a restart of the in-memory hub
 * changes it) and seq is a hub-wide counter starting at 1. Any id is a cursor
 * for any set of topics. A cursor from another epoch is answered as a gap;
 * one of this epoch beyond the newest seq was never issued and is refused.
 * The cursor "earliest" reads everything history holds, with no gap.
 *
 * Time is passed in by the caller (now_ms) so that TTL logic is testable.
 *
 * Threading: one hub serves every worker thread; its state is guarded by
 * one mutex, taken by each function here. A subscriber belongs to the worker
 * whose thread initialised it: a publish queues the message in that
 * worker's inbox (herald/mailbox.h), and the hub delivers it on that thread,
 * from hd_hub_deliver_pending, which the worker calls when notified. Visitor
 * and deliver callbacks must not call back into the hub; visitors run with
 * the lock held.
 */
#ifndef HERALD_HUB_H
#define HERALD_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/id.h"
#include "herald/list.h"
#include "herald/message.h"

typedef struct hd_hub hd_hub;
typedef struct hd_topic hd_topic;

typedef struct hd_hub_options {
    uint32_t history_max_messages; /* >= 1 */
    uint64_t history_max_bytes;    /* >= 1; a single message larger than this is still kept alone */
    uint32_t history_ttl_s;        /* 0 = no TTL */
    uint64_t history_max_total_bytes; /* all topics together; 0 = no limit */
    uint32_t max_topics;              /* 0 = no limit */
    uint32_t epoch;                   /* 0 = pick a random non-zero epoch */
    /*
     * The sequence is a cluster's (engine/redis.h): this hub only mirrors
     * what it was handed (hd_hub_ingest), so a cursor of its epoch beyond
     * the newest seq it saw may still have been issued by another node and
     * is not refused here (the engine's read answers it).
     */
    bool cluster;
    /*
     * Idempotent publish (hd_publish_item.idempotency_key): how long a key
     * is remembered (0 = keys are not remembered), and how many keys at
     * most (0 = as if 1); when full, the oldest key is forgotten early.
     */
    uint32_t idempotency_ttl_s;
    uint32_t max_idempotency_keys;
} hd_hub_options;

/*
 * A gap: messages of topic after `from` up to and including `to` were lost
 * (evicted from history, or from another epoch). from is the client's cursor
 * text as given; to is the id of the newest message known lost, or
 * "<epoch>-0" when a foreign-epoch cursor names nothing this hub knows lost;
 * to_seq is its seq.
 */
typedef struct hd_gap {
    const char *topic;
    size_t topic_len;
    const char *from;
    size_t from_len;
    char to[HD_ID_MAX];
    size_t to_len;
    uint64_t to_seq;
} hd_gap;

/* Appends "topic":…,"from":…,"to":… (the members every transport's gap carries). */
void hd_gap_append_json_fields(const hd_gap *gap, hd_strbuf *sb);

typedef struct hd_subscriber hd_subscriber;

/* Which transport a subscriber belongs to: only counted, for statistics. */
typedef enum hd_transport {
    HD_TRANSPORT_SSE,
    HD_TRANSPORT_WEBSOCKET,
    HD_TRANSPORT_POLL,
    HD_TRANSPORT_COUNT
} hd_transport;

typedef struct hd_subscriber_ops {
    /*
     * Called for each message published to a subscribed topic (and by
     * hd_hub_replay). msg is borrowed for the call: retain it, or one of its
     * encodings, to keep it. Must not call back into the hub; a transport
     * that wants to drop the subscriber (slow consumer) marks it and
     * unsubscribes later from its own loop pass.
     */
    void (*deliver)(hd_subscriber *sub, hd_message *msg);
    /*
     * Cluster mode: the hub moved to a new epoch (the store lost data), so
     * what sub saw of a topic (gap->from) belongs to the old one. Called
     * once per subscription, before the new epoch's messages, on sub's
     * worker, with the hub's lock held; NULL: nothing to say (a poll's next
     * read reports it). Same rules as deliver.
     */
    void (*gap)(hd_subscriber *sub, const hd_gap *gap);
    hd_transport transport;
} hd_subscriber_ops;

/* One topic attachment of a subscriber; lives in the subscriber's array. */
typedef struct hd_subscription {
    hd_topic *topic;
    hd_list node; /* in the topic's subscriber list of the subscriber's worker */
    hd_subscriber *subscriber;
    uint64_t seen_seq;   /* the newest seq of this topic it was given, live or from history */
    uint32_t seen_epoch; /* seen_seq's epoch: a message of another one is new (cluster mode) */
} hd_subscription;

/*
 * Embedded in a transport's connection. Zero it, set ops, then call
 * hd_subscriber_init. Fields other than ops are the hub's.
 */
struct hd_subscriber {
    const hd_subscriber_ops *ops;
    unsigned worker;
    hd_subscription *subscriptions;
    size_t subscription_count;
    size_t subscription_cap;
};

/* The subscriber belongs to the calling thread's worker (hd_worker_index). */
void hd_subscriber_init(hd_subscriber *sub, const hd_subscriber_ops *ops);
/*
 * Records that msg (of a subscribed topic) reached sub from history, so that
 * a live delivery still queued for it is skipped. Only from sub's worker;
 * takes no lock, so a history visitor may call it.
 */
void hd_subscriber_mark_seen(hd_subscriber *sub, const hd_message *msg);
/*
 * Sets what sub's subscription of topic (if any) saw to (epoch, seq) where
 * that is older (or of another epoch), or, with forward, newer (same epoch
 * only). A catch-up moves it forward to the client's cursor once it is
 * known valid (what the client saw is never delivered again, even when it
 * arrives here after the subscription); a poll that waits moves it back to
 * its read's cut, so anything newer wakes it, even what the node knew of
 * when it subscribed but received only after. Same rules as
 * hd_subscriber_mark_seen.
 */
void hd_subscriber_move_seen(hd_subscriber *sub, const char *topic, size_t topic_len,
                             uint32_t epoch, uint64_t seq, bool forward);

typedef enum hd_hub_status {
    HD_HUB_OK = 0,
    HD_HUB_BAD_TOPIC,           /* name is not 1..HD_TOPIC_NAME_MAX bytes of [A-Za-z0-9._~:/@-] */
    HD_HUB_BAD_EVENT,           /* name is not 1..64 bytes of [A-Za-z0-9_.:-] */
    HD_HUB_BAD_CURSOR,          /* not an id herald could have issued: malformed, or too new */
    HD_HUB_TOO_MANY_TOPICS,     /* max_topics reached and the topic does not exist */
    HD_HUB_BAD_IDEMPOTENCY_KEY, /* not 1..HD_IDEMPOTENCY_KEY_MAX bytes of printable ASCII */
    /* Only from an engine that stores elsewhere (engine/engine.h), never from the hub: */
    HD_HUB_UNAVAILABLE,     /* the store cannot be reached: nothing was done */
    HD_HUB_OUTCOME_UNKNOWN, /* the store was asked but did not answer: it may have been done */
} hd_hub_status;

hd_hub *hd_hub_new(const hd_hub_options *options);
/* Frees every topic and drops the history's references. No subscriber may remain. */
void hd_hub_free(hd_hub *hub);

uint32_t hd_hub_epoch(const hd_hub *hub);
/*
 * Whether the epoch is the sequence's: always, except in cluster mode
 * before the store first told one (the node never reached it), when the
 * hub's epoch is a placeholder no other node knows. Any thread.
 */
bool hd_hub_epoch_known(const hd_hub *hub);
/*
 * The id of the newest message published, or "<epoch>-0" (the hub's cut:
 * see hd_hub_read_history); writes HD_ID_MAX bytes at most.
 */
size_t hd_hub_newest_id(const hd_hub *hub, char *out);

/* Longest topic name (docs/protocol.md). */
#define HD_TOPIC_NAME_MAX 200
/* What hd_topic_name_valid accepts, as error messages say it. */
#define HD_TOPIC_NAME_RULE "A topic is 1 to 200 bytes of A-Z a-z 0-9 . _ ~ : / @ -."
_Static_assert(HD_TOPIC_NAME_MAX == 200, "HD_TOPIC_NAME_RULE states the limit");
/* What hd_event_name_valid accepts, as error messages say it. */
#define HD_EVENT_NAME_RULE "An event name is 1 to 64 bytes of A-Z a-z 0-9 _ . : -."

bool hd_topic_name_valid(const char *name, size_t len);
bool hd_event_name_valid(const char *name, size_t len);

/* Longest idempotency key (SPEC §5). */
#define HD_IDEMPOTENCY_KEY_MAX 128
/* What hd_idempotency_key_valid accepts, as error messages say it. */
#define HD_IDEMPOTENCY_KEY_RULE                                                                    \
    "An idempotency key is 1 to 128 bytes of printable ASCII (space to ~)."
_Static_assert(HD_IDEMPOTENCY_KEY_MAX == 128, "HD_IDEMPOTENCY_KEY_RULE states the limit");
bool hd_idempotency_key_valid(const char *key, size_t len);

/*
 * Parses a cursor given by a client. An empty text (len 0) is "no cursor".
 * out->text borrows text. Returns HD_HUB_OK or HD_HUB_BAD_CURSOR, also for a
 * well-formed id of this epoch beyond the newest one assigned (checked under
 * the lock, so an id equal to the newest is valid whichever worker issued it).
 */
hd_hub_status hd_hub_parse_cursor(const hd_hub *hub, const char *text, size_t len, hd_cursor *out);

/*
 * Checks that topic (and event, when non-NULL) could be published now
 * without publishing: lets a batch be validated all-or-nothing.
 */
hd_hub_status hd_hub_check_publish(const hd_hub *hub, const char *topic, size_t topic_len,
                                   const char *event, size_t event_len);

/* One message to publish; event may be NULL. */
typedef struct hd_publish_item {
    const char *topic;
    size_t topic_len;
    const char *event;
    size_t event_len;
    const char *data;
    size_t data_len;
    /*
     * NULL: none. Else a publish of the same topic with the same key within
     * idempotency_ttl_s is a repeat: it publishes nothing and answers the
     * first publish's id (SPEC §5).
     */
    const char *idempotency_key;
    size_t idempotency_key_len;
} hd_publish_item;

/*
 * Publishes items all or nothing: every name is checked, and the topics the
 * batch would create must fit under max_topics (counted conservatively),
 * before the first is published, all under one lock, so another worker
 * cannot take the last topic in between. On failure nothing is published
 * and *failed (if non-NULL) is the index of the item that failed.
 *
 * Each item gets the next id, goes into its topic's history (evicting the
 * oldest beyond the limits), and is queued for every worker with
 * subscribers of the topic, each delivering on its own thread as soon as it
 * runs (see hd_hub_set_notify). On success out[i] (if out is non-NULL) is a
 * new reference to item i's message, which the caller releases, and
 * subscribers[i] (if non-NULL) the number of subscribers of its topic on all
 * workers. data must already be valid UTF-8 within the size limit; the hub
 * validates the names and idempotency keys. Transports publish through the
 * engine (engine/engine.h), which calls this.
 *
 * An item whose idempotency key this hub holds for its topic (published
 * within idempotency_ttl_s, also earlier in the same batch) is a repeat:
 * nothing is published for it, repeated[i] (if non-NULL) is set, and out[i]
 * is a message that only carries the first publish's id and the topic (no
 * data, in no history). The key check and the publish are one critical
 * section, so concurrent publishes of one key publish it once.
 */
hd_hub_status hd_hub_publish_batch(hd_hub *hub, const hd_publish_item *items, size_t count,
                                   int64_t now_ms, hd_message **out, size_t *subscribers,
                                   bool *repeated, size_t *failed);

/*
 * For an engine that stores elsewhere (cluster mode): a message another
 * node (or this one, through the store) published, handed over in the
 * store's seq order. Like a publish without assigning a seq: msg (whose
 * reference the hub takes) goes into its topic's local history and to
 * every worker with subscribers of the topic. The hub's seq becomes the
 * newest seq ingested; a message of another epoch moves the hub to that
 * epoch. A message at or below its topic's newest seq is a duplicate and
 * dropped. Returns whether it was taken. Any thread.
 */
bool hd_hub_ingest(hd_hub *hub, hd_message *msg);

/*
 * For an engine that stores elsewhere: the store lost every seq of topic up
 * to lost_upto in epoch (trimmed or expired before this node read it). In
 * order with hd_hub_ingest, each subscription of the topic that saw less
 * gets a gap from what it saw to lost_upto. Any thread.
 */
void hd_hub_ingest_loss(hd_hub *hub, const char *topic, size_t topic_len, uint32_t epoch,
                        uint64_t lost_upto);

/*
 * Coverage (cluster mode): the engine's word that the local history of a
 * topic holds every message of it after cover_from up to the node's live
 * position (less what history evicted), so a read from a cursor at or
 * after both may be answered here (hd_hub_read_covered). The engine gives
 * it only while the topic is subscribed in the store, its SUBSCRIBE
 * confirmed on the current connection and no read of a missed range under
 * way, and takes it back (HD_HUB_UNCOVERED) when any of that ends. A new
 * epoch, or the topic being freed, drops it.
 */
#define HD_HUB_UNCOVERED UINT64_MAX
void hd_hub_cover(hd_hub *hub, const char *topic, size_t topic_len, uint32_t epoch,
                  uint64_t cover_from);
/*
 * For an engine about to stop following topic (unsubscribe in the store):
 * drops its coverage and returns true, unless a subscriber is on it (its
 * interest is still on its way to the engine: keep following). One step
 * under the lock, so a subscriber that reads after subscribing either finds
 * the topic followed or not covered. Any thread.
 */
bool hd_hub_uncover_unused(hd_hub *hub, const char *topic, size_t topic_len);
/* Drops every topic's coverage: the store's live feed broke off. Any thread. */
void hd_hub_uncover_all(hd_hub *hub);
/*
 * hd_hub_ingest for a message of the store's live feed, handed over in the
 * feed's order: its seq becomes the node's live position, and its topic's
 * coverage cover_from (dropped when msg is not taken: the history lacks
 * what it was to extend). Any thread.
 */
bool hd_hub_ingest_live(hd_hub *hub, hd_message *msg, uint64_t cover_from);
/* A message of the live feed the engine dropped (a duplicate): the live position moves on. */
void hd_hub_pass_live(hd_hub *hub, uint32_t epoch, uint64_t seq);
/*
 * Moves the hub to epoch (cluster mode: the store's; a new epoch restarts
 * its seq at 0), and its seq to at least seq: the newest the cluster is
 * known to have issued (from a publish's or a read's answer). Subscribing
 * starts live delivery after the hub's seq, which is right for a cluster's
 * too: what was issued before was published before the subscription (a
 * catch-up reads it). Any thread.
 */
void hd_hub_advance(hd_hub *hub, uint32_t epoch, uint64_t seq);

/*
 * An engine that answers on its own thread runs its completions on each
 * worker's thread through this: run(ctx, worker) is called by the worker
 * (at the start of hd_hub_deliver_pending) after hd_hub_wake(worker). Set
 * once, before any worker runs.
 */
void hd_hub_set_worker_hook(hd_hub *hub, void (*run)(void *ctx, unsigned worker), void *ctx);
/* Wakes worker as a new message would (its notify), so it runs the hook. Any thread. */
void hd_hub_wake(hd_hub *hub, unsigned worker);

/*
 * Called once per worker at start: notify(ctx) is called from any thread,
 * with the hub's lock held, when the worker's inbox gets its first message
 * (e.g. uv_async_send); the worker then calls hd_hub_deliver_pending on its
 * own thread. NULL unregisters (before the worker stops): no call follows.
 * Messages queued for a worker without one wait for hd_hub_deliver_pending.
 */
void hd_hub_set_notify(hd_hub *hub, unsigned worker, void (*notify)(void *ctx), void *ctx);
/*
 * Delivers queued messages to the calling worker's subscribers, in order:
 * at least one, and more (up to a fixed slice) while their data adds up to
 * less than max_bytes, so that the worker can write its sockets between
 * bursts. Returns whether more are queued.
 */
bool hd_hub_deliver_pending(hd_hub *hub, uint64_t max_bytes);

/*
 * The hub's epoch and seq, for an on_interest callback (the lock is held):
 * where live delivery starts for the subscription that made the topic
 * interesting.
 */
void hd_hub_position_locked(const hd_hub *hub, uint32_t *epoch, uint64_t *seq);

/*
 * Set once, before any worker runs. on_interest(ctx, topic, len, true) is
 * called when a topic gets its first subscriber on this node (of any
 * worker), and (…, false) when its last one leaves: an engine that shares
 * topics with other nodes subscribes to them there (engine/engine.h). It is
 * called on the thread that subscribed or unsubscribed, with the hub's lock
 * held, so the calls for a topic come in the order of the changes; it must
 * not call back into the hub, and should only hand the news over.
 */
void hd_hub_set_interest(hd_hub *hub,
                         void (*on_interest)(void *ctx, const char *topic, size_t topic_len,
                                             bool interested),
                         void *ctx);

/*
 * Attaches sub to topic (created on first use). Subscribing twice to the same
 * topic is a no-op. Returns HD_HUB_BAD_TOPIC or HD_HUB_TOO_MANY_TOPICS on
 * failure, with sub unchanged.
 */
hd_hub_status hd_hub_subscribe(hd_hub *hub, hd_subscriber *sub, const char *topic,
                               size_t topic_len);
/* Detaches sub from one topic (no-op if not subscribed); frees the topic when it became unused. */
void hd_hub_unsubscribe(hd_hub *hub, hd_subscriber *sub, const char *topic, size_t topic_len);
/* Detaches sub from every topic and frees its subscription array. */
void hd_hub_unsubscribe_all(hd_hub *hub, hd_subscriber *sub);

/*
 * Visitor for history reads: one call per message, in seq order, or per gap.
 * Both are called during hd_hub_read_history and must not call back into the
 * hub; gap->topic borrows the caller's topic name.
 */
typedef struct hd_history_visitor {
    void (*on_gap)(void *ctx, const hd_gap *gap);
    /* msg borrowed; return false to stop reading (more is then set if anything is left). */
    bool (*on_message)(void *ctx, hd_message *msg);
} hd_history_visitor;

/* What to read: the history of some topics after a cursor. */
typedef struct hd_history_query {
    const char *const *topics; /* need not exist (unknown topics hold nothing); repeats read once */
    const size_t *topic_lens;
    size_t topic_count;
    hd_cursor cursor; /* not present: nothing is read */
    size_t limit;     /* most messages read; 0 = no limit */
    /*
     * Live delivery follows the answer (a stream's catch-up, a poll that
     * waits), so it may be as of this node's live position, behind the
     * store by what is still on its way (hd_hub_read_covered); false: it
     * must be as of now (a poll that answers at once).
     */
    bool may_lag;
} hd_history_query;

/*
 * Reads history after query->cursor: first one on_gap per topic whose lost
 * range the cursor reaches into, then up to limit messages merged across
 * topics in seq order. Returns the number of messages visited; *more (if
 * non-NULL) is set when limit cut the answer short.
 *
 * *cut (if non-NULL) gets the hub's newest seq as of the read: with other
 * workers publishing meanwhile, only a seq taken under the same lock is one
 * up to which nothing unread of these topics lies, so a poll answers with
 * it as its next cursor and a catch-up knows it read past every live
 * message published before it.
 */
size_t hd_hub_read_history(hd_hub *hub, const hd_history_query *query,
                           const hd_history_visitor *visitor, void *ctx, bool *more, uint64_t *cut);

/*
 * Cluster mode: reads like hd_hub_read_history, but only when the local
 * history answers the query as the store would at the node's live
 * position (the newest message of the store's live feed it processed):
 * query->may_lag, every topic covered (hd_hub_cover) from at most the
 * cursor, the cursor of this epoch and not beyond that position, no id the
 * node knows of still on its way, nothing read expired by now_ms. Then no
 * gap is owed, *epoch and *cut are that position, and it returns true; otherwise it
 * visits nothing and returns false (ask the store).
 */
bool hd_hub_read_covered(hd_hub *hub, const hd_history_query *query,
                         const hd_history_visitor *visitor, void *ctx, int64_t now_ms, bool *more,
                         uint32_t *epoch, uint64_t *cut);

/* Drops messages older than history.ttl_s; call from a periodic timer. */
void hd_hub_expire(hd_hub *hub, int64_t now_ms);

/* Introspection for GET /topics/{topic}; returns false when the topic does not exist. */
typedef struct hd_topic_info {
    size_t subscribers;
    size_t subscribers_by_transport[HD_TRANSPORT_COUNT];
    size_t history_messages;
    uint64_t history_bytes;
    char last_id[HD_ID_MAX]; /* "" when no message is held or was ever published */
} hd_topic_info;
bool hd_hub_topic_info(const hd_hub *hub, const char *topic, size_t topic_len, hd_topic_info *out);

typedef struct hd_topic_summary {
    char name[HD_TOPIC_NAME_MAX]; /* a copy: another worker may free the topic once unlocked */
    size_t name_len;
    hd_topic_info info;
} hd_topic_summary;

/*
 * Lists up to limit (>= 1) topics whose names start with prefix and sort
 * after `after` (after_len 0: from the first), in byte order of their names,
 * into out (room for limit). *more says whether more matching topics follow.
 */
size_t hd_hub_list_topics(const hd_hub *hub, const char *prefix, size_t prefix_len,
                          const char *after, size_t after_len, size_t limit, hd_topic_summary *out,
                          bool *more);
/*
 * The same, of the topics that have subscribers on this node only (a
 * cluster lists the store's topics and adds these: engine/engine.h).
 */
size_t hd_hub_list_subscribed_topics(const hd_hub *hub, const char *prefix, size_t prefix_len,
                                     const char *after, size_t after_len, size_t limit,
                                     hd_topic_summary *out, bool *more);

/* What GET /metrics reports of the hub. */
typedef struct hd_hub_stats {
    size_t topics;
    size_t subscriptions; /* topic attachments of all subscribers */
    size_t history_messages;
    uint64_t history_bytes;
    uint64_t messages_published; /* counters since the hub was created */
    uint64_t history_evicted;
} hd_hub_stats;
void hd_hub_get_stats(const hd_hub *hub, hd_hub_stats *out);

#endif
