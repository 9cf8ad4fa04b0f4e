/*
 * The Redis link: two hiredis 0.14 async contexts and the state machine
 * around them. The rules that keep it correct with 0.14 (see the design's
 * pitfalls table):
 *
 *  - A context is only freed by this file through conn_close, which first
 *    detaches it (ac->data = NULL), so that the callbacks hiredis runs while
 *    freeing it (each pending command with a NULL reply, each channel, the
 *    disconnect callback) know the link has let go. hiredis defers the free
 *    when it is called from inside one of that context's callbacks, and
 *    frees on its own after the connect callback reports an error and after
 *    the disconnect callback: conn_on_connect and conn_on_disconnect
 *    therefore forget the context without freeing it.
 *  - Every command sent is a `pending` record handed to hiredis as
 *    privdata; hiredis calls back exactly once per record (a reply, or NULL
 *    when the context goes). When the link tears down it answers its
 *    records itself, in order, before freeing the contexts, and marks them
 *    answered (cb = NULL); hiredis's later NULL callback then only frees
 *    them. That is what makes "every command answered exactly once, before
 *    DOWN is reported" hold whether or not hiredis noticed the failure.
 *  - The libuv adapter drops poll errors (pitfall #1): a refused connect or
 *    a reset connection stops the uv_poll_t without telling hiredis. The
 *    tick spots a poll that libuv stopped while hiredis still wants events,
 *    and reads the socket's error; the connect watchdog and the command
 *    timeout stay as the backstop for a server that just goes quiet.
 *  - All pub/sub replies go to one callback with one privdata, so that
 *    0.14's habit of handing a reply it cannot place to the last callback
 *    it used (pitfall #5) cannot misroute anything.
 */
#include "engine/redis_link.h"

#include <errno.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "herald/alloc.h"
#include "herald/list.h"

#define BACKOFF_BASE_MS 250
#define BACKOFF_CAP_MS 5000
#define SUBSCRIBE_BATCH 512 /* channels per (UN)SUBSCRIBE command */
#define TICK_MAX_MS 100
#define REASON_MAX 320
#define RUN_ID_LEN 40
#define PROBE_PAYLOAD "herald-link-probe"
#define SENTINEL_TIMEOUT_MAX_MS 1000 /* per sentinel asked */

typedef struct conn conn;

/* One command handed to hiredis; freed by cmd_on_reply. */
typedef struct pending {
    hd_list node; /* conn->inflight, in send order, until answered */
    conn *conn;
    hd_redis_reply_cb *cb; /* NULL once answered */
    void *ctx;
    uint64_t sent_ms;
    uint64_t sent_ns; /* for on_reply_time: deadlines need no more than sent_ms */
    size_t bytes;     /* counted in link->inflight_bytes while in flight */
    /*
     * EVALSHA: its script, and the formatted command, kept for one retry
     * after NOSCRIPT (NULL: the NOSCRIPT answer is passed on).
     */
    const hd_redis_script *script;
    char *evalsha;
    size_t evalsha_len;
} pending;

struct conn {
    hd_redis_link *link;
    const char *role;      /* "command" or "pub/sub", for reasons */
    redisAsyncContext *ac; /* NULL when there is none (or hiredis is freeing it) */
    hd_list inflight;
    unsigned handshake_left; /* handshake answers still to come in this attempt */
    char run_id[RUN_ID_LEN + 1];
};

/*
 * A channel the link wants, or did and still expects replies for. What
 * Redis was last asked on this connection (asked) and how many
 * (UN)SUBSCRIBE replies are still to come (replies_due) say where the
 * server stands: subscribed and confirmed once asked && replies_due == 0.
 */
typedef struct channel {
    struct channel *bucket_next;
    uint64_t hash;
    hd_list queue_node; /* link->sub_queue while the flush has to look at it */
    bool wanted;
    bool asked;
    bool tell;     /* on_subscribed is owed (and messages are held back until then) */
    bool is_probe; /* the node's own channel: wanted for as long as the link lives */
    unsigned replies_due;
    size_t len;
    char name[];
} channel;

struct hd_redis_script {
    hd_list node; /* link->scripts */
    char sha[2 * SHA_DIGEST_LENGTH + 1];
    size_t len;
    char body[];
};

struct hd_redis_link {
    uv_loop_t *loop;
    hd_redis_link_settings settings; /* probe_channel points at the probe channel's name */
    hd_redis_link_state state;
    bool started;
    bool closing;
    char reason[REASON_MAX];

    unsigned attempt;            /* failed attempts since the last UP */
    hd_redis_sentinel *sentinel; /* NULL without sentinels */
    bool locating;               /* asking the sentinels */
    /* Where a +switch-master said the master went (port 0: nowhere new): the next attempt's. */
    char switched_host[HD_SENTINEL_HOST_MAX + 1];
    int switched_port;
    bool resolving;
    uv_getaddrinfo_t resolve;
    char host[HD_REDIS_URL_HOST_MAX + 1]; /* this attempt's server: the URL's or the sentinels' */
    int port;
    char address[HD_REDIS_URL_HOST_MAX + 16]; /* "host:port" of it */
    char ip[64];
    uint64_t attempt_started_ms; /* when the connections were opened */
    conn cmd, sub;
    uint64_t inflight_bytes;

    uint64_t sub_activity_ms; /* the last pub/sub reply */
    bool probe_out;
    uint64_t probe_sent_ms;

    channel **buckets; /* chained hash table, power-of-two size */
    size_t bucket_count, channel_count;
    uint64_t hash_seed; /* channel names come from clients' topics */
    hd_list sub_queue;  /* channels the next flush has to look at */
    channel *probe_channel;

    hd_list scripts;

    uv_timer_t tick;  /* watchdogs and the liveness probe, while not DOWN */
    uv_timer_t retry; /* the next attempt, while DOWN */
    uv_idle_t flush;  /* sends queued (UN)SUBSCRIBEs at the end of the loop pass */
    unsigned open_handles;
};

