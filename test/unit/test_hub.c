#include "herald/hub.h"

#include <stdint.h>
#include <stdio.h>

#include "test.h"

#define EPOCH 0x0badf00d
#define ID(seq) "0badf00d-" #seq

static hd_hub *hub_with(uint32_t max_messages, uint64_t max_bytes, uint32_t ttl_s,
                        uint32_t max_topics)
{
    hd_hub_options options = {
        .history_max_messages = max_messages,
        .history_max_bytes = max_bytes,
        .history_ttl_s = ttl_s,
        .max_topics = max_topics,
        .epoch = EPOCH,
    };
    return hd_hub_new(&options);
}

static hd_hub *default_hub(void)
{
    return hub_with(1000, 4 << 20, 0, 0);
}

/* One message, as the memory engine publishes it (a batch of one). */
static hd_hub_status hub_publish(hd_hub *hub, const char *topic, size_t topic_len,
                                 const char *event, size_t event_len, const char *data,
                                 size_t data_len, int64_t now_ms, hd_message **out,
                                 size_t *subscribers)
{
    hd_publish_item item = {.topic = topic,
                            .topic_len = topic_len,
                            .event = event,
                            .event_len = event_len,
                            .data = data,
                            .data_len = data_len};
    return hd_hub_publish_batch(hub, &item, 1, now_ms, out, subscribers, NULL, NULL);
}

/* Publishes data to topic at now_ms and returns the message's seq (0 on failure). */
static uint64_t publish_at(hd_hub *hub, const char *topic, const char *data, int64_t now_ms)
{
    hd_message *msg = NULL;
    if (hub_publish(hub, topic, strlen(topic), NULL, 0, data, strlen(data), now_ms, &msg, NULL) !=
        HD_HUB_OK)
        return 0;
    uint64_t seq = msg->seq;
    hd_message_release(msg);
    return seq;
}

static uint64_t publish(hd_hub *hub, const char *topic)
{
    return publish_at(hub, topic, "x", 1000);
}

/* ---------------------------------------------------------------- test subscribers */

typedef struct test_sub {
    hd_subscriber sub;
    size_t delivered;
    uint64_t seqs[64];
} test_sub;

static void test_sub_deliver(hd_subscriber *sub, hd_message *msg)
{
    test_sub *ts = hd_container_of(sub, test_sub, sub);
    if (ts->delivered < sizeof(ts->seqs) / sizeof(ts->seqs[0]))
        ts->seqs[ts->delivered] = msg->seq;
    ts->delivered++;
}

static const hd_subscriber_ops test_sub_ops = {.deliver = test_sub_deliver};

static void test_sub_init(test_sub *ts)
{
    memset(ts, 0, sizeof(*ts));
    hd_subscriber_init(&ts->sub, &test_sub_ops);
}

static hd_hub_status subscribe(hd_hub *hub, test_sub *ts, const char *topic)
{
    return hd_hub_subscribe(hub, &ts->sub, topic, strlen(topic));
}

/* The worker's wake-ups, as a server's uv_async_send would take them. */
static void count_notify(void *ctx)
{
    (*(int *)ctx)++;
}

/* What the worker does when woken: everything queued for its subscribers, delivered. */
static void deliver_queued(hd_hub *hub)
{
    while (hd_hub_deliver_pending(hub, UINT64_MAX))
        ;
}

static size_t topic_count(const hd_hub *hub)
{
    hd_hub_stats stats;
    hd_hub_get_stats(hub, &stats);
    return stats.topics;
}

static size_t subscribers_of(const hd_hub *hub, const char *topic)
{
    hd_topic_info info;
    return hd_hub_topic_info(hub, topic, strlen(topic), &info) ? info.subscribers : 0;
}

/* ---------------------------------------------------------------- history reads */

typedef struct read_result {
    size_t gap_count;
    char gap_topic[8][64];
    char gap_from[8][64];
    char gap_to[8][HD_ID_MAX];
    uint64_t gap_to_seq[8];
    size_t msg_count;
    uint64_t seqs[256];
    size_t visited;
    bool more;
    uint64_t cut;
    size_t stop_after; /* the visitor asks to stop after this many; 0 = never */
} read_result;

static void collect_gap(void *ctx, const hd_gap *gap)
{
    read_result *r = ctx;
    if (r->gap_count < 8) {
        snprintf(r->gap_topic[r->gap_count], 64, "%.*s", (int)gap->topic_len, gap->topic);
        snprintf(r->gap_from[r->gap_count], 64, "%.*s", (int)gap->from_len, gap->from);
        snprintf(r->gap_to[r->gap_count], HD_ID_MAX, "%.*s", (int)gap->to_len, gap->to);
        r->gap_to_seq[r->gap_count] = gap->to_seq;
    }
    r->gap_count++;
}

static bool collect_message(void *ctx, hd_message *msg)
{
    read_result *r = ctx;
    if (r->msg_count < 256)
        r->seqs[r->msg_count] = msg->seq;
    r->msg_count++;
    return r->stop_after == 0 || r->msg_count < r->stop_after;
}

static const hd_history_visitor collector = {.on_gap = collect_gap, .on_message = collect_message};

/* Reads history of n topics after cursor text (NULL: no cursor). */
static read_result read_stopping(hd_hub *hub, const char *const *topics, size_t n,
                                 const char *cursor, size_t limit, size_t stop_after)
{
    read_result r;
    memset(&r, 0, sizeof(r));
    r.stop_after = stop_after;
    size_t lens[16];
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(topics[i]);
    hd_history_query q = {.topics = topics, .topic_lens = lens, .topic_count = n, .limit = limit};
    hd_hub_status status = hd_hub_parse_cursor(hub, cursor, cursor ? strlen(cursor) : 0, &q.cursor);
    CHECK_EQ_INT(status, HD_HUB_OK);
    r.visited = hd_hub_read_history(hub, &q, &collector, &r, &r.more, &r.cut);
    return r;
}

static read_result read_from(hd_hub *hub, const char *const *topics, size_t n, const char *cursor,
                             size_t limit)
{
    return read_stopping(hub, topics, n, cursor, limit, 0);
}

static read_result read_one(hd_hub *hub, const char *topic, const char *cursor)
{
    const char *topics[] = {topic};
    return read_from(hub, topics, 1, cursor, 0);
}

/* ---------------------------------------------------------------- names and ids */

