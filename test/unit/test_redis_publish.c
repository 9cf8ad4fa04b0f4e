/*
 * Tests for src/engine/redis_publish.lua, run through hd_redis_link
 * against a real redis-server (see redis_harness.h): the epoch created
 * when the hub hash is missing, the exact stream entry, meta hash and
 * pub/sub payload, ids that strictly increase with a prev chain per topic,
 * batches (one call, consecutive ids, all or nothing), exact trimming by
 * count, bytes (with the per-message overhead) and age, rollbacks, seqs
 * past %.14g, binary data, refused arguments, and the topic index.
 */
#include "engine/redis_scripts.h"
#include "redis_harness.h"

#define PREFIX "{t}"

static hd_redis_link *publisher;
static const hd_redis_script *script;

/* ------------------------------------------------------------ calling the script */

typedef struct item {
    const char *topic, *event, *data;
    size_t data_len;
} item;

/* The scalar arguments; unset numbers are 0 and an unset candidate is "cand0001". */
typedef struct call {
    const char *candidate;
    long long now, max_messages, max_bytes, ttl_ms, idle_ttl_s;
    const char *known_epoch;
    long long known_seq, overhead;
    long long idem_ttl_ms;
} call;

typedef struct result {
    int calls;
    hd_redis_status status;
    bool error;
    char text[256]; /* the error */
    char epoch[32], rotation[16];
    long long seqs[16];
    size_t n;
} result;