static void link_fail(hd_redis_link *link, hd_redis_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ------------------------------------------------------------ pure helpers */

uint32_t hd_redis_link_backoff_ms(unsigned attempt, double uniform)
{
    uint32_t cap = BACKOFF_CAP_MS;
    if (attempt < 16 && ((uint32_t)BACKOFF_BASE_MS << attempt) < cap)
        cap = (uint32_t)BACKOFF_BASE_MS << attempt;
    if (uniform < 0)
        uniform = 0;
    if (uniform >= 1)
        uniform = 0.999999;
    return (uint32_t)(cap * (0.5 + uniform / 2));
}

const char *hd_redis_link_state_name(hd_redis_link_state state)
{
    switch (state) {
    case HD_REDIS_LINK_DOWN:
        return "down";
    case HD_REDIS_LINK_CONNECTING:
        return "connecting";
    case HD_REDIS_LINK_UP:
        return "up";
    }
    return "?";
}

/*
 * Milliseconds for deadlines. Not uv_now: the loop's cached time can be
 * old when a callback ran long, and a command stamped with it would time
 * out early.
 */
static uint64_t clock_ms(void)
{
    return uv_hrtime() / 1000000;
}

static double random_uniform(void)
{
    uint32_t r = 0;
    RAND_bytes((unsigned char *)&r, sizeof(r));
    return r / 4294967296.0;
}

static bool reply_is_error(const redisReply *reply, const char *prefix)
{
    size_t n = strlen(prefix);
    return reply->type == REDIS_REPLY_ERROR && reply->len >= n &&
           memcmp(reply->str, prefix, n) == 0;
}

/* ------------------------------------------------------------ commands */

static void answer(pending *p, hd_redis_status status, const redisReply *reply)
{
    hd_redis_reply_cb *cb = p->cb;
    hd_list_unlink(&p->node);
    p->conn->link->inflight_bytes -= p->bytes;
    p->cb = NULL;
    free(p->evalsha);
    p->evalsha = NULL;
    cb(p->ctx, status, reply);
}

static bool on_noscript(pending *p);

/* hiredis's callback for every command the link sends outside pub/sub. */
static void cmd_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    pending *p = privdata;
    const redisReply *reply = r;
    if (p->cb == NULL) {
        free(p); /* answered when the link tore down */
        return;
    }
    hd_redis_link *link = p->conn->link;
    const hd_redis_link_settings *s = &link->settings;
    if (reply != NULL && p->conn == &link->cmd && s->on_reply_time != NULL)
        s->on_reply_time(s->ctx, uv_hrtime() - p->sent_ns);
    if (reply == NULL) {
        answer(p, HD_REDIS_OUTCOME_UNKNOWN, NULL); /* hiredis lost the connection */
        free(p);
        return;
    }
    if (p->script != NULL && reply_is_error(reply, "NOSCRIPT") && on_noscript(p))
        return; /* the record is hiredis's again */
    answer(p, HD_REDIS_OK, reply);
    free(p);
    if (link->state == HD_REDIS_LINK_UP && s->on_room != NULL)
        s->on_room(s->ctx);
}

static pending *pending_new(conn *c, size_t bytes, hd_redis_reply_cb *cb, void *ctx)
{
    pending *p = hd_calloc(1, sizeof(*p));
    hd_list_init(&p->node);
    p->conn = c;
    p->cb = cb;
    p->ctx = ctx;
    p->bytes = bytes;
    return p;
}

/* After hiredis took p: it is in flight from now. */
static void pending_track(pending *p)
{
    p->sent_ns = uv_hrtime();
    p->sent_ms = p->sent_ns / 1000000;
    p->conn->link->inflight_bytes += p->bytes;
    hd_list_insert_tail(&p->conn->inflight, &p->node);
}

static size_t args_bytes(int argc, const size_t *argvlen)
{
    size_t bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += argvlen[i];
    return bytes;
}

/* Sends argv on c; -1 when hiredis refuses (the context is going away). */
static int conn_send(conn *c, int argc, const char **argv, const size_t *argvlen,
                     hd_redis_reply_cb *cb, void *ctx)
{
    pending *p = pending_new(c, args_bytes(argc, argvlen), cb, ctx);
    if (c->ac == NULL ||
        redisAsyncCommandArgv(c->ac, cmd_on_reply, p, argc, argv, argvlen) != REDIS_OK) {
        free(p);
        return -1;
    }
    pending_track(p);
    return 0;
}

/* Replies the link has no use for (SCRIPT LOAD outside the handshake). */
static void ignore_reply(void *ctx, hd_redis_status status, const redisReply *reply)
{
    (void)ctx;
    (void)status;
    (void)reply;
}

static int send_script_load(conn *c, const hd_redis_script *script, hd_redis_reply_cb *cb,
                            void *ctx)
{
    const char *argv[] = {"SCRIPT", "LOAD", script->body};
    const size_t lens[] = {6, 4, script->len};
    return conn_send(c, 3, argv, lens, cb, ctx);
}

/*
 * NOSCRIPT: Redis lost the script (SCRIPT FLUSH, a restart or failover
 * between our SCRIPT LOAD and now). Loads it again and resends the same
 * EVALSHA right behind, once; false when that could not be sent, or the
 * call is not to be resent (hd_redis_link_evalsha_once: the answer is
 * passed on, and what the caller sends next finds the script).
 */
static bool on_noscript(pending *p)
{
    conn *c = p->conn;
    if (send_script_load(c, p->script, ignore_reply, NULL) < 0 || p->evalsha == NULL ||
        redisAsyncFormattedCommand(c->ac, cmd_on_reply, p, p->evalsha, p->evalsha_len) != REDIS_OK)
        return false;
    hd_list_unlink(&p->node); /* back in flight, behind the SCRIPT LOAD */
    c->link->inflight_bytes -= p->bytes;
    free(p->evalsha);
    p->evalsha = NULL;
    pending_track(p);
    return true;
}