static void test_topic_names(void)
{
    char name[202];
    memset(name, 'a', sizeof(name));
    CHECK(hd_topic_name_valid("a", 1));
    CHECK(hd_topic_name_valid(name, 200));
    CHECK(!hd_topic_name_valid(name, 201));
    CHECK(!hd_topic_name_valid("", 0));
    CHECK(hd_topic_name_valid("AZaz09._~:/@-", 13));
    const char *bad[] = {"a b", "a#", "a?", "a%20", "a+", "a,b", "caf\xc3\xa9", "a\\b", "a*"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(!hd_topic_name_valid(bad[i], strlen(bad[i])));
    CHECK(!hd_topic_name_valid("a\0b", 3));
}

static void test_event_names(void)
{
    char name[66];
    memset(name, 'e', sizeof(name));
    CHECK(hd_event_name_valid("e", 1));
    CHECK(hd_event_name_valid(name, 64));
    CHECK(!hd_event_name_valid(name, 65));
    CHECK(!hd_event_name_valid("", 0));
    CHECK(hd_event_name_valid("AZaz09_.:-", 10));
    CHECK(!hd_event_name_valid("a/b", 3));
    CHECK(!hd_event_name_valid("a~b", 3));
    CHECK(!hd_event_name_valid("a@b", 3));
    CHECK(!hd_event_name_valid("a b", 3));
}

static void test_ids_monotonic_across_topics(void)
{
    hd_hub *hub = default_hub();
    char id[HD_ID_MAX];
    CHECK_EQ_INT(hd_hub_epoch(hub), EPOCH);
    CHECK_EQ_INT(hd_hub_newest_id(hub, id), 10);
    CHECK_EQ_STR(id, ID(0));

    const char *topics[] = {"a", "b", "c", "a", "b"};
    for (int i = 0; i < 5; i++) {
        hd_message *msg = NULL;
        size_t subs = 99;
        CHECK_EQ_INT(hub_publish(hub, topics[i], 1, NULL, 0, "d", 1, 1000 + i, &msg, &subs),
                     HD_HUB_OK);
        CHECK_EQ_INT(msg->seq, (uint64_t)i + 1);
        CHECK_EQ_INT(msg->time_ms, 1000 + i);
        CHECK_EQ_INT(subs, 0);
        char expected[HD_ID_MAX];
        snprintf(expected, sizeof(expected), "0badf00d-%d", i + 1);
        CHECK_EQ_STR(msg->id, expected);
        hd_message_release(msg);
    }
    hd_hub_newest_id(hub, id);
    CHECK_EQ_STR(id, ID(5));
    CHECK_EQ_INT(topic_count(hub), 3);
    hd_hub_free(hub);
}

static void test_random_epoch(void)
{
    hd_hub_options options = {.history_max_messages = 10, .history_max_bytes = 1000};
    hd_hub *hub = hd_hub_new(&options);
    CHECK(hd_hub_epoch(hub) != 0);
    char id[HD_ID_MAX];
    char expected[HD_ID_MAX];
    snprintf(expected, sizeof(expected), "%08x-0", (unsigned)hd_hub_epoch(hub));
    hd_hub_newest_id(hub, id);
    CHECK_EQ_STR(id, expected);
    hd_hub_free(hub);
}

static void test_publish_rejects_bad_names(void)
{
    hd_hub *hub = default_hub();
    hd_message *msg = NULL;
    CHECK_EQ_INT(hub_publish(hub, "a b", 3, NULL, 0, "d", 1, 0, &msg, NULL), HD_HUB_BAD_TOPIC);
    CHECK_EQ_INT(hub_publish(hub, "", 0, NULL, 0, "d", 1, 0, &msg, NULL), HD_HUB_BAD_TOPIC);
    CHECK_EQ_INT(hub_publish(hub, "a", 1, "e/v", 3, "d", 1, 0, &msg, NULL), HD_HUB_BAD_EVENT);
    CHECK_EQ_INT(hub_publish(hub, "a", 1, "", 0, "d", 1, 0, &msg, NULL), HD_HUB_BAD_EVENT);
    CHECK_EQ_INT(hub_publish(hub, "a b", 3, "e/v", 3, "d", 1, 0, &msg, NULL), HD_HUB_BAD_TOPIC);
    CHECK(msg == NULL);
    CHECK_EQ_INT(topic_count(hub), 0);
    CHECK_EQ_INT(hd_hub_check_publish(hub, "a", 1, "ev", 2), HD_HUB_OK);
    CHECK_EQ_INT(hd_hub_check_publish(hub, "a", 1, NULL, 0), HD_HUB_OK);
    CHECK_EQ_INT(hd_hub_check_publish(hub, "a", 1, "e v", 3), HD_HUB_BAD_EVENT);
    CHECK_EQ_INT(hd_hub_check_publish(hub, "a#", 2, NULL, 0), HD_HUB_BAD_TOPIC);
    CHECK_EQ_INT(topic_count(hub), 0);

    /* Failed publishes consume no seq. */
    CHECK_EQ_INT(hub_publish(hub, "a", 1, "ev", 2, "d", 1, 0, &msg, NULL), HD_HUB_OK);
    CHECK_EQ_STR(msg->id, ID(1));
    CHECK_EQ_MEM(msg->event, msg->event_len, "ev", 2);
    hd_message_release(msg);
    hd_hub_free(hub);
}

/* ---------------------------------------------------------------- cursors */

static void test_parse_cursor(void)
{
    hd_hub *hub = default_hub();
    hd_cursor c;

    CHECK_EQ_INT(hd_hub_parse_cursor(hub, "", 0, &c), HD_HUB_OK);
    CHECK(!c.present);

    /* Nothing published yet: only seq 0 has been "issued" (the newest id of an empty hub). */
    CHECK_EQ_INT(hd_hub_parse_cursor(hub, ID(0), 10, &c), HD_HUB_OK);
    CHECK(c.present && !c.foreign && !c.earliest);
    CHECK_EQ_INT(c.seq, 0);
    CHECK_EQ_INT(hd_hub_parse_cursor(hub, ID(1), 10, &c), HD_HUB_BAD_CURSOR);

    for (int i = 0; i < 17; i++)
        publish(hub, "t");
    const char *exact = ID(17);
    CHECK_EQ_INT(hd_hub_parse_cursor(hub, exact, strlen(exact), &c), HD_HUB_OK);
    CHECK(c.present);
    CHECK(!c.foreign);
    CHECK_EQ_INT(c.seq, 17);
    CHECK(c.text == exact);
    CHECK_EQ_INT(c.text_len, strlen(exact));

    /* Beyond the newest id of this epoch: never issued, whatever its size. */
    CHECK_EQ_INT(hd_hub_parse_cursor(hub, ID(18), 11, &c), HD_HUB_BAD_CURSOR);
    CHECK_EQ_INT(hd_hub_parse_cursor(hub, ID(999), 12, &c), HD_HUB_BAD_CURSOR);
    const char *max = ID(18446744073709551615);
    CHECK_EQ_INT(hd_hub_parse_cursor(hub, max, strlen(max), &c), HD_HUB_BAD_CURSOR);
    publish(hub, "t");
    CHECK_EQ_INT(hd_hub_parse_cursor(hub, ID(18), 11, &c), HD_HUB_OK);

    /* Another epoch's seq says nothing about this one: any size is a gap, not an error. */
    CHECK_EQ_INT(hd_hub_parse_cursor(hub, "deadbeef-5", 10, &c), HD_HUB_OK);
    CHECK(c.present && c.foreign);
    const char *foreign_max = "deadbeef-18446744073709551615";
    CHECK_EQ_INT(hd_hub_parse_cursor(hub, foreign_max, strlen(foreign_max), &c), HD_HUB_OK);
    CHECK(c.present && c.foreign && c.seq == UINT64_MAX);

    CHECK_EQ_INT(hd_hub_parse_cursor(hub, "earliest", 8, &c), HD_HUB_OK);
    CHECK(c.present && c.earliest && !c.foreign);
    CHECK_EQ_INT(c.seq, 0);

    /* Malformed ones (test_id.c has the full list) are refused with the same status. */
    const char *bad[] = {"abc", "0BADF00D-5", "0badf00d-05", "Earliest", "earliest-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_EQ_INT(hd_hub_parse_cursor(hub, bad[i], strlen(bad[i]), &c), HD_HUB_BAD_CURSOR);
    CHECK_EQ_INT(hd_hub_parse_cursor(hub, "0badf00d-5\0", 11, &c), HD_HUB_BAD_CURSOR);
    hd_hub_free(hub);
}

static void test_cursor_positions(void)
{
    hd_hub *hub = default_hub();
    for (int i = 0; i < 5; i++)
        publish(hub, "t");

    read_result r = read_one(hub, "t", NULL);
    CHECK_EQ_INT(r.visited, 0);
    CHECK_EQ_INT(r.gap_count, 0);
    CHECK_EQ_INT(r.cut, 5);

    r = read_one(hub, "t", ID(0));
    CHECK_EQ_INT(r.visited, 5);
    CHECK_EQ_INT(r.cut, 5);
    publish(hub, "other"); /* the cut is hub-wide: past every topic's newest */
    r = read_one(hub, "t", ID(0));
    CHECK_EQ_INT(r.cut, 6);
    CHECK_EQ_INT(r.seqs[0], 1);
    CHECK_EQ_INT(r.gap_count, 0);

    r = read_one(hub, "t", ID(3));
    CHECK_EQ_INT(r.visited, 2);
    CHECK_EQ_INT(r.seqs[0], 4);
    CHECK_EQ_INT(r.seqs[1], 5);

    r = read_one(hub, "t", ID(5));
    CHECK_EQ_INT(r.visited, 0);
    CHECK(!r.more);

    r = read_one(hub, "t", "earliest");
    CHECK_EQ_INT(r.visited, 5);
    CHECK_EQ_INT(r.seqs[0], 1);
    CHECK_EQ_INT(r.gap_count, 0);
    hd_hub_free(hub);
}

/* ---------------------------------------------------------------- history bounds */

static void test_eviction_by_count(void)
{
    hd_hub *hub = hub_with(3, 1 << 20, 0, 0);
    for (int i = 0; i < 5; i++)
        publish(hub, "t");
    hd_topic_info info;
    CHECK(hd_hub_topic_info(hub, "t", 1, &info));
    CHECK_EQ_INT(info.history_messages, 3);
    CHECK_EQ_STR(info.last_id, ID(5));

    read_result r = read_one(hub, "t", ID(0));
    CHECK_EQ_INT(r.visited, 3);
    CHECK_EQ_INT(r.seqs[0], 3);
    CHECK_EQ_INT(r.seqs[2], 5);
    CHECK_EQ_INT(r.gap_count, 1);
    CHECK_EQ_STR(r.gap_topic[0], "t");
    CHECK_EQ_STR(r.gap_from[0], ID(0));
    CHECK_EQ_STR(r.gap_to[0], ID(2));
    CHECK_EQ_INT(r.gap_to_seq[0], 2);

    r = read_one(hub, "t", ID(1));
    CHECK_EQ_INT(r.gap_count, 1);
    CHECK_EQ_INT(r.visited, 3);

    /* earliest asks for what history holds: no loss is reported. */
    r = read_one(hub, "t", "earliest");
    CHECK_EQ_INT(r.visited, 3);
    CHECK_EQ_INT(r.seqs[0], 3);
    CHECK_EQ_INT(r.gap_count, 0);

    /* The client saw 2, the newest lost: nothing was lost for it. */
    r = read_one(hub, "t", ID(2));
    CHECK_EQ_INT(r.gap_count, 0);
    CHECK_EQ_INT(r.visited, 3);

    /* Many more, so the ring wraps around many times. */
    for (int i = 0; i < 100; i++)
        publish(hub, "t");
    r = read_one(hub, "t", ID(101));
    CHECK_EQ_INT(r.visited, 3);
    CHECK_EQ_INT(r.seqs[0], 103);
    CHECK_EQ_STR(r.gap_to[0], ID(102));
    hd_hub_free(hub);
}

static void test_eviction_by_bytes(void)
{
    size_t cost = sizeof(hd_message) + 1 + 10; /* topic "t", 10 bytes of data */
    hd_hub *hub = hub_with(1000, 2 * cost + 1, 0, 0);
    for (int i = 0; i < 4; i++)
        publish_at(hub, "t", "0123456789", 1000);
    hd_topic_info info;
    CHECK(hd_hub_topic_info(hub, "t", 1, &info));
    CHECK_EQ_INT(info.history_messages, 2);
    CHECK_EQ_INT(info.history_bytes, 2 * cost);

    read_result r = read_one(hub, "t", ID(0));
    CHECK_EQ_INT(r.visited, 2);
    CHECK_EQ_INT(r.seqs[0], 3);
    CHECK_EQ_STR(r.gap_to[0], ID(2));

    /* A message that fits exactly with one other. */
    hd_hub_free(hub);
    hub = hub_with(1000, 2 * cost, 0, 0);
    for (int i = 0; i < 3; i++)
        publish_at(hub, "t", "0123456789", 1000);
    CHECK(hd_hub_topic_info(hub, "t", 1, &info));
    CHECK_EQ_INT(info.history_messages, 2);
    hd_hub_free(hub);
}

static void test_oversize_message_kept_alone(void)
{
    hd_hub *hub = hub_with(1000, 10, 0, 0);
    char big[101];
    memset(big, 'b', 100);
    big[100] = '\0';
    publish_at(hub, "t", big, 1000);
    hd_topic_info info;
    CHECK(hd_hub_topic_info(hub, "t", 1, &info));
    CHECK_EQ_INT(info.history_messages, 1);
    CHECK(info.history_bytes > 10);

    publish_at(hub, "t", big, 1000);
    publish_at(hub, "t", "", 1000);
    CHECK(hd_hub_topic_info(hub, "t", 1, &info));
    CHECK_EQ_INT(info.history_messages, 1);
    read_result r = read_one(hub, "t", ID(0));
    CHECK_EQ_INT(r.visited, 1);
    CHECK_EQ_INT(r.seqs[0], 3);
    CHECK_EQ_STR(r.gap_to[0], ID(2));
    hd_hub_free(hub);
}

static void test_total_budget_evicts_oldest_hub_wide(void)
{
    hd_hub_options options = {
        .history_max_messages = 1000,
        .history_max_bytes = 1 << 20,
        .history_max_total_bytes = 0,
        .epoch = EPOCH,
    };
    /* Size the budget from the cost of a message: room for exactly 10. */
    hd_message *probe = hd_message_new("t00", 3, NULL, 0, "x", 1, 1, EPOCH, 0);
    options.history_max_total_bytes = 10 * hd_message_cost(probe);
    hd_message_release(probe);
    hd_hub *hub = hd_hub_new(&options);

    /* 30 topics of one message each: only the newest 10 remain; the rest are freed. */
    char name[8];
    for (int i = 0; i < 30; i++) {
        snprintf(name, sizeof(name), "t%02d", i);
        publish_at(hub, name, "x", 1000);
    }
    hd_topic_info info;
    CHECK_EQ_INT(topic_count(hub), 10);
    CHECK(!hd_hub_topic_info(hub, "t19", 3, &info));
    CHECK(hd_hub_topic_info(hub, "t20", 3, &info));
    CHECK_EQ_INT(info.history_messages, 1);

    /* A subscribed topic keeps existing, but its history is evicted like any other. */
    test_sub s;
    test_sub_init(&s);
    CHECK_EQ_INT(subscribe(hub, &s, "t20"), HD_HUB_OK);
    for (int i = 0; i < 10; i++)
        publish_at(hub, "bsy", "x", 1000);
    CHECK(hd_hub_topic_info(hub, "t20", 3, &info));
    CHECK_EQ_INT(info.history_messages, 0);
    read_result r = read_one(hub, "t20", ID(0));
    CHECK_EQ_INT(r.gap_count, 1);
    CHECK_EQ_STR(r.gap_to[0], ID(21));
    CHECK(hd_hub_topic_info(hub, "bsy", 3, &info));
    CHECK_EQ_INT(info.history_messages, 10);

    hd_hub_unsubscribe_all(hub, &s.sub);
    hd_hub_free(hub);
}

static void test_ttl_expiry(void)
{
    hd_hub *hub = hub_with(1000, 1 << 20, 10, 0);
    publish_at(hub, "t", "a", 1000);
    publish_at(hub, "t", "b", 5000);
    publish_at(hub, "u", "c", 5000);
    CHECK_EQ_INT(topic_count(hub), 2);

    hd_hub_expire(hub, 10999);
    hd_topic_info info;
    CHECK(hd_hub_topic_info(hub, "t", 1, &info));
    CHECK_EQ_INT(info.history_messages, 2);

    hd_hub_expire(hub, 11000);
    CHECK(hd_hub_topic_info(hub, "t", 1, &info));
    CHECK_EQ_INT(info.history_messages, 1);
    read_result r = read_one(hub, "t", ID(0));
    CHECK_EQ_INT(r.visited, 1);
    CHECK_EQ_INT(r.seqs[0], 2);
    CHECK_EQ_STR(r.gap_to[0], ID(1));

    /* "t" keeps a subscriber, "u" has nothing left and is freed. */
    test_sub s;
    test_sub_init(&s);
    CHECK_EQ_INT(subscribe(hub, &s, "t"), HD_HUB_OK);
    hd_hub_expire(hub, 15000);
    CHECK_EQ_INT(topic_count(hub), 1);
    CHECK(!hd_hub_topic_info(hub, "u", 1, &info));
    CHECK(hd_hub_topic_info(hub, "t", 1, &info));
    CHECK_EQ_INT(info.history_messages, 0);
    CHECK_EQ_INT(info.history_bytes, 0);
    CHECK_EQ_STR(info.last_id, ID(2));

    r = read_one(hub, "t", ID(1));
    CHECK_EQ_INT(r.visited, 0);
    CHECK_EQ_INT(r.gap_count, 1);
    CHECK_EQ_STR(r.gap_to[0], ID(2));

    /* The emptied topic takes history again. */
    publish_at(hub, "t", "d", 20000);
    r = read_one(hub, "t", ID(2));
    CHECK_EQ_INT(r.visited, 1);
    CHECK_EQ_INT(r.gap_count, 0);

    hd_hub_unsubscribe_all(hub, &s.sub);
    CHECK_EQ_INT(topic_count(hub), 1);
    hd_hub_expire(hub, 30000);
    CHECK_EQ_INT(topic_count(hub), 0);
    hd_hub_free(hub);
}

static void test_no_ttl_keeps_history(void)
{
    hd_hub *hub = hub_with(1000, 1 << 20, 0, 0);
    publish_at(hub, "t", "a", 0);
    hd_hub_expire(hub, INT64_MAX);
    CHECK_EQ_INT(topic_count(hub), 1);
    hd_hub_free(hub);
}

/* ---------------------------------------------------------------- topic lifetime */

static void test_topic_freed_and_recreated(void)
{
    hd_hub *hub = default_hub();
    test_sub s;
    test_sub_init(&s);
    CHECK_EQ_INT(subscribe(hub, &s, "t"), HD_HUB_OK);
    CHECK_EQ_INT(topic_count(hub), 1);
    hd_topic_info info;
    CHECK(hd_hub_topic_info(hub, "t", 1, &info));
    CHECK_EQ_STR(info.last_id, "");
    CHECK_EQ_INT(info.subscribers, 1);

    hd_hub_unsubscribe(hub, &s.sub, "t", 1);
    CHECK_EQ_INT(topic_count(hub), 0);
    CHECK(!hd_hub_topic_info(hub, "t", 1, &info));

    /* A topic with history stays after its last subscriber leaves. */
    CHECK_EQ_INT(subscribe(hub, &s, "t"), HD_HUB_OK);
    publish(hub, "t");
    hd_hub_unsubscribe(hub, &s.sub, "t", 1);
    CHECK_EQ_INT(topic_count(hub), 1);
    CHECK(hd_hub_topic_info(hub, "t", 1, &info));
    CHECK_EQ_INT(info.subscribers, 0);
    CHECK_EQ_INT(info.history_messages, 1);
    hd_hub_unsubscribe_all(hub, &s.sub);
    hd_hub_free(hub);
}

static void test_forgotten_upto(void)
{
    hd_hub *hub = hub_with(1, 1 << 20, 10, 0);
    publish_at(hub, "a", "1", 0);    /* 1, evicted by 2 */
    publish_at(hub, "a", "2", 0);    /* 2, expires */
    publish_at(hub, "b", "3", 9000); /* 3, stays */
    hd_hub_expire(hub, 10000);
    CHECK_EQ_INT(topic_count(hub), 1);

    /* "a" was freed having lost 2: a cursor before that is told so. */
    read_result r = read_one(hub, "a", ID(1));
    CHECK_EQ_INT(r.gap_count, 1);
    CHECK_EQ_STR(r.gap_topic[0], "a");
    CHECK_EQ_STR(r.gap_to[0], ID(2));
    r = read_one(hub, "a", ID(2));
    CHECK_EQ_INT(r.gap_count, 0);

    /* Any topic created now inherits it (conservatively), as does an unknown one. */
    r = read_one(hub, "never", ID(1));
    CHECK_EQ_INT(r.gap_count, 1);
    CHECK_EQ_STR(r.gap_to[0], ID(2));
    test_sub s;
    test_sub_init(&s);
    CHECK_EQ_INT(subscribe(hub, &s, "c"), HD_HUB_OK);
    r = read_one(hub, "c", ID(1));
    CHECK_EQ_INT(r.gap_count, 1);
    CHECK_EQ_STR(r.gap_to[0], ID(2));

    /* A topic that existed all along keeps its own record: "b" lost nothing. */
    r = read_one(hub, "b", ID(1));
    CHECK_EQ_INT(r.gap_count, 0);
    CHECK_EQ_INT(r.visited, 1);

    /* forgotten_upto only grows: freeing "c", which lost nothing new, keeps 2. */
    hd_hub_unsubscribe_all(hub, &s.sub);
    r = read_one(hub, "c", ID(1));
    CHECK_EQ_STR(r.gap_to[0], ID(2));
    hd_hub_free(hub);
}

/* ---------------------------------------------------------------- reading many topics */

static void test_merge_across_topics(void)
{
    hd_hub *hub = default_hub();
    const char *order = "abcacbbbacca"; /* seqs 1..12 */
    for (size_t i = 0; order[i]; i++) {
        char topic[2] = {order[i], 0};
        publish(hub, topic);
    }
    publish(hub, "other"); /* 13, not read */

    const char *topics[] = {"c", "a", "b"};
    read_result r = read_from(hub, topics, 3, ID(0), 0);
    CHECK_EQ_INT(r.visited, 12);
    CHECK_EQ_INT(r.msg_count, 12);
    for (size_t i = 0; i < 12; i++)
        CHECK_EQ_INT(r.seqs[i], i + 1);
    CHECK(!r.more);

    r = read_from(hub, topics, 3, ID(5), 0);
    CHECK_EQ_INT(r.visited, 7);
    CHECK_EQ_INT(r.seqs[0], 6);
    CHECK_EQ_INT(r.seqs[6], 12);

    /* Only "a" and "c". */
    const char *two[] = {"a", "c"};
    r = read_from(hub, two, 2, ID(0), 0);
    CHECK_EQ_INT(r.visited, 8);
    uint64_t expected[] = {1, 3, 4, 5, 9, 10, 11, 12};
    for (size_t i = 0; i < 8; i++)
        CHECK_EQ_INT(r.seqs[i], expected[i]);
    hd_hub_free(hub);
}

static void test_limit_and_more(void)
{
    hd_hub *hub = default_hub();
    for (int i = 0; i < 6; i++)
        publish(hub, i % 2 ? "a" : "b");
    const char *topics[] = {"a", "b"};

    read_result r = read_from(hub, topics, 2, ID(0), 4);
    CHECK_EQ_INT(r.visited, 4);
    CHECK_EQ_INT(r.seqs[3], 4);
    CHECK(r.more);

    r = read_from(hub, topics, 2, ID(4), 4);
    CHECK_EQ_INT(r.visited, 2);
    CHECK(!r.more);

    r = read_from(hub, topics, 2, ID(0), 6);
    CHECK_EQ_INT(r.visited, 6);
    CHECK(!r.more);

    r = read_from(hub, topics, 2, ID(0), 1);
    CHECK_EQ_INT(r.visited, 1);
    CHECK_EQ_INT(r.seqs[0], 1);
    CHECK(r.more);

    /* The visitor stops the read: more tells whether anything was left. */
    r = read_stopping(hub, topics, 2, ID(0), 0, 2);
    CHECK_EQ_INT(r.visited, 2);
    CHECK_EQ_INT(r.seqs[1], 2);
    CHECK(r.more);
    r = read_stopping(hub, topics, 2, ID(0), 0, 6);
    CHECK_EQ_INT(r.visited, 6);
    CHECK(!r.more);

    /* more and cut may be NULL. */
    size_t lens[] = {1, 1};
    hd_history_query q = {.topics = topics, .topic_lens = lens, .topic_count = 2, .limit = 2};
    hd_hub_parse_cursor(hub, ID(0), 10, &q.cursor);
    read_result sink;
    memset(&sink, 0, sizeof(sink));
    CHECK_EQ_INT(hd_hub_read_history(hub, &q, &collector, &sink, NULL, NULL), 2);
    hd_hub_free(hub);
}

static void test_duplicate_and_unknown_topics(void)
{
    hd_hub *hub = default_hub();
    publish(hub, "a");
    publish(hub, "b");
    publish(hub, "a");
    const char *topics[] = {"a", "nope", "b", "a", "nope"};
    read_result r = read_from(hub, topics, 5, ID(0), 0);
    CHECK_EQ_INT(r.visited, 3);
    CHECK_EQ_INT(r.seqs[0], 1);
    CHECK_EQ_INT(r.seqs[1], 2);
    CHECK_EQ_INT(r.seqs[2], 3);
    CHECK_EQ_INT(r.gap_count, 0);
    CHECK_EQ_INT(topic_count(hub), 2); /* reading creates no topic */

    r = read_from(hub, topics, 5, "deadbeef-3", 0);
    CHECK_EQ_INT(r.visited, 3);
    CHECK_EQ_INT(r.gap_count, 3);
    CHECK_EQ_STR(r.gap_topic[0], "a");
    CHECK_EQ_STR(r.gap_topic[1], "nope");
    CHECK_EQ_STR(r.gap_topic[2], "b");

    r = read_from(hub, topics, 0, ID(0), 0);
    CHECK_EQ_INT(r.visited, 0);
    hd_hub_free(hub);
}

static void test_foreign_epoch_gaps(void)
{
    hd_hub *hub = hub_with(2, 1 << 20, 0, 0);
    publish(hub, "a"); /* 1, evicted */
    publish(hub, "a"); /* 2 */
    publish(hub, "b"); /* 3 */
    publish(hub, "a"); /* 4 */

    const char *topics[] = {"b", "a"};
    /* Even a foreign seq far beyond ours reads everything held. */
    read_result r = read_from(hub, topics, 2, "12345678-99", 0);
    CHECK_EQ_INT(r.gap_count, 2);
    CHECK_EQ_STR(r.gap_topic[0], "b");
    CHECK_EQ_STR(r.gap_from[0], "12345678-99");
    CHECK_EQ_STR(r.gap_to[0], ID(0));
    CHECK_EQ_STR(r.gap_topic[1], "a");
    CHECK_EQ_STR(r.gap_from[1], "12345678-99");
    CHECK_EQ_STR(r.gap_to[1], ID(1));
    CHECK_EQ_INT(r.gap_to_seq[0], 0);
    CHECK_EQ_INT(r.gap_to_seq[1], 1);
    CHECK_EQ_INT(r.visited, 3);
    CHECK_EQ_INT(r.seqs[0], 2);
    CHECK_EQ_INT(r.seqs[1], 3);
    CHECK_EQ_INT(r.seqs[2], 4);

    /* Gaps come before messages and are not counted by limit. */
    r = read_from(hub, topics, 2, "12345678-0", 1);
    CHECK_EQ_INT(r.gap_count, 2);
    CHECK_EQ_INT(r.visited, 1);
    CHECK(r.more);

    /* Same epoch: a gap only for the topic that lost something after the cursor. */
    r = read_from(hub, topics, 2, ID(0), 0);
    CHECK_EQ_INT(r.gap_count, 1);
    CHECK_EQ_STR(r.gap_topic[0], "a");
    CHECK_EQ_STR(r.gap_from[0], ID(0));
    CHECK_EQ_STR(r.gap_to[0], ID(1));
    hd_hub_free(hub);
}

/* ---------------------------------------------------------------- fan-out */

static void test_fan_out(void)
{
    hd_hub *hub = default_hub();
    int wakeups = 0;
    hd_hub_set_notify(hub, 0, count_notify, &wakeups);
    test_sub s1, s2, s3;
    test_sub_init(&s1);
    test_sub_init(&s2);
    test_sub_init(&s3);
    CHECK_EQ_INT(subscribe(hub, &s1, "a"), HD_HUB_OK);
    CHECK_EQ_INT(subscribe(hub, &s1, "b"), HD_HUB_OK);
    CHECK_EQ_INT(subscribe(hub, &s2, "a"), HD_HUB_OK);
    CHECK_EQ_INT(subscribe(hub, &s3, "b"), HD_HUB_OK);
    CHECK_EQ_INT(subscribe(hub, &s3, "bad name"), HD_HUB_BAD_TOPIC);
    CHECK_EQ_INT(s3.sub.subscription_count, 1);

    size_t n = 99;
    CHECK_EQ_INT(hub_publish(hub, "a", 1, NULL, 0, "x", 1, 0, NULL, &n), HD_HUB_OK);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(hub_publish(hub, "b", 1, NULL, 0, "x", 1, 0, NULL, &n), HD_HUB_OK);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(hub_publish(hub, "c", 1, NULL, 0, "x", 1, 0, NULL, &n), HD_HUB_OK);
    CHECK_EQ_INT(n, 0);
    /* Queued for the worker, which is woken once for the burst, and delivered when it runs. */
    CHECK_EQ_INT(s1.delivered, 0);
    CHECK_EQ_INT(wakeups, 1);
    deliver_queued(hub);
    CHECK_EQ_INT(s1.delivered, 2);
    CHECK_EQ_INT(s1.seqs[0], 1);
    CHECK_EQ_INT(s1.seqs[1], 2);
    CHECK_EQ_INT(s2.delivered, 1);
    CHECK_EQ_INT(s3.delivered, 1);
    CHECK_EQ_INT(s3.seqs[0], 2);

    /* Subscribing twice is a no-op: one delivery, one subscription. */
    CHECK_EQ_INT(subscribe(hub, &s2, "a"), HD_HUB_OK);
    CHECK_EQ_INT(s2.sub.subscription_count, 1);
    CHECK_EQ_INT(subscribers_of(hub, "a"), 2);

    hd_hub_unsubscribe(hub, &s1.sub, "a", 1);
    hd_hub_unsubscribe(hub, &s1.sub, "a", 1);        /* not subscribed: no-op */
    hd_hub_unsubscribe(hub, &s1.sub, "zzz", 3);      /* unknown topic: no-op */
    hd_hub_unsubscribe(hub, &s3.sub, "bad name", 8); /* invalid name: no-op */
    CHECK_EQ_INT(hub_publish(hub, "a", 1, NULL, 0, "x", 1, 0, NULL, &n), HD_HUB_OK);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(wakeups, 2); /* the inbox had been emptied */
    deliver_queued(hub);
    CHECK_EQ_INT(s1.delivered, 2);
    CHECK_EQ_INT(s2.delivered, 2);

    hd_hub_unsubscribe_all(hub, &s1.sub);
    CHECK(s1.sub.subscriptions == NULL);
    CHECK_EQ_INT(s1.sub.subscription_count, 0);
    CHECK_EQ_INT(s1.sub.subscription_cap, 0);
    CHECK_EQ_INT(hub_publish(hub, "b", 1, NULL, 0, "x", 1, 0, NULL, &n), HD_HUB_OK);
    CHECK_EQ_INT(n, 1);
    deliver_queued(hub);
    CHECK_EQ_INT(s1.delivered, 2);
    CHECK_EQ_INT(s3.delivered, 2);

    /* A subscriber that left before its worker ran is not delivered what was queued for it. */
    CHECK_EQ_INT(hub_publish(hub, "b", 1, NULL, 0, "x", 1, 0, NULL, &n), HD_HUB_OK);
    hd_hub_unsubscribe_all(hub, &s3.sub);
    deliver_queued(hub);
    CHECK_EQ_INT(s3.delivered, 2);

    /* Unregistered: messages still queue, and no wake-up follows. */
    CHECK_EQ_INT(subscribe(hub, &s3, "b"), HD_HUB_OK);
    hd_hub_set_notify(hub, 0, NULL, NULL);
    int before = wakeups;
    CHECK_EQ_INT(hub_publish(hub, "b", 1, NULL, 0, "x", 1, 0, NULL, &n), HD_HUB_OK);
    CHECK_EQ_INT(wakeups, before);
    deliver_queued(hub);
    CHECK_EQ_INT(s3.delivered, 3);

    /* Unsubscribing everyone from a topic with history keeps the topic. */
    hd_hub_unsubscribe_all(hub, &s2.sub);
    hd_hub_unsubscribe_all(hub, &s3.sub);
    hd_hub_unsubscribe_all(hub, &s3.sub); /* twice is harmless */
    CHECK_EQ_INT(topic_count(hub), 3);
    CHECK_EQ_INT(subscribers_of(hub, "a"), 0);
    hd_hub_free(hub);
}

/* Many subscriptions move the array (realloc) and fill holes; links must survive both. */
static void test_many_subscriptions_stay_linked(void)
{
    hd_hub *hub = default_hub();
    test_sub s[3];
    char name[16];
    for (int k = 0; k < 3; k++)
        test_sub_init(&s[k]);
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "t%02d", i);
        for (int k = 0; k < 3; k++)
            CHECK_EQ_INT(subscribe(hub, &s[k], name), HD_HUB_OK);
    }
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "t%02d", i);
        size_t n = 0;
        hub_publish(hub, name, strlen(name), NULL, 0, "", 0, 0, NULL, &n);
        CHECK_EQ_INT(n, 3);
    }
    deliver_queued(hub);
    for (int k = 0; k < 3; k++)
        CHECK_EQ_INT(s[k].delivered, 40);

    /* s[1] leaves the even topics, in an order that moves elements around. */
    for (int i = 0; i < 40; i += 2) {
        snprintf(name, sizeof(name), "t%02d", i);
        hd_hub_unsubscribe(hub, &s[1].sub, name, strlen(name));
    }
    CHECK_EQ_INT(s[1].sub.subscription_count, 20);
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "t%02d", i);
        size_t n = 0;
        hub_publish(hub, name, strlen(name), NULL, 0, "", 0, 0, NULL, &n);
        CHECK_EQ_INT(n, i % 2 ? 3 : 2);
        CHECK_EQ_INT(subscribers_of(hub, name), i % 2 ? 3 : 2);
    }
    deliver_queued(hub);
    CHECK_EQ_INT(s[0].delivered, 80);
    CHECK_EQ_INT(s[1].delivered, 60);
    for (int k = 0; k < 3; k++)
        hd_hub_unsubscribe_all(hub, &s[k].sub);
    hd_hub_free(hub);
}