static void on_result(void *ctx, hd_redis_status status, const redisReply *reply)
{
    result *r = ctx;
    r->calls++;
    r->status = status;
    if (reply == NULL)
        return;
    r->error = reply->type == REDIS_REPLY_ERROR;
    if (r->error) {
        snprintf(r->text, sizeof(r->text), "%s", reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    snprintf(r->epoch, sizeof(r->epoch), "%s", reply->element[0]->str);
    snprintf(r->rotation, sizeof(r->rotation), "%s", reply->element[1]->str);
    for (size_t i = 2; i < reply->elements && r->n < 16; i++)
        r->seqs[r->n++] = reply->element[i]->integer;
}

/* keys: each item's idempotency key (NULL: none), or NULL for none at all. */
static result publish_keyed(const call *c, const item *items, const char *const *keys, int n)
{
    enum { SCALARS = 10 };
    char numbers[9][24];
    const char *argv[SCALARS + 4 * 8 + 2];
    size_t lens[SCALARS + 4 * 8 + 2];
    int argc = 0;
#define ARG(text, len) (argv[argc] = (text), lens[argc++] = (len))
#define NUM(i, v) ARG(numbers[i], (size_t)snprintf(numbers[i], 24, "%lld", (long long)(v)))
    ARG(PREFIX ":hub", strlen(PREFIX ":hub"));
    ARG(PREFIX, strlen(PREFIX));
    const char *candidate = c->candidate ? c->candidate : "cand0001";
    ARG(candidate, strlen(candidate));
    NUM(0, c->now);
    NUM(1, c->max_messages);
    NUM(2, c->max_bytes);
    NUM(3, c->ttl_ms);
    NUM(4, c->idle_ttl_s);
    const char *known = c->known_epoch ? c->known_epoch : "";
    ARG(known, strlen(known));
    NUM(5, c->known_seq);
    NUM(6, c->overhead);
    NUM(7, n);
    for (int i = 0; i < n; i++) {
        ARG(items[i].topic, strlen(items[i].topic));
        ARG(items[i].event, strlen(items[i].event));
        ARG(items[i].data, items[i].data_len ? items[i].data_len : strlen(items[i].data));
    }
    NUM(8, c->idem_ttl_ms);
    for (int i = 0; i < n; i++)
        ARG(keys && keys[i] ? keys[i] : "", keys && keys[i] ? strlen(keys[i]) : 0);
#undef ARG
#undef NUM
    result r = {0};
    CHECK_EQ_INT(hd_redis_link_evalsha(publisher, script, 1, argc, argv, lens, on_result, &r),
                 HD_REDIS_OK);
    CHECK(WAIT_UNTIL(r.calls == 1, 3000));
    CHECK_EQ_INT(r.status, HD_REDIS_OK);
    return r;
}

static result publish(const call *c, const item *items, int n)
{
    return publish_keyed(c, items, NULL, n);
}

/* Limits that trim nothing. */
static call roomy(long long now)
{
    return (call){.now = now, .max_messages = 1000, .max_bytes = 1 << 20};
}

/* ------------------------------------------------------------ what Redis holds */

/* The stream's entry ids, "1-0 2-0 ...". */
static const char *stream_ids(const char *topic)
{
    static char out[512];
    out[0] = '\0';
    redisReply *r = admin_command("XRANGE " PREFIX ":s:%s - +", topic);
    for (size_t i = 0; r && i < r->elements; i++)
        snprintf(out + strlen(out), sizeof(out) - strlen(out), "%s%s", i ? " " : "",
                 r->element[i]->element[0]->str);
    freeReplyObject(r);
    return out;
}

static long long hash_integer(const char *key, const char *field)
{
    redisReply *r = admin_command("HGET %s %s", key, field);
    long long v = r && r->type == REDIS_REPLY_STRING ? atoll(r->str) : -1;
    freeReplyObject(r);
    return v;
}

static const char *hash_string(const char *key, const char *field)
{
    static char out[64];
    redisReply *r = admin_command("HGET %s %s", key, field);
    snprintf(out, sizeof(out), "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "(nil)");
    freeReplyObject(r);
    return out;
}

/*
 * Messages on the topics' channels, as the link passes them on. Each test
 * uses topics of its own, so a late message of an earlier test never
 * counts.
 */
typedef struct message {
    char channel[64], payload[256];
    size_t channel_len, payload_len;
} message;

static struct {
    int count;
    message all[256];
} got;

static void on_publish_message(void *ctx, const char *channel, size_t channel_len,
                               const char *payload, size_t payload_len)
{
    (void)ctx;
    if (got.count == 256)
        return;
    message *m = &got.all[got.count++];
    m->channel_len = channel_len < sizeof(m->channel) ? channel_len : sizeof(m->channel);
    memcpy(m->channel, channel, m->channel_len);
    m->payload_len = payload_len < sizeof(m->payload) ? payload_len : sizeof(m->payload);
    memcpy(m->payload, payload, m->payload_len);
}

/* How many messages came on topic's channel, and the last of them in *last. */
static int messages_on(const char *topic, const message **last)
{
    char channel[64];
    size_t len = (size_t)snprintf(channel, sizeof(channel), PREFIX ":c:%s", topic);
    int n = 0;
    for (int i = 0; i < got.count; i++)
        if (got.all[i].channel_len == len && memcmp(got.all[i].channel, channel, len) == 0) {
            n++;
            if (last)
                *last = &got.all[i];
        }
    return n;
}

static void subscribe_topic(const char *topic)
{
    char channel[64];
    int before = rec.subscribed;
    hd_redis_link_subscribe(publisher, channel,
                            (size_t)snprintf(channel, sizeof(channel), PREFIX ":c:%s", topic));
    CHECK(WAIT_UNTIL(rec.subscribed == before + 1, 2000));
}

/* ------------------------------------------------------------ tests */

static void test_first_publish(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    subscribe_topic("news");
    item one = {"news", "update", "hello", 0};
    result r = publish(&(call){.candidate = "aaaaaaaa",
                               .now = 1700000000123LL,
                               .max_messages = 10,
                               .max_bytes = 1000,
                               .idle_ttl_s = 3600},
                       &one, 1);
    CHECK(!r.error);
    CHECK_EQ_STR(r.epoch, "aaaaaaaa");
    CHECK_EQ_STR(r.rotation, "lost");
    CHECK_EQ_INT(r.n, 1);
    CHECK_EQ_INT(r.seqs[0], 1);

    CHECK_EQ_STR(hash_string(PREFIX ":hub", "e"), "aaaaaaaa");
    CHECK_EQ_INT(hash_integer(PREFIX ":hub", "s"), 1);
    CHECK_EQ_STR(hash_string(PREFIX ":m:news", "e"), "aaaaaaaa");
    CHECK_EQ_INT(hash_integer(PREFIX ":m:news", "l"), 1);
    CHECK_EQ_INT(hash_integer(PREFIX ":m:news", "b"), 4 + 6 + 5);
    CHECK_EQ_INT(admin_integer("TTL %s", PREFIX ":m:news") > 3500, 1);
    CHECK_EQ_INT(admin_integer("TTL %s", PREFIX ":s:news") > 3500, 1);
    CHECK_EQ_INT(admin_integer("TTL %s", PREFIX ":hub"), -1); /* the sequence never expires */

    redisReply *x = admin_command("XRANGE " PREFIX ":s:news - +");
    CHECK(x && x->elements == 1);
    if (x && x->elements == 1) {
        const redisReply *e = x->element[0];
        CHECK_EQ_STR(e->element[0]->str, "1-0");
        const redisReply *f = e->element[1];
        CHECK_EQ_INT(f->elements, 8);
        static const char *want[] = {"d", "hello", "t", "1700000000123", "p", "0", "v", "update"};
        for (size_t i = 0; i < 8 && i < f->elements; i++)
            CHECK_EQ_STR(f->element[i]->str, want[i]);
    }
    freeReplyObject(x);

    const message *m = NULL;
    CHECK(WAIT_UNTIL(messages_on("news", &m) == 1, 2000));
    static const char payload[] = "aaaaaaaa:1:0:1700000000123:6:updatehello";
    CHECK(m && m->payload_len == sizeof(payload) - 1 &&
          memcmp(m->payload, payload, m->payload_len) == 0);

    /* The epoch stays; no rotation while the hub hash is there. */
    r = publish(&(call){.candidate = "bbbbbbbb", .now = 5, .max_messages = 10, .max_bytes = 1000},
                &one, 1);
    CHECK_EQ_STR(r.epoch, "aaaaaaaa");
    CHECK_EQ_STR(r.rotation, "");
    CHECK_EQ_INT(r.seqs[0], 2);
}

/* Ids strictly increase across topics, batches take consecutive ones, prev chains per topic. */
static void test_ids_and_batches(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    subscribe_topic("a");
    subscribe_topic("b");
    item a = {"a", "", "1", 0}, b = {"b", "", "2", 0};
    call c = roomy(10);
    CHECK_EQ_INT(publish(&c, &a, 1).seqs[0], 1);
    CHECK_EQ_INT(publish(&c, &b, 1).seqs[0], 2);
    CHECK_EQ_INT(publish(&c, &a, 1).seqs[0], 3);

    item batch[] = {{"b", "x", "first", 0}, {"a", "", "second", 0}, {"b", "", "third", 0}};
    result r = publish(&c, batch, 3);
    CHECK_EQ_INT(r.n, 3);
    CHECK_EQ_INT(r.seqs[0], 4);
    CHECK_EQ_INT(r.seqs[1], 5);
    CHECK_EQ_INT(r.seqs[2], 6);
    CHECK_EQ_STR(stream_ids("a"), "1-0 3-0 5-0");
    CHECK_EQ_STR(stream_ids("b"), "2-0 4-0 6-0");
    CHECK_EQ_INT(hash_integer(PREFIX ":m:a", "l"), 5);
    CHECK_EQ_INT(hash_integer(PREFIX ":m:b", "l"), 6);

    /* The prev chain: each entry names the topic's entry before it. */
    redisReply *x = admin_command("XRANGE " PREFIX ":s:b - +");
    CHECK(x && x->elements == 3);
    for (size_t i = 0; x && i < x->elements && i < 3; i++) {
        static const char *prev[] = {"0", "2", "4", 0};
        CHECK_EQ_STR(x->element[i]->element[1]->element[5]->str, prev[i]);
    }
    freeReplyObject(x);

    /* The batch went out as three messages, in order; the last on b, prev 4. */
    const message *m = NULL;
    CHECK(WAIT_UNTIL(messages_on("a", NULL) == 3 && messages_on("b", &m) == 3, 2000));
    CHECK(m && m->payload_len == 23 && memcmp(m->payload, "cand0001:6:4:10:0:third", 23) == 0);
}

/* A batch with a bad item writes nothing: no id taken, no entry, no message. */
static void test_batch_all_or_nothing(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    subscribe_topic("ok");
    item ok = {"ok", "", "kept", 0};
    call c = roomy(10);
    publish(&c, &ok, 1);
    CHECK(WAIT_UNTIL(messages_on("ok", NULL) == 1, 2000));
    freeReplyObject(admin_command("SET " PREFIX ":s:bad not-a-stream"));

    item batch[] = {{"ok", "", "lost-1", 0}, {"bad", "", "x", 0}, {"ok", "", "lost-2", 0}};
    result r = publish(&c, batch, 3);
    CHECK(r.error);
    CHECK(strstr(r.text, "herald publish: " PREFIX ":s:bad holds a string, not a stream") != NULL);
    CHECK_EQ_INT(hash_integer(PREFIX ":hub", "s"), 1);
    CHECK_EQ_STR(stream_ids("ok"), "1-0");
    CHECK_EQ_INT(hash_integer(PREFIX ":m:ok", "l"), 1);

    /* Pub/sub keeps order: had the refused batch published, it would come before this. */
    item next = {"ok", "", "next", 0};
    CHECK_EQ_INT(publish(&c, &next, 1).seqs[0], 2);
    const message *m = NULL;
    CHECK(WAIT_UNTIL(messages_on("ok", &m) == 2, 2000));
    CHECK(m && m->payload_len == 22 && memcmp(m->payload, "cand0001:2:1:10:0:next", 22) == 0);

    /* A counter that is not a number would fail HINCRBY half way: refused before. */
    freeReplyObject(admin_command("HSET " PREFIX ":hub s x"));
    CHECK(strstr(publish(&c, &next, 1).text, PREFIX ":hub s is not a number") != NULL);
    CHECK_EQ_INT(messages_on("ok", NULL), 2);
    CHECK_EQ_STR(stream_ids("ok"), "1-0 2-0");
    freeReplyObject(admin_command("HSET " PREFIX ":hub s 2"));

    /* An empty topic and a wrong argument count are refused the same way. */
    item empty = {"", "", "x", 0};
    CHECK(strstr(publish(&c, &empty, 1).text, "empty topic") != NULL);
    const char *argv[] = {PREFIX ":hub", PREFIX, "cand", "1", "1", "1", "0", "0", "",
                          "0",           "0",    "2",    "t", "",  "d"};
    size_t lens[15];
    for (int i = 0; i < 15; i++)
        lens[i] = strlen(argv[i]);
    result bad = {0};
    hd_redis_link_evalsha(publisher, script, 1, 15, argv, lens, on_result, &bad);
    CHECK(WAIT_UNTIL(bad.calls == 1, 2000));
    CHECK(bad.error && strstr(bad.text, "expected 20 arguments") != NULL);
    CHECK_EQ_INT(hash_integer(PREFIX ":hub", "s"), 2);
}

static void test_trim_by_count(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    call c = {.now = 10, .max_messages = 3, .max_bytes = 1 << 20};
    item m = {"count", "", "12345", 0};
    for (int i = 0; i < 5; i++)
        publish(&c, &m, 1);
    CHECK_EQ_STR(stream_ids("count"), "3-0 4-0 5-0");
    CHECK_EQ_INT(hash_integer(PREFIX ":m:count", "b"), 3 * (5 + 5));

    /* 0 behaves like 1, as in the memory engine. */
    c.max_messages = 0;
    publish(&c, &m, 1);
    CHECK_EQ_STR(stream_ids("count"), "6-0");
    CHECK_EQ_INT(hash_integer(PREFIX ":m:count", "b"), 10);
}

static void test_trim_by_bytes(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    /* Each costs #"bytes" + #event + #data = 5 + 1 + 4 = 10: 35 bytes hold three. */
    call c = {.now = 10, .max_messages = 100, .max_bytes = 35};
    item m = {"bytes", "e", "1234", 0};
    for (int i = 0; i < 5; i++)
        publish(&c, &m, 1);
    CHECK_EQ_STR(stream_ids("bytes"), "3-0 4-0 5-0");
    CHECK_EQ_INT(hash_integer(PREFIX ":m:bytes", "b"), 30);

    /* Exactly at the limit is kept: 40 holds four. */
    c.max_bytes = 40;
    publish(&c, &m, 1);
    CHECK_EQ_STR(stream_ids("bytes"), "3-0 4-0 5-0 6-0");

    /* A message larger than the limit is kept alone. */
    char big[64];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    item large = {"bytes", "", big, 0};
    publish(&c, &large, 1);
    CHECK_EQ_STR(stream_ids("bytes"), "7-0");
    CHECK_EQ_INT(hash_integer(PREFIX ":m:bytes", "b"), 5 + 63);
    publish(&c, &m, 1);
    CHECK_EQ_STR(stream_ids("bytes"), "8-0");
    CHECK_EQ_INT(hash_integer(PREFIX ":m:bytes", "b"), 10);

    /* The per-message overhead counts too (b holds only the bytes): 10 + 10 each, 60 hold three. */
    c.max_bytes = 60;
    c.overhead = 10;
    for (int i = 0; i < 4; i++)
        publish(&c, &m, 1);
    CHECK_EQ_STR(stream_ids("bytes"), "10-0 11-0 12-0");
    CHECK_EQ_INT(hash_integer(PREFIX ":m:bytes", "b"), 30);

    /* A stream gone while its meta hash stays (it expired first) holds nothing: b starts over. */
    freeReplyObject(admin_command("DEL " PREFIX ":s:bytes"));
    publish(&c, &m, 1);
    CHECK_EQ_STR(stream_ids("bytes"), "13-0");
    CHECK_EQ_INT(hash_integer(PREFIX ":m:bytes", "b"), 10);
}

static void test_trim_by_age(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    item m = {"age", "", "d", 0};
    call c = {.max_messages = 100, .max_bytes = 1 << 20, .ttl_ms = 1500};
    c.now = 1000;
    publish(&c, &m, 1);
    c.now = 2000;
    publish(&c, &m, 1);
    c.now = 2500; /* expired: t <= 1000 */
    publish(&c, &m, 1);
    CHECK_EQ_STR(stream_ids("age"), "2-0 3-0");
    CHECK_EQ_INT(hash_integer(PREFIX ":m:age", "b"), 2 * 4);
    c.now = 10000;
    publish(&c, &m, 1);
    CHECK_EQ_STR(stream_ids("age"), "4-0");
}

/* A topic new in the epoch joins the index GET /topics pages through (redis_topics.lua). */
static void test_topic_index(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    item items[] = {{"zz", "", "d", 0}, {"aa", "", "d", 0}, {"aa", "", "d", 0}};
    call c = roomy(10);
    publish(&c, items, 3);
    redisReply *r = admin_command("ZRANGE " PREFIX ":topics 0 -1 WITHSCORES");
    CHECK(r != NULL && r->elements == 4);
    if (r != NULL && r->elements == 4) {
        CHECK_EQ_STR(r->element[0]->str, "aa");
        CHECK_EQ_STR(r->element[1]->str, "0");
        CHECK_EQ_STR(r->element[2]->str, "zz");
    }
    freeReplyObject(r);
    /* Only a new meta adds it: a name the topics script dropped comes back with a new epoch. */
    freeReplyObject(admin_command("ZREM " PREFIX ":topics aa"));
    publish(&c, items + 1, 1);
    CHECK_EQ_INT(admin_integer("ZCARD %s", PREFIX ":topics"), 1);
    freeReplyObject(admin_command("DEL " PREFIX ":hub"));
    c.candidate = "epoch009";
    publish(&c, items + 1, 1);
    CHECK_EQ_INT(admin_integer("ZCARD %s", PREFIX ":topics"), 2);
    /* The index of another type is refused before anything is written. */
    freeReplyObject(admin_command("DEL " PREFIX ":topics"));
    freeReplyObject(admin_command("SET " PREFIX ":topics x"));
    item fresh = {"new", "", "d", 0};
    result refused = publish(&c, &fresh, 1);
    CHECK(refused.error);
    CHECK_EQ_INT(admin_integer("EXISTS %s", PREFIX ":m:new"), 0);
    freeReplyObject(admin_command("DEL " PREFIX ":topics"));
}

/* Redis is behind what was seen: a new epoch, the old history goes, ids start again. */
static void test_rollback(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    item m = {"r", "", "d", 0};
    call c = roomy(10);
    c.candidate = "epoch001";
    for (int i = 0; i < 3; i++)
        publish(&c, &m, 1);

    /* A node saw seq 7 in this epoch; Redis says 3. */
    c.candidate = "epoch002";
    c.known_epoch = "epoch001";
    c.known_seq = 7;
    result r = publish(&c, &m, 1);
    CHECK_EQ_STR(r.epoch, "epoch002");
    CHECK_EQ_STR(r.rotation, "rollback");
    CHECK_EQ_INT(r.seqs[0], 1);
    CHECK_EQ_STR(stream_ids("r"), "1-0");
    CHECK_EQ_STR(hash_string(PREFIX ":m:r", "e"), "epoch002");

    /* A topic has seen more than the hub counter (an older snapshot restored). */
    publish(&c, &m, 1);
    publish(&c, &m, 1);
    freeReplyObject(admin_command("HSET " PREFIX ":hub s 1"));
    c.candidate = "epoch003";
    c.known_epoch = "";
    r = publish(&c, &m, 1);
    CHECK_EQ_STR(r.rotation, "rollback");
    CHECK_EQ_STR(r.epoch, "epoch003");
    CHECK_EQ_INT(r.seqs[0], 1);
    CHECK_EQ_STR(stream_ids("r"), "1-0");

    /* A candidate equal to the current epoch cannot rotate: refused, nothing written. */
    c.candidate = "epoch003";
    c.known_epoch = "epoch003";
    c.known_seq = 99;
    r = publish(&c, &m, 1);
    CHECK(r.error && strstr(r.text, "candidate is the current epoch") != NULL);
    CHECK_EQ_INT(hash_integer(PREFIX ":hub", "s"), 1);
}

/* Seqs past 2^47 keep every digit (Lua's .. would print 1.2345678901235e+14). */
static void test_large_seq_and_binary(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    subscribe_topic("big");
    call c = roomy(1700000000000LL);
    item m = {"big", "", "x", 0};
    publish(&c, &m, 1);
    freeReplyObject(admin_command("HSET " PREFIX ":hub s 123456789012345"));
    static const char data[] = "\0bin\xff\r\n";
    item bin = {"big", "ev", data, sizeof(data) - 1};
    result r = publish(&c, &bin, 1);
    CHECK_EQ_INT(r.seqs[0], 123456789012346LL);
    CHECK_EQ_STR(stream_ids("big"), "1-0 123456789012346-0");
    CHECK_EQ_INT(hash_integer(PREFIX ":m:big", "l"), 123456789012346LL);
    const message *last = NULL;
    CHECK(WAIT_UNTIL(messages_on("big", &last) == 2, 2000));
    static const char payload[] = "cand0001:123456789012346:1:1700000000000:2:ev\0bin\xff\r\n";
    CHECK(last && last->payload_len == sizeof(payload) - 1 &&
          memcmp(last->payload, payload, sizeof(payload) - 1) == 0);

    redisReply *x = admin_command("XRANGE " PREFIX ":s:big 123456789012346-0 +");
    CHECK(x && x->elements == 1);
    if (x && x->elements == 1) {
        const redisReply *d = x->element[0]->element[1]->element[1];
        CHECK_EQ_MEM(d->str, d->len, data, sizeof(data) - 1);
    }
    freeReplyObject(x);
}

/* Idempotency keys: a repeat answers -(first seq) and writes and publishes nothing. */
static void test_idempotency(void)
{
    freeReplyObject(admin_command("FLUSHALL"));
    call c = roomy(10);
    c.idem_ttl_ms = 60000;
    subscribe_topic("idem");
    subscribe_topic("idem2");
    item one = {"idem", "", "one", 0};
    const char *k1[] = {"k1"};
    CHECK_EQ_INT(publish_keyed(&c, &one, k1, 1).seqs[0], 1);
    redisReply *held = admin_command("GET " PREFIX ":i:idem|k1");
    CHECK(held->type == REDIS_REPLY_STRING && strcmp(held->str, "cand0001:1") == 0);
    freeReplyObject(held);
    redisReply *pttl = admin_command("PTTL " PREFIX ":i:idem|k1");
    CHECK(pttl->type == REDIS_REPLY_INTEGER && pttl->integer > 0 && pttl->integer <= 60000);
    freeReplyObject(pttl);

    /* The same key again, alone and twice in a batch beside new ones. */
    item retry = {"idem", "", "retry", 0};
    CHECK_EQ_INT(publish_keyed(&c, &retry, k1, 1).seqs[0], -1);
    item batch[] = {{"idem", "", "a", 0},
                    {"idem", "", "b", 0},
                    {"idem", "", "c", 0},
                    {"idem2", "", "d", 0},
                    {"idem", "", "e", 0}};
    const char *keys[] = {"k1", "k2", "k2", "k1", NULL};
    result r = publish_keyed(&c, batch, keys, 5);
    CHECK_EQ_INT(r.n, 5);
    CHECK_EQ_INT(r.seqs[0], -1);
    CHECK_EQ_INT(r.seqs[1], 2);
    CHECK_EQ_INT(r.seqs[2], -2);
    CHECK_EQ_INT(r.seqs[3], 3); /* another topic: its own keys */
    CHECK_EQ_INT(r.seqs[4], 4);
    CHECK_EQ_STR(stream_ids("idem"), "1-0 2-0 4-0");
    CHECK_EQ_INT(hash_integer(PREFIX ":hub", "s"), 4);
    CHECK(WAIT_UNTIL(messages_on("idem", NULL) == 3 && messages_on("idem2", NULL) == 1, 2000));

    /* A key of another epoch names a message that is gone: published anew. */
    freeReplyObject(admin_command("SET " PREFIX ":i:idem|k3 0badbeef:1"));
    const char *k3[] = {"k3"};
    CHECK_EQ_INT(publish_keyed(&c, &one, k3, 1).seqs[0], 5);

    /* A TTL of 0 remembers nothing. */
    c.idem_ttl_ms = 0;
    const char *k9[] = {"k9"};
    CHECK_EQ_INT(publish_keyed(&c, &one, k9, 1).seqs[0], 6);
    CHECK_EQ_INT(publish_keyed(&c, &one, k9, 1).seqs[0], 7);
    redisReply *exists = admin_command("EXISTS " PREFIX ":i:idem|k9");
    CHECK_EQ_INT(exists->integer, 0);
    freeReplyObject(exists);
}

int main(void)
{
    harness_init();
    CHECK(redis_start());
    if (redis_pid > 0) {
        hd_redis_link_settings s = settings_for(redis_port, 3000);
        s.on_message = on_publish_message;
        memset(&rec, 0, sizeof(rec));
        publisher = hd_redis_link_new(&loop, &s);
        script = hd_redis_link_script(publisher, hd_redis_publish_lua, hd_redis_publish_lua_len);
        hd_redis_link_start(publisher);
        CHECK(WAIT_UNTIL(rec.state == HD_REDIS_LINK_UP && subscribed_count(probe_channel) == 1,
                         5000));
        CHECK_EQ_INT(strlen(hd_redis_publish_lua), hd_redis_publish_lua_len);

        RUN_TEST(test_first_publish);
        RUN_TEST(test_ids_and_batches);
        RUN_TEST(test_batch_all_or_nothing);
        RUN_TEST(test_trim_by_count);
        RUN_TEST(test_trim_by_bytes);
        RUN_TEST(test_trim_by_age);
        RUN_TEST(test_rollback);
        RUN_TEST(test_topic_index);
        RUN_TEST(test_large_seq_and_binary);
        RUN_TEST(test_idempotency);
        link_close(publisher);
    }
    harness_done();
    return test_summary();
}