static hd_redis_status link_admit(hd_redis_link *link, size_t bytes)
{
    if (link->state != HD_REDIS_LINK_UP)
        return HD_REDIS_UNAVAILABLE;
    /* One command alone may exceed the bound, or it could never be sent. */
    if (link->inflight_bytes > 0 &&
        link->inflight_bytes + bytes > link->settings.max_inflight_bytes)
        return HD_REDIS_FULL;
    return HD_REDIS_OK;
}

hd_redis_status hd_redis_link_command(hd_redis_link *link, int argc, const char **argv,
                                      const size_t *argvlen, hd_redis_reply_cb *cb, void *ctx)
{
    hd_redis_status status = link_admit(link, args_bytes(argc, argvlen));
    if (status != HD_REDIS_OK)
        return status;
    return conn_send(&link->cmd, argc, argv, argvlen, cb, ctx) == 0 ? HD_REDIS_OK
                                                                    : HD_REDIS_UNAVAILABLE;
}

static hd_redis_status send_evalsha(hd_redis_link *link, const hd_redis_script *script, int nkeys,
                                    int argc, const char **argv, const size_t *argvlen, bool resend,
                                    hd_redis_reply_cb *cb, void *ctx)
{
    if (nkeys < 0 || nkeys > argc)
        abort(); /* a caller's bug, not a runtime condition */
    hd_redis_status status = link_admit(link, args_bytes(argc, argvlen));
    if (status != HD_REDIS_OK)
        return status;
    char numkeys[16];
    int numkeys_len = snprintf(numkeys, sizeof(numkeys), "%d", nkeys);
    const char **full = hd_alloc((size_t)(argc + 3) * sizeof(*full));
    size_t *lens = hd_alloc((size_t)(argc + 3) * sizeof(*lens));
    full[0] = "EVALSHA";
    lens[0] = 7;
    full[1] = script->sha;
    lens[1] = 2 * SHA_DIGEST_LENGTH;
    full[2] = numkeys;
    lens[2] = (size_t)numkeys_len;
    for (int i = 0; i < argc; i++) {
        full[3 + i] = argv[i];
        lens[3 + i] = argvlen[i];
    }
    char *formatted = NULL;
    int len = redisFormatCommandArgv(&formatted, argc + 3, full, lens);
    free(full);
    free(lens);
    if (len < 0)
        abort(); /* out of memory */

    pending *p = pending_new(&link->cmd, (size_t)len, cb, ctx);
    p->script = script;
    p->evalsha = formatted;
    p->evalsha_len = (size_t)len;
    bool sent = link->cmd.ac != NULL &&
                redisAsyncFormattedCommand(link->cmd.ac, cmd_on_reply, p, formatted, (size_t)len) ==
                    REDIS_OK;
    if (!sent || !resend) {
        free(formatted);
        p->evalsha = NULL;
    }
    if (!sent) {
        free(p);
        return HD_REDIS_UNAVAILABLE;
    }
    pending_track(p);
    return HD_REDIS_OK;
}

hd_redis_status hd_redis_link_evalsha(hd_redis_link *link, const hd_redis_script *script, int nkeys,
                                      int argc, const char **argv, const size_t *argvlen,
                                      hd_redis_reply_cb *cb, void *ctx)
{
    return send_evalsha(link, script, nkeys, argc, argv, argvlen, true, cb, ctx);
}

hd_redis_status hd_redis_link_evalsha_once(hd_redis_link *link, const hd_redis_script *script,
                                           int nkeys, int argc, const char **argv,
                                           const size_t *argvlen, hd_redis_reply_cb *cb, void *ctx)
{
    return send_evalsha(link, script, nkeys, argc, argv, argvlen, false, cb, ctx);
}

/* ------------------------------------------------------------ channels */

static uint64_t channel_hash(const hd_redis_link *link, const char *name, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ link->hash_seed; /* FNV-1a, seeded */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)name[i]) * 0x100000001b3ULL;
    return h;
}

