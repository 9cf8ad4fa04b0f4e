/*
 * The Redis engine: see redis.h for the design. Sections: the pure parts
 * (payload, gaps, merge, catch-up bound, topic listings), requests and how
 * they travel between threads, publishing, reading, topics (GET /topics),
 * live fan-out from pub/sub with hole detection, catch-up rounds (what is
 * read back, merged in seq order across topics), the link's state, and the
 * engine's life.
 */
#include "engine/redis.h"

#include <inttypes.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "engine/redis_link.h"
#include "engine/redis_scripts.h"
#include "herald/alloc.h"
#include "herald/clock.h"
#include "herald/log.h"
#include "herald/mailbox.h"
#include "herald/worker.h"

/* Idle topics expire from Redis after this (the design's cluster.idle_ttl_s default). */
#define IDLE_TTL_S 2592000
/* Bound on the argument bytes in flight on the command connection. */
#define MAX_INFLIGHT_BYTES (64u << 20)
/* Pub/sub silence before the link probes the connection. */
#define PROBE_IDLE_MS 5000
/* Clients' reads held while the link is down (or full) at most: past it one fails at once. */
#define WAITING_MAX 16384
/* Refused reads are logged at most this many lines a minute, the same text once in a row. */
#define READ_ERROR_LOG_MS 60000
#define READ_ERROR_LINES 10
/* Entries a catch-up round reads at most (over all its topics; at least one per topic). */
#define ROUND_ENTRIES_MAX 16384
/* What a catch-up round publishes on the node channel after its reads (then its number). */
#define BARRIER_PREFIX "herald-catch-up:"
/* Topic table buckets on the engine thread (chained; a power of two). */
#define TOPIC_BUCKETS 4096
#define PREFIX_MAX 66 /* "{" + 64 + "}" */
/* A topic whose last subscriber left stays subscribed this long (the design's 30 s). */
#define LINGER_MS 30000
#define SWEEP_MS 1000
/* How often Redis's memory settings and evictions are read (INFO), besides at every connect. */
#define INFO_MS 30000
/* Evictions are warned about at most this often. */
#define EVICTION_WARN_MS 300000
/* Epochs left that the node remembers, so that late news of them is dropped (adopt_epoch). */
#define LEFT_EPOCHS 8

/* ------------------------------------------------------------------ pure parts */

static bool parse_u64(const char **p, const char *end, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (s == end || *s < '0' || *s > '9')
        return false;
    while (s < end && *s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        s++;
    }
    if (s == end || *s != ':')
        return false;
    *p = s + 1;
    *out = v;
    return true;
}

bool hd_redis_epoch_parse(const char *text, size_t len, uint32_t *out)
{
    char id[16];
    uint64_t seq;
    if (len != 8)
        return false;
    memcpy(id, text, 8);
    memcpy(id + 8, "-0", 2);
    return hd_id_parse(id, 10, out, &seq);
}

bool hd_redis_payload_parse(const char *text, size_t len, hd_redis_payload *out)
{
    const char *p = text, *end = text + len;
    const char *colon = memchr(p, ':', len);
    if (colon == NULL || !hd_redis_epoch_parse(p, (size_t)(colon - p), &out->epoch))
        return false;
    p = colon + 1;
    uint64_t ms, event_len;
    if (!parse_u64(&p, end, &out->seq) || !parse_u64(&p, end, &out->prev) ||
        !parse_u64(&p, end, &ms) || !parse_u64(&p, end, &event_len))
        return false;
    if (out->seq == 0 || out->prev >= out->seq || ms > INT64_MAX || event_len > 64 ||
        event_len > (uint64_t)(end - p))
        return false;
    out->time_ms = (int64_t)ms;
    out->event = event_len > 0 ? p : NULL;
    out->event_len = (size_t)event_len;
    out->data = p + event_len;
    out->data_len = (size_t)(end - out->data);
    return true;
}

bool hd_redis_read_gap(const hd_cursor *cursor, uint32_t cursor_epoch, uint32_t epoch,
                       const hd_redis_topic_read *topic, hd_gap *gap)
{
    if (!cursor->present || cursor->earliest)
        return false;
    bool foreign = cursor_epoch != epoch;
    if (!foreign && cursor->seq >= topic->lost_upto)
        return false;
    *gap = (hd_gap){
        .topic = topic->topic,
        .topic_len = topic->topic_len,
        .from = cursor->text,
        .from_len = cursor->text_len,
        .to_seq = topic->lost_upto,
    };
    gap->to_len = hd_id_format(epoch, topic->lost_upto, gap->to);
    return true;
}

size_t hd_redis_merge(const hd_redis_topic_read *topics, size_t topic_count, size_t limit,
                      hd_message **out, bool *more)
{
    size_t pos_on_stack[64];
    size_t *pos = topic_count <= 64 ? pos_on_stack : hd_calloc(topic_count, sizeof(*pos));
    memset(pos, 0, (topic_count <= 64 ? 64 : topic_count) * sizeof(*pos));
    size_t count = 0;
    uint64_t last = 0;
    *more = false;
    for (;;) {
        size_t best = topic_count;
        for (size_t t = 0; t < topic_count; t++) {
            if (pos[t] < topics[t].count &&
                (best == topic_count ||
                 topics[t].messages[pos[t]]->seq < topics[best].messages[pos[best]]->seq))
                best = t;
        }
        if (best == topic_count)
            break;
        hd_message *msg = topics[best].messages[pos[best]++];
        if (count > 0 && msg->seq == last)
            continue; /* the same topic named twice */
        if (count == limit) {
            *more = true;
            break;
        }
        out[count++] = msg;
        last = msg->seq;
    }
    if (pos != pos_on_stack)
        free(pos);
    return count;
}

uint64_t hd_redis_catch_up_bound(const hd_redis_topic_read *reads, const bool *paged, size_t count,
                                 const uint64_t *positions, size_t position_count)
{
    uint64_t bound = UINT64_MAX;
    for (size_t i = 0; i < count; i++) {
        if (paged[i] && reads[i].count > 0 && reads[i].messages[reads[i].count - 1]->seq < bound)
            bound = reads[i].messages[reads[i].count - 1]->seq;
    }
    for (size_t i = 0; i < position_count; i++) {
        if (positions[i] < bound)
            bound = positions[i];
    }
    return bound;
}

/* Byte order of names, a shorter name before the longer ones it starts (as the hub lists). */
static int compare_names(const char *a, size_t a_len, const char *b, size_t b_len)
{
    int c = memcmp(a, b, a_len < b_len ? a_len : b_len);
    if (c != 0)
        return c;
    return a_len < b_len ? -1 : a_len > b_len;
}

void hd_redis_topic_fill(hd_topic_info *info, uint32_t epoch, const hd_redis_topic_stats *stats)
{
    info->history_messages = stats->exists ? stats->count : 0;
    info->history_bytes = stats->exists ? stats->bytes + stats->count * sizeof(hd_message) : 0;
    if (stats->exists && stats->last != 0)
        hd_id_format(epoch, stats->last, info->last_id);
    else
        info->last_id[0] = '\0';
}

size_t hd_redis_topics_merge(const hd_topic_summary *index, size_t index_count,
                             const hd_topic_summary *local, size_t local_count, size_t limit,
                             hd_topic_summary *out, bool *more)
{
    size_t i = 0, l = 0, count = 0;
    while ((i < index_count || l < local_count) && count < limit) {
        int c = i == index_count   ? 1
                : l == local_count ? -1
                                   : compare_names(index[i].name, index[i].name_len, local[l].name,
                                                   local[l].name_len);
        if (c < 0) {
            out[count++] = index[i++];
            continue;
        }
        out[count] = local[l++];
        if (c == 0) {
            /* This node's subscribers; the history as the index's (later) script call saw it. */
            hd_topic_info *info = &out[count].info;
            info->history_messages = index[i].info.history_messages;
            info->history_bytes = index[i].info.history_bytes;
            memcpy(info->last_id, index[i].info.last_id, sizeof(info->last_id));
            i++;
        }
        count++;
    }
    /* Whatever is left on either side sorts after the page. */
    *more = i < index_count || l < local_count;
    return count;
}

void hd_redis_topics_range(const char *prefix, size_t prefix_len, const char *after,
                           size_t after_len, char *min_out, size_t *min_len, char *max_out,
                           size_t *max_len)
{
    if (after_len > 0 && compare_names(after, after_len, prefix, prefix_len) >= 0) {
        min_out[0] = '(';
        memcpy(min_out + 1, after, after_len);
        *min_len = after_len + 1;
    } else if (prefix_len > 0) {
        min_out[0] = '[';
        memcpy(min_out + 1, prefix, prefix_len);
        *min_len = prefix_len + 1;
    } else {
        min_out[0] = '-';
        *min_len = 1;
    }
    if (prefix_len > 0) {
        /* No topic-name byte is 0xff: every name that starts with prefix sorts before this. */
        max_out[0] = '[';
        memcpy(max_out + 1, prefix, prefix_len);
        max_out[prefix_len + 1] = (char)0xff;
        *max_len = prefix_len + 2;
    } else {
        max_out[0] = '+';
        *max_len = 1;
    }
}

/* ------------------------------------------------------------------ the engine */

typedef enum job_kind { JOB_PUBLISH, JOB_READ, JOB_INTEREST, JOB_DESCRIBE, JOB_LIST } job_kind;

/* Where a topic stands in the catch-up (see "catch-up rounds"). */
typedef enum catch_state {
    CATCH_NONE,    /* pub/sub brings all it needs */
    CATCH_RESYNC,  /* reconnected: its SUBSCRIBE is not confirmed again yet */
    CATCH_WAITING, /* new: its SUBSCRIBE or its position is not confirmed yet */
    CATCH_WANTED,  /* a read from last is due, in the next round */
    CATCH_READING, /* read by the round under way */
    CATCH_READ,    /* its read holds entries past the last round's bound */
} catch_state;

/* A topic this node is interested in, on the engine thread. */
typedef struct topic_state {
    struct topic_state *next;
    size_t interest; /* workers' subscribers: > 0 while subscribed */
    /*
     * The newest message ingested (seq of epoch; epoch 0: none yet). Its
     * prev chain is followed only within the engine's current epoch.
     */
    uint64_t last;
    uint32_t epoch;
    bool resync; /* reconnected: read what was missed once the SUBSCRIBE is confirmed */
    catch_state catching;
    hd_engine_request *read; /* READING (once answered), READ: entries from read_next on */
    size_t read_next;
    /*
     * When the last subscriber left (uv_now, +1 so never 0), while it stays
     * subscribed for LINGER_MS: a long-poll client comes back after every
     * answer, and each SUBSCRIBE costs Redis round trips. 0 while in use.
     */
    uint64_t idle_since;
    /*
     * Newly subscribed: the first subscriber's live delivery starts after
     * since, but pub/sub only once the SUBSCRIBE is confirmed: what lies
     * between is read then. since is the later of the hub's position when
     * it subscribed (which lags behind the cluster for topics this node did
     * not follow) and the cut of a read of no topic sent with the SUBSCRIBE
     * (positioned), so nothing published before the subscriber came is
     * delivered to it.
     */
    bool fresh;
    bool positioned;
    bool confirmed;
    /*
     * Its position read until answered (then NULL). One that is superseded
     * or whose topic is freed is cancelled: a long outage with topics
     * coming and going keeps one per topic still subscribed, no more.
     */
    hd_engine_request *position_read;
    uint32_t since_epoch;
    uint64_t since_seq;
    /*
     * The topic's record: the hub's history of the topic holds every
     * message of it after chain_from up to chain_last, of chain_epoch
     * (chained). A message from pub/sub extends it when its prev is within
     * it, and starts a new one at its prev otherwise. A catch-up read
     * (catch-up rounds) counts only when it was sent after the topic's
     * SUBSCRIBE was confirmed on this connection (its fill_link): where it
     * starts (its cursor, or past a loss it reports) it joins the record
     * when that lies within it, and starts a new one there otherwise (a
     * read sent before breaks the record); its entries then extend it one
     * by one as the rounds emit them, each past the one before (read_prev:
     * the read holds nothing of the topic between them). A message past
     * chain_last that the hub did not take breaks it.
     *
     * Reads are answered from it (the hub's coverage, cover_of) while the
     * topic does not catch up (catching is CATCH_NONE: no read of a range
     * it missed is due, under way or holding entries not emitted yet) and
     * its SUBSCRIBE was confirmed on this connection (confirmed_link == the
     * engine's link_ups): everything newer then arrives over pub/sub, in
     * seq order, and is delivered in that order (held messages go on in
     * the order they came), so the record reaches the node's live position.
     * set_catch withdraws the coverage when the topic starts catching up
     * and publishes it again when its catch-up is done; a lost link, a new
     * epoch and the end of the linger drop it.
     */
    bool chained;
    uint32_t chain_epoch;
    uint64_t chain_from, chain_last;
    uint64_t read_prev;
    uint64_t confirmed_link;
    size_t len;
    char name[];
} topic_state;

typedef struct interest_job {
    job_kind kind; /* JOB_INTEREST */
    bool interested;
    uint32_t epoch; /* the hub's position when it happened */
    uint64_t seq;
    size_t len;
    char name[];
} interest_job;

typedef struct redis_engine redis_engine;

/* Reads waiting for the link, oldest first (see redis_engine.clients). */
typedef struct read_queue {
    hd_engine_request *head;
    hd_engine_request **tail;
    /* Where the next read that was in flight when the link broke goes (ahead of the others). */
    hd_engine_request **broken_slot;
} read_queue;

struct hd_engine_request {
    job_kind kind;
    unsigned worker;
    atomic_bool cancelled;
    redis_engine *engine;
    void *ctx;
    hd_engine_publish_cb publish_done;
    hd_engine_read_cb read_done;
    struct hd_engine_request *next; /* in the reads waiting for the link */
    bool fill;                      /* a catch-up round's read: the engine's own */
    uint64_t round;                 /* fill: its round's number */
    bool position; /* the read of no topic for a newly subscribed topic (topics[0]) */
    char *buf;     /* the copies of the caller's bytes */
    /* fill: the link it was sent on, when its topic was confirmed there (else 0) */
    uint64_t fill_link;

    /* publish */
    hd_publish_item *items;
    size_t count;
    /* next (above): the next request of its script call, or of the queue */
    size_t bytes; /* in buf */
    bool alone;   /* its script call goes with no other request's (publish_next) */
    int64_t now_ms;
    hd_hub_status status;
    hd_message **messages; /* publish: count; read: result.count */
    size_t *subscribers;
    bool *repeated; /* publish: count, whether the item repeated an idempotency key */

    /* read */
    const char **topics;
    size_t *topic_lens;
    size_t topic_count;
    hd_cursor cursor;
    uint32_t cursor_epoch;
    size_t limit;
    hd_gap *gaps;
    hd_history_result result;

    /* describe, list */
    struct topics_query *query;
};

struct redis_engine {
    hd_engine base;
    hd_engine_redis_options options;
    char prefix[PREFIX_MAX + 1]; /* "{prefix}" */
    size_t prefix_len;
    char hub_key[PREFIX_MAX + 8];
    char probe_channel[PREFIX_MAX + 32];

    atomic_int state; /* hd_engine_state, read by workers */
    atomic_uint_fast64_t reconnects;
    atomic_uint_fast64_t gap_reads;
    atomic_uint_fast64_t catchup_messages;
    atomic_uint_fast64_t late_messages;
    atomic_uint_fast64_t held_overflows;
    atomic_uint_fast64_t epoch_changes[HD_EPOCH_REASONS];
    atomic_uint_fast64_t publish_failures[HD_PUBLISH_FAILURES];
    atomic_uint_fast64_t rtt_buckets[HD_ENGINE_RTT_BUCKETS]; /* not cumulative */
    atomic_uint_fast64_t rtt_count;
    atomic_uint_fast64_t rtt_sum_ns;
    atomic_uint_fast64_t subscribed_topics;
    atomic_bool config_ok;
    atomic_uint_fast64_t evicted_keys;

