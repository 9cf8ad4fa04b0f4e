/*
 * Tests for src/engine/redis_hello.lua, run through hd_redis_link against a
 * real redis-server (see redis_harness.h): the epoch started when the hub
 * hash is missing ("lost"), when {prefix}:rid is not the run_id of the
 * Redis process ("restart", also when rid is missing: a hub written by an
 * older herald, or rid evicted), when Redis is behind what a node saw
 * ("rollback"); no rotation when the operator trusts persistence; one
 * rotation for several nodes saying hello after one restart; the rid the
 * read and publish scripts record when they start an epoch; and
 * hd_redis_info_field.
 */
#include "engine/redis_scripts.h"
#include "redis_harness.h"

#define PREFIX "{t}"

static hd_redis_link *node;
static const hd_redis_script *hello_script, *read_script, *publish_script;

typedef struct hello_call {
    const char *candidate;
    const char *rotates; /* "1" unless set */
    const char *known_epoch;
    long long known_seq;
    const char *left; /* the epochs the node left, comma-separated ("" unless set) */
} hello_call;

typedef struct hello_result {
    int calls;
    bool error;
    char text[256];
    char epoch[32], cut[32], rotation[16];
} hello_result;

static void on_hello(void *ctx, hd_redis_status status, const redisReply *reply)
{
    hello_result *r = ctx;
    r->calls++;
    if (status != HD_REDIS_OK || reply == NULL)
        return;
    r->error = reply->type == REDIS_REPLY_ERROR;
    if (r->error) {
        snprintf(r->text, sizeof(r->text), "%s", reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    snprintf(r->epoch, sizeof(r->epoch), "%s", reply->element[0]->str);
    snprintf(r->cut, sizeof(r->cut), "%s", reply->element[1]->str);
    snprintf(r->rotation, sizeof(r->rotation), "%s", reply->element[2]->str);
}

/* Sends a hello; the caller waits for r->calls. */
static void hello_send(const hello_call *c, hello_result *r)
{
    char seq[24];
    const char *known = c->known_epoch ? c->known_epoch : "";
    const char *rotates = c->rotates ? c->rotates : "1";
    const char *left = c->left ? c->left : "";
    const char *argv[] = {PREFIX ":hub", PREFIX, c->candidate, rotates, known, seq, left};
    size_t lens[7] = {
        strlen(argv[0]), strlen(PREFIX), strlen(c->candidate),
        strlen(rotates), strlen(known),  (size_t)snprintf(seq, sizeof(seq), "%lld", c->known_seq),
        strlen(left)};
    CHECK_EQ_INT(hd_redis_link_evalsha(node, hello_script, 1, 7, argv, lens, on_hello, r),
                 HD_REDIS_OK);
}

static hello_result hello(const hello_call *c)
{
    hello_result r = {0};
    hello_send(c, &r);
    CHECK(WAIT_UNTIL(r.calls == 1, 3000));
    return r;
}

static const char *string_at(const char *key)
{
    static char out[64];
    redisReply *r = admin_command("GET %s", key);
    snprintf(out, sizeof(out), "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "(nil)");
    freeReplyObject(r);
    return out;
}

static const char *hub_field(const char *field)
{
    static char out[64];
    redisReply *r = admin_command("HGET " PREFIX ":hub %s", field);
    snprintf(out, sizeof(out), "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "(nil)");
    freeReplyObject(r);
    return out;
}

static const char *server_run_id(void)
{
    static char out[64];
    redisReply *r = admin_command("INFO server");
    const char *value;
    size_t len = 0;
    out[0] = '\0';
    if (r && r->type == REDIS_REPLY_STRING &&
        hd_redis_info_field(r->str, r->len, "run_id", &value, &len))
        snprintf(out, sizeof(out), "%.*s", (int)len, value);
    freeReplyObject(r);
    CHECK_EQ_INT(strlen(out), 40);
    return out;
}

/* ------------------------------------------------------------ tests */

static void test_info_field(void)
{
    static const char info[] = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\n"
                               "# Memory\r\nmaxmemory_policy:allkeys-lru\r\nmaxmemory:0";
    const char *v;
    size_t n;
    CHECK(hd_redis_info_field(info, sizeof(info) - 1, "run_id", &v, &n));
    CHECK_EQ_MEM(v, n, "abc123", 6);
    CHECK(hd_redis_info_field(info, sizeof(info) - 1, "maxmemory_policy", &v, &n));
    CHECK_EQ_MEM(v, n, "allkeys-lru", 11);
    CHECK(hd_redis_info_field(info, sizeof(info) - 1, "maxmemory", &v, &n)); /* last, no CRLF */
    CHECK_EQ_MEM(v, n, "0", 1);
    CHECK(!hd_redis_info_field(info, sizeof(info) - 1, "run", &v, &n)); /* a prefix is not it */
    CHECK(!hd_redis_info_field(info, sizeof(info) - 1, "Server", &v, &n));
    CHECK(!hd_redis_info_field(info, sizeof(info) - 1, "evicted_keys", &v, &n));
    CHECK(!hd_redis_info_field("", 0, "run_id", &v, &n));
}

/* No hub: "lost", the candidate is the epoch; the run_id is recorded; a second hello keeps it. */
static void test_lost(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    hello_result r = hello(&(hello_call){.candidate = "aaaaaaaa"});
    CHECK(!r.error);
    CHECK_EQ_STR(r.epoch, "aaaaaaaa");
    CHECK_EQ_STR(r.cut, "0");
    CHECK_EQ_STR(r.rotation, "lost");
    CHECK_EQ_STR(hub_field("e"), "aaaaaaaa");
    CHECK_EQ_STR(string_at(PREFIX ":rid"), server_run_id());

    freeReplyObject(admin_command("HSET " PREFIX ":hub s 41"));
    r = hello(&(hello_call){.candidate = "bbbbbbbb", .known_epoch = "aaaaaaaa", .known_seq = 41});
    CHECK_EQ_STR(r.epoch, "aaaaaaaa");
    CHECK_EQ_STR(r.cut, "41");
    CHECK_EQ_STR(r.rotation, "");
}

/* Another Redis process than the one that wrote rid (or no rid at all): "restart". */
static void test_restart(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    hello(&(hello_call){.candidate = "aaaaaaaa"});
    freeReplyObject(admin_command("HSET " PREFIX ":hub s 7"));
    freeReplyObject(admin_command("SET " PREFIX ":rid 0000000000000000000000000000000000000000"));
    hello_result r = hello(&(hello_call){.candidate = "bbbbbbbb", .known_epoch = "aaaaaaaa"});
    CHECK_EQ_STR(r.epoch, "bbbbbbbb");
    CHECK_EQ_STR(r.cut, "0");
    CHECK_EQ_STR(r.rotation, "restart");
    CHECK_EQ_STR(hub_field("e"), "bbbbbbbb");
    CHECK_EQ_STR(hub_field("s"), "0");
    CHECK_EQ_STR(string_at(PREFIX ":rid"), server_run_id());

    /* A hub without rid (an older herald wrote it, or rid was evicted): a restart too. */
    freeReplyObject(admin_command("DEL " PREFIX ":rid"));
    r = hello(&(hello_call){.candidate = "cccccccc"});
    CHECK_EQ_STR(r.rotation, "restart");
    CHECK_EQ_STR(r.epoch, "cccccccc");
    CHECK_EQ_STR(string_at(PREFIX ":rid"), server_run_id());

    /* Trusted persistence (restart rotates "0"): the epoch stays, rid follows the server. */
    freeReplyObject(admin_command("SET " PREFIX ":rid 0000000000000000000000000000000000000000"));
    r = hello(&(hello_call){.candidate = "dddddddd", .rotates = "0"});
    CHECK_EQ_STR(r.rotation, "");
    CHECK_EQ_STR(r.epoch, "cccccccc");
    CHECK_EQ_STR(string_at(PREFIX ":rid"), server_run_id());
}

/* Several nodes saying hello after one restart, at once: one rotation, one epoch for all. */
static void test_one_rotation_for_all(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    hello(&(hello_call){.candidate = "aaaaaaaa"});
    freeReplyObject(admin_command("SET " PREFIX ":rid 0000000000000000000000000000000000000000"));
    hello_result r[3] = {{0}};
    static const char *candidates[] = {"11111111", "22222222", "33333333"};
    for (int i = 0; i < 3; i++)
        hello_send(&(hello_call){.candidate = candidates[i], .known_epoch = "aaaaaaaa"}, &r[i]);
    CHECK(WAIT_UNTIL(r[0].calls + r[1].calls + r[2].calls == 3, 3000));
    CHECK_EQ_STR(r[0].rotation, "restart");
    CHECK_EQ_STR(r[0].epoch, "11111111");
    for (int i = 1; i < 3; i++) {
        CHECK_EQ_STR(r[i].rotation, "");
        CHECK_EQ_STR(r[i].epoch, "11111111");
    }
}

/* Redis behind what a node saw in this epoch (a restore, a failover): "rollback". */
static void test_rollback(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    hello(&(hello_call){.candidate = "aaaaaaaa"});
    freeReplyObject(admin_command("HSET " PREFIX ":hub s 5"));
    hello_result r =
        hello(&(hello_call){.candidate = "bbbbbbbb", .known_epoch = "aaaaaaaa", .known_seq = 5});
    CHECK_EQ_STR(r.rotation, ""); /* seen 5, holds 5 */
    r = hello(&(hello_call){.candidate = "bbbbbbbb", .known_epoch = "aaaaaaaa", .known_seq = 6});
    CHECK_EQ_STR(r.rotation, "rollback");
    CHECK_EQ_STR(r.epoch, "bbbbbbbb");
    /* What a node saw in another epoch says nothing about this one. */
    r = hello(&(hello_call){.candidate = "cccccccc", .known_epoch = "aaaaaaaa", .known_seq = 99});
    CHECK_EQ_STR(r.rotation, "");
    CHECK_EQ_STR(r.epoch, "bbbbbbbb");
    /*
     * Redis back at an epoch the node left (epochs are random: a restore of
     * older data): its ids may have been issued already, "rollback".
     */
    r = hello(
        &(hello_call){.candidate = "dddddddd", .known_epoch = "cccccccc", .left = "eeeeeeee"});
    CHECK_EQ_STR(r.rotation, "");
    r = hello(&(hello_call){
        .candidate = "dddddddd", .known_epoch = "cccccccc", .left = "eeeeeeee,bbbbbbbb"});
    CHECK_EQ_STR(r.rotation, "rollback");
    CHECK_EQ_STR(r.epoch, "dddddddd");
    CHECK_EQ_STR(hub_field("s"), "0");
    freeReplyObject(admin_command("HSET " PREFIX ":hub e bbbbbbbb"));
    /* A candidate equal to the current epoch cannot rotate: refused, nothing written. */
    r = hello(&(hello_call){.candidate = "bbbbbbbb", .known_epoch = "bbbbbbbb", .known_seq = 1});
    CHECK(r.error && strstr(r.text, "candidate is the current epoch") != NULL);
    CHECK_EQ_STR(hub_field("e"), "bbbbbbbb");
    /* Bad arguments. */
    r = hello(&(hello_call){.candidate = ""});
    CHECK(r.error && strstr(r.text, "herald hello") != NULL);
}

/* A read's or a publish's answer: the rotation is its element at index. */
typedef struct rotation_of {
    size_t index;
    char rotation[16];
} rotation_of;

static void on_any(void *ctx, hd_redis_status status, const redisReply *reply)
{
    rotation_of *r = ctx;
    if (status == HD_REDIS_OK && reply->type == REDIS_REPLY_ARRAY && reply->elements > r->index &&
        reply->element[r->index]->type == REDIS_REPLY_STRING)
        snprintf(r->rotation, sizeof(r->rotation), "%s", reply->element[r->index]->str);
    else
        snprintf(r->rotation, sizeof(r->rotation), "?");
}

/*
 * The read and publish scripts that start an epoch (FLUSHALL while
 * connected) record the run_id too: the next hello must not take the hub
 * they wrote for one of an older herald.
 */
static void test_scripts_record_rid(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    const char *read_argv[] = {PREFIX ":hub", PREFIX, "aaaaaaaa", "", "0", "10", "-1", "0"};
    size_t read_lens[8];
    for (int i = 0; i < 8; i++)
        read_lens[i] = strlen(read_argv[i]);
    rotation_of read = {.index = 2};
    CHECK_EQ_INT(
        hd_redis_link_evalsha(node, read_script, 1, 8, read_argv, read_lens, on_any, &read),
        HD_REDIS_OK);
    CHECK(WAIT_UNTIL(read.rotation[0] != '\0', 3000));
    CHECK_EQ_STR(read.rotation, "lost");
    CHECK_EQ_STR(string_at(PREFIX ":rid"), server_run_id());
    CHECK_EQ_STR(hello(&(hello_call){.candidate = "bbbbbbbb"}).rotation, "");

    freeReplyObject(admin_command("FLUSHALL"));
    /* ..., one item (topic, event, data), the idempotency TTL and its key ("": none). */
    const char *pub_argv[] = {PREFIX ":hub", PREFIX, "cccccccc", "1", "10", "1000", "0", "0", "",
                              "0",           "0",    "1",        "x", "",   "d",    "0", ""};
    size_t pub_lens[17];
    for (int i = 0; i < 17; i++)
        pub_lens[i] = strlen(pub_argv[i]);
    rotation_of pub = {.index = 1};
    CHECK_EQ_INT(
        hd_redis_link_evalsha(node, publish_script, 1, 17, pub_argv, pub_lens, on_any, &pub),
        HD_REDIS_OK);
    CHECK(WAIT_UNTIL(pub.rotation[0] != '\0', 3000));
    CHECK_EQ_STR(pub.rotation, "lost");
    CHECK_EQ_STR(string_at(PREFIX ":rid"), server_run_id());
    hello_result r = hello(&(hello_call){.candidate = "dddddddd"});
    CHECK_EQ_STR(r.rotation, "");
    CHECK_EQ_STR(r.epoch, "cccccccc");
}

int main(void)
{
    harness_init();
    RUN_TEST(test_info_field);
    CHECK(redis_start());
    if (redis_pid > 0) {
        hd_redis_link_settings s = settings_for(redis_port, 3000);
        memset(&rec, 0, sizeof(rec));
        node = hd_redis_link_new(&loop, &s);
        hello_script = hd_redis_link_script(node, hd_redis_hello_lua, hd_redis_hello_lua_len);
        read_script = hd_redis_link_script(node, hd_redis_read_lua, hd_redis_read_lua_len);
        publish_script = hd_redis_link_script(node, hd_redis_publish_lua, hd_redis_publish_lua_len);
        hd_redis_link_start(node);
        CHECK(WAIT_UNTIL(rec.state == HD_REDIS_LINK_UP && subscribed_count(probe_channel) == 1,
                         5000));

        RUN_TEST(test_lost);
        RUN_TEST(test_restart);
        RUN_TEST(test_one_rotation_for_all);
        RUN_TEST(test_rollback);
        RUN_TEST(test_scripts_record_rid);

        link_close(node);
    }
    harness_done();
    return test_summary();
}