/* ---------------------------------------------------------------- limits and scale */

static void test_max_topics(void)
{
    hd_hub *hub = hub_with(1000, 1 << 20, 0, 2);
    test_sub s;
    test_sub_init(&s);
    CHECK(publish(hub, "a") != 0);
    CHECK_EQ_INT(subscribe(hub, &s, "b"), HD_HUB_OK);
    CHECK_EQ_INT(hub_publish(hub, "c", 1, NULL, 0, "x", 1, 0, NULL, NULL), HD_HUB_TOO_MANY_TOPICS);
    CHECK_EQ_INT(hd_hub_check_publish(hub, "c", 1, NULL, 0), HD_HUB_TOO_MANY_TOPICS);
    CHECK_EQ_INT(hd_hub_check_publish(hub, "c", 1, "bad event", 9), HD_HUB_BAD_EVENT);
    CHECK_EQ_INT(subscribe(hub, &s, "c"), HD_HUB_TOO_MANY_TOPICS);
    CHECK_EQ_INT(s.sub.subscription_count, 1);

    /* Existing topics are still fine. */
    CHECK(publish(hub, "a") != 0);
    CHECK(publish(hub, "b") != 0);
    CHECK_EQ_INT(hd_hub_check_publish(hub, "b", 1, NULL, 0), HD_HUB_OK);
    CHECK_EQ_INT(subscribe(hub, &s, "a"), HD_HUB_OK);
    CHECK_EQ_INT(topic_count(hub), 2);
    hd_hub_unsubscribe_all(hub, &s.sub);
    hd_hub_free(hub);

    /* A freed topic makes room again. */
    hub = hub_with(1000, 1 << 20, 0, 1);
    CHECK_EQ_INT(subscribe(hub, &s, "a"), HD_HUB_OK);
    CHECK_EQ_INT(subscribe(hub, &s, "b"), HD_HUB_TOO_MANY_TOPICS);
    hd_hub_unsubscribe(hub, &s.sub, "a", 1);
    CHECK_EQ_INT(subscribe(hub, &s, "b"), HD_HUB_OK);
    hd_hub_unsubscribe_all(hub, &s.sub);
    hd_hub_free(hub);
}