    hd_mailbox jobs;  /* workers to the engine thread: requests and interest_jobs */
    hd_mailbox *done; /* per worker: completed requests */
    unsigned workers;

    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t jobs_async;
    uv_async_t stop_async;
    uv_timer_t sweep; /* ends lingering subscriptions */
    uv_timer_t info;  /* reads Redis's maxmemory-policy and evicted_keys */

    /* Engine thread only. */
    hd_redis_link *link;
    const hd_redis_script *publish_script;
    const hd_redis_script *read_script;
    const hd_redis_script *hello_script;
    const hd_redis_script *topics_script;
    bool was_up;
    /* Times the link came up: which connection a topic's SUBSCRIBE was confirmed on. */
    uint64_t link_ups;
    uint32_t epoch; /* Redis's, once known (0: not yet) */
    /*
     * The epochs this node moved away from, newest last (a ring; 0: none).
     * Epochs are random, not ordered: a message or answer of one of these
     * is late (sent before the rotation, overtaken by news of it) and never
     * moves the node back; a Redis that is at one again went back in time,
     * and the hello script starts a new epoch (run_hello).
     */
    uint32_t left_epochs[LEFT_EPOCHS];
    size_t left_next;
    uint64_t known_seq; /* the highest seq seen in epoch */
    /*
     * Reads held until the link is up or has room, in two queues each in
     * the order asked: the engine's own (new topics' position reads, catch-
     * up rounds' reads), which go first when room frees so that live
     * delivery never waits behind clients' reads, and the clients'. A
     * client's read never overtakes an engine's read asked before it (it
     * is sent only when neither queue waits): a new topic's position must
     * not land after a later read's cut. An engine's read that overtakes
     * a client's only gets an earlier cut, which is the safe side.
     */
    read_queue own;
    read_queue clients;
    size_t waiting_count; /* in clients (WAITING_MAX) */
    /*
     * log_read_failure: the last error logged, when the current minute
     * began, the lines logged in it and those left out since the last line.
     */
    char read_error[256];
    uint64_t read_error_ms;
    unsigned read_error_lines;
    uint64_t read_errors_left_out;
    topic_state *topics[TOPIC_BUCKETS];
    /* Live messages held while topics catch up (catching > 0), oldest first. */
    hd_message **held;
    uint64_t *held_prev;
    size_t held_head, held_len, held_cap;
    /* Topics not CATCH_NONE, and of them CATCH_RESYNC. */
    size_t catching, catch_resync;
    bool node_confirmed; /* the node channel (where barriers come back) is subscribed */
    struct {
        bool active;
        uint64_t id;            /* rises with every round: answers of a retired one are dropped */
        size_t count, answered; /* reads sent, and answered */
        size_t parked;          /* of its reads, those waiting for room (e->own) */
        bool barrier_owed;      /* its barrier waits until its reads went, and for room (on_room) */
        bool barrier_seen;
    } round;
    /*
     * Attribution of epoch changes (epoch_changes): script calls sent and
     * answered, and an epoch first seen in a pub/sub payload while scripts
     * of this node were in flight: one of them may have started it (its
     * PUBLISH can overtake its answer). Once every script sent before is
     * answered without claiming it, another node started it (observed).
     */
    uint64_t scripts_sent, scripts_answered;
    uint32_t unclaimed_epoch; /* 0: none */
    uint64_t unclaimed_until; /* scripts_sent when it was seen */
    /* INFO: the last maxmemory-policy, and evictions of the Redis process run_id. */
    char policy[32];
    char evictions_run_id[48];
    uint64_t evictions_reported;  /* evicted_keys as of the last warning (or the first reading) */
    uint64_t evictions_warned_ms; /* uv_now of the last warning; 0: none yet */
    /*
     * cluster.trust_redis_persistence: whether the Redis process
     * persistence_run_id was seen with AOF on (from INFO persistence, read
     * just before its appendfsync), and whether it was warned about.
     */
    char persistence_run_id[48];
    bool aof_enabled;
    /* Where the last hello ran ("host:port"): another master since is a failover. */
    char hello_address[300];
    /*
     * Publishes taken from the mailbox and not yet sent, oldest first, and
     * their copied bytes (bounded by MAX_INFLIGHT_BYTES, as what is sent
     * is); publishing: a publish script call is under way (group commit).
     */
    hd_engine_request *publishes;
    hd_engine_request **publishes_tail;
    size_t publishes_bytes;
    bool publishing;
    uint64_t owed_wakes; /* workers owed a wake for completions (bit = worker): wake_owed */
    /* Wakes the workers owed completions, before the loop waits. */
    uv_prepare_t wake_pass;
};

/* ------------------------------------------------------------------ requests */

static void topics_query_free(struct topics_query *query);

static void request_free(hd_engine_request *req)
{
    topics_query_free(req->query);
    size_t n = req->kind == JOB_PUBLISH ? req->count : req->result.count;
    if (req->messages != NULL) {
        for (size_t i = 0; i < n; i++)
            hd_message_release(req->messages[i]);
    }
    free(req->messages);
    free(req->subscribers);
    free(req->repeated);
    free(req->items);
    free(req->topics);
    free(req->topic_lens);
    free(req->gaps);
    free(req->buf);
    free(req);
}

/*
 * On the engine thread: the request is answered; its worker runs the
 * callback once woken. The wake waits for the wake pass (before the engine's
 * loop waits again), so that what one read from Redis answered (a script
 * call for many publishes, several replies) wakes each worker once: on one
 * core every wake is a switch between threads.
 */
static void request_complete(hd_engine_request *req)
{
    redis_engine *e = req->engine;
    unsigned worker = req->worker; /* once posted, the worker may free req at any moment */
    hd_mailbox_post(&e->done[worker], req);
    e->owed_wakes |= UINT64_C(1) << worker;
}

_Static_assert(HD_WORKERS_MAX <= 64, "owed_wakes has a bit per worker");

static void wake_owed(redis_engine *e)
{
    while (e->owed_wakes != 0) {
        unsigned worker = (unsigned)__builtin_ctzll(e->owed_wakes);
        e->owed_wakes &= e->owed_wakes - 1;
        hd_hub_wake(e->base.hub, worker);
    }
}

static void on_wake_pass(uv_prepare_t *prepare)
{
    wake_owed(prepare->data);
}

static void topics_on_worker(redis_engine *e, hd_engine_request *req);

/* On a worker, from hd_hub_deliver_pending: its completed requests, in order. */
static void engine_on_worker(void *ctx, unsigned worker)
{
    redis_engine *e = ctx;
    hd_engine_request *batch[64];
    bool more = true;
    while (more) {
        size_t n = hd_mailbox_take(&e->done[worker], (void **)batch, 64, &more);
        for (size_t i = 0; i < n; i++) {
            hd_engine_request *req = batch[i];
            if (atomic_load(&req->cancelled)) {
                request_free(req);
                continue;
            }
            if (req->kind == JOB_PUBLISH) {
                hd_publish_outcome outcome = {.status = req->status, .failed = 0};
                if (req->status == HD_HUB_OK) {
                    req->subscribers = hd_calloc(req->count, sizeof(*req->subscribers));
                    for (size_t k = 0; k < req->count; k++) {
                        hd_topic_info info;
                        if (hd_hub_topic_info(e->base.hub, req->items[k].topic,
                                              req->items[k].topic_len, &info))
                            req->subscribers[k] = info.subscribers;
                    }
                    outcome.count = req->count;
                    outcome.messages = req->messages;
                    outcome.subscribers = req->subscribers;
                    outcome.repeated = req->repeated;
                }
                req->publish_done(req->ctx, &outcome);
            } else if (req->kind == JOB_DESCRIBE || req->kind == JOB_LIST) {
                topics_on_worker(e, req);
            } else {
                req->read_done(req->ctx, &req->result);
            }
            request_free(req);
        }
    }
}

static void post_job(redis_engine *e, void *job)
{
    hd_mailbox_post(&e->jobs, job);
}

/* The mailbox's wake-up: called with its lock held, from any thread. */
static void jobs_notify(void *ctx)
{
    redis_engine *e = ctx;
    uv_async_send(&e->jobs_async);
}

static hd_engine_request *request_new(redis_engine *e, job_kind kind, void *ctx)
{
    hd_engine_request *req = hd_calloc(1, sizeof(*req));
    req->kind = kind;
    req->worker = hd_worker_index();
    atomic_init(&req->cancelled, false);
    req->engine = e;
    req->ctx = ctx;
    return req;
}

/* ------------------------------------------------------------------ topics (engine thread) */

static uint64_t hash_name(const char *name, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)name[i];
        h *= 0x100000001b3ULL;
    }
    return h ^ (h >> 29);
}

static topic_state **topic_slot(redis_engine *e, const char *name, size_t len)
{
    topic_state **slot = &e->topics[hash_name(name, len) & (TOPIC_BUCKETS - 1)];
    while (*slot != NULL && !((*slot)->len == len && memcmp((*slot)->name, name, len) == 0))
        slot = &(*slot)->next;
    return slot;
}

static size_t channel_of(const redis_engine *e, const char *topic, size_t len, char *out)
{
    memcpy(out, e->prefix, e->prefix_len);
    memcpy(out + e->prefix_len, ":c:", 3);
    memcpy(out + e->prefix_len + 3, topic, len);
    return e->prefix_len + 3 + len;
}

static hd_engine_request *read_request_new(redis_engine *e, const char *const *topics,
                                           const size_t *topic_lens, size_t topic_count,
                                           const hd_cursor *cursor, size_t limit, void *ctx);
static void run_read(redis_engine *e, hd_engine_request *req);
static void set_catch(redis_engine *e, topic_state *t, catch_state state);
static void drop_read(topic_state *t);
static void start_round(redis_engine *e);
static void drain_held(redis_engine *e);
static void prune_waiting(redis_engine *e);
static void on_room(void *ctx);

/* Its answer, or its wait for the link, is dropped (on_position, prune_waiting). */
static void cancel_position_read(topic_state *t)
{
    if (t->position_read != NULL)
        atomic_store(&t->position_read->cancelled, true);
    t->position_read = NULL;
}

static void on_interest_job(redis_engine *e, const interest_job *job)
{
    topic_state **slot = topic_slot(e, job->name, job->len);
    char channel[PREFIX_MAX + 3 + HD_TOPIC_NAME_MAX];
    size_t channel_len = channel_of(e, job->name, job->len, channel);
    if (job->interested) {
        if (*slot == NULL) {
            topic_state *t = hd_calloc(1, sizeof(*t) + job->len);
            memcpy(t->name, job->name, job->len);
            t->len = job->len;
            *slot = t;
            atomic_fetch_add(&e->subscribed_topics, 1);
        }
        topic_state *t = *slot;
        if (t->interest++ == 0 && t->idle_since != 0) {
            t->idle_since = 0; /* still subscribed: nothing to do */
        } else if (t->interest == 1) {
            t->fresh = true;
            t->positioned = t->confirmed = false;
            set_catch(e, t, CATCH_WAITING);
            t->since_epoch = job->epoch;
            t->since_seq = job->seq;
            hd_redis_link_subscribe(e->link, channel, channel_len);
            hd_cursor none = {0};
            const char *name = t->name;
            hd_engine_request *req = read_request_new(e, &name, &t->len, 1, &none, 1, NULL);
            req->position = true;
            req->worker = HD_WORKER_NONE;
            cancel_position_read(t);
            t->position_read = req;
            run_read(e, req);
        }
    } else if (*slot != NULL && --(*slot)->interest == 0) {
        (*slot)->idle_since = uv_now(&e->loop) + 1;
    }
}

/* Unsubscribes the topics that lingered long enough without a subscriber. */
static void on_sweep(uv_timer_t *timer)
{
    redis_engine *e = timer->data;
    uint64_t now = uv_now(&e->loop);
    for (size_t b = 0; b < TOPIC_BUCKETS; b++) {
        topic_state **slot = &e->topics[b];
        while (*slot != NULL) {
            topic_state *t = *slot;
            /*
             * A subscriber whose interest is on its way may have read from
             * the hub's history already, counting on pub/sub to follow. (A
             * round's read of a topic that left is dropped when answered.)
             */
            if (t->interest > 0 || t->idle_since == 0 || now + 1 - t->idle_since < LINGER_MS ||
                !hd_hub_uncover_unused(e->base.hub, t->name, t->len)) {
                slot = &t->next;
                continue;
            }
            char channel[PREFIX_MAX + 3 + HD_TOPIC_NAME_MAX];
            hd_redis_link_unsubscribe(e->link, channel, channel_of(e, t->name, t->len, channel));
            t->chained = false; /* its coverage is dropped: set_catch must not publish it again */
            set_catch(e, t, CATCH_NONE);
            drop_read(t);
            cancel_position_read(t);
            *slot = t->next;
            free(t);
            atomic_fetch_sub(&e->subscribed_topics, 1);
        }
    }
    prune_waiting(e);
    on_room(e); /* reads left waiting while the link was full, if no answer came since */
    /* A round that could not be sent, or failed, is tried again; what it held goes on after. */
    start_round(e);
    drain_held(e);
}

static void count_epoch_change(redis_engine *e, hd_engine_epoch_reason reason)
{
    atomic_fetch_add(&e->epoch_changes[reason], 1);
}

/* A script of this node started epoch: count it by the reason it gave. */
static void claim_rotation(redis_engine *e, uint32_t epoch, const char *rotation)
{
    hd_engine_epoch_reason reason = HD_EPOCH_LOST;
    for (int r = 0; r < HD_EPOCH_OBSERVED; r++) {
        if (strcmp(rotation, hd_engine_epoch_reason_names[r]) == 0)
            reason = (hd_engine_epoch_reason)r;
    }
    count_epoch_change(e, reason);
    if (e->unclaimed_epoch == epoch)
        e->unclaimed_epoch = 0;
}

/* An unclaimed epoch that no script sent before it was seen can claim any more: observed. */
static void settle_unclaimed(redis_engine *e)
{
    if (e->unclaimed_epoch != 0 && e->scripts_answered >= e->unclaimed_until) {
        e->unclaimed_epoch = 0;
        count_epoch_change(e, HD_EPOCH_OBSERVED);
    }
}

/* After each script's answer, and what it adopted. */
static void script_answered(redis_engine *e)
{
    e->scripts_answered++;
    settle_unclaimed(e);
}

static bool epoch_left(const redis_engine *e, uint32_t epoch)
{
    for (size_t i = 0; i < LEFT_EPOCHS; i++) {
        if (epoch != 0 && e->left_epochs[i] == epoch)
            return true;
    }
    return false;
}

/*
 * Redis's epoch, as a reply or a payload showed it: a new one restarts
 * every position. rotation: what the script that answered said it did
 * ("" nothing, "lost", "rollback", "restart"); NULL for a pub/sub payload.
 * Returns false, changing nothing, for an epoch the node left: what showed
 * it was sent before the rotation and came after news of it (a pub/sub
 * message overtaken by a script's answer, or the other way round).
 */
