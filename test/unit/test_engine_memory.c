#include "engine/memory.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "test.h"

#define EPOCH 0x0badf00d
#define ID(seq) "0badf00d-" #seq

static hd_hub *new_hub(uint32_t max_messages)
{
    hd_hub_options options = {
        .history_max_messages = max_messages,
        .history_max_bytes = 1 << 20,
        .epoch = EPOCH,
    };
    return hd_hub_new(&options);
}

static hd_publish_item item(const char *topic, const char *data)
{
    return (hd_publish_item){
        .topic = topic,
        .topic_len = strlen(topic),
        .data = data,
        .data_len = strlen(data),
    };
}

/* ---------------------------------------------------------------- publish */

typedef struct published {
    int calls;
    hd_hub_status status;
    size_t failed;
    size_t count;
    char ids[32][HD_ID_MAX];
    size_t subscribers[32];
    uint32_t refs[32]; /* the message's references during the callback */
} published;

static void on_published(void *ctx, const hd_publish_outcome *outcome)
{
    published *p = ctx;
    p->calls++;
    p->status = outcome->status;
    p->failed = outcome->failed;
    p->count = outcome->count;
    for (size_t i = 0; i < outcome->count && i < 32; i++) {
        memcpy(p->ids[i], outcome->messages[i]->id, outcome->messages[i]->id_len + 1);
        p->subscribers[i] = outcome->subscribers[i];
        p->refs[i] = outcome->messages[i]->refs;
    }
}

typedef struct test_sub {
    hd_subscriber sub;
    size_t delivered;
} test_sub;

static void test_sub_deliver(hd_subscriber *sub, hd_message *msg)
{
    (void)msg;
    ((test_sub *)sub)->delivered++;
}

static const hd_subscriber_ops test_sub_ops = {.deliver = test_sub_deliver};

static void count_notify(void *ctx)
{
    (*(int *)ctx)++;
}

static void test_publish_answers_within_the_call(void)
{
    hd_hub *hub = new_hub(100);
    hd_engine *engine = hd_engine_memory_new(hub);
    CHECK_EQ_STR(hd_engine_name(engine), "memory");
    CHECK_EQ_INT(hd_engine_get_state(engine), HD_ENGINE_UP);
    int wakeups = 0;
    hd_hub_set_notify(hub, 0, count_notify, &wakeups);
    test_sub s = {0};
    hd_subscriber_init(&s.sub, &test_sub_ops);
    CHECK_EQ_INT(hd_hub_subscribe(hub, &s.sub, "a", 1), HD_HUB_OK);

    published p = {0};
    hd_publish_item one = item("a", "hello");
    CHECK(hd_engine_publish(engine, &one, 1, 1234, on_published, &p) == NULL);
    CHECK_EQ_INT(p.calls, 1);
    CHECK_EQ_INT(p.status, HD_HUB_OK);
    CHECK_EQ_INT(p.count, 1);
    CHECK_EQ_STR(p.ids[0], ID(1));
    CHECK_EQ_INT(p.subscribers[0], 1);
    /* History's, the worker's inbox's and the one lent to the callback. */
    CHECK_EQ_INT(p.refs[0], 3);

    /* Fanned out like any publish: queued for the worker, which delivers when woken. */
    CHECK_EQ_INT(wakeups, 1);
    CHECK_EQ_INT(s.delivered, 0);
    while (hd_hub_deliver_pending(hub, UINT64_MAX))
        ;
    CHECK_EQ_INT(s.delivered, 1);

    /* A batch larger than what fits on the stack: all of them, in item order. */
    hd_publish_item many[20];
    char data[20][8];
    for (int i = 0; i < 20; i++) {
        snprintf(data[i], sizeof(data[i]), "m%d", i);
        many[i] = item(i % 2 ? "a" : "b", data[i]);
    }
    published batch = {0};
    CHECK(hd_engine_publish(engine, many, 20, 1235, on_published, &batch) == NULL);
    CHECK_EQ_INT(batch.calls, 1);
    CHECK_EQ_INT(batch.count, 20);
    CHECK_EQ_STR(batch.ids[0], ID(2));
    CHECK_EQ_STR(batch.ids[19], ID(21));
    CHECK_EQ_INT(batch.subscribers[1], 1);
    CHECK_EQ_INT(batch.subscribers[2], 0);

    /* The references lent to the callbacks were given back: history holds each message once. */
    hd_topic_info info;
    CHECK(hd_hub_topic_info(hub, "b", 1, &info));
    CHECK_EQ_INT(info.history_messages, 10);

    hd_hub_unsubscribe_all(hub, &s.sub);
    hd_engine_free(engine);
    hd_hub_free(hub);
}

