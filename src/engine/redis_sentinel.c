/*
 * Redis Sentinel discovery: short-lived connections that ask, one
 * long-lived connection that watches. Both are hiredis 0.14 async contexts
 * kept by the rules of redis_link.c: a context is freed here only after
 * being detached (ac->data = NULL), so the callbacks hiredis runs while
 * freeing it know to do nothing; hiredis frees it on its own after a failed
 * connect and after a disconnect, so those callbacks only forget it; a
 * refused connect, which the libuv adapter never reports (pitfall #1), is
 * spotted by the tick, and a sentinel that goes quiet by the deadline.
 */
#include "engine/redis_sentinel.h"

#include <errno.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "engine/redis_link.h"
#include "herald/alloc.h"
#include "herald/list.h"
#include "herald/log.h"

#define TICK_MS 50
#define WATCH_RETRY_MS 1000 /* before watching the next sentinel after a failure */
#define REASON_MAX 256
#define REASONS_MAX 1024 /* every sentinel's reason, in one answer */
#define SWITCH_CHANNEL "+switch-master"

typedef struct sconn sconn;

/* One connection to one sentinel: the ask's or the watch's. */
struct sconn {
    hd_redis_sentinel *s;
    size_t index; /* the sentinel it is for */
    bool wanted;  /* open, or opening; false once closed */
    bool resolving;
    size_t resolving_index; /* the sentinel the lookup under way is for */
    uv_getaddrinfo_t resolve;
    redisAsyncContext *ac;
    uint64_t deadline_ms;   /* fails when reached; 0 = none (the watch, once subscribed) */
    char error[REASON_MAX]; /* a failure found inside a call, reported by the tick */
    /* The connection is open (AUTH queued): send what it is for. */
    void (*on_open)(sconn *c);
    /* It failed (already closed): reason names the sentinel. */
    void (*on_fail)(sconn *c, const char *reason);
};

struct hd_redis_sentinel {
    uv_loop_t *loop;
    hd_sentinel_addr *sentinels;
    size_t count;
    char master[HD_SENTINEL_NAME_MAX + 1];
    char *password;
    uint32_t timeout_ms;
    void (*on_switch)(void *ctx, const char *host, int port);
    void *ctx;

    size_t preferred; /* the sentinel that answered last: asked first */
    sconn ask;
    hd_redis_sentinel_cb *cb; /* NULL when no ask is under way */
    void *cb_ctx;
    size_t tried;
    char reasons[REASONS_MAX];

    sconn watch;
    uv_timer_t watch_retry;
    uv_timer_t tick;
    bool started; /* the first ask started the tick and the watch */
    bool closing;
    unsigned open_handles;
};

static uint64_t clock_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* ------------------------------------------------------------ pure parts */

static bool parse_port(const char *text, size_t len, int *port)
{
    if (len == 0 || len > 5)
        return false;
    int value = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        value = value * 10 + (text[i] - '0');
    }
    if (value < 1 || value > 65535)
        return false;
    *port = value;
    return true;
}

static bool copy_host(const char *text, size_t len, char *host, size_t host_len)
{
    if (len == 0 || len >= host_len || memchr(text, '\0', len) != NULL)
        return false;
    memcpy(host, text, len);
    host[len] = '\0';
    return true;
}

int hd_redis_sentinel_parse_master(const redisReply *reply, char *host, size_t host_len, int *port,
                                   char *err, size_t err_len)
{
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(err, err_len, "refused: %.*s", (int)(reply->len > 200 ? 200 : reply->len),
                 reply->str);
        return -1;
    }
    if (reply->type == REDIS_REPLY_NIL) {
        snprintf(err, err_len, "monitors no master by that name");
        return -1;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING ||
        !copy_host(reply->element[0]->str, reply->element[0]->len, host, host_len) ||
        !parse_port(reply->element[1]->str, reply->element[1]->len, port)) {
        snprintf(err, err_len, "answered something other than a host and a port");
        return -1;
    }
    return 0;
}