static bool adopt_epoch(redis_engine *e, uint32_t epoch, uint64_t seq, const char *rotation)
{
    if (epoch != e->epoch && epoch_left(e, epoch)) {
        hd_log_debug("cluster: dropping late news of epoch %08" PRIx32 " (left for %08" PRIx32 ")",
                     epoch, e->epoch);
        return false;
    }
    if (rotation != NULL && rotation[0] != '\0')
        claim_rotation(e, epoch, rotation);
    if (epoch != e->epoch) {
        if (e->epoch != 0) {
            hd_log_warn("cluster: Redis moved to epoch %08" PRIx32 " (was %08" PRIx32
                        "): ids of the old epoch are answered with a gap",
                        epoch, e->epoch);
            if (rotation != NULL && rotation[0] == '\0') {
                count_epoch_change(e, HD_EPOCH_OBSERVED);
            } else if (rotation == NULL) {
                if (e->unclaimed_epoch != 0)
                    count_epoch_change(e, HD_EPOCH_OBSERVED); /* passed through */
                e->unclaimed_epoch = epoch;
                e->unclaimed_until = e->scripts_sent;
                settle_unclaimed(e);
            }
        }
        if (e->epoch != 0)
            e->left_epochs[e->left_next++ % LEFT_EPOCHS] = e->epoch;
        e->epoch = epoch;
        e->known_seq = 0;
    }
    if (seq > e->known_seq || e->known_seq == 0) {
        e->known_seq = seq;
        hd_hub_advance(e->base.hub, epoch, seq);
    }
    return true;
}

/* Where reads of t may be answered from the hub's history (topic_state), or HD_HUB_UNCOVERED. */
static uint64_t cover_of(const redis_engine *e, const topic_state *t)
{
    bool live = t->chained && t->chain_epoch == e->epoch && t->catching == CATCH_NONE &&
                t->confirmed_link == e->link_ups;
    return live ? t->chain_from : HD_HUB_UNCOVERED;
}

static void publish_cover(redis_engine *e, const topic_state *t)
{
    hd_hub_cover(e->base.hub, t->name, t->len, e->epoch, cover_of(e, t));
}

/* ------------------------------------------------------------------ publishing */

static void random_epoch(char out[9])
{
    uint32_t epoch = 0;
    while (epoch == 0) {
        if (RAND_bytes((unsigned char *)&epoch, sizeof(epoch)) != 1)
            abort();
    }
    snprintf(out, 9, "%08" PRIx32, epoch);
}

static void count_publish_failure(redis_engine *e, hd_engine_publish_failure failure)
{
    atomic_fetch_add(&e->publish_failures[failure], 1);
}

/* Why Redis refused a publish call; every refusal is unavailable to the publisher. */
static hd_engine_publish_failure failure_of_error(const char *text)
{
    if (strncmp(text, "OOM", 3) == 0)
        return HD_PUBLISH_OOM;
    if (strncmp(text, "BUSY", 4) == 0)
        return HD_PUBLISH_BUSY;
    if (strncmp(text, "LOADING", 7) == 0)
        return HD_PUBLISH_UNAVAILABLE;
    hd_log_error("cluster: Redis refused a publish: %s", text);
    return HD_PUBLISH_ERROR;
}

/*
 * Every request of a script call gets status. A failure counts once per
 * request (what the publisher sent: a /publish batch counts once), however
 * many requests the call carried.
 */
static void group_fail(redis_engine *e, hd_engine_request *first, hd_hub_status status,
                       hd_engine_publish_failure failure)
{
    for (hd_engine_request *req = first; req != NULL; req = req->next) {
        req->status = status;
        count_publish_failure(e, failure);
    }
}

static void group_complete(hd_engine_request *first)
{
    while (first != NULL) {
        hd_engine_request *next = first->next; /* once completed, first may be freed */
        request_complete(first);
        first = next;
    }
}

/* The script's answer for a call's requests, each given its items' seqs in turn. */
static bool take_publish_reply(redis_engine *e, hd_engine_request *first, const redisReply *reply)
{
    size_t items = 0;
    for (hd_engine_request *req = first; req != NULL; req = req->next)
        items += req->count;
    uint32_t epoch;
    bool ok = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 + items &&
              reply->element[0]->type == REDIS_REPLY_STRING &&
              reply->element[1]->type == REDIS_REPLY_STRING &&
              hd_redis_epoch_parse(reply->element[0]->str, reply->element[0]->len, &epoch);
    for (size_t i = 0; ok && i < items; i++)
        ok = reply->element[2 + i]->type == REDIS_REPLY_INTEGER;
    if (!ok)
        return false;
    uint64_t newest = 0;
    redisReply *const *answer = reply->element + 2;
    for (hd_engine_request *req = first; req != NULL; req = req->next) {
        req->status = HD_HUB_OK;
        req->messages = hd_calloc(req->count, sizeof(*req->messages));
        req->repeated = hd_calloc(req->count, sizeof(*req->repeated));
        for (size_t i = 0; i < req->count; i++) {
            const hd_publish_item *it = &req->items[i];
            long long value = (*answer++)->integer;
            /* Negative: a repeat of an idempotency key, answered with the first seq. */
            req->repeated[i] = value < 0;
            uint64_t seq = (uint64_t)(value < 0 ? -value : value);
            req->messages[i] = hd_message_new(it->topic, it->topic_len, it->event, it->event_len,
                                              it->data, it->data_len, seq, epoch, req->now_ms);
            if (seq > newest)
                newest = seq;
        }
    }
    if (reply->element[1]->len > 0)
        hd_log_warn("cluster: new epoch %.*s (%.*s)", (int)reply->element[0]->len,
                    reply->element[0]->str, (int)reply->element[1]->len, reply->element[1]->str);
    adopt_epoch(e, epoch, newest, reply->element[1]->str);
    return true;
}

static void publish_next(redis_engine *e);

/*
 * Puts a refused call's requests back at the head of the queue, each to go
 * alone: the script refuses a whole call when any item is bad (phase 1,
 * which writes nothing), and only the request that holds it may fail.
 */
static void requeue_alone(redis_engine *e, hd_engine_request *first)
{
    hd_engine_request *last = first;
    for (hd_engine_request *req = first; req != NULL; req = req->next) {
        req->alone = true;
        e->publishes_bytes += req->bytes;
        last = req;
    }
    last->next = e->publishes;
    if (e->publishes == NULL)
        e->publishes_tail = &last->next;
    e->publishes = first;
}

static void on_publish_reply(void *ctx, hd_redis_status status, const redisReply *reply)
{
    hd_engine_request *first = ctx;
    redis_engine *e = first->engine;
    e->publishing = false;
    if (status != HD_REDIS_OK) {
        group_fail(e, first, HD_HUB_OUTCOME_UNKNOWN,
                   status == HD_REDIS_TIMEOUT ? HD_PUBLISH_TIMEOUT : HD_PUBLISH_OUTCOME_UNKNOWN);
    } else if (reply->type == REDIS_REPLY_ERROR && first->next != NULL &&
               strstr(reply->str, "herald publish: ") != NULL) {
        requeue_alone(e, first);
        first = NULL;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        group_fail(e, first, HD_HUB_UNAVAILABLE, failure_of_error(reply->str));
    } else if (!take_publish_reply(e, first, reply)) {
        hd_log_error("cluster: the publish script answered something unexpected");
        group_fail(e, first, HD_HUB_OUTCOME_UNKNOWN, HD_PUBLISH_ERROR);
    }
    group_complete(first);
    script_answered(e);
    /* Queued publishes first: the link calls on_room (waiting reads) after this. */
    publish_next(e);
}

/*
 * A script call's arguments: the hub key, the prefix and a fresh epoch
 * candidate first (every script takes them), then what the call adds.
 * Numbers are printed into the call's own slots; texts are borrowed.
 */
#define SCRIPT_NUMBERS 9
typedef struct script_args {
    const char **argv;
    size_t *lens;
    int argc;
    int numbers_used;
    char numbers[SCRIPT_NUMBERS][24];
    char candidate[9];
    bool once; /* NOSCRIPT is answered, not retried (hd_redis_link_evalsha_once) */
} script_args;

static void args_text(script_args *a, const char *text, size_t len)
{
    a->argv[a->argc] = text;
    a->lens[a->argc++] = len;
}

static void args_number(script_args *a, int64_t value)
{
    char *slot = a->numbers[a->numbers_used++];
    args_text(a, slot, (size_t)snprintf(slot, sizeof(a->numbers[0]), "%" PRId64, value));
}

static void args_start(script_args *a, const redis_engine *e, size_t count)
{
    a->argv = hd_alloc(count * sizeof(*a->argv));
    a->lens = hd_alloc(count * sizeof(*a->lens));
    a->argc = 0;
    a->numbers_used = 0;
    a->once = false;
    random_epoch(a->candidate);
    args_text(a, e->hub_key, strlen(e->hub_key));
    args_text(a, e->prefix, e->prefix_len);
    args_text(a, a->candidate, 8);
}

static hd_redis_status args_call(script_args *a, redis_engine *e, const hd_redis_script *script,
                                 hd_redis_reply_cb *cb, void *ctx)
{
    hd_redis_status status =
        a->once ? hd_redis_link_evalsha_once(e->link, script, 1, a->argc, a->argv, a->lens, cb, ctx)
                : hd_redis_link_evalsha(e->link, script, 1, a->argc, a->argv, a->lens, cb, ctx);
    free(a->argv);
    free(a->lens);
    if (status == HD_REDIS_OK)
        e->scripts_sent++; /* its callback calls script_answered */
    return status;
}

/*
 * Publishes go to Redis in turn, one script call at a time, and all that
 * queued meanwhile go together as one call (group commit), in queue order,
 * so their ids increase in the order they were posted: each call costs
 * Redis ~34 us besides ~10 us per message of the commands it runs. A call
 * carries up to GROUP_REQUESTS requests, GROUP_ITEMS items and GROUP_BYTES
 * (a request past a bound goes alone).
 */
#define GROUP_REQUESTS 64
#define GROUP_ITEMS 1024
#define GROUP_BYTES (1u << 20)

/* Sends first and the requests chained after it as one call; false: not sent. */
static bool run_publish(redis_engine *e, hd_engine_request *first)
{
    size_t items = 0;
    int64_t now_ms = first->now_ms;
    for (hd_engine_request *req = first; req != NULL; req = req->next) {
        items += req->count;
        if (req->now_ms > now_ms)
            now_ms = req->now_ms;
    }
    script_args a;
    char known[9] = "";
    if (e->epoch != 0)
        snprintf(known, sizeof(known), "%08" PRIx32, e->epoch);
    args_start(&a, e, 13 + 4 * items);
    args_number(&a, now_ms);
    args_number(&a, e->options.history_max_messages);
    args_number(&a, (int64_t)e->options.history_max_bytes);
    args_number(&a, (int64_t)e->options.history_ttl_s * 1000);
    args_number(&a, IDLE_TTL_S);
    args_text(&a, known, strlen(known));
    args_number(&a, e->epoch != 0 ? (int64_t)e->known_seq : 0);
    args_number(&a, sizeof(hd_message));
    args_number(&a, (int64_t)items);
    for (hd_engine_request *req = first; req != NULL; req = req->next) {
        req->now_ms = now_ms; /* the time the call stores: each answer says what Redis holds */
        for (size_t i = 0; i < req->count; i++) {
            const hd_publish_item *it = &req->items[i];
            args_text(&a, it->topic, it->topic_len);
            args_text(&a, it->event != NULL ? it->event : "", it->event_len);
            args_text(&a, it->data, it->data_len);
        }
    }
    args_number(&a, (int64_t)e->options.idempotency_ttl_s * 1000);
    for (hd_engine_request *req = first; req != NULL; req = req->next) {
        for (size_t i = 0; i < req->count; i++) {
            const hd_publish_item *it = &req->items[i];
            args_text(&a, it->idempotency_key != NULL ? it->idempotency_key : "",
                      it->idempotency_key_len);
        }
    }
    hd_redis_status status = args_call(&a, e, e->publish_script, on_publish_reply, first);
    if (status == HD_REDIS_OK)
        return true;
    group_fail(e, first, HD_HUB_UNAVAILABLE,
               status == HD_REDIS_FULL ? HD_PUBLISH_FULL : HD_PUBLISH_UNAVAILABLE);
    group_complete(first);
    return false;
}

/* Unless a call is under way: the oldest queued requests, as many as fit one call. */
static void publish_next(redis_engine *e)
{
    while (!e->publishing && e->publishes != NULL) {
        hd_engine_request *first = e->publishes, *last = first;
        size_t requests = 1, items = first->count, bytes = first->bytes;
        while (!first->alone && last->next != NULL && !last->next->alone &&
               requests < GROUP_REQUESTS && items + last->next->count <= GROUP_ITEMS &&
               bytes + last->next->bytes <= GROUP_BYTES) {
            last = last->next;
            requests++;
            items += last->count;
            bytes += last->bytes;
        }
        e->publishes = last->next;
        if (e->publishes == NULL)
            e->publishes_tail = &e->publishes;
        last->next = NULL;
        e->publishes_bytes -= bytes;
        e->publishing = true; /* set first: on_publish_reply clears it, whenever it runs */
        if (!run_publish(e, first))
            e->publishing = false;
    }
}

/* From the mailbox: queued for the next call (publish_next), unless the queue is full. */
static void queue_publish(redis_engine *e, hd_engine_request *req)
{
    if (e->publishes != NULL && e->publishes_bytes + req->bytes > e->options.max_inflight_bytes) {
        req->status = HD_HUB_UNAVAILABLE;
        count_publish_failure(e, HD_PUBLISH_FULL);
        request_complete(req);
        return;
    }
    req->next = NULL;
    *e->publishes_tail = req;
    e->publishes_tail = &req->next;
    e->publishes_bytes += req->bytes;
}

static hd_engine_request *redis_publish(hd_engine *engine, const hd_publish_item *items,
                                        size_t count, int64_t now_ms, hd_engine_publish_cb done,
                                        void *ctx)
{
    redis_engine *e = (redis_engine *)engine;
    hd_publish_outcome outcome = {0};
    for (size_t i = 0; i < count; i++) {
        outcome.status = hd_hub_check_publish(engine->hub, items[i].topic, items[i].topic_len,
                                              items[i].event, items[i].event_len);
        if (outcome.status == HD_HUB_TOO_MANY_TOPICS)
            outcome.status = HD_HUB_OK; /* the local mirror's limit, not the cluster's */
        if (outcome.status == HD_HUB_OK && items[i].idempotency_key != NULL &&
            !hd_idempotency_key_valid(items[i].idempotency_key, items[i].idempotency_key_len))
            outcome.status = HD_HUB_BAD_IDEMPOTENCY_KEY;
        if (outcome.status != HD_HUB_OK) {
            outcome.failed = i;
            break;
        }
    }
    if (outcome.status == HD_HUB_OK && atomic_load(&e->state) != HD_ENGINE_UP) {
        outcome.status = HD_HUB_UNAVAILABLE;
        count_publish_failure(e, HD_PUBLISH_UNAVAILABLE);
    }
    if (outcome.status != HD_HUB_OK) {
        done(ctx, &outcome);
        return NULL;
    }
    hd_engine_request *req = request_new(e, JOB_PUBLISH, ctx);
    req->publish_done = done;
    req->now_ms = now_ms;
    req->count = count;
    req->items = hd_alloc(count * sizeof(*req->items));
    size_t bytes = 0;
    for (size_t i = 0; i < count; i++)
        bytes += items[i].topic_len + items[i].event_len + items[i].data_len +
                 (items[i].idempotency_key != NULL ? items[i].idempotency_key_len : 0);
    req->bytes = bytes;
    char *p = req->buf = hd_alloc(bytes + 1);
    for (size_t i = 0; i < count; i++) {
        hd_publish_item *it = &req->items[i];
        *it = items[i];
        it->topic = memcpy(p, items[i].topic, items[i].topic_len);
        p += items[i].topic_len;
        if (items[i].event != NULL) {
            it->event = memcpy(p, items[i].event, items[i].event_len);
            p += items[i].event_len;
        }
        it->data = memcpy(p, items[i].data, items[i].data_len);
        p += items[i].data_len;
        if (items[i].idempotency_key != NULL) {
            it->idempotency_key = memcpy(p, items[i].idempotency_key, items[i].idempotency_key_len);
            p += items[i].idempotency_key_len;
        } else {
            it->idempotency_key_len = 0; /* run_publish passes "" */
        }
    }
    post_job(e, req);
    return req;
}