static void test_publish_refused_whole(void)
{
    hd_hub_options options = {
        .history_max_messages = 10,
        .history_max_bytes = 1 << 20,
        .max_topics = 2,
        .epoch = EPOCH,
    };
    hd_hub *hub = hd_hub_new(&options);
    hd_engine *engine = hd_engine_memory_new(hub);

    hd_publish_item items[] = {item("a", "1"), item("b", "2"), item("bad topic", "3")};
    published p = {0};
    CHECK(hd_engine_publish(engine, items, 3, 0, on_published, &p) == NULL);
    CHECK_EQ_INT(p.calls, 1);
    CHECK_EQ_INT(p.status, HD_HUB_BAD_TOPIC);
    CHECK_EQ_INT(p.failed, 2);
    CHECK_EQ_INT(p.count, 0);

    hd_publish_item three[] = {item("a", "1"), item("b", "2"), item("c", "3")};
    memset(&p, 0, sizeof(p));
    hd_engine_publish(engine, three, 3, 0, on_published, &p);
    CHECK_EQ_INT(p.status, HD_HUB_TOO_MANY_TOPICS);
    CHECK_EQ_INT(p.failed, 2);

    /* Nothing was published: the next id is the first. */
    char id[HD_ID_MAX];
    hd_hub_newest_id(hub, id);
    CHECK_EQ_STR(id, ID(0));
    hd_engine_free(engine);
    hd_hub_free(hub);
}

/* ---------------------------------------------------------------- read */

typedef struct read_result {
    int calls;
    size_t gap_count;
    char gap_topic[4][16];
    uint64_t gap_to_seq[4];
    size_t count;
    uint64_t seqs[HD_ENGINE_READ_MAX];
    uint32_t first_refs;
    bool more;
    uint32_t epoch;
    uint64_t cut;
} read_result;

static void on_read(void *ctx, const hd_history_result *result)
{
    read_result *r = ctx;
    r->calls++;
    r->gap_count = result->gap_count;
    for (size_t i = 0; i < result->gap_count && i < 4; i++) {
        snprintf(r->gap_topic[i], sizeof(r->gap_topic[i]), "%.*s", (int)result->gaps[i].topic_len,
                 result->gaps[i].topic);
        r->gap_to_seq[i] = result->gaps[i].to_seq;
    }
    r->count = result->count;
    for (size_t i = 0; i < result->count; i++)
        r->seqs[i] = result->messages[i]->seq;
    r->first_refs = result->count > 0 ? result->messages[0]->refs : 0;
    r->more = result->more;
    r->epoch = result->epoch;
    r->cut = result->cut;
}

static read_result *read_topics(hd_engine *engine, const char *const *topics, size_t count,
                                const char *cursor, size_t limit)
{
    static read_result r;
    memset(&r, 0, sizeof(r));
    size_t lens[8];
    for (size_t i = 0; i < count; i++)
        lens[i] = strlen(topics[i]);
    hd_history_query q = {
        .topics = topics, .topic_lens = lens, .topic_count = count, .limit = limit};
    CHECK_EQ_INT(hd_hub_parse_cursor(engine->hub, cursor, strlen(cursor), &q.cursor), HD_HUB_OK);
    CHECK(hd_engine_read(engine, &q, on_read, &r) == NULL);
    CHECK_EQ_INT(r.calls, 1);
    return &r;
}