static channel *channel_find(const hd_redis_link *link, const char *name, size_t len)
{
    uint64_t hash = channel_hash(link, name, len);
    for (channel *ch = link->buckets[hash & (link->bucket_count - 1)]; ch; ch = ch->bucket_next)
        if (ch->hash == hash && ch->len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

static void channels_grow(hd_redis_link *link)
{
    size_t count = link->bucket_count * 2;
    channel **buckets = hd_calloc(count, sizeof(*buckets));
    for (size_t i = 0; i < link->bucket_count; i++) {
        channel *ch = link->buckets[i];
        while (ch) {
            channel *next = ch->bucket_next;
            ch->bucket_next = buckets[ch->hash & (count - 1)];
            buckets[ch->hash & (count - 1)] = ch;
            ch = next;
        }
    }
    free(link->buckets);
    link->buckets = buckets;
    link->bucket_count = count;
}

static channel *channel_add(hd_redis_link *link, const char *name, size_t len)
{
    if (link->channel_count >= link->bucket_count)
        channels_grow(link);
    channel *ch = hd_calloc(1, sizeof(*ch) + len + 1);
    ch->hash = channel_hash(link, name, len);
    hd_list_init(&ch->queue_node);
    ch->len = len;
    memcpy(ch->name, name, len);
    channel **bucket = &link->buckets[ch->hash & (link->bucket_count - 1)];
    ch->bucket_next = *bucket;
    *bucket = ch;
    link->channel_count++;
    return ch;
}

static void channel_remove(hd_redis_link *link, channel *ch)
{
    channel **at = &link->buckets[ch->hash & (link->bucket_count - 1)];
    while (*at != ch)
        at = &(*at)->bucket_next;
    *at = ch->bucket_next;
    link->channel_count--;
    hd_list_unlink(&ch->queue_node);
    free(ch);
}

static void channel_queue(hd_redis_link *link, channel *ch)
{
    if (!hd_list_linked(&ch->queue_node))
        hd_list_insert_tail(&link->sub_queue, &ch->queue_node);
}

static void link_on_flush(uv_idle_t *idle);

/* While DOWN or connecting the queue waits: UP flushes everything. */
static void link_schedule_flush(hd_redis_link *link)
{
    if (link->state == HD_REDIS_LINK_UP)
        uv_idle_start(&link->flush, link_on_flush);
}

void hd_redis_link_subscribe(hd_redis_link *link, const char *name, size_t len)
{
    channel *ch = channel_find(link, name, len);
    if (ch == NULL)
        ch = channel_add(link, name, len);
    else if (ch->wanted)
        return;
    ch->wanted = true;
    ch->tell = true;
    channel_queue(link, ch);
    link_schedule_flush(link);
}

void hd_redis_link_unsubscribe(hd_redis_link *link, const char *name, size_t len)
{
    channel *ch = channel_find(link, name, len);
    if (ch == NULL || !ch->wanted || ch->is_probe)
        return;
    ch->wanted = false;
    ch->tell = false;
    if (!ch->asked && ch->replies_due == 0)
        channel_remove(link, ch); /* Redis never heard of it */
    else
        channel_queue(link, ch);
    link_schedule_flush(link);
}

/* Sends one (UN)SUBSCRIBE of argv[1 .. n-1] on the pub/sub connection. */
static void sub_on_reply(redisAsyncContext *ac, void *r, void *privdata);

static void send_batch(hd_redis_link *link, const char **argv, size_t *lens, int *n)
{
    if (*n > 1 && link->sub.ac != NULL)
        redisAsyncCommandArgv(link->sub.ac, sub_on_reply, link, *n, argv, lens);
    *n = 1; /* a refused send means the connection is going: the reconnect resubscribes */
}

/*
 * Sends what the queued channels need: SUBSCRIBE for the wanted ones Redis
 * was not asked for, UNSUBSCRIBE for the unwanted ones it was, in batches.
 * A channel wanted again while Redis still has it needs nothing sent: its
 * confirmation is told after the batches go out.
 */
static void link_flush(hd_redis_link *link)
{
    const char *sub_argv[1 + SUBSCRIBE_BATCH], *unsub_argv[1 + SUBSCRIBE_BATCH];
    size_t sub_lens[1 + SUBSCRIBE_BATCH], unsub_lens[1 + SUBSCRIBE_BATCH];
    int nsub = 1, nunsub = 1;
    sub_argv[0] = "SUBSCRIBE";
    sub_lens[0] = 9;
    unsub_argv[0] = "UNSUBSCRIBE";
    unsub_lens[0] = 11;
    hd_list confirmed;
    hd_list_init(&confirmed);

    while (!hd_list_empty(&link->sub_queue)) {
        channel *ch = hd_container_of(link->sub_queue.next, channel, queue_node);
        hd_list_unlink(&ch->queue_node);
        if (ch->wanted && !ch->asked) {
            ch->asked = true;
            ch->replies_due++;
            sub_argv[nsub] = ch->name;
            sub_lens[nsub++] = ch->len;
        } else if (!ch->wanted && ch->asked) {
            ch->asked = false;
            ch->replies_due++;
            unsub_argv[nunsub] = ch->name;
            unsub_lens[nunsub++] = ch->len;
        } else if (!ch->wanted && ch->replies_due == 0) {
            channel_remove(link, ch);
        } else if (ch->wanted && ch->tell && ch->replies_due == 0) {
            hd_list_insert_tail(&confirmed, &ch->queue_node);
        }
        if (nsub == 1 + SUBSCRIBE_BATCH)
            send_batch(link, sub_argv, sub_lens, &nsub);
        if (nunsub == 1 + SUBSCRIBE_BATCH)
            send_batch(link, unsub_argv, unsub_lens, &nunsub);
    }
    send_batch(link, sub_argv, sub_lens, &nsub);
    send_batch(link, unsub_argv, unsub_lens, &nunsub);

    /*
     * A callback may close the link or drop it (which unlinks these), or
     * unsubscribe one still waiting here: that one goes back to the queue.
     */
    while (!hd_list_empty(&confirmed)) {
        channel *ch = hd_container_of(confirmed.next, channel, queue_node);
        hd_list_unlink(&ch->queue_node);
        if (link->state != HD_REDIS_LINK_UP) {
            continue;
        } else if (!ch->wanted) {
            channel_queue(link, ch);
            link_schedule_flush(link);
        } else if (ch->tell) {
            ch->tell = false;
            link->settings.on_subscribed(link->settings.ctx, ch->name, ch->len);
        }
    }
}

static void link_on_flush(uv_idle_t *idle)
{
    hd_redis_link *link = hd_container_of(idle, hd_redis_link, flush);
    uv_idle_stop(idle);
    if (link->state == HD_REDIS_LINK_UP)
        link_flush(link);
}

/* A (UN)SUBSCRIBE reply for channel: when it was the last one due, Redis is where we asked. */
static void link_on_channel_reply(hd_redis_link *link, const char *name, size_t len)
{
    channel *ch = channel_find(link, name, len);
    if (ch == NULL || ch->replies_due == 0 || --ch->replies_due > 0)
        return;
    if (ch->asked && ch->wanted && ch->tell) {
        ch->tell = false;
        link->settings.on_subscribed(link->settings.ctx, ch->name, ch->len);
    } else if (!ch->asked && !ch->wanted && !hd_list_linked(&ch->queue_node)) {
        channel_remove(link, ch);
    }
}

static void link_on_message(hd_redis_link *link, const redisReply *channel_reply,
                            const redisReply *payload)
{
    channel *ch = channel_find(link, channel_reply->str, channel_reply->len);
    if (ch == NULL || !ch->wanted || ch->tell)
        return; /* unsubscribed since, or not confirmed to the caller yet */
    if (ch->is_probe && payload->len == sizeof(PROBE_PAYLOAD) - 1 &&
        memcmp(payload->str, PROBE_PAYLOAD, payload->len) == 0)
        return;
    link->settings.on_message(link->settings.ctx, ch->name, ch->len, payload->str, payload->len);
}

/* hiredis's callback for everything on the pub/sub connection once subscribed. */
static void sub_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    hd_redis_link *link = privdata;
    const redisReply *reply = r;
    if (reply == NULL || ac->data == NULL)
        return; /* the context is being freed */
    link->sub_activity_ms = clock_ms();
    link->probe_out = false;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    if (strcmp(kind, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING)
        link_on_message(link, reply->element[1], reply->element[2]);
    else if (strcmp(kind, "subscribe") == 0 || strcmp(kind, "unsubscribe") == 0)
        link_on_channel_reply(link, reply->element[1]->str, reply->element[1]->len);
}

/* After DOWN: Redis forgot everything; what is still wanted is asked again at the next UP. */
static void channels_reset(hd_redis_link *link)
{
    for (size_t i = 0; i < link->bucket_count; i++) {
        channel *ch = link->buckets[i];
        while (ch) {
            channel *next = ch->bucket_next;
            if (!ch->wanted) {
                channel_remove(link, ch);
            } else {
                hd_list_unlink(&ch->queue_node);
                ch->asked = false;
                ch->replies_due = 0;
                ch->tell = true;
            }
            ch = next;
        }
    }
}

/* ------------------------------------------------------------ connections */

static void conn_on_connect(const redisAsyncContext *ac, int status)
{
    conn *c = ac->data;
    if (status == REDIS_OK || c == NULL)
        return;
    c->ac = NULL; /* hiredis frees it when this returns */
    link_fail(c->link, HD_REDIS_OUTCOME_UNKNOWN, "cannot connect to %s:%d: %s", c->link->ip,
              c->link->port, ac->errstr);
}

static void conn_on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    conn *c = ac->data;
    if (c == NULL)
        return;   /* the link freed it */
    c->ac = NULL; /* hiredis frees it when this returns */
    link_fail(c->link, HD_REDIS_OUTCOME_UNKNOWN, "Redis at %s:%d closed the %s connection%s%s",
              c->link->ip, c->link->port, c->role, ac->err ? ": " : "", ac->err ? ac->errstr : "");
}

static void conn_close(conn *c)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL)
        return;
    c->ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
}