/* ------------------------------------------------------------------ reading */

/*
 * A read Redis refused (an error reply, a topic's key of another type, an
 * answer herald cannot read): logged with Redis's text, since every reader
 * of a broken key would log it again at most READ_ERROR_LINES lines a
 * minute, and a text not again right after itself; a line says how many
 * were left out before it.
 */
static void log_read_failure(redis_engine *e, const char *why)
{
    uint64_t now = uv_now(&e->loop);
    if (e->read_error_ms == 0 || now - e->read_error_ms >= READ_ERROR_LOG_MS) {
        e->read_error_ms = now == 0 ? 1 : now;
        e->read_error_lines = 0;
        e->read_error[0] = '\0';
    }
    if (e->read_error_lines >= READ_ERROR_LINES || strcmp(why, e->read_error) == 0) {
        e->read_errors_left_out++;
        return;
    }
    e->read_error_lines++;
    snprintf(e->read_error, sizeof(e->read_error), "%s", why);
    if (e->read_errors_left_out > 0)
        hd_log_error("cluster: Redis refused a read: %s (%" PRIu64 " refusals not logged before)",
                     why, e->read_errors_left_out);
    else
        hd_log_error("cluster: Redis refused a read: %s", why);
    e->read_errors_left_out = 0;
}

/*
 * An entry's seq, ms, event and data: strings, or Redis answered what
 * herald cannot read (the script checks, too; this is the engine's own guard).
 */
static bool entry_well_formed(redisReply *const *f)
{
    for (int i = 0; i < 4; i++) {
        if (f[i]->type != REDIS_REPLY_STRING)
            return false;
    }
    return true;
}

/*
 * The read script's answer, parsed into the request's result. Returns
 * false, with the reason in why, when it is malformed. A topic the script
 * refused (its keys are of another type: it cannot be read) counts as
 * having lost everything up to the cut: the read goes on for the other
 * topics, and a client's read from a cursor gets a gap for it, a catch-up
 * round's (fill) gives the topic's subscribers here a gap, never a silent
 * skip. (Failing the whole read instead would hold every other topic a
 * resume names, forever: the client retries with the same cursor.)
 */
static bool take_read_reply(redis_engine *e, hd_engine_request *req, const redisReply *reply,
                            char *why, size_t why_len)
{
    snprintf(why, why_len, "the read script answered something unexpected");
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return false;
    uint32_t epoch;
    if (!hd_redis_epoch_parse(reply->element[0]->str, reply->element[0]->len, &epoch))
        return false;
    uint64_t cut = strtoull(reply->element[1]->str, NULL, 10);
    hd_redis_topic_read *reads = hd_calloc(req->topic_count + 1, sizeof(*reads));
    size_t total = 0, k = 3;
    bool ok = true;
    for (size_t t = 0; ok && t < req->topic_count; t++) {
        ok = k + 1 < reply->elements && reply->element[k]->type == REDIS_REPLY_STRING &&
             reply->element[k + 1]->type == REDIS_REPLY_INTEGER;
        if (!ok)
            break;
        hd_redis_topic_read *r = &reads[t];
        r->topic = req->topics[t];
        r->topic_len = req->topic_lens[t];
        if (reply->element[k + 1]->integer == -1) {
            /* The script's marker: the topic's keys are of another type, the text names them. */
            snprintf(why, why_len, "topic %.*s: %s", (int)r->topic_len, r->topic,
                     reply->element[k]->str);
            size_t len = strlen(why);
            snprintf(why + len, why_len - len, "; %s",
                     req->fill ? "its subscribers on this node get a gap"
                               : "a read from a cursor gets a gap for it");
            log_read_failure(e, why);
            r->lost_upto = cut;
            k += 2;
            continue;
        }
        r->lost_upto = strtoull(reply->element[k]->str, NULL, 10);
        size_t n = (size_t)reply->element[k + 1]->integer;
        k += 2;
        ok = n <= (reply->elements - k) / 4;
        if (!ok)
            break;
        r->messages = hd_calloc(n + 1, sizeof(*r->messages));
        for (size_t i = 0; ok && i < n; i++, k += 4) {
            redisReply *const *f = &reply->element[k];
            ok = entry_well_formed(f);
            if (!ok)
                break;
            uint64_t seq = strtoull(f[0]->str, NULL, 10);
            int64_t ms = strtoll(f[1]->str, NULL, 10);
            r->messages[r->count++] =
                hd_message_new(r->topic, r->topic_len, f[2]->len ? f[2]->str : NULL, f[2]->len,
                               f[3]->str, f[3]->len, seq, epoch, ms);
        }
        total += r->count;
    }
    ok = ok && k == reply->elements;
    if (ok && !adopt_epoch(e, epoch, cut, reply->element[2]->str)) {
        /* Sent before the node left that epoch: its cut says nothing of where Redis is now. */
        snprintf(why, why_len, "answered at epoch %08" PRIx32 ", which this node left", epoch);
        ok = false;
    }
    if (ok) {
        req->result.epoch = epoch;
        req->result.cut = cut;
        req->gaps = hd_calloc(req->topic_count + 1, sizeof(*req->gaps));
        for (size_t t = 0; t < req->topic_count; t++) {
            if (hd_redis_read_gap(&req->cursor, req->cursor_epoch, epoch, &reads[t],
                                  &req->gaps[req->result.gap_count]))
                req->result.gap_count++;
        }
        req->result.gaps = req->gaps;
        req->messages = hd_calloc(total + 1, sizeof(*req->messages));
        req->result.count =
            hd_redis_merge(reads, req->topic_count, req->limit, req->messages, &req->result.more);
        for (size_t i = 0; i < req->result.count; i++)
            hd_message_retain(req->messages[i]);
        req->result.messages = req->messages;
    }
    for (size_t t = 0; t < req->topic_count; t++) {
        for (size_t i = 0; i < reads[t].count; i++)
            hd_message_release(reads[t].messages[i]);
        free(reads[t].messages);
    }
    free(reads);
    return ok;
}

/* A client's read that cannot be answered: see hd_history_result.status. */
static void fail_read(hd_engine_request *req)
{
    req->result = (hd_history_result){.status = HD_HUB_UNAVAILABLE};
    request_complete(req);
}

/* A client's read, counted against WAITING_MAX (the engine's own reads are not). */
static bool read_counts(const hd_engine_request *req)
{
    return req->worker != HD_WORKER_NONE;
}

static read_queue *queue_of(redis_engine *e, const hd_engine_request *req)
{
    return read_counts(req) ? &e->clients : &e->own;
}

static void queue_init(read_queue *q)
{
    q->head = NULL;
    q->tail = q->broken_slot = &q->head;
}

/* Whether a new read must wait behind others: a client's waits behind both queues. */
static bool reads_wait(const redis_engine *e, const hd_engine_request *req)
{
    return e->own.head != NULL || (read_counts(req) && e->clients.head != NULL);
}

/*
 * A read that cannot be sent now (the link is not up, or too much is in
 * flight, or older reads wait) waits behind them, unless WAITING_MAX
 * clients' reads do already: a client's read then fails at once. The
 * engine's own reads (a position read per subscribed topic, a round's
 * reads) always wait.
 */
static void wait_for_link(redis_engine *e, hd_engine_request *req)
{
    if (e->waiting_count >= WAITING_MAX && read_counts(req)) {
        fail_read(req);
        return;
    }
    read_queue *q = queue_of(e, req);
    req->next = NULL;
    *q->tail = req;
    q->tail = &req->next;
    e->waiting_count += read_counts(req);
}

/*
 * A read that was in flight when the link broke: ahead of those of its
 * queue that never went (they were asked after it), behind those of the
 * same break answered before it (in flight in send order). on_link_state
 * starts the next break afresh.
 */
static void wait_again(redis_engine *e, hd_engine_request *req)
{
    read_queue *q = queue_of(e, req);
    req->next = *q->broken_slot;
    *q->broken_slot = req;
    if (q->tail == q->broken_slot)
        q->tail = &req->next;
    q->broken_slot = &req->next;
    e->waiting_count += read_counts(req);
}

/* Takes the oldest read of q off it. */
static hd_engine_request *waiting_pop(redis_engine *e, read_queue *q)
{
    hd_engine_request *req = q->head;
    q->head = req->next;
    if (q->head == NULL)
        q->tail = &q->head;
    e->waiting_count -= read_counts(req);
    q->broken_slot = &q->head;
    return req;
}

/* A waiting read no longer wanted: a client's goes back to its worker, which frees it. */
static void drop_waiting(hd_engine_request *req)
{
    if (read_counts(req))
        request_complete(req);
    else
        request_free(req);
}

static hd_redis_status send_read(redis_engine *e, hd_engine_request *req);

/*
 * The reads of q go, oldest first, until one does not fit; it and those
 * after it stay where they are. Returns whether q is empty.
 */
static bool resend_queue(redis_engine *e, read_queue *q)
{
    while (q->head != NULL && hd_redis_link_get_state(e->link) == HD_REDIS_LINK_UP) {
        hd_engine_request *req = q->head;
        bool current = e->round.active && req->round == e->round.id;
        if (atomic_load(&req->cancelled) || (req->fill && !current)) {
            /* Its caller went away, its topic was freed, or it is of a retired round. */
            drop_waiting(waiting_pop(e, q));
            continue;
        }
        if (send_read(e, req) != HD_REDIS_OK)
            return false;
        waiting_pop(e, q); /* in flight: on_read_reply has it */
        if (req->fill)
            e->round.parked--;
    }
    return q->head == NULL;
}

/*
 * The link came up, or answers made room in flight: the engine's own reads
 * go first, then the clients', each in order.
 */
static void resend_waiting(redis_engine *e)
{
    if (resend_queue(e, &e->own))
        resend_queue(e, &e->clients);
}

static void send_barrier(redis_engine *e);

/* The round's barrier, once all its reads went. */
static void send_owed_barrier(redis_engine *e)
{
    if (e->round.active && e->round.barrier_owed && e->round.parked == 0)
        send_barrier(e);
}

/*
 * Redis answered something (hd_redis_link_settings.on_room), or the sweep
 * timer: what found the link full goes now, a round's barrier (its reads
 * went before it) first, then the waiting reads.
 */
static void on_room(void *ctx)
{
    redis_engine *e = ctx;
    if (hd_redis_link_get_state(e->link) != HD_REDIS_LINK_UP)
        return;
    send_owed_barrier(e);
    resend_waiting(e);
    send_owed_barrier(e);
}

/* prune_waiting for one queue. */
static void prune_queue(redis_engine *e, read_queue *q)
{
    hd_engine_request **slot = &q->head;
    q->tail = q->broken_slot = &q->head;
    while (*slot != NULL) {
        hd_engine_request *req = *slot;
        if (atomic_load(&req->cancelled)) {
            *slot = req->next;
            e->waiting_count -= read_counts(req);
            drop_waiting(req);
            continue;
        }
        slot = &req->next;
        q->tail = slot;
    }
}

/*
 * Drops the waiting reads no longer wanted: those whose caller went away
 * (a poll answered at its timeout, a closed stream) and the position reads
 * of topics freed or subscribed anew, so that a long outage with clients
 * and topics coming and going holds only the reads still wanted.
 */
static void prune_waiting(redis_engine *e)
{
    prune_queue(e, &e->own);
    prune_queue(e, &e->clients);
}

static void on_fill_reply(redis_engine *e, hd_engine_request *req, hd_redis_status status,
                          const redisReply *reply);

static void fresh_ready(redis_engine *e, topic_state *t);

/* {epoch, cut, rotation}: the answer of a read of no topic, and of the hello script. */
static bool parse_position(const redisReply *reply, uint32_t *epoch, uint64_t *cut,
                           const char **rotation)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3)
        return false;
    for (size_t i = 0; i < 3; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING)
            return false;
    }
    if (!hd_redis_epoch_parse(reply->element[0]->str, reply->element[0]->len, epoch))
        return false;
    *cut = strtoull(reply->element[1]->str, NULL, 10);
    *rotation = reply->element[2]->str;
    return true;
}

/* A newly subscribed topic's position read answered: its subscribers start no earlier. */
static void on_position(redis_engine *e, hd_engine_request *req, const redisReply *reply)
{
    uint32_t epoch;
    topic_state *t = *topic_slot(e, req->topics[0], req->topic_lens[0]);
    if (t != NULL && t->position_read != req)
        t = NULL; /* the read of a topic since freed, or subscribed anew */
    uint64_t cut;
    const char *rotation;
    if (parse_position(reply, &epoch, &cut, &rotation)) {
        /* (An answer at an epoch the node left says nothing of where the topic stands now.) */
        if (adopt_epoch(e, epoch, cut, rotation) && t != NULL && t->fresh &&
            (t->since_epoch != epoch || t->since_seq < cut)) {
            t->since_epoch = epoch;
            t->since_seq = cut;
        }
    } else {
        log_read_failure(e, reply->type == REDIS_REPLY_ERROR
                                ? reply->str
                                : "the read script answered something unexpected");
    }
    request_free(req);
    if (t != NULL)
        t->position_read = NULL;
    if (t != NULL && t->fresh) {
        t->positioned = true;
        if (t->confirmed)
            fresh_ready(e, t);
    }
}

static void on_read_reply(void *ctx, hd_redis_status status, const redisReply *reply)
{
    hd_engine_request *req = ctx;
    redis_engine *e = req->engine;
    if (req->fill) {
        on_fill_reply(e, req, status, reply);
    } else if (status != HD_REDIS_OK) {
        /* The link broke: the read waits for it, ahead of those that were not sent yet. */
        wait_again(e, req);
    } else if (req->position) {
        on_position(e, req, reply);
    } else {
        /*
         * Refused (WRONGTYPE, -OOM, -BUSY, NOSCRIPT again after the reload,
         * a topic's key of another type) or unreadable: a failure, never an
         * empty answer, which would let a resume or poll skip what it asked.
         */
        char why[sizeof(e->read_error)];
        bool ok = reply->type != REDIS_REPLY_ERROR;
        if (!ok)
            snprintf(why, sizeof(why), "%s", reply->str);
        else
            ok = take_read_reply(e, req, reply, why, sizeof(why));
        if (ok) {
            request_complete(req);
        } else {
            log_read_failure(e, why);
            fail_read(req);
        }
    }
    script_answered(e); /* (the link calls on_room next) */
}

/*
 * Sends the read script for req; its answer goes to on_read_reply. Reads
 * go only while less than three quarters of max_inflight_bytes is in flight
 * (or nothing is): waiting reads fill the room as answers free it
 * (on_room), and publishes, which fail at once when the link is full,
 * keep the rest.
 */
static hd_redis_status send_read(redis_engine *e, hd_engine_request *req)
{
    uint64_t in_flight = hd_redis_link_inflight_bytes(e->link);
    if (in_flight > 0 && in_flight >= e->options.max_inflight_bytes / 4 * 3)
        return HD_REDIS_FULL;
    script_args a;
    char cursor_epoch[9] = "";
    if (!req->cursor.earliest)
        snprintf(cursor_epoch, sizeof(cursor_epoch), "%08" PRIx32, req->cursor_epoch);
    size_t topic_count = req->position ? 0 : req->topic_count;
    args_start(&a, e, 8 + topic_count);
    args_text(&a, cursor_epoch, strlen(cursor_epoch));
    args_number(&a, req->cursor.earliest ? 0 : (int64_t)req->cursor.seq);
    args_number(&a, (int64_t)req->limit + 1);
    int64_t ttl_ms = (int64_t)e->options.history_ttl_s * 1000;
    args_number(&a, ttl_ms > 0 ? hd_clock_wall_ms() - ttl_ms : -1);
    args_number(&a, (int64_t)topic_count);
    for (size_t i = 0; i < topic_count; i++)
        args_text(&a, req->topics[i], req->topic_lens[i]);
    /* A round's read retried after NOSCRIPT would run after its barrier: the round starts over. */
    a.once = req->fill;
    return args_call(&a, e, e->read_script, on_read_reply, req);
}