static void test_read_result(void)
{
    hd_hub *hub = new_hub(3);
    hd_engine *engine = hd_engine_memory_new(hub);
    const char *order = "ababccacaca"; /* seqs 1 to 11 */
    for (int i = 0; order[i]; i++) {
        char topic[2] = {order[i], '\0'};
        hd_publish_item it = item(topic, "x");
        hd_engine_publish(engine, &it, 1, 0, on_published, &(published){0});
    }
    /* a holds 7 9 11 (lost up to 3), b holds 2 4, c holds 6 8 10 (lost 5). */
    const char *ab[] = {"a", "b"};
    read_result *r = read_topics(engine, ab, 2, ID(0), 100);
    CHECK_EQ_INT(r->gap_count, 1);
    CHECK_EQ_STR(r->gap_topic[0], "a");
    CHECK_EQ_INT(r->gap_to_seq[0], 3);
    CHECK_EQ_INT(r->count, 5);
    uint64_t expected[] = {2, 4, 7, 9, 11};
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(r->seqs[i], expected[i]);
    CHECK(!r->more);
    CHECK_EQ_INT(r->epoch, EPOCH);
    CHECK_EQ_INT(r->cut, 11);
    /* Lent to the callback on top of history's own reference. */
    CHECK_EQ_INT(r->first_refs, 2);

    /* The limit cuts the read short; cut is still the whole sequence's newest. */
    r = read_topics(engine, ab, 2, ID(4), 2);
    CHECK_EQ_INT(r->count, 2);
    CHECK_EQ_INT(r->seqs[0], 7);
    CHECK(r->more);
    CHECK_EQ_INT(r->cut, 11);

    /* Without a cursor nothing is read, but the cut is told (a poll's first cursor). */
    const char *c[] = {"c"};
    r = read_topics(engine, c, 1, "", 10);
    CHECK_EQ_INT(r->count, 0);
    CHECK_EQ_INT(r->gap_count, 0);
    CHECK_EQ_INT(r->cut, 11);

    /* Another epoch: a gap for every topic, and everything held. */
    const char *abc[] = {"a", "b", "c", "b"};
    r = read_topics(engine, abc, 4, "12345678-3", HD_ENGINE_READ_MAX);
    CHECK_EQ_INT(r->gap_count, 3);
    CHECK_EQ_INT(r->count, 8);

    /* Given back after the callback: history holds each message once. */
    hd_topic_info info;
    CHECK(hd_hub_topic_info(hub, "a", 1, &info));
    CHECK_EQ_INT(info.history_messages, 3);
    hd_engine_free(engine);
    hd_hub_free(hub);
}

/* ---------------------------------------------------------------- interest */

typedef struct interest_log {
    int count;
    char topics[16][16];
    bool interested[16];
} interest_log;

static void record_interest(interest_log *log, const char *topic, size_t len, bool interested)
{
    if (log->count < 16) {
        snprintf(log->topics[log->count], sizeof(log->topics[0]), "%.*s", (int)len, topic);
        log->interested[log->count] = interested;
    }
    log->count++;
}

static void on_interest(void *ctx, const char *topic, size_t len, bool interested)
{
    record_interest(ctx, topic, len, interested);
}