static void conn_answer_all(conn *c, hd_redis_status status)
{
    while (!hd_list_empty(&c->inflight))
        answer(hd_container_of(c->inflight.next, pending, node), status, NULL);
}

bool hd_redis_poll_failed(const redisAsyncContext *ac, int *err)
{
    const redisLibuvEvents *ev = ac->ev.data;
    if (ev == NULL || ev->events == 0 || uv_is_active((const uv_handle_t *)&ev->handle))
        return false;
    socklen_t len = sizeof(*err);
    *err = 0;
    getsockopt(ac->c.fd, SOL_SOCKET, SO_ERROR, err, &len);
    return true;
}

static void link_up(hd_redis_link *link);

bool hd_redis_info_field(const char *info, size_t len, const char *field, const char **value,
                         size_t *value_len)
{
    size_t field_len = strlen(field);
    const char *end = info + len;
    for (const char *line = info; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        const char *stop = eol != NULL ? eol : end;
        if ((size_t)(stop - line) > field_len && memcmp(line, field, field_len) == 0 &&
            line[field_len] == ':') {
            *value = line + field_len + 1;
            *value_len = (size_t)(stop - *value);
            if (*value_len > 0 && (*value)[*value_len - 1] == '\r')
                (*value_len)--;
            return true;
        }
        line = stop + 1;
    }
    return false;
}

static void conn_parse_run_id(conn *c, const redisReply *reply)
{
    const char *at;
    size_t n;
    if (!hd_redis_info_field(reply->str, reply->len, "run_id", &at, &n))
        return;
    if (n > RUN_ID_LEN)
        n = RUN_ID_LEN;
    memcpy(c->run_id, at, n);
    c->run_id[n] = '\0';
}

/* Each handshake answer of the current attempt; UP when both connections got all theirs. */
static void handshake_on_reply(void *ctx, hd_redis_status status, const redisReply *reply)
{
    conn *c = ctx;
    hd_redis_link *link = c->link;
    if (status != HD_REDIS_OK || link->state != HD_REDIS_LINK_CONNECTING)
        return; /* the attempt is being torn down */
    if (reply->type == REDIS_REPLY_ERROR) {
        link_fail(link, HD_REDIS_OUTCOME_UNKNOWN, "Redis at %s:%d refused the %s connection: %s",
                  link->ip, link->port, c->role, reply->str);
        return;
    }
    if (reply->type == REDIS_REPLY_STRING && reply->len > 0 && reply->str[0] == '#')
        conn_parse_run_id(c, reply); /* INFO server */
    size_t role_len;
    const char *role = hd_redis_role_of(reply, &role_len); /* ROLE: the only array answer */
    if (reply->type == REDIS_REPLY_ARRAY && (role_len != 6 || memcmp(role, "master", 6) != 0)) {
        link_fail(link, HD_REDIS_OUTCOME_UNKNOWN,
                  "%s is a %.*s, not a master (the sentinels have not switched yet)", link->address,
                  (int)(role_len > 16 ? 16 : role_len), role);
        return;
    }
    c->handshake_left--;
    if (link->cmd.handshake_left == 0 && link->sub.handshake_left == 0)
        link_up(link);
}

static void conn_handshake_send(conn *c, int argc, const char **argv, const size_t *lens)
{
    if (conn_send(c, argc, argv, lens, handshake_on_reply, c) == 0)
        c->handshake_left++;
}

/*
 * Queues the handshake right behind the connect: hiredis sends it once the
 * socket connects, and an answer of each comes back in order.
 */