/* A new read (a client's, or a new topic's position): behind those it waits behind. */
static void run_read(redis_engine *e, hd_engine_request *req)
{
    if (atomic_load(&req->cancelled))
        request_complete(req); /* its caller went away: its worker frees it */
    else if (reads_wait(e, req) || hd_redis_link_get_state(e->link) != HD_REDIS_LINK_UP ||
             send_read(e, req) != HD_REDIS_OK)
        wait_for_link(e, req);
}

/* Copies the query's topics (each once) and cursor into the request. */
static hd_engine_request *read_request_new(redis_engine *e, const char *const *topics,
                                           const size_t *topic_lens, size_t topic_count,
                                           const hd_cursor *cursor, size_t limit, void *ctx)
{
    hd_engine_request *req = request_new(e, JOB_READ, ctx);
    size_t bytes = cursor->text_len;
    for (size_t i = 0; i < topic_count; i++)
        bytes += topic_lens[i];
    char *p = req->buf = hd_alloc(bytes + 1);
    req->topics = hd_calloc(topic_count + 1, sizeof(*req->topics));
    req->topic_lens = hd_calloc(topic_count + 1, sizeof(*req->topic_lens));
    for (size_t i = 0; i < topic_count; i++) {
        bool repeated = false;
        for (size_t j = 0; j < i && !repeated; j++)
            repeated =
                topic_lens[j] == topic_lens[i] && memcmp(topics[j], topics[i], topic_lens[i]) == 0;
        if (repeated)
            continue;
        req->topics[req->topic_count] = memcpy(p, topics[i], topic_lens[i]);
        req->topic_lens[req->topic_count++] = topic_lens[i];
        p += topic_lens[i];
    }
    req->cursor = *cursor;
    req->cursor.text = p;
    if (cursor->text_len > 0)
        memcpy(p, cursor->text, cursor->text_len);
    uint64_t seq;
    if (cursor->present && !cursor->earliest &&
        !hd_id_parse(cursor->text, cursor->text_len, &req->cursor_epoch, &seq))
        req->cursor_epoch = 0;
    req->limit = limit;
    return req;
}

static hd_engine_request *redis_read(hd_engine *engine, const hd_history_query *query,
                                     hd_engine_read_cb done, void *ctx)
{
    redis_engine *e = (redis_engine *)engine;
    if (query->topic_count == 0) {
        /* Nothing to read: the cut is the newest this node saw. */
        char id[HD_ID_MAX];
        size_t len = hd_hub_newest_id(engine->hub, id);
        hd_history_result result = {0};
        uint64_t seq = 0;
        hd_id_parse(id, len, &result.epoch, &seq);
        result.cut = seq;
        done(ctx, &result);
        return NULL;
    }
    size_t limit =
        query->limit == 0 || query->limit > HD_ENGINE_READ_MAX ? HD_ENGINE_READ_MAX : query->limit;
    hd_history_query bounded = *query;
    bounded.limit = limit;
    if (hd_engine_read_hub(engine, &bounded, true, done, ctx))
        return NULL; /* the node's own history answers it (docs/api.md, "Reads") */
    /* Without a cursor nothing is read, but the cut is the cluster's: read no topic. */
    hd_engine_request *req = read_request_new(e, query->topics, query->topic_lens,
                                              query->cursor.present ? query->topic_count : 0,
                                              &query->cursor, limit, ctx);
    req->read_done = done;
    post_job(e, req);
    return req;
}

static void redis_cancel(hd_engine *engine, hd_engine_request *request)
{
    (void)engine;
    atomic_store(&request->cancelled, true);
}

/* ------------------------------------------------------------------ topics (GET /topics) */

/*
 * A describe is a list call with no page and its one topic to describe.
 * A list sends the node's subscribed topics of the range with its first
 * script call (so a topic listed for them has the cluster's counts too), and
 * pages through the index until it holds limit + 1 topics with history or
 * the range is read: each call examines a bounded number of names, so a
 * run of stale ones (which the script drops) costs several calls, not one
 * long one.
 */
typedef struct topics_query {
    hd_engine_describe_cb describe_done;
    hd_engine_list_cb list_done;
    hd_hub_status status;
    uint32_t epoch; /* of the last answer (0: no hub hash: nothing is held) */
    size_t limit;   /* list: the page's */
    /* describe: the topic; list: this node's subscribed topics of the range (limit + 1 at most). */
    hd_topic_summary *local;
    size_t local_count;
    hd_redis_topic_stats *local_stats;
    bool local_sent;
    /* list: the index's topics with history so far (limit + 1 at most), and where it goes on. */
    hd_topic_summary *index;
    size_t index_count;
    char min[HD_TOPIC_NAME_MAX + 2];
    size_t min_len;
    char max[HD_TOPIC_NAME_MAX + 2];
    size_t max_len;
} topics_query;

/* Names examined per script call, per topic the page still needs. */
#define TOPICS_BUDGET_PER_WANT 4

static void topics_query_free(topics_query *query)
{
    if (query == NULL)
        return;
    free(query->local);
    free(query->local_stats);
    free(query->index);
    free(query);
}

static void topics_done(hd_engine_request *req, hd_hub_status status)
{
    req->query->status = status;
    request_complete(req);
}

static void run_topics(redis_engine *e, hd_engine_request *req);

static bool take_stats(redisReply *const *f, hd_redis_topic_stats *out)
{
    for (int i = 1; i < 4; i++) {
        if (f[i]->type != REDIS_REPLY_STRING)
            return false;
    }
    out->count = (size_t)strtoull(f[1]->str, NULL, 10);
    out->bytes = strtoull(f[2]->str, NULL, 10);
    out->last = strtoull(f[3]->str, NULL, 10);
    return true;
}

/* The topics script's answer, into the query. Returns false if malformed. */
static bool take_topics_reply(topics_query *q, size_t sent, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING ||
        reply->element[2]->type != REDIS_REPLY_INTEGER || reply->element[2]->integer < 0)
        return false;
    uint32_t epoch = 0;
    if (reply->element[0]->len > 0 &&
        !hd_redis_epoch_parse(reply->element[0]->str, reply->element[0]->len, &epoch))
        return false;
    size_t k = (size_t)reply->element[2]->integer;
    if (reply->elements != 3 + 4 * (k + sent) || q->index_count + k > q->limit + 1)
        return false;
    q->epoch = epoch;
    for (size_t i = 0; i < k; i++) {
        redisReply *const *f = &reply->element[3 + 4 * i];
        hd_redis_topic_stats stats = {.exists = true};
        if (f[0]->type != REDIS_REPLY_STRING || f[0]->len == 0 || f[0]->len > HD_TOPIC_NAME_MAX ||
            !take_stats(f, &stats))
            return false;
        hd_topic_summary *t = &q->index[q->index_count++];
        memset(t, 0, sizeof(*t));
        memcpy(t->name, f[0]->str, f[0]->len);
        t->name_len = f[0]->len;
        hd_redis_topic_fill(&t->info, epoch, &stats);
    }
    for (size_t i = 0; i < sent; i++) {
        redisReply *const *f = &reply->element[3 + 4 * (k + i)];
        hd_redis_topic_stats *stats = &q->local_stats[i];
        if (f[0]->type != REDIS_REPLY_INTEGER || !take_stats(f, stats))
            return false;
        stats->exists = f[0]->integer == 1;
    }
    /* Not full, and the budget ran out first: the next call goes on after the last name seen. */
    const redisReply *resume = reply->element[1];
    if (resume->len > 0 && q->index_count < q->limit + 1 && resume->len <= HD_TOPIC_NAME_MAX) {
        q->min[0] = '(';
        memcpy(q->min + 1, resume->str, resume->len);
        q->min_len = resume->len + 1;
        return true;
    }
    q->min_len = 0; /* done */
    return true;
}