bool hd_redis_sentinel_parse_switch(const char *payload, size_t len, const char *master, char *host,
                                    size_t host_len, int *port)
{
    const char *word[5];
    size_t word_len[5];
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (payload[i] == ' ') {
            i++;
            continue;
        }
        if (n == 5)
            return false; /* more words than the message has */
        size_t start = i;
        while (i < len && payload[i] != ' ')
            i++;
        word[n] = payload + start;
        word_len[n++] = i - start;
    }
    return n == 5 && word_len[0] == strlen(master) && memcmp(word[0], master, word_len[0]) == 0 &&
           copy_host(word[3], word_len[3], host, host_len) &&
           parse_port(word[4], word_len[4], port);
}

const char *hd_redis_role_of(const redisReply *reply, size_t *len)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
        *len = 0;
        return "";
    }
    *len = reply->element[0]->len;
    return reply->element[0]->str;
}

/* ------------------------------------------------------------ connections */

static const hd_sentinel_addr *sentinel_of(const sconn *c)
{
    return &c->s->sentinels[c->index];
}

static void sconn_close(sconn *c)
{
    c->wanted = false;
    c->deadline_ms = 0;
    c->error[0] = '\0';
    if (c->resolving)
        uv_cancel((uv_req_t *)&c->resolve); /* may be too late: the callback then ignores it */
    redisAsyncContext *ac = c->ac;
    if (ac != NULL) {
        c->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
}

static void sconn_fail(sconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sconn_fail(sconn *c, const char *fmt, ...)
{
    const hd_sentinel_addr *a = sentinel_of(c);
    char what[REASON_MAX], reason[REASON_MAX + HD_SENTINEL_HOST_MAX + 32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(reason, sizeof(reason), "sentinel %s:%d %s", a->host, a->port, what);
    sconn_close(c);
    c->on_fail(c, reason);
}

/* Records a failure found inside a call, for the tick to report (never from inside the call). */
static void sconn_fail_later(sconn *c, const char *what)
{
    snprintf(c->error, sizeof(c->error), "%s", what);
    c->deadline_ms = clock_ms();
}

static void sconn_on_connect(const redisAsyncContext *ac, int status)
{
    sconn *c = ac->data;
    if (status == REDIS_OK || c == NULL)
        return;
    c->ac = NULL; /* hiredis frees it when this returns */
    sconn_fail(c, "cannot be reached: %s", ac->errstr);
}

static void sconn_on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    sconn *c = ac->data;
    if (c == NULL)
        return;
    c->ac = NULL; /* hiredis frees it when this returns */
    sconn_fail(c, "closed the connection%s%s", ac->err ? ": " : "", ac->err ? ac->errstr : "");
}

static void sconn_on_auth(redisAsyncContext *ac, void *r, void *privdata)
{
    const redisReply *reply = r;
    if (reply == NULL || ac->data == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR)
        sconn_fail(privdata, "refused AUTH: %s", reply->str);
}

static void sconn_connect(sconn *c, const char *ip)
{
    const hd_sentinel_addr *a = sentinel_of(c);
    redisAsyncContext *ac = redisAsyncConnect(ip, a->port);
    if (ac == NULL)
        abort(); /* out of memory */
    if (ac->err || redisLibuvAttach(ac, c->s->loop) != REDIS_OK) {
        char what[REASON_MAX];
        snprintf(what, sizeof(what), "cannot be reached: %s", ac->err ? ac->errstr : "no poll");
        redisAsyncFree(ac);
        sconn_fail(c, "%s", what);
        return;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, sconn_on_connect);
    redisAsyncSetDisconnectCallback(ac, sconn_on_disconnect);
    c->ac = ac;
    if (c->s->password[0] != '\0') {
        const char *argv[] = {"AUTH", c->s->password};
        const size_t lens[] = {4, strlen(c->s->password)};
        redisAsyncCommandArgv(ac, sconn_on_auth, c, 2, argv, lens);
    }
    c->on_open(c);
}

static void sentinel_release(hd_redis_sentinel *s);
static void sconn_resolve(sconn *c);

static void sconn_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    sconn *c = hd_container_of(req, sconn, resolve);
    c->resolving = false;
    if (c->s->closing) {
        uv_freeaddrinfo(res);
        sentinel_release(c->s);
        return;
    }
    if (!c->wanted || c->resolving_index != c->index) {
        uv_freeaddrinfo(res);
        if (c->wanted)
            sconn_resolve(c); /* closed and opened for another sentinel meanwhile */
        return;
    }
    if (status < 0) {
        sconn_fail(c, "cannot be resolved: %s", uv_strerror(status));
        return;
    }
    char ip[64];
    if (res->ai_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, ip, sizeof(ip));
    else
        uv_ip4_name((const struct sockaddr_in *)res->ai_addr, ip, sizeof(ip));
    uv_freeaddrinfo(res);
    sconn_connect(c, ip);
}

static void sconn_resolve(sconn *c)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(c->s->loop, &c->resolve, sconn_on_resolved, sentinel_of(c)->host, NULL,
                            &hints);
    if (rc < 0) {
        char what[REASON_MAX];
        snprintf(what, sizeof(what), "cannot be resolved: %s", uv_strerror(rc));
        sconn_fail_later(c, what);
        return;
    }
    c->resolving = true;
    c->resolving_index = c->index;
}