static void test_many_topics(void)
{
    hd_hub *hub = hub_with(4, 1 << 20, 1, 0);
    char name[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "topic-%d", i);
        CHECK_EQ_INT(publish_at(hub, name, "x", i), (uint64_t)i + 1);
    }
    CHECK_EQ_INT(topic_count(hub), 5000);
    for (int i = 0; i < 5000; i += 7) {
        snprintf(name, sizeof(name), "topic-%d", i);
        hd_topic_info info;
        CHECK(hd_hub_topic_info(hub, name, strlen(name), &info));
        char expected[HD_ID_MAX];
        snprintf(expected, sizeof(expected), "0badf00d-%d", i + 1);
        CHECK_EQ_STR(info.last_id, expected);
    }
    /* Expire in two sweeps, so the table shrinks while others remain. */
    hd_hub_expire(hub, 1000 + 2499);
    CHECK_EQ_INT(topic_count(hub), 2500);
    hd_topic_info info;
    CHECK(!hd_hub_topic_info(hub, "topic-2499", 10, &info));
    CHECK(hd_hub_topic_info(hub, "topic-2500", 10, &info));
    CHECK(hd_hub_topic_info(hub, "topic-4999", 10, &info));
    hd_hub_expire(hub, 1000000);
    CHECK_EQ_INT(topic_count(hub), 0);
    CHECK(publish(hub, "again") != 0);
    CHECK_EQ_INT(topic_count(hub), 1);
    hd_hub_free(hub);
}