static void conn_handshake(conn *c)
{
    const hd_redis_url *url = &c->link->settings.url;
    if (url->password[0]) {
        const char *argv[3] = {"AUTH"};
        size_t lens[3] = {4};
        int n = 1;
        if (url->user[0]) { /* the ACL form, Redis 6 and later */
            argv[n] = url->user;
            lens[n++] = strlen(url->user);
        }
        argv[n] = url->password;
        lens[n++] = strlen(url->password);
        conn_handshake_send(c, n, argv, lens);
    }
    bool is_cmd = c == &c->link->cmd;
    if (is_cmd && url->db != 0) {
        char db[16];
        const char *argv[] = {"SELECT", db};
        const size_t lens[] = {6, (size_t)snprintf(db, sizeof(db), "%d", url->db)};
        conn_handshake_send(c, 2, argv, lens);
    }
    if (is_cmd) {
        hd_list *pos, *tmp;
        hd_list_foreach_safe(pos, tmp, &c->link->scripts)
        {
            if (send_script_load(c, hd_container_of(pos, hd_redis_script, node), handshake_on_reply,
                                 c) == 0)
                c->handshake_left++;
        }
    }
    if (is_cmd && c->link->sentinel != NULL) {
        /* What the sentinels named may not be a master (yet, or any more). */
        const char *role[] = {"ROLE"};
        conn_handshake_send(c, 1, role, (const size_t[]){4});
    }
    const char *info[] = {"INFO", "server"};
    conn_handshake_send(c, 2, info, (const size_t[]){4, 6});
    if (is_cmd) {
        /* Answers -LOADING while Redis loads its data: the attempt then fails and is retried. */
        const char *ping[] = {"PING"};
        conn_handshake_send(c, 1, ping, (const size_t[]){4});
    }
}

static int conn_open(conn *c)
{
    hd_redis_link *link = c->link;
    redisAsyncContext *ac = redisAsyncConnect(link->ip, link->port);
    if (ac == NULL)
        abort(); /* out of memory */
    if (ac->err) {
        snprintf(link->reason, sizeof(link->reason), "cannot connect to %s:%d: %s", link->ip,
                 link->port, ac->errstr);
        redisAsyncFree(ac);
        return -1;
    }
    if (redisLibuvAttach(ac, link->loop) != REDIS_OK) {
        snprintf(link->reason, sizeof(link->reason), "cannot watch the socket to %s:%d", link->ip,
                 link->port);
        redisAsyncFree(ac);
        return -1;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, conn_on_connect);
    redisAsyncSetDisconnectCallback(ac, conn_on_disconnect);
    c->ac = ac;
    c->run_id[0] = '\0';
    c->handshake_left = 0;
    conn_handshake(c);
    return 0;
}

/* ------------------------------------------------------------ state machine */

static void link_set_state(hd_redis_link *link, hd_redis_link_state state)
{
    link->state = state;
    link->settings.on_state(link->settings.ctx, state, link->reason);
}

/*
 * Tears both connections down: answers what was in flight with status (in
 * send order), then frees the contexts. Safe to re-enter from an answer's
 * callback (hd_redis_link_close does): each step only does what is left.
 */
static void link_drop(hd_redis_link *link, hd_redis_status status)
{
    uv_timer_stop(&link->tick);
    uv_idle_stop(&link->flush);
    if (link->locating) {
        link->locating = false;
        hd_redis_sentinel_cancel(link->sentinel);
    }
    conn_answer_all(&link->cmd, status);
    conn_answer_all(&link->sub, status);
    conn_close(&link->cmd);
    conn_close(&link->sub);
    link->probe_out = false;
}

static void link_on_retry(uv_timer_t *timer);

static void link_fail(hd_redis_link *link, hd_redis_status status, const char *fmt, ...)
{
    if (link->state == HD_REDIS_LINK_DOWN)
        return;
    link->state = HD_REDIS_LINK_DOWN;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(link->reason, sizeof(link->reason), fmt, ap);
    va_end(ap);
    link_drop(link, status);
    if (link->closing)
        return;
    channels_reset(link);
    uv_timer_start(&link->retry, link_on_retry,
                   hd_redis_link_backoff_ms(link->attempt++, random_uniform()), 0);
    link_set_state(link, HD_REDIS_LINK_DOWN);
}

static void link_up(hd_redis_link *link)
{
    if (link->cmd.run_id[0] == '\0' || strcmp(link->cmd.run_id, link->sub.run_id) != 0) {
        link_fail(link, HD_REDIS_OUTCOME_UNKNOWN,
                  "the two connections to %s:%d reached different Redis servers (run_id '%s' and "
                  "'%s'): is a proxy in front of Redis?",
                  link->ip, link->port, link->cmd.run_id, link->sub.run_id);
        return;
    }
    link->state = HD_REDIS_LINK_UP;
    link->attempt = 0;
    link->sub_activity_ms = clock_ms();
    link->probe_out = false;
    for (size_t i = 0; i < link->bucket_count; i++)
        for (channel *ch = link->buckets[i]; ch; ch = ch->bucket_next)
            channel_queue(link, ch);
    link_flush(link);
    if (link->state != HD_REDIS_LINK_UP)
        return;
    snprintf(link->reason, sizeof(link->reason), "run_id %s at %s:%d", link->cmd.run_id, link->ip,
             link->port);
    link_set_state(link, HD_REDIS_LINK_UP);
}

static void link_release(hd_redis_link *link);

/* The attempt under way goes to the old master: given up for the one +switch-master named. */
static void link_fail_switched(hd_redis_link *link)
{
    link_fail(link, HD_REDIS_OUTCOME_UNKNOWN, "the sentinels moved the master to %s:%d",
              link->switched_host, link->switched_port);
}

static void link_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    hd_redis_link *link = hd_container_of(req, hd_redis_link, resolve);
    link->resolving = false;
    if (link->closing) {
        uv_freeaddrinfo(res);
        link_release(link);
        return;
    }
    if (link->switched_port != 0) {
        uv_freeaddrinfo(res);
        link_fail_switched(link);
        return;
    }
    if (status < 0) {
        link_fail(link, HD_REDIS_OUTCOME_UNKNOWN, "cannot resolve %s: %s", link->host,
                  uv_strerror(status));
        return;
    }
    /* One address for both connections: their run_ids must then match. */
    if (res->ai_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, link->ip, sizeof(link->ip));
    else
        uv_ip4_name((const struct sockaddr_in *)res->ai_addr, link->ip, sizeof(link->ip));
    uv_freeaddrinfo(res);
    link->attempt_started_ms = clock_ms();
    if (conn_open(&link->cmd) < 0 || conn_open(&link->sub) < 0) {
        char reason[REASON_MAX];
        memcpy(reason, link->reason, sizeof(reason));
        link_fail(link, HD_REDIS_OUTCOME_UNKNOWN, "%s", reason);
    }
}