/* Opens c to sentinel index; it fails (on_fail) unless done within timeout_ms. */
static void sconn_open(sconn *c, size_t index)
{
    c->index = index;
    c->wanted = true;
    c->error[0] = '\0';
    c->deadline_ms = clock_ms() + c->s->timeout_ms;
    if (!c->resolving) /* else the lookup under way starts this one when it ends */
        sconn_resolve(c);
}

/* Fails c when its socket failed (a refused connect, pitfall #1) or its deadline passed. */
static void sconn_check(sconn *c, uint64_t now)
{
    if (!c->wanted)
        return;
    int err;
    if (c->ac != NULL && hd_redis_poll_failed(c->ac, &err))
        sconn_fail(c, "cannot be reached: %s", err ? strerror(err) : "poll error");
    else if (c->deadline_ms != 0 && now >= c->deadline_ms && c->error[0] != '\0')
        sconn_fail(c, "%s", c->error);
    else if (c->deadline_ms != 0 && now >= c->deadline_ms)
        sconn_fail(c, "did not answer within %u ms", c->s->timeout_ms);
}

static void on_tick(uv_timer_t *timer)
{
    hd_redis_sentinel *s = timer->data;
    uint64_t now = clock_ms();
    sconn_check(&s->ask, now);
    sconn_check(&s->watch, now);
}

/* ------------------------------------------------------------ asking */

static void ask_finish(hd_redis_sentinel *s, const char *host, int port, const char *reason)
{
    hd_redis_sentinel_cb *cb = s->cb;
    s->cb = NULL;
    cb(s->cb_ctx, host, port, reason);
}

static void ask_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    sconn *c = privdata;
    hd_redis_sentinel *s = c->s;
    const redisReply *reply = r;
    if (reply == NULL || ac->data == NULL)
        return;
    char host[HD_SENTINEL_HOST_MAX + 1], err[REASON_MAX];
    int port;
    if (hd_redis_sentinel_parse_master(reply, host, sizeof(host), &port, err, sizeof(err)) != 0) {
        sconn_fail(c, "%s", err);
        return;
    }
    sconn_close(c);
    s->preferred = c->index;
    ask_finish(s, host, port, NULL);
}

static void ask_on_open(sconn *c)
{
    const char *master = c->s->master;
    const char *argv[] = {"SENTINEL", "get-master-addr-by-name", master};
    const size_t lens[] = {8, 23, strlen(master)};
    redisAsyncCommandArgv(c->ac, ask_on_reply, c, 3, argv, lens);
}

static void ask_on_fail(sconn *c, const char *reason)
{
    hd_redis_sentinel *s = c->s;
    size_t used = strlen(s->reasons);
    snprintf(s->reasons + used, sizeof(s->reasons) - used, "%s%s", used ? "; " : "", reason);
    if (++s->tried < s->count) {
        sconn_open(c, (c->index + 1) % s->count);
        return;
    }
    char reasons[REASONS_MAX];
    memcpy(reasons, s->reasons, sizeof(reasons));
    ask_finish(s, NULL, 0, reasons);
}