/* ---------------------------------------------------------------- references */

static void test_messages_outlive_hub(void)
{
    hd_hub *hub = hub_with(1, 1 << 20, 0, 0);
    hd_message *msg = NULL;
    hub_publish(hub, "t", 1, "ev", 2, "data", 4, 7, &msg, NULL);
    CHECK_EQ_INT(msg->refs, 2); /* the hub's and the caller's */
    publish(hub, "t");          /* evicts msg: the hub drops its reference */
    CHECK_EQ_INT(msg->refs, 1);
    hd_message_retain(msg);
    hd_hub_free(hub);
    CHECK_EQ_INT(msg->refs, 2);
    CHECK_EQ_MEM(msg->data, msg->data_len, "data", 4);
    hd_message_release(msg);
    hd_message_release(msg);

    /* Freeing a hub that still holds history and topics leaks nothing. */
    hub = default_hub();
    for (int i = 0; i < 50; i++)
        publish(hub, i % 2 ? "x" : "y");
    hd_hub_free(hub);
    hd_hub_free(NULL);
}

/* ---------------------------------------------------------------- introspection */

static void poll_deliver(hd_subscriber *sub, hd_message *msg)
{
    (void)sub;
    (void)msg;
}

static const hd_subscriber_ops poll_ops = {.deliver = poll_deliver, .transport = HD_TRANSPORT_POLL};

