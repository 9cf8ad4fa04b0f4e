/*
 * Tests for src/engine/redis_topics.lua (GET /topics in cluster mode), run
 * through hd_redis_link against a real redis-server (see redis_harness.h):
 * the keys are written here as the publish script writes them, then the
 * script describes topics (a meta of the hub's epoch or not, expired
 * entries at the oldest end left out with their bytes) and pages through
 * the index (byte order, prefix bounds, stale names dropped as met, a
 * bounded number of names per call with a resume point).
 */
#include <stdlib.h>

#include "engine/redis_scripts.h"
#include "redis_harness.h"

#define PREFIX "{t}"
#define EPOCH "epoch001"

static hd_redis_link *topics_link;
static const hd_redis_script *script;

/* ------------------------------------------------------------ writing what publish writes */

static void admin_do(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(admin, fmt, ap);
    va_end(ap);
    CHECK(r != NULL && r->type != REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

static void fresh_hub(void)
{
    admin_do("FLUSHALL");
    admin_do("HSET " PREFIX ":hub e " EPOCH " s 100");
}

/* One stream entry of topic; its bytes are the topic's, the event's and the data's. */
static void entry(const char *topic, int seq, long long ms, const char *event, const char *data)
{
    admin_do("XADD " PREFIX ":s:%s %d-0 d %s t %lld p 0 v %s", topic, seq, data, ms, event);
}

static void meta(const char *topic, const char *epoch, int last, int bytes)
{
    admin_do("HSET " PREFIX ":m:%s e %s l %d b %d", topic, epoch, last, bytes);
    admin_do("ZADD " PREFIX ":topics 0 %s", topic);
}

/* A topic of the hub's epoch with one young entry. */
static void topic(const char *name, int seq)
{
    entry(name, seq, 1000, "", "d");
    meta(name, EPOCH, seq, (int)strlen(name) + 1);
}

static bool indexed(const char *name)
{
    redisReply *r = admin_command("ZSCORE " PREFIX ":topics %s", name);
    bool found = r && r->type == REDIS_REPLY_STRING;
    freeReplyObject(r);
    return found;
}

/* ------------------------------------------------------------ calling the script */

typedef struct stats {
    long long exists, count, bytes, last;
} stats;

typedef struct result {
    int calls;
    bool error;
    char epoch[16];
    char resume[64];
    char page[512]; /* "name:count:bytes:last name:..." */
    stats described[4];
    size_t n;
} result;

static void on_result(void *ctx, hd_redis_status status, const redisReply *reply)
{
    result *r = ctx;
    r->calls++;
    CHECK_EQ_INT(status, HD_REDIS_OK);
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        r->error = true;
        return;
    }
    CHECK(reply->type == REDIS_REPLY_ARRAY && reply->elements >= 3);
    snprintf(r->epoch, sizeof(r->epoch), "%s", reply->element[0]->str);
    snprintf(r->resume, sizeof(r->resume), "%s", reply->element[1]->str);
    size_t k = (size_t)reply->element[2]->integer;
    CHECK(reply->elements >= 3 + 4 * k);
    for (size_t i = 0; i < k; i++) {
        redisReply *const *f = &reply->element[3 + 4 * i];
        size_t used = strlen(r->page);
        snprintf(r->page + used, sizeof(r->page) - used, "%s%s:%s:%s:%s", i ? " " : "", f[0]->str,
                 f[1]->str, f[2]->str, f[3]->str);
    }
    for (size_t i = 3 + 4 * k; i + 3 < reply->elements && r->n < 4; i += 4) {
        redisReply *const *f = &reply->element[i];
        r->described[r->n++] =
            (stats){f[0]->integer, atoll(f[1]->str), atoll(f[2]->str), atoll(f[3]->str)};
    }
}

static result topics(long long expired_at, const char *min, size_t min_len, const char *max,
                     size_t max_len, int want, int budget, const char *const *names, int n)
{
    char numbers[4][24];
    const char *argv[16];
    size_t lens[16];
    int argc = 0;
#define ARG(text, len) (argv[argc] = (text), lens[argc++] = (len))
#define NUM(i, v) ARG(numbers[i], (size_t)snprintf(numbers[i], 24, "%lld", (long long)(v)))
    ARG(PREFIX ":hub", strlen(PREFIX ":hub"));
    ARG(PREFIX, strlen(PREFIX));
    ARG("cand0001", 8);
    NUM(0, expired_at);
    ARG(min, min_len);
    ARG(max, max_len);
    NUM(1, want);
    NUM(2, budget);
    NUM(3, n);
    for (int i = 0; i < n; i++)
        ARG(names[i], strlen(names[i]));
#undef ARG
#undef NUM
    result r = {0};
    CHECK_EQ_INT(hd_redis_link_evalsha(topics_link, script, 1, argc, argv, lens, on_result, &r),
                 HD_REDIS_OK);
    CHECK(WAIT_UNTIL(r.calls == 1, 3000));
    return r;
}

static stats describe(const char *name, long long expired_at)
{
    result r = topics(expired_at, "-", 1, "+", 1, 0, 0, &name, 1);
    CHECK_EQ_INT(r.n, 1);
    CHECK_EQ_STR(r.page, "");
    return r.described[0];
}

static result page(const char *min, const char *max, int want, int budget)
{
    return topics(-1, min, strlen(min), max, strlen(max), want, budget, NULL, 0);
}

/* ------------------------------------------------------------ tests */

static void check_stats(stats got, long long exists, long long count, long long bytes,
                        long long last)
{
    CHECK_EQ_INT(got.exists, exists);
    CHECK_EQ_INT(got.count, count);
    CHECK_EQ_INT(got.bytes, bytes);
    CHECK_EQ_INT(got.last, last);
}

static void test_describe(void)
{
    fresh_hub();
    entry("x", 5, 1000, "ev", "aa");
    entry("x", 6, 2000, "", "b");
    entry("x", 7, 3000, "", "");
    meta("x", EPOCH, 7, 3 * 1 + 2 + 2 + 1);
    check_stats(describe("x", -1), 1, 3, 8, 7);
    /* Expired at the oldest end: left out with their bytes, as a read leaves them out. */
    check_stats(describe("x", 1000), 1, 2, 3, 7);
    check_stats(describe("x", 2999), 1, 1, 1, 7);
    check_stats(describe("x", 3000), 1, 0, 0, 7);
    /* No meta, or one of another epoch: nothing of this epoch. */
    check_stats(describe("none", -1), 0, 0, 0, 0);
    meta("old", "epoch000", 3, 9);
    entry("old", 3, 1000, "", "abcdef");
    check_stats(describe("old", -1), 0, 0, 0, 0);
    /* The stream expired before its meta. */
    meta("bare", EPOCH, 4, 10);
    check_stats(describe("bare", -1), 1, 0, 0, 4);
    /* No hub hash: no epoch, nothing exists, and none is created. */
    admin_do("DEL " PREFIX ":hub");
    result r = topics(-1, "-", 1, "+", 1, 0, 0, (const char *[]){"x"}, 1);
    CHECK_EQ_STR(r.epoch, "");
    check_stats(r.described[0], 0, 0, 0, 0);
    CHECK_EQ_INT(admin_integer("EXISTS %s", PREFIX ":hub"), 0);
}

static void test_page(void)
{
    fresh_hub();
    topic("a", 1);
    topic("b", 2);
    topic("b.x", 3);
    admin_do("ZADD " PREFIX ":topics 0 c"); /* stale: its keys expired */
    meta("d", "epoch000", 4, 1);            /* of another epoch */
    meta("e", EPOCH, 5, 2);                 /* every entry expired (below) */
    entry("e", 5, 10, "", "d");
    topic("f", 6);
    result r = topics(500, "-", 1, "+", 1, 2, 100, NULL, 0);
    CHECK_EQ_STR(r.epoch, EPOCH);
    CHECK_EQ_STR(r.page, "a:1:2:1 b:1:2:2");
    CHECK_EQ_STR(r.resume, "");
    CHECK(indexed("c")); /* not reached */
    r = topics(500, "(b", 2, "+", 1, 10, 100, NULL, 0);
    CHECK_EQ_STR(r.page, "b.x:1:4:3 f:1:2:6");
    CHECK_EQ_STR(r.resume, "");
    /* Stale names are dropped as met; one whose entries all expired is only not listed. */
    CHECK(!indexed("c"));
    CHECK(!indexed("d"));
    CHECK(indexed("e"));
    /* A prefix: from "[b" to "[b\xff". */
    r = topics(-1, "[b", 2, "[b\xff", 3, 10, 100, NULL, 0);
    CHECK_EQ_STR(r.page, "b:1:2:2 b.x:1:4:3");
    /* An empty range (after past the prefix's names). */
    r = topics(-1, "(c", 2, "[b\xff", 3, 10, 100, NULL, 0);
    CHECK_EQ_STR(r.page, "");
    CHECK_EQ_STR(r.resume, "");
}

static void test_budget(void)
{
    fresh_hub();
    for (int i = 0; i < 5; i++) {
        char name[8];
        snprintf(name, sizeof(name), "0s%d", i);
        admin_do("ZADD " PREFIX ":topics 0 %s", name); /* stale, before every live one */
    }
    topic("a", 1);
    topic("b", 2);
    /* Three names per call: the first finds none and says where to go on. */
    result r = page("-", "+", 2, 3);
    CHECK_EQ_STR(r.page, "");
    CHECK_EQ_STR(r.resume, "0s2");
    r = page("(0s2", "+", 2, 3);
    CHECK_EQ_STR(r.page, "a:1:2:1");
    CHECK_EQ_STR(r.resume, "a");
    r = page("(a", "+", 1, 3);
    CHECK_EQ_STR(r.page, "b:1:2:2");
    CHECK_EQ_STR(r.resume, "");
    CHECK_EQ_INT(admin_integer("ZCARD %s", PREFIX ":topics"), 2);
    /* Full before the budget ran out: no resume (the caller has what it asked for). */
    r = page("-", "+", 1, 3);
    CHECK_EQ_STR(r.page, "a:1:2:1");
    CHECK_EQ_STR(r.resume, "");
}

static void test_refused(void)
{
    const char *argv[] = {PREFIX ":hub", PREFIX, "cand0001", "-1"};
    size_t lens[] = {strlen(argv[0]), strlen(argv[1]), 8, 2};
    result r = {0};
    CHECK_EQ_INT(hd_redis_link_evalsha(topics_link, script, 1, 4, argv, lens, on_result, &r),
                 HD_REDIS_OK);
    CHECK(WAIT_UNTIL(r.calls == 1, 3000));
    CHECK(r.error);
}

int main(void)
{
    harness_init();
    CHECK(redis_start());
    if (redis_pid > 0) {
        hd_redis_link_settings s = settings_for(redis_port, 3000);
        memset(&rec, 0, sizeof(rec));
        topics_link = hd_redis_link_new(&loop, &s);
        script = hd_redis_link_script(topics_link, hd_redis_topics_lua, hd_redis_topics_lua_len);
        hd_redis_link_start(topics_link);
        CHECK(WAIT_UNTIL(rec.state == HD_REDIS_LINK_UP, 5000));

        RUN_TEST(test_describe);
        RUN_TEST(test_page);
        RUN_TEST(test_budget);
        RUN_TEST(test_refused);
        link_close(topics_link);
    }
    harness_done();
    return test_summary();
}