void hd_redis_sentinel_ask(hd_redis_sentinel *s, hd_redis_sentinel_cb *cb, void *ctx)
{
    if (!s->started) {
        s->started = true;
        uv_timer_start(&s->tick, on_tick, TICK_MS, TICK_MS);
        sconn_open(&s->watch, 0);
    }
    hd_redis_sentinel_cancel(s);
    s->cb = cb;
    s->cb_ctx = ctx;
    s->tried = 0;
    s->reasons[0] = '\0';
    sconn_open(&s->ask, s->preferred);
}

void hd_redis_sentinel_cancel(hd_redis_sentinel *s)
{
    s->cb = NULL;
    sconn_close(&s->ask);
}

/* ------------------------------------------------------------ watching */

static void watch_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    sconn *c = privdata;
    hd_redis_sentinel *s = c->s;
    const redisReply *reply = r;
    if (reply == NULL || ac->data == NULL)
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    const redisReply *payload = reply->element[2];
    char host[HD_SENTINEL_HOST_MAX + 1];
    int port;
    if (strcmp(kind, "subscribe") == 0) {
        c->deadline_ms = 0; /* watching: no deadline from now */
        hd_log_debug("cluster: watching sentinel %s:%d for failovers of '%s'", sentinel_of(c)->host,
                     sentinel_of(c)->port, s->master);
    } else if (strcmp(kind, "message") == 0 && payload->type == REDIS_REPLY_STRING &&
               hd_redis_sentinel_parse_switch(payload->str, payload->len, s->master, host,
                                              sizeof(host), &port)) {
        s->on_switch(s->ctx, host, port);
    }
}

static void watch_on_open(sconn *c)
{
    const char *argv[] = {"SUBSCRIBE", SWITCH_CHANNEL};
    const size_t lens[] = {9, sizeof(SWITCH_CHANNEL) - 1};
    redisAsyncCommandArgv(c->ac, watch_on_reply, c, 2, argv, lens);
}

static void watch_on_retry(uv_timer_t *timer)
{
    hd_redis_sentinel *s = timer->data;
    sconn_open(&s->watch, s->watch.index);
}

static void watch_on_fail(sconn *c, const char *reason)
{
    hd_redis_sentinel *s = c->s;
    hd_log_debug("cluster: not watching for failovers: %s", reason);
    c->index = (c->index + 1) % s->count;
    uv_timer_start(&s->watch_retry, watch_on_retry, WATCH_RETRY_MS, 0);
}

/* ------------------------------------------------------------ lifetime */

hd_redis_sentinel *hd_redis_sentinel_new(uv_loop_t *loop,
                                         const hd_redis_sentinel_settings *settings)
{
    hd_redis_sentinel *s = hd_calloc(1, sizeof(*s));
    s->loop = loop;
    s->count = settings->count;
    s->sentinels = hd_calloc(settings->count, sizeof(*s->sentinels));
    memcpy(s->sentinels, settings->sentinels, settings->count * sizeof(*s->sentinels));
    snprintf(s->master, sizeof(s->master), "%s", settings->master);
    s->password = hd_strdup(settings->password ? settings->password : "");
    s->timeout_ms = settings->timeout_ms;
    s->on_switch = settings->on_switch;
    s->ctx = settings->ctx;
    s->ask = (sconn){.s = s, .on_open = ask_on_open, .on_fail = ask_on_fail};
    s->watch = (sconn){.s = s, .on_open = watch_on_open, .on_fail = watch_on_fail};
    uv_timer_init(loop, &s->tick);
    uv_timer_init(loop, &s->watch_retry);
    s->tick.data = s->watch_retry.data = s;
    s->open_handles = 2;
    return s;
}

static void sentinel_release(hd_redis_sentinel *s)
{
    if (s->open_handles > 0 || s->ask.resolving || s->watch.resolving)
        return;
    free(s->sentinels);
    free(s->password);
    free(s);
}

static void on_handle_closed(uv_handle_t *handle)
{
    hd_redis_sentinel *s = handle->data;
    s->open_handles--;
    sentinel_release(s);
}

void hd_redis_sentinel_close(hd_redis_sentinel *s)
{
    if (s->closing)
        return;
    s->closing = true;
    s->cb = NULL;
    sconn_close(&s->ask);
    sconn_close(&s->watch);
    uv_close((uv_handle_t *)&s->tick, on_handle_closed);
    uv_close((uv_handle_t *)&s->watch_retry, on_handle_closed);
}