static void test_stats_and_transport_counts(void)
{
    hd_hub *hub = hub_with(3, 1 << 20, 0, 0);
    test_sub sse;
    test_sub_init(&sse);
    hd_subscriber poller;
    hd_subscriber_init(&poller, &poll_ops);
    CHECK(subscribe(hub, &sse, "t") == HD_HUB_OK);
    CHECK(subscribe(hub, &sse, "u") == HD_HUB_OK);
    CHECK(hd_hub_subscribe(hub, &poller, "t", 1) == HD_HUB_OK);
    for (int i = 0; i < 5; i++)
        publish(hub, "t");

    hd_topic_info info;
    CHECK(hd_hub_topic_info(hub, "t", 1, &info));
    CHECK_EQ_INT(info.subscribers, 2);
    CHECK_EQ_INT(info.subscribers_by_transport[HD_TRANSPORT_SSE], 1);
    CHECK_EQ_INT(info.subscribers_by_transport[HD_TRANSPORT_POLL], 1);
    CHECK_EQ_INT(info.subscribers_by_transport[HD_TRANSPORT_WEBSOCKET], 0);

    hd_hub_stats stats;
    hd_hub_get_stats(hub, &stats);
    CHECK_EQ_INT(stats.topics, 2);
    CHECK_EQ_INT(stats.subscriptions, 3);
    CHECK_EQ_INT(stats.messages_published, 5);
    CHECK_EQ_INT(stats.history_messages, 3);
    CHECK_EQ_INT(stats.history_evicted, 2);
    CHECK_EQ_INT(stats.history_bytes, info.history_bytes);

    hd_hub_unsubscribe_all(hub, &poller);
    hd_hub_unsubscribe_all(hub, &sse.sub);
    hd_hub_get_stats(hub, &stats);
    CHECK_EQ_INT(stats.subscriptions, 0);
    CHECK_EQ_INT(stats.topics, 1); /* "u" had no history and went with its subscriber */
    hd_hub_free(hub);
}