static void test_hub_reports_interest_on_first_and_last(void)
{
    hd_hub *hub = new_hub(10);
    interest_log log = {0};
    hd_hub_set_interest(hub, on_interest, &log);
    test_sub s1 = {0}, s2 = {0};
    hd_subscriber_init(&s1.sub, &test_sub_ops);
    hd_subscriber_init(&s2.sub, &test_sub_ops);

    CHECK_EQ_INT(hd_hub_subscribe(hub, &s1.sub, "a", 1), HD_HUB_OK);
    CHECK_EQ_INT(log.count, 1);
    CHECK_EQ_STR(log.topics[0], "a");
    CHECK(log.interested[0]);
    /* A second subscriber, or the same one again, changes nothing this node tells. */
    CHECK_EQ_INT(hd_hub_subscribe(hub, &s2.sub, "a", 1), HD_HUB_OK);
    CHECK_EQ_INT(hd_hub_subscribe(hub, &s1.sub, "a", 1), HD_HUB_OK);
    CHECK_EQ_INT(log.count, 1);
    /* Nor does a topic that is only published to, or a refused subscription. */
    hd_publish_item it = item("quiet", "x");
    hd_hub_publish_batch(hub, &it, 1, 0, NULL, NULL, NULL, NULL);
    CHECK_EQ_INT(hd_hub_subscribe(hub, &s1.sub, "bad name", 8), HD_HUB_BAD_TOPIC);
    CHECK_EQ_INT(log.count, 1);

    CHECK_EQ_INT(hd_hub_subscribe(hub, &s2.sub, "b", 1), HD_HUB_OK);
    CHECK_EQ_INT(log.count, 2);
    CHECK_EQ_STR(log.topics[1], "b");

    hd_hub_unsubscribe(hub, &s1.sub, "a", 1);
    CHECK_EQ_INT(log.count, 2); /* s2 is still there */
    hd_hub_unsubscribe_all(hub, &s2.sub);
    CHECK_EQ_INT(log.count, 4);
    /* The last subscriber left both, in the order unsubscribe_all let them go. */
    CHECK(!log.interested[2] && !log.interested[3]);
    CHECK((strcmp(log.topics[2], "a") == 0 && strcmp(log.topics[3], "b") == 0) ||
          (strcmp(log.topics[2], "b") == 0 && strcmp(log.topics[3], "a") == 0));

    /* 0 -> 1 again. */
    CHECK_EQ_INT(hd_hub_subscribe(hub, &s1.sub, "a", 1), HD_HUB_OK);
    CHECK_EQ_INT(log.count, 5);
    CHECK(log.interested[4]);
    hd_hub_unsubscribe_all(hub, &s1.sub);
    CHECK_EQ_INT(log.count, 6);
    hd_hub_free(hub);
}

/* An engine that wants interest gets it through its ops, wired by hd_engine_init. */
typedef struct listening_engine {
    hd_engine base;
    interest_log log;
} listening_engine;

static void listening_interest(hd_engine *engine, const char *topic, size_t len, bool interested)
{
    record_interest(&((listening_engine *)engine)->log, topic, len, interested);
}

static void test_engine_interest_is_wired(void)
{
    static const hd_engine_ops ops = {.name = "listening", .interest = listening_interest};
    hd_hub *hub = new_hub(10);
    listening_engine engine = {0};
    hd_engine_init(&engine.base, &ops, hub);
    CHECK(engine.base.hub == hub);
    test_sub s = {0};
    hd_subscriber_init(&s.sub, &test_sub_ops);
    CHECK_EQ_INT(hd_hub_subscribe(hub, &s.sub, "t", 1), HD_HUB_OK);
    hd_hub_unsubscribe_all(hub, &s.sub);
    CHECK_EQ_INT(engine.log.count, 2);
    CHECK_EQ_STR(engine.log.topics[0], "t");
    CHECK(engine.log.interested[0] && !engine.log.interested[1]);
    hd_hub_free(hub);
}

static void test_state_names(void)
{
    CHECK_EQ_STR(hd_engine_state_name(HD_ENGINE_UP), "up");
    CHECK_EQ_STR(hd_engine_state_name(HD_ENGINE_CONNECTING), "connecting");
    CHECK_EQ_STR(hd_engine_state_name(HD_ENGINE_DOWN), "down");
    /* Cancelling nothing is what a caller does once its callback ran. */
    hd_hub *hub = new_hub(10);
    hd_engine *engine = hd_engine_memory_new(hub);
    hd_engine_cancel(engine, NULL);
    hd_engine_free(engine);
    hd_engine_free(NULL);
    hd_hub_free(hub);
}

int main(void)
{
    RUN_TEST(test_publish_answers_within_the_call);
    RUN_TEST(test_publish_refused_whole);
    RUN_TEST(test_read_result);
    RUN_TEST(test_hub_reports_interest_on_first_and_last);
    RUN_TEST(test_engine_interest_is_wired);
    RUN_TEST(test_state_names);
    return test_summary();
}