static void on_topics_reply(void *ctx, hd_redis_status status, const redisReply *reply)
{
    hd_engine_request *req = ctx;
    redis_engine *e = req->engine;
    topics_query *q = req->query;
    size_t sent = q->local_sent ? 0 : q->local_count;
    q->local_sent = true;
    if (status != HD_REDIS_OK) {
        topics_done(req, HD_HUB_UNAVAILABLE); /* a read: nothing to be unsure about */
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR || !take_topics_reply(q, sent, reply)) {
        hd_log_error("cluster: the topics script failed: %s",
                     reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected answer");
        topics_done(req, HD_HUB_UNAVAILABLE);
        return;
    }
    if (req->kind == JOB_LIST && q->min_len > 0 && !atomic_load(&req->cancelled))
        run_topics(e, req);
    else
        topics_done(req, HD_HUB_OK);
}

/* On the engine thread: the next script call of a describe or list; never waits for the link. */
static void run_topics(redis_engine *e, hd_engine_request *req)
{
    topics_query *q = req->query;
    if (hd_redis_link_get_state(e->link) != HD_REDIS_LINK_UP) {
        topics_done(req, HD_HUB_UNAVAILABLE);
        return;
    }
    size_t sent = q->local_sent ? 0 : q->local_count;
    size_t want = req->kind == JOB_LIST ? q->limit + 1 - q->index_count : 0;
    script_args a;
    args_start(&a, e, 9 + sent);
    int64_t ttl_ms = (int64_t)e->options.history_ttl_s * 1000;
    args_number(&a, ttl_ms > 0 ? hd_clock_wall_ms() - ttl_ms : -1);
    args_text(&a, q->min, q->min_len);
    args_text(&a, q->max, q->max_len);
    args_number(&a, (int64_t)want);
    args_number(&a, (int64_t)(want * TOPICS_BUDGET_PER_WANT));
    args_number(&a, (int64_t)sent);
    for (size_t i = 0; i < sent; i++)
        args_text(&a, q->local[i].name, q->local[i].name_len);
    if (args_call(&a, e, e->topics_script, on_topics_reply, req) != HD_REDIS_OK)
        topics_done(req, HD_HUB_UNAVAILABLE);
}

/* On the worker: this node's subscribers joined to the cluster's history. */
static void topics_on_worker(redis_engine *e, hd_engine_request *req)
{
    topics_query *q = req->query;
    if (req->kind == JOB_DESCRIBE) {
        hd_topic_description d = {.status = q->status};
        if (d.status == HD_HUB_OK) {
            const hd_topic_summary *t = &q->local[0];
            if (!hd_hub_topic_info(e->base.hub, t->name, t->name_len, &d.info))
                memset(&d.info, 0, sizeof(d.info));
            hd_redis_topic_fill(&d.info, q->epoch, &q->local_stats[0]);
            d.found = d.info.history_messages > 0 || d.info.subscribers > 0;
        }
        q->describe_done(req->ctx, &d);
        return;
    }
    hd_topic_list list = {.status = q->status};
    hd_topic_summary *page = NULL;
    if (list.status == HD_HUB_OK) {
        for (size_t i = 0; i < q->local_count; i++)
            hd_redis_topic_fill(&q->local[i].info, q->epoch, &q->local_stats[i]);
        page = hd_alloc((q->limit + 1) * sizeof(*page));
        list.count = hd_redis_topics_merge(q->index, q->index_count, q->local, q->local_count,
                                           q->limit, page, &list.more);
        list.topics = page;
    }
    q->list_done(req->ctx, &list);
    free(page);
}

static hd_engine_request *topics_request_new(redis_engine *e, job_kind kind, void *ctx,
                                             size_t local_cap)
{
    hd_engine_request *req = request_new(e, kind, ctx);
    topics_query *q = req->query = hd_calloc(1, sizeof(*q));
    q->local = hd_alloc(local_cap * sizeof(*q->local));
    q->local_stats = hd_calloc(local_cap, sizeof(*q->local_stats));
    return req;
}

/* Not reachable now: the answer is at once, as for a publish (nothing waits for Redis). */
static bool topics_unavailable(const redis_engine *e)
{
    return atomic_load(&((redis_engine *)e)->state) != HD_ENGINE_UP;
}

static hd_engine_request *redis_describe(hd_engine *engine, const char *topic, size_t topic_len,
                                         hd_engine_describe_cb done, void *ctx)
{
    redis_engine *e = (redis_engine *)engine;
    if (topics_unavailable(e)) {
        done(ctx, &(hd_topic_description){.status = HD_HUB_UNAVAILABLE});
        return NULL;
    }
    hd_engine_request *req = topics_request_new(e, JOB_DESCRIBE, ctx, 1);
    topics_query *q = req->query;
    q->describe_done = done;
    memcpy(q->local[0].name, topic, topic_len);
    q->local[0].name_len = topic_len;
    q->local_count = 1;
    post_job(e, req);
    return req;
}

static hd_engine_request *redis_list(hd_engine *engine, const hd_topic_list_query *query,
                                     hd_engine_list_cb done, void *ctx)
{
    redis_engine *e = (redis_engine *)engine;
    if (topics_unavailable(e)) {
        done(ctx, &(hd_topic_list){.status = HD_HUB_UNAVAILABLE});
        return NULL;
    }
    hd_engine_request *req = topics_request_new(e, JOB_LIST, ctx, query->limit + 1);
    topics_query *q = req->query;
    q->list_done = done;
    q->limit = query->limit;
    bool local_more; /* not needed: limit + 1 of them make the merge's more exact */
    q->local_count =
        hd_hub_list_subscribed_topics(engine->hub, query->prefix, query->prefix_len, query->after,
                                      query->after_len, query->limit + 1, q->local, &local_more);
    q->index = hd_alloc((query->limit + 1) * sizeof(*q->index));
    hd_redis_topics_range(query->prefix, query->prefix_len, query->after, query->after_len, q->min,
                          &q->min_len, q->max, &q->max_len);
    post_job(e, req);
    return req;
}

/* ------------------------------------------------------------------ live fan-out */

static void held_push(redis_engine *e, hd_message *msg, uint64_t prev, bool front)
{
    if (e->held_len == e->held_cap) {
        size_t cap = e->held_cap ? e->held_cap * 2 : 64;
        hd_message **held = hd_alloc(cap * sizeof(*held));
        uint64_t *held_prev = hd_alloc(cap * sizeof(*held_prev));
        for (size_t i = 0; i < e->held_len; i++) {
            held[i] = e->held[(e->held_head + i) % e->held_cap];
            held_prev[i] = e->held_prev[(e->held_head + i) % e->held_cap];
        }
        free(e->held);
        free(e->held_prev);
        e->held = held;
        e->held_prev = held_prev;
        e->held_head = 0;
        e->held_cap = cap;
    }
    size_t slot;
    if (front) {
        e->held_head = (e->held_head + e->held_cap - 1) % e->held_cap;
        slot = e->held_head;
    } else {
        slot = (e->held_head + e->held_len) % e->held_cap;
    }
    e->held[slot] = msg;
    e->held_prev[slot] = prev;
    e->held_len++;
}

static hd_message *held_pop(redis_engine *e, uint64_t *prev)
{
    hd_message *msg = e->held[e->held_head];
    *prev = e->held_prev[e->held_head];
    e->held_head = (e->held_head + 1) % e->held_cap;
    e->held_len--;
    return msg;
}

static void set_catch(redis_engine *e, topic_state *t, catch_state state)
{
    if (t->catching == CATCH_NONE && state != CATCH_NONE)
        e->catching++;
    else if (t->catching != CATCH_NONE && state == CATCH_NONE)
        e->catching--;
    if (t->catching == CATCH_RESYNC && state != CATCH_RESYNC)
        e->catch_resync--;
    else if (t->catching != CATCH_RESYNC && state == CATCH_RESYNC)
        e->catch_resync++;
    bool was_none = t->catching == CATCH_NONE;
    t->catching = state;
    /* Catching up withdraws the topic's coverage; once done, its record gives it again. */
    if (was_none != (state == CATCH_NONE))
        publish_cover(e, t);
}

/*
 * One live message, in seq order, while nothing is catching up (or as a
 * round's merge reaches it): taken over. A lost predecessor (prev newer
 * than the topic's last) makes the topic WANTED and puts msg back at the
 * front of held (returns false then), unless check is false (the catch-up
 * was given up: the topic's subscribers get a gap up to prev, then msg).
 */
static bool deliver_live(redis_engine *e, hd_message *msg, uint64_t prev, bool check)
{
    uint32_t epoch;
    uint64_t seq;
    hd_id_parse(msg->id, msg->id_len, &epoch, &seq);
    if (!adopt_epoch(e, epoch, seq, NULL)) {
        /* Of an epoch the node left: its subscribers had their gap, its ids mean nothing now. */
        atomic_fetch_add(&e->late_messages, 1);
        hd_message_release(msg);
        return true;
    }
    topic_state *t = *topic_slot(e, msg->topic, msg->topic_len);
    if (t != NULL && !t->fresh && t->epoch != epoch) {
        /*
         * A new epoch restarts every topic's prev chain at 0, so that a
         * hole before the topic's first message in it is read too. (A new
         * topic is placed by its position read instead.)
         */
        t->epoch = epoch;
        t->last = 0;
    }
    if (t != NULL && t->epoch == epoch) {
        if (seq <= t->last) {
            hd_hub_pass_live(e->base.hub, epoch, seq);
            hd_message_release(msg); /* already ingested (from a read) */
            return true;
        }
        if (check && prev > t->last) {
            held_push(e, msg, prev, true);
            set_catch(e, t, CATCH_WANTED);
            return false;
        }
        if (prev > t->last) {
            hd_hub_ingest_loss(e->base.hub, t->name, t->len, epoch, prev);
            t->chained = false;
        }
    }
    uint64_t cover = HD_HUB_UNCOVERED;
    if (t != NULL) {
        t->last = seq;
        t->epoch = epoch;
        /* Nothing of the topic lies between prev and seq, and what follows comes in order. */
        if (!t->chained || t->chain_epoch != epoch || prev > t->chain_last) {
            t->chained = true;
            t->chain_epoch = epoch;
            t->chain_from = prev;
            t->chain_last = seq;
        } else if (seq > t->chain_last) {
            t->chain_last = seq; /* one at or below the record's end does not shorten it */
        }
        cover = cover_of(e, t);
    }
    if (!hd_hub_ingest_live(e->base.hub, msg, cover) && t != NULL)
        t->chained = false;
    return true;
}

/* ------------------------------------------------------------------ catch-up rounds */

/*
 * A node emits messages in seq order, across topics (SPEC §5: a client's
 * Last-Event-ID is a cursor over all of its topics). Pub/sub brings them in
 * that order; what it missed is read back, per topic from its last, and
 * must be merged in: after a reconnect (every topic, once its SUBSCRIBE is
 * confirmed), for a lost pub/sub message (prev newer than last) and for a
 * newly subscribed topic (from where its first subscriber started). So:
 *
 *  - While any topic is not CATCH_NONE, every live message is held.
 *  - A round starts once no topic is RESYNC (after a reconnect, one round
 *    reads every topic; a new topic's WAITING does not hold rounds back,
 *    or a steady stream of new subscriptions would starve them): one read
 *    per WANTED topic, each from its own last, each of at most
 *    (ROUND_ENTRIES_MAX - entries still buffered) / topics entries (1 to
 *    HD_ENGINE_READ_MAX); then a barrier published on the node channel
 *    over the same command connection. Redis runs them in that order, so
 *    once the barrier comes back over pub/sub, every message published
 *    before the last read is in a read, or held (its topic was subscribed
 *    before its read was sent), or was lost on pub/sub (its successor
 *    reveals it).
 *  - Then the reads (with what earlier rounds read and did not emit yet)
 *    and the held messages are merged by seq, up to a bound: the smallest
 *    last-returned seq of a read that hit its limit (its topic may hold
 *    more just above), and the position of every topic still to be read
 *    (WANTED, WAITING: theirs may lie anywhere after it). A held message
 *    revealing a hole lowers the bound to just below itself.
 *  - A topic whose read ran out is read again in the next round if it hit
 *    its limit, and done otherwise; one with entries past the bound keeps
 *    them (CATCH_READ); held messages past the bound stay held. Each round
 *    emits at least the read that set the bound, or the topics that set it
 *    are read in the next one.
 *
 * The node's own history answers reads of a topic only while it does not
 * catch up (topic_state, cover_of): holding live messages delays the
 * node's live position, which reads answered locally are as of, and what
 * a round emits is in seq order, so a topic's record reaches that position
 * once its catch-up is done. A read's entries extend the record as they
 * are emitted (begin_read, emit_read), possibly over several rounds, with
 * the same conditions a single read of the range had: sent once the
 * topic's SUBSCRIBE was confirmed on this connection, starting within the
 * record (or restarting it there, or past a loss), and every entry past
 * the record's end taken by the hub.
 *
 * Memory: ROUND_ENTRIES_MAX read entries (or one per topic) plus
 * cluster.max_held_messages held messages: past that the catch-up is given
 * up (give_up_catch_up), with a gap, rather than delivering out of order.
 * A round whose reads or barrier cannot be sent, or whose read fails, is
 * dropped and tried again by the sweep timer; one whose read met NOSCRIPT
 * starts over at once (a read sent again alone would run after the
 * barrier); a lost link drops it and the reconnect starts over from every
 * topic's last. Answers of a dropped round (reads, barrier) are ignored by
 * its number.
 */

static void drop_read(topic_state *t)
{
    if (t->read != NULL)
        request_free(t->read);
    t->read = NULL;
    t->read_next = 0;
}

/* Retires the round under way (its answers are dropped) and what was read: WANTED again. */
static void abandon_round(redis_engine *e)
{
    e->round.active = false;
    for (size_t b = 0; b < TOPIC_BUCKETS; b++) {
        for (topic_state *t = e->topics[b]; t != NULL; t = t->next) {
            if (t->catching == CATCH_READING || t->catching == CATCH_READ) {
                drop_read(t);
                set_catch(e, t, CATCH_WANTED);
            }
        }
    }
}

/* A barrier's PUBLISH, for its answer: which round sent it. */
typedef struct barrier_sent {
    redis_engine *engine;
    uint64_t round;
} barrier_sent;

static void on_barrier_reply(void *ctx, hd_redis_status status, const redisReply *reply)
{
    barrier_sent *sent = ctx;
    redis_engine *e = sent->engine;
    bool current = e->round.active && sent->round == e->round.id;
    free(sent);
    if (!current || status != HD_REDIS_OK ||
        (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0))
        return; /* of a retired round; or a lost link, which retires the round itself */
    /* Nobody heard it (the node channel is not subscribed): the round could never end. */
    hd_log_warn("cluster: a catch-up barrier reached no subscriber; trying again");
    abandon_round(e);
}

static void finish_round(redis_engine *e);

static void start_round(redis_engine *e)
{
    /* (catching == 0: no topic to read, and no need to look at every topic each sweep.) */
    if (e->round.active || e->catching == 0 || e->catch_resync > 0 || !e->node_confirmed ||
        hd_redis_link_get_state(e->link) != HD_REDIS_LINK_UP)
        return;
    size_t count = 0, buffered = 0, kept = 0, waiting = 0;
    for (size_t b = 0; b < TOPIC_BUCKETS; b++) {
        for (topic_state *t = e->topics[b]; t != NULL; t = t->next) {
            count += t->catching == CATCH_WANTED;
            waiting += t->catching == CATCH_WAITING || t->catching == CATCH_RESYNC;
            if (t->catching == CATCH_READ) {
                kept++;
                buffered += t->read->result.count - t->read_next;
            }
        }
    }
    if (count == 0) {
        /*
         * Entries kept past an earlier round's bound, and no topic left to
         * be read that could lower it (the new topic that set it left, or
         * turned out to need no read): they are merged now, or they and
         * every held message would wait forever. Their barrier came back
         * already, so no new one is needed.
         */
        if (kept > 0 && waiting == 0)
            finish_round(e);
        return;
    }
    size_t limit = buffered < ROUND_ENTRIES_MAX ? (ROUND_ENTRIES_MAX - buffered) / count : 0;
    limit = limit < 1 ? 1 : limit > HD_ENGINE_READ_MAX ? HD_ENGINE_READ_MAX : limit;
    e->round.active = true;
    e->round.id++;
    e->round.count = count;
    e->round.answered = 0;
    e->round.barrier_seen = false;
    e->round.barrier_owed = true;
    e->round.parked = 0;
    bool sent = true;
    for (size_t b = 0; sent && b < TOPIC_BUCKETS; b++) {
        for (topic_state *t = e->topics[b]; sent && t != NULL; t = t->next) {
            if (t->catching != CATCH_WANTED)
                continue;
            set_catch(e, t, CATCH_READING);
            char cursor_text[HD_ID_MAX];
            hd_cursor cursor = {.present = true, .seq = t->last, .text = cursor_text};
            cursor.text_len = hd_id_format(t->epoch, t->last, cursor_text);
            const char *topic = t->name;
            hd_engine_request *req = read_request_new(e, &topic, &t->len, 1, &cursor, limit, NULL);
            req->fill = true;
            req->worker = HD_WORKER_NONE;
            req->round = e->round.id;
            req->fill_link = t->confirmed_link == e->link_ups ? e->link_ups : 0;
            atomic_fetch_add(&e->gap_reads, 1);
            /* In order with the engine's reads waiting for room, as they do (on_room). */
            hd_redis_status status = reads_wait(e, req) ? HD_REDIS_FULL : send_read(e, req);
            if (status == HD_REDIS_FULL) {
                wait_for_link(e, req);
                e->round.parked++;
            } else if (status != HD_REDIS_OK) {
                request_free(req);
                sent = false;
            }
        }
    }
    if (sent)
        send_owed_barrier(e);
    else
        abandon_round(e); /* the sweep timer tries again */
}

/*
 * The round's barrier, after its reads (send_owed_barrier): when the link
 * is full it stays owed, and goes once Redis answers something (on_room).
 */
static void send_barrier(redis_engine *e)
{
    char barrier[sizeof(BARRIER_PREFIX) + 20];
    const char *argv[] = {"PUBLISH", e->probe_channel, barrier};
    size_t lens[] = {
        7, strlen(e->probe_channel),
        (size_t)snprintf(barrier, sizeof(barrier), BARRIER_PREFIX "%" PRIu64, e->round.id)};
    barrier_sent *ctx = hd_alloc(sizeof(*ctx));
    *ctx = (barrier_sent){.engine = e, .round = e->round.id};
    hd_redis_status status = hd_redis_link_command(e->link, 3, argv, lens, on_barrier_reply, ctx);
    e->round.barrier_owed = status == HD_REDIS_FULL;
    if (status == HD_REDIS_OK)
        return;
    free(ctx);
    if (status != HD_REDIS_FULL)
        abandon_round(e); /* the sweep timer tries again */
}

/* A topic's read entries not emitted yet (t->read, from t->read_next on). */
static hd_redis_topic_read read_rest(const topic_state *t)
{
    return (hd_redis_topic_read){
        .topic = t->name,
        .topic_len = t->len,
        .messages = t->read->messages + t->read_next,
        .count = t->read->result.count - t->read_next,
    };
}

/*
 * Where a topic that is still to be read stands in epoch: its entries may lie
 * anywhere after it. UINT64_MAX for one that needs no read (a new topic that
 * started in another epoch).
 */
static uint64_t catch_position(const topic_state *t, uint32_t epoch)
{
    if (t->fresh)
        return t->since_epoch == epoch ? t->since_seq : UINT64_MAX;
    return t->epoch == epoch ? t->last : 0;
}

/*
 * A read entry of t (t->read's next one), in the merge: skipped when
 * pub/sub brought it already (so the record has it). One past the record's
 * end extends it when the read counts (topic_state) and the entry before
 * it in the read lies within the record; otherwise, or when the hub does
 * not take it, the record breaks.
 */
static bool emit_read(redis_engine *e, topic_state *t, hd_message *msg)
{
    uint64_t prev = t->read_prev;
    t->read_prev = msg->seq;
    if (t->epoch == msg->epoch && msg->seq <= t->last)
        return false;
    t->epoch = msg->epoch;
    t->last = msg->seq;
    bool taken = hd_hub_ingest(e->base.hub, hd_message_retain(msg));
    if (t->chain_epoch != msg->epoch || msg->seq > t->chain_last) {
        t->chained = t->chained && taken && t->read->fill_link == e->link_ups &&
                     t->chain_epoch == msg->epoch && prev <= t->chain_last;
        t->chain_epoch = msg->epoch;
        t->chain_last = msg->seq;
    }
    return true;
}

/*
 * A round's read of t, emitted for the first time: where it starts (its
 * cursor, or past what history lost, as it found: t's subscribers hear of
 * that first) joins t's record or starts a new one (topic_state).
 */
static void begin_read(redis_engine *e, topic_state *t)
{
    const hd_engine_request *req = t->read;
    uint32_t epoch = req->result.epoch;
    bool counts = req->fill_link == e->link_ups && epoch == e->epoch;
    uint64_t from = req->cursor_epoch == epoch ? req->cursor.seq : 0;
    if (!counts || !t->chained || t->chain_epoch != epoch || from > t->chain_last) {
        t->chained = counts;
        t->chain_epoch = epoch;
        t->chain_from = t->chain_last = from;
    }
    for (size_t i = 0; i < req->result.gap_count; i++) {
        const hd_gap *gap = &req->result.gaps[i];
        if (gap->to_seq == 0)
            continue; /* another epoch, none of it lost: its messages follow */
        if (epoch != t->epoch || gap->to_seq > t->last) {
            t->epoch = epoch;
            t->last = gap->to_seq;
        }
        if (gap->to_seq > from)
            from = gap->to_seq;
        if (gap->to_seq > t->chain_last)
            t->chain_from = t->chain_last = gap->to_seq; /* the record starts over after the loss */
        hd_hub_ingest_loss(e->base.hub, gap->topic, gap->topic_len, epoch, gap->to_seq);
    }
    t->read_prev = from;
}

/* Emits the merged reads and the held messages up to bound, in seq order; returns how many read. */
static size_t emit_merged(redis_engine *e, uint32_t epoch, hd_message **merged, size_t n,
                          uint64_t *bound)
{
    size_t next = 0, emitted = 0;
    for (;;) {
        hd_message *read = next < n && merged[next]->seq <= *bound ? merged[next] : NULL;
        uint32_t held_epoch = 0;
        uint64_t held_seq = 0;
        bool held = e->held_len > 0;
        if (held) {
            hd_message *msg = e->held[e->held_head];
            hd_id_parse(msg->id, msg->id_len, &held_epoch, &held_seq);
            /* One of another epoch follows the rotation, after what was read. */
            held = held_epoch != epoch || held_seq <= *bound;
        }
        if (read != NULL && (!held || held_epoch != epoch || read->seq < held_seq)) {
            emitted += emit_read(e, *topic_slot(e, read->topic, read->topic_len), read);
            next++;
        } else if (held) {
            uint64_t prev;
            hd_message *msg = held_pop(e, &prev);
            if (!deliver_live(e, msg, prev, true)) {
                if (held_epoch != epoch)
                    return emitted;    /* a hole in the next epoch: all is read again in it */
                *bound = held_seq - 1; /* a hole: nothing from its seq on before it is read */
            }
        } else {
            return emitted;
        }
    }
}

/* Every read answered and the barrier back: merge, emit up to the bound, and go on. */
static void finish_round(redis_engine *e)
{
    e->round.active = false;
    uint32_t epoch = e->epoch;
    size_t count = 0, waiting = 0, total = 0;
    for (size_t b = 0; b < TOPIC_BUCKETS; b++) {
        for (topic_state *t = e->topics[b]; t != NULL; t = t->next) {
            count += t->catching == CATCH_READING || t->catching == CATCH_READ;
            waiting += t->catching == CATCH_WANTED || t->catching == CATCH_WAITING ||
                       t->catching == CATCH_RESYNC;
        }
    }
    topic_state **topics = hd_alloc((count + 1) * sizeof(*topics));
    hd_redis_topic_read *reads = hd_calloc(count + 1, sizeof(*reads));
    bool *paged = hd_calloc(count + 1, sizeof(*paged));
    uint64_t *positions = hd_alloc((waiting + 1) * sizeof(*positions));
    bool rotated = false; /* a read of another epoch than the engine's now */
    size_t k = 0, w = 0;
    for (size_t b = 0; b < TOPIC_BUCKETS; b++) {
        for (topic_state *t = e->topics[b]; t != NULL; t = t->next) {
            if (t->catching == CATCH_WANTED || t->catching == CATCH_WAITING ||
                t->catching == CATCH_RESYNC)
                positions[w++] = catch_position(t, epoch);
            if (t->catching != CATCH_READING && t->catching != CATCH_READ)
                continue;
            topics[k] = t;
            if (t->read->result.epoch == epoch) {
                if (t->catching == CATCH_READING)
                    begin_read(e, t);
                reads[k] = read_rest(t);
                paged[k] = t->read->result.more;
                total += reads[k].count;
            } else {
                rotated = true;
            }
            k++;
        }
    }
    /* After a rotation in between, nothing of the new epoch goes out before all is read again. */
    uint64_t bound = rotated ? 0 : hd_redis_catch_up_bound(reads, paged, count, positions, waiting);
    free(paged);
    free(positions);
    hd_message **merged = hd_alloc((total + 1) * sizeof(*merged));
    bool more;
    size_t n = hd_redis_merge(reads, count, total, merged, &more);
    atomic_fetch_add(&e->catchup_messages, emit_merged(e, epoch, merged, n, &bound));
    free(merged);
    free(reads);
    /* Everything read up to the (final) bound went out. */
    for (k = 0; k < count; k++) {
        topic_state *t = topics[k];
        hd_engine_request *req = t->read;
        if (req->result.epoch != epoch || t->catching == CATCH_WANTED) {
            drop_read(t); /* read again: after a rotation, or a hole past what it holds */
            set_catch(e, t, CATCH_WANTED);
            continue;
        }
        while (t->read_next < req->result.count && req->messages[t->read_next]->seq <= bound)
            t->read_next++;
        if (t->read_next < req->result.count) {
            set_catch(e, t, CATCH_READ);
        } else {
            bool more_to_read = req->result.more;
            drop_read(t);
            set_catch(e, t, more_to_read ? CATCH_WANTED : CATCH_NONE);
        }
    }
    free(topics);
    start_round(e);
    drain_held(e);
}

static void on_fill_reply(redis_engine *e, hd_engine_request *req, hd_redis_status status,
                          const redisReply *reply)
{
    if (!e->round.active || req->round != e->round.id) {
        request_free(req); /* of a retired round */
        return;
    }
    if (status != HD_REDIS_OK) {
        request_free(req);
        abandon_round(e); /* the link broke: the reconnect reads every topic again */
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR &&
        strncmp(reply->str, "NOSCRIPT", strlen("NOSCRIPT")) == 0) {
        /* Redis lost the script, and the link loads it again ahead of what comes next. */
        hd_log_info("cluster: Redis lost the read script; the catch-up round starts over");
        request_free(req);
        abandon_round(e);
        start_round(e);
        return;
    }
    char why[sizeof(e->read_error)];
    if (reply->type == REDIS_REPLY_ERROR || !take_read_reply(e, req, reply, why, sizeof(why))) {
        log_read_failure(e, reply->type == REDIS_REPLY_ERROR ? reply->str : why);
        request_free(req);
        abandon_round(e); /* the sweep timer tries again */
        return;
    }
    topic_state *t = *topic_slot(e, req->topics[0], req->topic_lens[0]);
    if (t != NULL && t->catching == CATCH_READING) {
        t->read = req;
        t->read_next = 0;
    } else {
        request_free(req); /* unsubscribed meanwhile */
    }
    if (++e->round.answered == e->round.count && e->round.barrier_seen)
        finish_round(e);
}

/* A message on the node channel: the round's barrier came back. */
static void on_node_message(redis_engine *e, const char *payload, size_t len)
{
    char barrier[sizeof(BARRIER_PREFIX) + 20];
    int n = snprintf(barrier, sizeof(barrier), BARRIER_PREFIX "%" PRIu64, e->round.id);
    if (!e->round.active || len != (size_t)n || memcmp(payload, barrier, len) != 0)
        return;
    e->round.barrier_seen = true;
    if (e->round.answered == e->round.count)
        finish_round(e);
}

/* Held messages go on once no topic catches up. */
static void drain_held(redis_engine *e)
{
    while (e->catching == 0 && e->held_len > 0) {
        uint64_t prev;
        hd_message *msg = held_pop(e, &prev);
        if (!deliver_live(e, msg, prev, true))
            start_round(e);
    }
}

/*
 * held is full (cluster.max_held_messages): the catch-up is given up rather
 * than delivering out of order or dropping in silence. The round under way
 * is retired and every topic still catching up is cut at the newest held
 * message: its subscribers get a gap up to there (what a read would have
 * brought, and what was held of it: Redis's history still has that for a
 * resume from before the gap), and one whose SUBSCRIBE is not confirmed yet
 * reads from there once it is. Then everything held goes on in seq order
 * (a hole in another topic is a gap up to the message that revealed it).
 */
static void give_up_catch_up(redis_engine *e)
{
    hd_log_warn(
        "cluster: %zu live messages held back while catching up: giving the catch-up "
        "up; subscribers of the topics it was reading get a gap (cluster.max_held_messages)",
        e->held_len);
    atomic_fetch_add(&e->held_overflows, 1);
    abandon_round(e);
    uint32_t epoch;
    uint64_t upto;
    hd_message *newest = e->held[(e->held_head + e->held_len - 1) % e->held_cap];
    hd_id_parse(newest->id, newest->id_len, &epoch, &upto);
    if (epoch_left(e, epoch)) { /* late news of an epoch left: dropped as it goes on */
        epoch = e->epoch;
        upto = e->known_seq;
    }
    for (size_t b = 0; b < TOPIC_BUCKETS; b++) {
        for (topic_state *t = e->topics[b]; t != NULL; t = t->next) {
            if (t->catching == CATCH_NONE)
                continue;
            /* A new topic's subscribers start at since: only what lies after it is theirs. */
            uint32_t at_epoch = t->fresh ? t->since_epoch : t->epoch;
            uint64_t at = t->fresh ? t->since_seq : t->last;
            if (at_epoch != epoch || at < upto) {
                hd_hub_ingest_loss(e->base.hub, t->name, t->len, epoch, upto);
                t->epoch = t->since_epoch = epoch;
                t->last = t->since_seq = upto;
                t->chained = false;
            }
            if (t->catching == CATCH_WANTED)
                set_catch(e, t, CATCH_NONE);
        }
    }
    while (e->held_len > 0) {
        uint64_t prev;
        hd_message *msg = held_pop(e, &prev);
        deliver_live(e, msg, prev, false);
    }
}

/* One message from pub/sub, in seq order: taken over. */
static void ingest_live(redis_engine *e, hd_message *msg, uint64_t prev)
{
    if (e->catching > 0 && e->held_len >= e->options.max_held_messages)
        give_up_catch_up(e);
    if (e->catching > 0 || e->held_len > 0) {
        held_push(e, msg, prev, false);
        return;
    }
    if (!deliver_live(e, msg, prev, true))
        start_round(e);
}

static void on_pubsub_message(void *ctx, const char *channel, size_t channel_len,
                              const char *payload, size_t payload_len)
{
    redis_engine *e = ctx;
    if (channel_len <= e->prefix_len + 3 || memcmp(channel, e->prefix, e->prefix_len) != 0 ||
        memcmp(channel + e->prefix_len, ":c:", 3) != 0) {
        on_node_message(e, payload, payload_len); /* the node channel */
        return;
    }
    const char *topic = channel + e->prefix_len + 3;
    size_t topic_len = channel_len - e->prefix_len - 3;
    hd_redis_payload p;
    if (!hd_redis_payload_parse(payload, payload_len, &p) ||
        !hd_topic_name_valid(topic, topic_len)) {
        hd_log_warn("cluster: ignoring a malformed message on %.*s", (int)channel_len, channel);
        return;
    }
    hd_message *msg = hd_message_new(topic, topic_len, p.event, p.event_len, p.data, p.data_len,
                                     p.seq, p.epoch, p.time_ms);
    ingest_live(e, msg, p.prev);
}

/* A newly subscribed topic is confirmed and positioned: read what lies between. */
static void fresh_ready(redis_engine *e, topic_state *t)
{
    t->fresh = t->resync = false;
    if (t->since_epoch == e->epoch) {
        /*
         * The topic stands where its subscribers started, so that the
         * round reads it from there, and a reconnect does even when no
         * message comes before (otherwise what was published while away
         * would never be read).
         */
        if (t->epoch != t->since_epoch || t->last < t->since_seq) {
            t->epoch = t->since_epoch;
            t->last = t->since_seq;
        }
        set_catch(e, t, CATCH_WANTED);
    } else {
        set_catch(e, t, CATCH_NONE);
    }
    start_round(e);
    drain_held(e);
}

/*
 * After a reconnect, once Redis confirmed a topic's SUBSCRIBE, everything
 * newer arrives over pub/sub: what was published while the node was away
 * is read from the topic's last message (a gap where history lost it).
 */
static void on_subscribed(void *ctx, const char *channel, size_t channel_len)
{
    redis_engine *e = ctx;
    if (channel_len == strlen(e->probe_channel) &&
        memcmp(channel, e->probe_channel, channel_len) == 0) {
        e->node_confirmed = true; /* rounds can end: their barriers come back */
        start_round(e);
        return;
    }
    if (channel_len <= e->prefix_len + 3 || memcmp(channel, e->prefix, e->prefix_len) != 0 ||
        memcmp(channel + e->prefix_len, ":c:", 3) != 0)
        return;
    topic_state *t = *topic_slot(e, channel + e->prefix_len + 3, channel_len - e->prefix_len - 3);
    if (t == NULL)
        return;
    t->confirmed_link = e->link_ups;
    if (t->fresh) {
        t->confirmed = true;
        if (t->positioned)
            fresh_ready(e, t);
    } else if (t->resync) {
        t->resync = false;
        set_catch(e, t, CATCH_WANTED);
        start_round(e);
    }
}

/* ------------------------------------------------------------------ the link's state */

/* The hello's answer: Redis's epoch (a new one when Redis restarted or lost the hub) and cut. */
static void on_hello_reply(void *ctx, hd_redis_status status, const redisReply *reply)
{
    redis_engine *e = ctx;
    uint32_t epoch;
    uint64_t cut;
    const char *rotation;
    if (status == HD_REDIS_OK && parse_position(reply, &epoch, &cut, &rotation))
        adopt_epoch(e, epoch, cut, rotation);
    else if (status == HD_REDIS_OK)
        hd_log_error("cluster: the hello script failed: %s",
                     reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected answer");
    script_answered(e);
}

/*
 * First thing at every connect: the hello script starts a new epoch when
 * Redis restarted (its run_id changed), lost the hub or is behind what this
 * node saw, and says where the hub stands.
 */
static void run_hello(redis_engine *e)
{
    script_args a;
    char known[9] = "";
    if (e->epoch != 0)
        snprintf(known, sizeof(known), "%08" PRIx32, e->epoch);
    char left[LEFT_EPOCHS * 9] = "";
    size_t left_len = 0;
    for (size_t i = 0; i < LEFT_EPOCHS; i++) {
        if (e->left_epochs[i] != 0)
            left_len += (size_t)snprintf(left + left_len, sizeof(left) - left_len, "%s%08" PRIx32,
                                         left_len > 0 ? "," : "", e->left_epochs[i]);
    }
    args_start(&a, e, 7);
    /*
     * A restart loses what Redis had not persisted: a new epoch, unless
     * trusted not to. A failover is never trusted: replication is
     * asynchronous, so the promoted replica may lack the newest writes.
     */
    const char *address = hd_redis_link_address(e->link);
    bool failover = e->hello_address[0] != '\0' && strcmp(e->hello_address, address) != 0;
    snprintf(e->hello_address, sizeof(e->hello_address), "%s", address);
    args_text(&a, e->options.trust_redis_persistence && !failover ? "0" : "1", 1);
    args_text(&a, known, strlen(known));
    args_number(&a, e->epoch != 0 ? (int64_t)e->known_seq : 0);
    args_text(&a, left, left_len);
    args_call(&a, e, e->hello_script, on_hello_reply, e);
}

/* The answer to INFO memory: warns when Redis may evict (herald's keys among others). */
static void on_info_memory(void *ctx, hd_redis_status status, const redisReply *reply)
{
    redis_engine *e = ctx;
    const char *value;
    size_t len;
    if (status != HD_REDIS_OK || reply->type != REDIS_REPLY_STRING ||
        !hd_redis_info_field(reply->str, reply->len, "maxmemory_policy", &value, &len) ||
        len >= sizeof(e->policy))
        return;
    if (strlen(e->policy) == len && memcmp(e->policy, value, len) == 0)
        return; /* warned already, or nothing to warn about */
    bool was_set = e->policy[0] != '\0';
    memcpy(e->policy, value, len);
    e->policy[len] = '\0';
    bool ok = strcmp(e->policy, "noeviction") == 0;
    atomic_store(&e->config_ok, ok);
    if (!ok)
        hd_log_warn("cluster: Redis maxmemory-policy is %s: when memory runs out Redis evicts "
                    "keys, herald's history and ids among them (messages lost, a new epoch); "
                    "set maxmemory-policy noeviction, with maxmemory",
                    e->policy);
    else if (was_set)
        hd_log_info("cluster: Redis maxmemory-policy is noeviction now");
}

/* The answer to INFO stats: warns when Redis evicted keys since the last look (rate-limited). */
static void on_info_stats(void *ctx, hd_redis_status status, const redisReply *reply)
{
    redis_engine *e = ctx;
    const char *value;
    size_t len;
    if (status != HD_REDIS_OK || reply->type != REDIS_REPLY_STRING ||
        !hd_redis_info_field(reply->str, reply->len, "evicted_keys", &value, &len))
        return;
    uint64_t evicted = strtoull(value, NULL, 10);
    atomic_store(&e->evicted_keys, evicted);
    const char *run_id = hd_redis_link_run_id(e->link);
    if (strcmp(run_id, e->evictions_run_id) != 0) {
        /* Another Redis process: its counter started from 0, before herald looked. */
        snprintf(e->evictions_run_id, sizeof(e->evictions_run_id), "%s", run_id);
        e->evictions_reported = evicted;
        return;
    }
    uint64_t now = uv_now(&e->loop);
    if (evicted <= e->evictions_reported ||
        (e->evictions_warned_ms != 0 && now - e->evictions_warned_ms < EVICTION_WARN_MS))
        return;
    hd_log_warn("cluster: Redis evicted %" PRIu64 " keys (evicted_keys is %" PRIu64
                "): history and ids may be lost; set maxmemory-policy noeviction, with maxmemory",
                evicted - e->evictions_reported, evicted);
    e->evictions_reported = evicted;
    e->evictions_warned_ms = now;
}

/* The answer to INFO persistence, just before CONFIG GET appendfsync's. */
static void on_info_persistence(void *ctx, hd_redis_status status, const redisReply *reply)
{
    redis_engine *e = ctx;
    const char *value;
    size_t len;
    e->aof_enabled = status == HD_REDIS_OK && reply->type == REDIS_REPLY_STRING &&
                     hd_redis_info_field(reply->str, reply->len, "aof_enabled", &value, &len) &&
                     len == 1 && value[0] == '1';
}

/*
 * Trusting a Redis restart not to lose writes (the epoch is kept) is safe
 * only when Redis writes every command to its AOF before answering: warned
 * about once per Redis process when it does not, or when CONFIG is renamed
 * away so that appendfsync cannot be read.
 */
static void on_appendfsync(void *ctx, hd_redis_status status, const redisReply *reply)
{
    redis_engine *e = ctx;
    if (status != HD_REDIS_OK)
        return;
    const char *run_id = hd_redis_link_run_id(e->link);
    if (strcmp(run_id, e->persistence_run_id) == 0)
        return;
    snprintf(e->persistence_run_id, sizeof(e->persistence_run_id), "%s", run_id);
    bool readable = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
                    reply->element[1]->type == REDIS_REPLY_STRING;
    const char *fsync = readable ? reply->element[1]->str : "unknown (CONFIG GET refused)";
    if (e->aof_enabled && readable && strcmp(fsync, "always") == 0)
        return;
    hd_log_warn("cluster: cluster.trust_redis_persistence is true, but Redis has appendonly %s "
                "and appendfsync %s: a Redis restart may lose its last writes while herald keeps "
                "the epoch (ids may be issued twice, messages lost without a gap); set "
                "appendonly yes and appendfsync always, or trust_redis_persistence false",
                e->aof_enabled ? "yes" : "no", fsync);
}

/*
 * Reads Redis's maxmemory-policy and evicted_keys (INFO works where CONFIG
 * is renamed away), and its persistence when herald is told to trust it.
 */
static void check_redis_settings(redis_engine *e)
{
    static const char *const memory[] = {"INFO", "memory"};
    static const char *const stats[] = {"INFO", "stats"};
    static const char *const persistence[] = {"INFO", "persistence"};
    static const char *const appendfsync[] = {"CONFIG", "GET", "appendfsync"};
    if (hd_redis_link_get_state(e->link) != HD_REDIS_LINK_UP)
        return;
    hd_redis_link_command(e->link, 2, (const char **)memory, (const size_t[]){4, 6}, on_info_memory,
                          e);
    hd_redis_link_command(e->link, 2, (const char **)stats, (const size_t[]){4, 5}, on_info_stats,
                          e);
    if (!e->options.trust_redis_persistence)
        return;
    hd_redis_link_command(e->link, 2, (const char **)persistence, (const size_t[]){4, 11},
                          on_info_persistence, e);
    hd_redis_link_command(e->link, 3, (const char **)appendfsync, (const size_t[]){6, 3, 11},
                          on_appendfsync, e);
}

static void on_info_timer(uv_timer_t *timer)
{
    check_redis_settings(timer->data);
}

/* Every command's round trip on the command connection, into the histogram. */
static void on_reply_time(void *ctx, uint64_t ns)
{
    redis_engine *e = ctx;
    double seconds = (double)ns / 1e9;
    for (int i = 0; i < HD_ENGINE_RTT_BUCKETS; i++) {
        if (seconds <= hd_engine_rtt_bounds[i]) {
            atomic_fetch_add(&e->rtt_buckets[i], 1);
            break;
        }
    }
    atomic_fetch_add(&e->rtt_sum_ns, ns);
    atomic_fetch_add(&e->rtt_count, 1);
}

/* Pub/sub broke off: what was published meanwhile is not in any topic's record. */
static void forget_records(redis_engine *e)
{
    for (size_t b = 0; b < TOPIC_BUCKETS; b++) {
        for (topic_state *t = e->topics[b]; t != NULL; t = t->next)
            t->chained = false;
    }
    hd_hub_uncover_all(e->base.hub);
}

static void on_link_state(void *ctx, hd_redis_link_state state, const char *reason)
{
    redis_engine *e = ctx;
    hd_engine_state engine_state = state == HD_REDIS_LINK_UP           ? HD_ENGINE_UP
                                   : state == HD_REDIS_LINK_CONNECTING ? HD_ENGINE_CONNECTING
                                                                       : HD_ENGINE_DOWN;
    int previous = atomic_exchange(&e->state, (int)engine_state);
    if (previous != (int)engine_state) {
        if (state == HD_REDIS_LINK_UP)
            hd_log_info("cluster: Redis %s is up", hd_redis_link_address(e->link));
        else if (state == HD_REDIS_LINK_DOWN || previous == HD_ENGINE_UP)
            hd_log_warn("cluster: Redis %s is %s%s%s",
                        e->options.sentinel_count > 0 ? "(via Sentinel)"
                                                      : hd_redis_link_address(e->link),
                        hd_redis_link_state_name(state), reason && reason[0] ? ": " : "",
                        reason ? reason : "");
    }
    /* the reads in flight were all answered before this */
    e->own.broken_slot = &e->own.head;
    e->clients.broken_slot = &e->clients.head;
    if (state != HD_REDIS_LINK_UP) {
        e->node_confirmed = false;
        abandon_round(e);
        forget_records(e);
        return;
    }
    e->link_ups++;
    if (e->was_up)
        atomic_fetch_add(&e->reconnects, 1);
    e->was_up = true;
    /*
     * What pub/sub carried while down is read once each topic is subscribed
     * again: one catch-up round for all of them, after the last confirmation.
     */
    for (size_t b = 0; b < TOPIC_BUCKETS; b++) {
        for (topic_state *t = e->topics[b]; t != NULL; t = t->next) {
            /*
             * A new topic's SUBSCRIBE confirmed on the old connection says
             * nothing of this one: its read waits for the confirmation here.
             */
            t->confirmed = false;
            t->resync = t->epoch != 0;
            if (t->resync)
                set_catch(e, t, t->fresh ? CATCH_WAITING : CATCH_RESYNC);
        }
    }
    run_hello(e);
    check_redis_settings(e);
    resend_waiting(e);
}

/* ------------------------------------------------------------------ the engine thread */

static void on_jobs(uv_async_t *async)
{
    redis_engine *e = async->data;
    void *batch[64];
    bool more = true;
    while (more) {
        size_t n = hd_mailbox_take(&e->jobs, batch, 64, &more);
        for (size_t i = 0; i < n; i++) {
            job_kind kind = *(job_kind *)batch[i];
            if (kind == JOB_INTEREST) {
                on_interest_job(e, batch[i]);
                free(batch[i]);
            } else if (atomic_load(&((hd_engine_request *)batch[i])->cancelled)) {
                request_complete(batch[i]); /* its worker frees it */
            } else if (kind == JOB_PUBLISH) {
                queue_publish(e, batch[i]);
            } else if (kind == JOB_DESCRIBE || kind == JOB_LIST) {
                run_topics(e, batch[i]);
            } else {
                run_read(e, batch[i]);
            }
        }
    }
    publish_next(e); /* what was queued together goes together */
}

static void on_stop(uv_async_t *async)
{
    redis_engine *e = async->data;
    hd_redis_link_close(e->link);
    e->link = NULL;
    uv_close((uv_handle_t *)&e->jobs_async, NULL);
    uv_close((uv_handle_t *)&e->stop_async, NULL);
    uv_close((uv_handle_t *)&e->sweep, NULL);
    uv_close((uv_handle_t *)&e->info, NULL);
    uv_close((uv_handle_t *)&e->wake_pass, NULL);
}

static void engine_thread(void *arg)
{
    redis_engine *e = arg;
    hd_worker_set_index(HD_WORKER_NONE);
    hd_redis_link_start(e->link);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    wake_owed(e); /* what closing the link completed after the last wake pass */
}

static void redis_interest(hd_engine *engine, const char *topic, size_t topic_len, bool interested)
{
    redis_engine *e = (redis_engine *)engine;
    interest_job *job = hd_alloc(sizeof(*job) + topic_len);
    job->kind = JOB_INTEREST;
    job->interested = interested;
    hd_hub_position_locked(engine->hub, &job->epoch, &job->seq);
    job->len = topic_len;
    memcpy(job->name, topic, topic_len);
    post_job(e, job);
}

static hd_engine_state redis_state(const hd_engine *engine)
{
    const redis_engine *e = (const redis_engine *)engine;
    return (hd_engine_state)atomic_load(&((redis_engine *)e)->state);
}

static void free_queued(hd_mailbox *mb)
{
    void *item;
    while (hd_mailbox_take(mb, &item, 1, NULL) == 1) {
        if (*(job_kind *)item == JOB_INTEREST)
            free(item);
        else
            request_free(item);
    }
}

static void redis_free(hd_engine *engine)
{
    redis_engine *e = (redis_engine *)engine;
    uv_async_send(&e->stop_async);
    uv_thread_join(&e->thread);
    uv_loop_close(&e->loop);
    hd_mailbox_set_notify(&e->jobs, NULL, NULL);
    free_queued(&e->jobs);
    hd_mailbox_destroy(&e->jobs);
    for (unsigned w = 0; w < e->workers; w++) {
        free_queued(&e->done[w]);
        hd_mailbox_destroy(&e->done[w]);
    }
    free(e->done);
    read_queue *queues[] = {&e->own, &e->clients};
    for (size_t i = 0; i < 2; i++) {
        while (queues[i]->head != NULL) {
            hd_engine_request *next = queues[i]->head->next;
            request_free(queues[i]->head);
            queues[i]->head = next;
        }
    }
    while (e->publishes != NULL) {
        hd_engine_request *next = e->publishes->next;
        request_free(e->publishes);
        e->publishes = next;
    }
    for (size_t i = 0; i < e->held_len; i++)
        hd_message_release(e->held[(e->held_head + i) % e->held_cap]);
    free(e->held);
    free(e->held_prev);
    for (size_t b = 0; b < TOPIC_BUCKETS; b++) {
        while (e->topics[b] != NULL) {
            topic_state *next = e->topics[b]->next;
            drop_read(e->topics[b]);
            free(e->topics[b]);
            e->topics[b] = next;
        }
    }
    free(e);
}

static void redis_stats(const hd_engine *engine, hd_engine_stats *out)
{
    redis_engine *e = (redis_engine *)engine;
    *out = (hd_engine_stats){
        .reconnects = atomic_load(&e->reconnects),
        .lost_reads = atomic_load(&e->gap_reads),
        .catchup_messages = atomic_load(&e->catchup_messages),
        .late_messages = atomic_load(&e->late_messages),
        .held_overflows = atomic_load(&e->held_overflows),
        .subscribed_topics = atomic_load(&e->subscribed_topics),
        .store_config_ok = atomic_load(&e->config_ok),
        .store_evicted_keys = atomic_load(&e->evicted_keys),
    };
    for (int r = 0; r < HD_EPOCH_REASONS; r++)
        out->epoch_changes[r] = atomic_load(&e->epoch_changes[r]);
    for (int f = 0; f < HD_PUBLISH_FAILURES; f++)
        out->publish_failures[f] = atomic_load(&e->publish_failures[f]);
    /* The count first: a reply counted between the loads shows in no bucket rather than in +Inf. */
    out->rtt_count = atomic_load(&e->rtt_count);
    uint64_t within = 0;
    for (int i = 0; i < HD_ENGINE_RTT_BUCKETS; i++) {
        within += atomic_load(&e->rtt_buckets[i]);
        out->rtt_buckets[i] = within < out->rtt_count ? within : out->rtt_count;
    }
    out->rtt_sum_s = (double)atomic_load(&e->rtt_sum_ns) / 1e9;
}

static const hd_engine_ops redis_ops = {
    .name = "redis",
    .publish = redis_publish,
    .read = redis_read,
    .describe = redis_describe,
    .list = redis_list,
    .cancel = redis_cancel,
    .interest = redis_interest,
    .state = redis_state,
    .stats = redis_stats,
    .free = redis_free,
};

hd_engine *hd_engine_redis_new(hd_hub *hub, const hd_engine_redis_options *options)
{
    redis_engine *e = hd_calloc(1, sizeof(*e));
    hd_engine_init(&e->base, &redis_ops, hub);
    e->options = *options;
    if (e->options.max_held_messages == 0)
        e->options.max_held_messages = 65536;
    e->prefix_len = (size_t)snprintf(e->prefix, sizeof(e->prefix), "{%s}", options->prefix);
    e->options.prefix = NULL;
    if (e->options.max_inflight_bytes == 0)
        e->options.max_inflight_bytes = MAX_INFLIGHT_BYTES;
    snprintf(e->hub_key, sizeof(e->hub_key), "%s:hub", e->prefix);
    char node[9];
    random_epoch(node);
    snprintf(e->probe_channel, sizeof(e->probe_channel), "%s:node:%s", e->prefix, node);
    atomic_init(&e->state, HD_ENGINE_CONNECTING);
    atomic_init(&e->reconnects, 0);
    atomic_init(&e->gap_reads, 0);
    queue_init(&e->own);
    queue_init(&e->clients);
    e->publishes_tail = &e->publishes;
    e->workers = hd_worker_count();
    e->done = hd_calloc(e->workers, sizeof(*e->done));
    for (unsigned w = 0; w < e->workers; w++)
        hd_mailbox_init(&e->done[w], NULL);
    hd_mailbox_init(&e->jobs, NULL);
    hd_hub_set_worker_hook(hub, engine_on_worker, e);

    uv_loop_init(&e->loop);
    uv_async_init(&e->loop, &e->jobs_async, on_jobs);
    e->jobs_async.data = e;
    uv_async_init(&e->loop, &e->stop_async, on_stop);
    e->stop_async.data = e;
    uv_timer_init(&e->loop, &e->sweep);
    e->sweep.data = e;
    uv_timer_start(&e->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_timer_init(&e->loop, &e->info);
    e->info.data = e;
    uv_timer_start(&e->info, on_info_timer, INFO_MS, INFO_MS);
    uv_prepare_init(&e->loop, &e->wake_pass);
    e->wake_pass.data = e;
    uv_prepare_start(&e->wake_pass, on_wake_pass);
    hd_mailbox_set_notify(&e->jobs, jobs_notify, e);

    hd_redis_link_settings settings = {
        .url = options->url,
        .timeout_ms = options->timeout_ms,
        .probe_idle_ms = PROBE_IDLE_MS,
        .max_inflight_bytes = e->options.max_inflight_bytes,
        .probe_channel = e->probe_channel,
        .probe_channel_len = strlen(e->probe_channel),
        .on_state = on_link_state,
        .on_subscribed = on_subscribed,
        .on_message = on_pubsub_message,
        .on_reply_time = on_reply_time,
        .on_room = on_room,
        .ctx = e,
        .sentinels = options->sentinels,
        .sentinel_count = options->sentinel_count,
        .sentinel_master = options->sentinel_master,
        .sentinel_password = options->sentinel_password,
    };
    e->link = hd_redis_link_new(&e->loop, &settings);
    e->options.sentinels = NULL; /* copied by the link */
    e->options.sentinel_master = e->options.sentinel_password = NULL;
    e->publish_script =
        hd_redis_link_script(e->link, hd_redis_publish_lua, hd_redis_publish_lua_len);
    e->read_script = hd_redis_link_script(e->link, hd_redis_read_lua, hd_redis_read_lua_len);
    e->hello_script = hd_redis_link_script(e->link, hd_redis_hello_lua, hd_redis_hello_lua_len);
    e->topics_script = hd_redis_link_script(e->link, hd_redis_topics_lua, hd_redis_topics_lua_len);
    if (uv_thread_create(&e->thread, engine_thread, e) != 0)
        abort();
    return &e->base;
}