static void test_list_topics_pages_in_name_order(void)
{
    hd_hub *hub = default_hub();
    /* Inserted out of order, including a name that is a prefix of another. */
    static const char *const names[] = {"b/2", "a", "c", "a/1", "b/1", "ab", "a/0", "b/10"};
    static const char *const sorted[] = {"a", "a/0", "a/1", "ab", "b/1", "b/10", "b/2", "c"};
    const size_t count = sizeof(names) / sizeof(names[0]);
    for (size_t i = 0; i < count; i++)
        publish(hub, names[i]);

    hd_topic_summary page[3];
    bool more = false;
    char after[64] = "";
    size_t seen = 0;
    for (int pages = 0; pages < 10; pages++) {
        size_t n = hd_hub_list_topics(hub, "", 0, after, strlen(after), 3, page, &more);
        for (size_t i = 0; i < n; i++, seen++) {
            CHECK(seen < count);
            if (seen < count)
                CHECK(page[i].name_len == strlen(sorted[seen]) &&
                      memcmp(page[i].name, sorted[seen], page[i].name_len) == 0);
            CHECK_EQ_INT(page[i].info.history_messages, 1);
        }
        if (!more)
            break;
        snprintf(after, sizeof(after), "%.*s", (int)page[n - 1].name_len, page[n - 1].name);
    }
    CHECK_EQ_INT(seen, count);

    size_t n = hd_hub_list_topics(hub, "b/", 2, "", 0, 3, page, &more);
    CHECK_EQ_INT(n, 3);
    CHECK(!more);
    CHECK(page[0].name_len == 3 && memcmp(page[0].name, "b/1", 3) == 0);
    CHECK(page[2].name_len == 3 && memcmp(page[2].name, "b/2", 3) == 0);

    n = hd_hub_list_topics(hub, "", 0, "c", 1, 3, page, &more);
    CHECK_EQ_INT(n, 0);
    CHECK(!more);

    /* Only the topics with subscribers (a cluster merges them into the store's listing). */
    test_sub s;
    test_sub_init(&s);
    CHECK_EQ_INT(subscribe(hub, &s, "b/10"), HD_HUB_OK);
    CHECK_EQ_INT(subscribe(hub, &s, "a/0"), HD_HUB_OK);
    CHECK_EQ_INT(subscribe(hub, &s, "quiet"), HD_HUB_OK);
    n = hd_hub_list_subscribed_topics(hub, "", 0, "", 0, 2, page, &more);
    CHECK_EQ_INT(n, 2);
    CHECK(more);
    CHECK(page[0].name_len == 3 && memcmp(page[0].name, "a/0", 3) == 0);
    CHECK(page[1].name_len == 4 && memcmp(page[1].name, "b/10", 4) == 0);
    CHECK_EQ_INT(page[1].info.subscribers, 1);
    n = hd_hub_list_subscribed_topics(hub, "", 0, "b/10", 4, 3, page, &more);
    CHECK_EQ_INT(n, 1);
    CHECK(!more);
    CHECK(page[0].name_len == 5 && memcmp(page[0].name, "quiet", 5) == 0);
    hd_hub_unsubscribe_all(hub, &s.sub);
    hd_hub_free(hub);
}