static void link_on_tick(uv_timer_t *timer);

/* This attempt's server: resolves host and opens both connections to it. */
static void link_resolve(hd_redis_link *link, const char *host, int port)
{
    snprintf(link->host, sizeof(link->host), "%s", host);
    link->port = port;
    bool v6 = strchr(host, ':') != NULL;
    snprintf(link->address, sizeof(link->address), "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "",
             port);
    snprintf(link->reason, sizeof(link->reason), "connecting to %s", link->address);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(link->loop, &link->resolve, link_on_resolved, host, NULL, &hints);
    if (rc < 0) {
        link_fail(link, HD_REDIS_OUTCOME_UNKNOWN, "cannot resolve %s: %s", host, uv_strerror(rc));
        return;
    }
    link->resolving = true;
}

/* The sentinels' answer: the master to connect to, or why none was named. */
static void link_on_located(void *ctx, const char *host, int port, const char *reason)
{
    hd_redis_link *link = ctx;
    link->locating = false;
    if (host == NULL)
        link_fail(link, HD_REDIS_OUTCOME_UNKNOWN, "no sentinel named the master: %s", reason);
    else
        link_resolve(link, host, port);
}

static void link_connect(hd_redis_link *link)
{
    link->state = HD_REDIS_LINK_CONNECTING;
    uint64_t tick_ms = link->settings.timeout_ms / 10;
    tick_ms = tick_ms < 10 ? 10 : tick_ms > TICK_MAX_MS ? TICK_MAX_MS : tick_ms;
    uv_timer_start(&link->tick, link_on_tick, tick_ms, tick_ms);
    if (link->sentinel != NULL && link->switched_port == 0) {
        /* The sentinels time each of themselves out: the tick leaves the ask alone. */
        snprintf(link->reason, sizeof(link->reason), "asking the sentinels for the master");
        link->locating = true;
        hd_redis_sentinel_ask(link->sentinel, link_on_located, link);
        link_set_state(link, HD_REDIS_LINK_CONNECTING);
        return;
    }
    const char *host = link->settings.url.host;
    int port = link->settings.url.port;
    if (link->switched_port != 0) {
        host = link->switched_host;
        port = link->switched_port;
        link->switched_port = 0; /* once: a failed attempt asks the sentinels again */
    }
    link_resolve(link, host, port);
    if (link->state == HD_REDIS_LINK_CONNECTING)
        link_set_state(link, HD_REDIS_LINK_CONNECTING);
}

static void link_on_retry(uv_timer_t *timer)
{
    link_connect(hd_container_of(timer, hd_redis_link, retry));
}

/*
 * A sentinel announced a failover: the connection to the old master goes
 * now (the old master may be dead, or demoted and soon refusing writes),
 * and the next attempt comes at once, without waiting for a backoff.
 */
static void link_on_switch(void *ctx, const char *host, int port)
{
    hd_redis_link *link = ctx;
    bool same = !link->locating && port == link->port &&
                (strcmp(host, link->host) == 0 || strcmp(host, link->ip) == 0);
    if (link->closing || !link->started || (same && link->state != HD_REDIS_LINK_DOWN))
        return; /* already with the new master, or connecting to it */
    /*
     * The next attempt goes there without asking: the sentinel asked could
     * be one that has not heard of the switch yet.
     */
    snprintf(link->switched_host, sizeof(link->switched_host), "%s", host);
    link->switched_port = port;
    link->attempt = 0;
    if (link->state == HD_REDIS_LINK_DOWN)
        uv_timer_start(&link->retry, link_on_retry, 0, 0);
    else if (!link->resolving) /* else link_on_resolved gives the attempt up */
        link_fail_switched(link);
}

/* The pub/sub liveness probe: see the header. */
static void probe_on_reply(void *ctx, hd_redis_status status, const redisReply *reply)
{
    hd_redis_link *link = ctx;
    if (status != HD_REDIS_OK || link->state != HD_REDIS_LINK_UP)
        return;
    channel *ch = link->probe_channel;
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0 && ch->asked &&
        ch->replies_due == 0)
        link_fail(link, HD_REDIS_OUTCOME_UNKNOWN,
                  "Redis at %s:%d no longer has the pub/sub connection subscribed (the liveness "
                  "probe reached no one)",
                  link->ip, link->port);
}

static void link_check_probe(hd_redis_link *link, uint64_t now)
{
    const hd_redis_link_settings *s = &link->settings;
    if (link->probe_out) {
        if (now - link->probe_sent_ms >= s->timeout_ms)
            link_fail(link, HD_REDIS_OUTCOME_UNKNOWN,
                      "the pub/sub connection to %s:%d did not deliver the liveness probe within "
                      "%u ms",
                      link->ip, link->port, s->timeout_ms);
        return;
    }
    if (now - link->sub_activity_ms < s->probe_idle_ms)
        return;
    const char *argv[] = {"PUBLISH", s->probe_channel, PROBE_PAYLOAD};
    const size_t lens[] = {7, s->probe_channel_len, sizeof(PROBE_PAYLOAD) - 1};
    if (conn_send(&link->cmd, 3, argv, lens, probe_on_reply, link) == 0) {
        link->probe_out = true;
        link->probe_sent_ms = now;
    }
}