static void test_idempotency_keys_valid(void)
{
    char key[130];
    memset(key, 'k', sizeof(key));
    CHECK(hd_idempotency_key_valid("k", 1));
    CHECK(hd_idempotency_key_valid(key, 128));
    CHECK(!hd_idempotency_key_valid(key, 129));
    CHECK(!hd_idempotency_key_valid("", 0));
    CHECK(hd_idempotency_key_valid(" !~{}\"a b", 9)); /* printable ASCII, space to ~ */
    const char *bad[] = {"a\tb", "a\x7f", "caf\xc3\xa9", "\x1f", "a\nb", "\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(!hd_idempotency_key_valid(bad[i], strlen(bad[i])));
    CHECK(!hd_idempotency_key_valid("a\0b", 3));
}

static hd_hub *idempotent_hub(uint32_t ttl_s, uint32_t max_keys)
{
    hd_hub_options options = {
        .history_max_messages = 1000,
        .history_max_bytes = 4 << 20,
        .epoch = EPOCH,
        .idempotency_ttl_s = ttl_s,
        .max_idempotency_keys = max_keys,
    };
    return hd_hub_new(&options);
}

/* Publishes data to topic with key at now_ms; the seq answered, negative for a repeat. */
static int64_t publish_keyed(hd_hub *hub, const char *topic, const char *key, int64_t now_ms)
{
    hd_publish_item item = {.topic = topic,
                            .topic_len = strlen(topic),
                            .data = "x",
                            .data_len = 1,
                            .idempotency_key = key,
                            .idempotency_key_len = key ? strlen(key) : 0};
    hd_message *msg = NULL;
    bool repeated = false;
    if (hd_hub_publish_batch(hub, &item, 1, now_ms, &msg, NULL, &repeated, NULL) != HD_HUB_OK)
        return 0;
    int64_t seq = (int64_t)msg->seq;
    hd_message_release(msg);
    return repeated ? -seq : seq;
}

static void test_idempotent_publish(void)
{
    hd_hub *hub = idempotent_hub(10, 100);
    test_sub ts;
    test_sub_init(&ts);
    CHECK_EQ_INT(hd_hub_subscribe(hub, &ts.sub, "t", 1), HD_HUB_OK);
    CHECK_EQ_INT(publish_keyed(hub, "t", "k", 1000), 1);
    CHECK_EQ_INT(publish_keyed(hub, "t", "k", 2000), -1);  /* a repeat: the first seq */
    CHECK_EQ_INT(publish_keyed(hub, "u", "k", 2000), 2);   /* another topic */
    CHECK_EQ_INT(publish_keyed(hub, "t", NULL, 2000), 3);  /* no key */
    CHECK_EQ_INT(publish_keyed(hub, "t", "k", 10999), -1); /* within the TTL */
    CHECK_EQ_INT(publish_keyed(hub, "t", "k", 11000), 4);  /* expired: new */
    CHECK_EQ_INT(publish_keyed(hub, "t", "k", 12000), -4);
    hd_hub_deliver_pending(hub, UINT64_MAX);
    CHECK_EQ_INT(ts.delivered, 3); /* 1, 3, 4 */

    /* A batch: an item repeating an earlier one of the same batch is a repeat too. */
    hd_publish_item items[3] = {
        {.topic = "t",
         .topic_len = 1,
         .data = "a",
         .data_len = 1,
         .idempotency_key = "b",
         .idempotency_key_len = 1},
        {.topic = "t",
         .topic_len = 1,
         .data = "b",
         .data_len = 1,
         .idempotency_key = "b",
         .idempotency_key_len = 1},
        {.topic = "t",
         .topic_len = 1,
         .data = "c",
         .data_len = 1,
         .idempotency_key = "k",
         .idempotency_key_len = 1},
    };
    hd_message *out[3];
    size_t subscribers[3];
    bool repeated[3];
    CHECK_EQ_INT(hd_hub_publish_batch(hub, items, 3, 12000, out, subscribers, repeated, NULL),
                 HD_HUB_OK);
    CHECK(!repeated[0] && repeated[1] && repeated[2]);
    CHECK_EQ_INT(out[0]->seq, 5);
    CHECK_EQ_INT(out[1]->seq, 5);
    CHECK_EQ_INT(out[2]->seq, 4);
    CHECK_EQ_STR(out[2]->id, ID(4));
    CHECK_EQ_INT(subscribers[2], 1);
    for (int i = 0; i < 3; i++)
        hd_message_release(out[i]);

    /* A bad key refuses the whole batch. */
    items[1].idempotency_key = "";
    items[1].idempotency_key_len = 0;
    size_t failed = 9;
    CHECK_EQ_INT(hd_hub_publish_batch(hub, items, 3, 12000, NULL, NULL, NULL, &failed),
                 HD_HUB_BAD_IDEMPOTENCY_KEY);
    CHECK_EQ_INT(failed, 1);
    hd_hub_deliver_pending(hub, UINT64_MAX);
    CHECK_EQ_INT(ts.delivered, 4);
    hd_hub_unsubscribe_all(hub, &ts.sub);
    hd_hub_free(hub);
}

static void test_idempotency_bounded(void)
{
    /* At most 3 keys: the oldest is forgotten first, and its repeat publishes again. */
    hd_hub *hub = idempotent_hub(10, 3);
    CHECK_EQ_INT(publish_keyed(hub, "t", "a", 1000), 1);
    CHECK_EQ_INT(publish_keyed(hub, "t", "b", 1000), 2);
    CHECK_EQ_INT(publish_keyed(hub, "t", "c", 1000), 3);
    CHECK_EQ_INT(publish_keyed(hub, "t", "d", 1000), 4);
    CHECK_EQ_INT(publish_keyed(hub, "t", "b", 1000), -2);
    CHECK_EQ_INT(publish_keyed(hub, "t", "a", 1000), 5);
    CHECK_EQ_INT(publish_keyed(hub, "t", "b", 1000), 6); /* forgotten for a's */
    CHECK_EQ_INT(publish_keyed(hub, "t", "d", 1000), -4);
    hd_hub_free(hub);

    /* A TTL of 0 remembers nothing. */
    hub = idempotent_hub(0, 3);
    CHECK_EQ_INT(publish_keyed(hub, "t", "a", 1000), 1);
    CHECK_EQ_INT(publish_keyed(hub, "t", "a", 1000), 2);
    hd_hub_free(hub);

    /* Many keys, most expired, all freed with the hub (ASan). */
    hub = idempotent_hub(1, 1000);
    char key[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        CHECK(publish_keyed(hub, "t", key, i) > 0);
    }
    hd_hub_free(hub);
}

int main(void)
{
    RUN_TEST(test_topic_names);
    RUN_TEST(test_event_names);
    RUN_TEST(test_ids_monotonic_across_topics);
    RUN_TEST(test_random_epoch);
    RUN_TEST(test_publish_rejects_bad_names);
    RUN_TEST(test_parse_cursor);
    RUN_TEST(test_cursor_positions);
    RUN_TEST(test_eviction_by_count);
    RUN_TEST(test_eviction_by_bytes);
    RUN_TEST(test_oversize_message_kept_alone);
    RUN_TEST(test_ttl_expiry);
    RUN_TEST(test_total_budget_evicts_oldest_hub_wide);
    RUN_TEST(test_no_ttl_keeps_history);
    RUN_TEST(test_topic_freed_and_recreated);
    RUN_TEST(test_forgotten_upto);
    RUN_TEST(test_merge_across_topics);
    RUN_TEST(test_limit_and_more);
    RUN_TEST(test_duplicate_and_unknown_topics);
    RUN_TEST(test_foreign_epoch_gaps);
    RUN_TEST(test_fan_out);
    RUN_TEST(test_many_subscriptions_stay_linked);
    RUN_TEST(test_max_topics);
    RUN_TEST(test_many_topics);
    RUN_TEST(test_messages_outlive_hub);
    RUN_TEST(test_stats_and_transport_counts);
    RUN_TEST(test_list_topics_pages_in_name_order);
    RUN_TEST(test_idempotency_keys_valid);
    RUN_TEST(test_idempotent_publish);
    RUN_TEST(test_idempotency_bounded);
    return test_summary();
}