static void link_on_tick(uv_timer_t *timer)
{
    hd_redis_link *link = hd_container_of(timer, hd_redis_link, tick);
    uint64_t now = clock_ms();
    uint32_t timeout = link->settings.timeout_ms;
    if (link->resolving || link->locating)
        return; /* getaddrinfo, and the sentinels, have their own timeouts */
    conn *conns[] = {&link->cmd, &link->sub};
    for (int i = 0; i < 2; i++) {
        int err;
        if (conns[i]->ac != NULL && hd_redis_poll_failed(conns[i]->ac, &err)) {
            link_fail(link, HD_REDIS_OUTCOME_UNKNOWN, "the %s connection to %s:%d failed: %s",
                      conns[i]->role, link->ip, link->port, err ? strerror(err) : "poll error");
            return;
        }
    }
    if (link->state == HD_REDIS_LINK_CONNECTING) {
        if (now - link->attempt_started_ms >= timeout)
            link_fail(link, HD_REDIS_OUTCOME_UNKNOWN,
                      "no answer from %s:%d within %u ms of connecting", link->ip, link->port,
                      timeout);
        return;
    }
    if (!hd_list_empty(&link->cmd.inflight)) {
        const pending *oldest = hd_container_of(link->cmd.inflight.next, pending, node);
        if (now - oldest->sent_ms >= timeout) {
            link_fail(link, HD_REDIS_TIMEOUT,
                      "Redis at %s:%d did not answer a command within %u ms", link->ip, link->port,
                      timeout);
            return;
        }
    }
    link_check_probe(link, now);
}

/* ------------------------------------------------------------ lifetime */

hd_redis_link *hd_redis_link_new(uv_loop_t *loop, const hd_redis_link_settings *settings)
{
    hd_redis_link *link = hd_calloc(1, sizeof(*link));
    link->loop = loop;
    link->settings = *settings;
    link->state = HD_REDIS_LINK_DOWN;
    snprintf(link->reason, sizeof(link->reason), "not started");
    link->cmd = (conn){.link = link, .role = "command"};
    link->sub = (conn){.link = link, .role = "pub/sub"};
    hd_list_init(&link->cmd.inflight);
    hd_list_init(&link->sub.inflight);
    hd_list_init(&link->sub_queue);
    hd_list_init(&link->scripts);
    RAND_bytes((unsigned char *)&link->hash_seed, sizeof(link->hash_seed));
    link->bucket_count = 16;
    link->buckets = hd_calloc(link->bucket_count, sizeof(*link->buckets));

    link->probe_channel = channel_add(link, settings->probe_channel, settings->probe_channel_len);
    link->probe_channel->is_probe = true;
    link->probe_channel->wanted = true;
    link->probe_channel->tell = true;
    link->settings.probe_channel = link->probe_channel->name;

    uv_timer_init(loop, &link->tick);
    uv_timer_init(loop, &link->retry);
    uv_idle_init(loop, &link->flush);
    link->tick.data = link->retry.data = link->flush.data = link;
    link->open_handles = 3;

    if (settings->sentinel_count > 0) {
        hd_redis_sentinel_settings sentinel = {
            .sentinels = settings->sentinels,
            .count = settings->sentinel_count,
            .master = settings->sentinel_master,
            .password = settings->sentinel_password,
            /* Each sentinel only gets a share: one that is down must not hold the failover up. */
            .timeout_ms = settings->timeout_ms < SENTINEL_TIMEOUT_MAX_MS ? settings->timeout_ms
                                                                         : SENTINEL_TIMEOUT_MAX_MS,
            .on_switch = link_on_switch,
            .ctx = link,
        };
        link->sentinel = hd_redis_sentinel_new(loop, &sentinel);
    }
    link->settings.sentinels = NULL; /* copied by the sentinel module */
    link->settings.sentinel_master = link->settings.sentinel_password = NULL;
    return link;
}

void hd_redis_link_start(hd_redis_link *link)
{
    if (link->started || link->closing)
        return;
    link->started = true;
    link_connect(link);
}

hd_redis_link_state hd_redis_link_get_state(const hd_redis_link *link)
{
    return link->state;
}

uint64_t hd_redis_link_inflight_bytes(const hd_redis_link *link)
{
    return link->inflight_bytes;
}

const char *hd_redis_link_address(const hd_redis_link *link)
{
    return link->address;
}

const char *hd_redis_link_run_id(const hd_redis_link *link)
{
    return link->state == HD_REDIS_LINK_UP ? link->cmd.run_id : "";
}

const hd_redis_script *hd_redis_link_script(hd_redis_link *link, const char *body, size_t len)
{
    hd_redis_script *script = hd_alloc(sizeof(*script) + len + 1);
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)body, len, digest);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(script->sha + 2 * i, 3, "%02x", digest[i]);
    script->len = len;
    memcpy(script->body, body, len);
    script->body[len] = '\0';
    hd_list_insert_tail(&link->scripts, &script->node);
    /* While connecting the handshake already went out: the NOSCRIPT retry covers that case. */
    if (link->state == HD_REDIS_LINK_UP)
        send_script_load(&link->cmd, script, ignore_reply, NULL);
    return script;
}

const char *hd_redis_script_sha(const hd_redis_script *script)
{
    return script->sha;
}

static void link_free_memory(hd_redis_link *link)
{
    for (size_t i = 0; i < link->bucket_count; i++) {
        channel *ch = link->buckets[i];
        while (ch) {
            channel *next = ch->bucket_next;
            free(ch);
            ch = next;
        }
    }
    free(link->buckets);
    hd_list *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &link->scripts)
    {
        free(hd_container_of(pos, hd_redis_script, node));
    }
    free(link);
}

static void link_release(hd_redis_link *link)
{
    if (link->open_handles == 0 && !link->resolving)
        link_free_memory(link);
}

static void link_on_handle_closed(uv_handle_t *handle)
{
    hd_redis_link *link = handle->data;
    link->open_handles--;
    link_release(link);
}

void hd_redis_link_close(hd_redis_link *link)
{
    if (link->closing)
        return;
    link->closing = true;
    link->state = HD_REDIS_LINK_DOWN;
    link_drop(link, HD_REDIS_OUTCOME_UNKNOWN);
    if (link->sentinel != NULL)
        hd_redis_sentinel_close(link->sentinel);
    if (link->resolving)
        uv_cancel((uv_req_t *)&link->resolve);
    uv_handle_t *handles[] = {(uv_handle_t *)&link->tick, (uv_handle_t *)&link->retry,
                              (uv_handle_t *)&link->flush};
    for (int i = 0; i < 3; i++)
        uv_close(handles[i], link_on_handle_closed);
}
