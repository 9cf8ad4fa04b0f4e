/*
 * The Redis engine's pure parts and the hub's side of cluster mode: the
 * pub/sub payload parser, the gap rule, the merge of a read's topics, a
 * catch-up round's bound, and hd_hub_ingest / hd_hub_advance (duplicates,
 * a late message put back in seq order, an epoch change clearing the
 * mirror, cursors beyond what the node saw), and reads answered from the
 * node's own history (hd_hub_read_covered) and what moves a subscription's
 * seen position.
 */
#include "engine/redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#define EPOCH 0x0badf00d

static bool parse(const char *text, hd_redis_payload *p)
{
    return hd_redis_payload_parse(text, strlen(text), p);
}

static void test_payload_parse(void)
{
    hd_redis_payload p;
    CHECK(parse("0badf00d:42:7:1700000000123:5:hello{\"a\":1}", &p));
    CHECK_EQ_INT(p.epoch, EPOCH);
    CHECK_EQ_INT(p.seq, 42);
    CHECK_EQ_INT(p.prev, 7);
    CHECK_EQ_INT(p.time_ms, 1700000000123LL);
    CHECK_EQ_MEM(p.event, p.event_len, "hello", 5);
    CHECK_EQ_MEM(p.data, p.data_len, "{\"a\":1}", 7);

    /* No event, empty data, data holding colons and binary. */
    CHECK(parse("0badf00d:1:0:5:0:", &p));
    CHECK(p.event == NULL);
    CHECK_EQ_INT(p.data_len, 0);
    static const char binary[] = "0badf00d:9:3:5:0:a:b\0c";
    CHECK(hd_redis_payload_parse(binary, sizeof(binary) - 1, &p));
    CHECK_EQ_MEM(p.data, p.data_len, "a:b\0c", 5);
    /* Seqs past 2^53 (Lua's %.14g pitfall is the script's; the parser takes any uint64). */
    CHECK(parse("0badf00d:18446744073709551615:0:5:0:x", &p));
    CHECK(p.seq == UINT64_MAX);

    /* Refused. */
    static const char *const bad[] = {
        "",
        "0badf00d",
        "0BADF00D:1:0:5:0:x",                    /* herald's epochs are lowercase */
        "badf00d:1:0:5:0:x",                     /* 7 digits */
        "0badf00d:0:0:5:0:x",                    /* seq 0 */
        "0badf00d:3:3:5:0:x",                    /* prev not before seq */
        "0badf00d:1:0:5:9:ab",                   /* event longer than the rest */
        "0badf00d:1:0:5:65:",                    /* event over 64 */
        "0badf00d:1:0:5:0",                      /* no colon after the event length */
        "0badf00d:-1:0:5:0:x",                   /* sign */
        "0badf00d:18446744073709551616:0:5:0:x", /* overflow */
        "0badf00d:1::5:0:x",                     /* empty number */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], &p)) {
            fprintf(stderr, "accepted: %s\n", bad[i]);
            CHECK(false);
        }
    }
}

static void test_epoch_parse(void)
{
    uint32_t epoch;
    CHECK(hd_redis_epoch_parse("0badf00d", 8, &epoch) && epoch == EPOCH);
    CHECK(!hd_redis_epoch_parse("0badf00", 7, &epoch));
    CHECK(!hd_redis_epoch_parse("0badf00x", 8, &epoch));
    CHECK(!hd_redis_epoch_parse("0badf00d0", 9, &epoch));
}

static hd_message *msg(const char *topic, uint64_t seq, uint32_t epoch)
{
    return hd_message_new(topic, strlen(topic), NULL, 0, "d", 1, seq, epoch, 1000);
}

static hd_cursor cursor_of(const char *text)
{
    hd_cursor c;
    CHECK(hd_cursor_parse(text, strlen(text), EPOCH, &c));
    return c;
}

static void test_read_gap(void)
{
    hd_redis_topic_read t = {.topic = "a", .topic_len = 1, .lost_upto = 5};
    hd_gap gap;
    hd_cursor c = cursor_of("0badf00d-4");
    CHECK(hd_redis_read_gap(&c, EPOCH, EPOCH, &t, &gap));
    CHECK_EQ_MEM(gap.to, gap.to_len, "0badf00d-5", 10);
    CHECK_EQ_MEM(gap.from, gap.from_len, "0badf00d-4", 10);
    CHECK_EQ_INT(gap.to_seq, 5);
    c = cursor_of("0badf00d-5");
    CHECK(!hd_redis_read_gap(&c, EPOCH, EPOCH, &t, &gap)); /* lost up to what it saw: no gap */
    c = cursor_of("earliest");
    CHECK(!hd_redis_read_gap(&c, 0, EPOCH, &t, &gap));
    /* Another epoch always has one, to the newest lost of this one (0: nothing lost). */
    c = cursor_of("12345678-900");
    t.lost_upto = 0;
    CHECK(hd_redis_read_gap(&c, 0x12345678, EPOCH, &t, &gap));
    CHECK_EQ_MEM(gap.to, gap.to_len, "0badf00d-0", 10);
    /* The hub's epoch does not matter: the engine's own parse of the cursor does. */
    c = cursor_of("12345678-900");
    t.lost_upto = 3;
    CHECK(!hd_redis_read_gap(&c, 0x12345678, 0x12345678, &t, &gap));
}

static void test_merge(void)
{
    hd_message *a[] = {msg("a", 2, EPOCH), msg("a", 5, EPOCH), msg("a", 9, EPOCH)};
    hd_message *b[] = {msg("b", 3, EPOCH), msg("b", 4, EPOCH)};
    hd_redis_topic_read topics[] = {
        {.topic = "a", .topic_len = 1, .messages = a, .count = 3},
        {.topic = "b", .topic_len = 1, .messages = b, .count = 2},
        {.topic = "c", .topic_len = 1, .messages = NULL, .count = 0},
    };
    hd_message *out[8];
    bool more;
    size_t n = hd_redis_merge(topics, 3, 8, out, &more);
    CHECK_EQ_INT(n, 5);
    CHECK(!more);
    static const uint64_t want[] = {2, 3, 4, 5, 9};
    for (size_t i = 0; i < n; i++)
        CHECK_EQ_INT(out[i]->seq, want[i]);
    n = hd_redis_merge(topics, 3, 3, out, &more);
    CHECK_EQ_INT(n, 3);
    CHECK(more);
    CHECK_EQ_INT(out[2]->seq, 4);
    n = hd_redis_merge(topics, 3, 5, out, &more);
    CHECK_EQ_INT(n, 5);
    CHECK(!more); /* exactly the limit: nothing left */
    /* The same topic twice is taken once. */
    hd_redis_topic_read twice[] = {topics[1], topics[1]};
    n = hd_redis_merge(twice, 2, 8, out, &more);
    CHECK_EQ_INT(n, 2);
    for (size_t i = 0; i < 3; i++)
        hd_message_release(a[i]);
    for (size_t i = 0; i < 2; i++)
        hd_message_release(b[i]);
}

/* A catch-up round's bound: paged reads' last entries and the positions of topics still to read. */
static void test_catch_up_bound(void)
{
    hd_message *a[] = {msg("a", 2, EPOCH), msg("a", 5, EPOCH), msg("a", 9, EPOCH)};
    hd_message *b[] = {msg("b", 3, EPOCH), msg("b", 7, EPOCH)};
    hd_redis_topic_read reads[] = {
        {.topic = "a", .topic_len = 1, .messages = a, .count = 3},
        {.topic = "b", .topic_len = 1, .messages = b, .count = 2},
        {.topic = "c", .topic_len = 1, .messages = NULL, .count = 0},
    };
    bool none[] = {false, false, false};
    CHECK(hd_redis_catch_up_bound(reads, none, 3, NULL, 0) == UINT64_MAX); /* all complete */
    CHECK(hd_redis_catch_up_bound(NULL, NULL, 0, NULL, 0) == UINT64_MAX);
    bool a_paged[] = {true, false, false};
    CHECK_EQ_INT(hd_redis_catch_up_bound(reads, a_paged, 3, NULL, 0), 9);
    bool both_paged[] = {true, true, false};
    /* b may hold more right after 7: a's 9 must wait for it. */
    CHECK_EQ_INT(hd_redis_catch_up_bound(reads, both_paged, 3, NULL, 0), 7);
    bool empty_paged[] = {false, false, true}; /* nothing left of it: no bound of its own */
    CHECK(hd_redis_catch_up_bound(reads, empty_paged, 3, NULL, 0) == UINT64_MAX);
    /* A topic still to be read from 4: anything of it may come at 5. */
    uint64_t positions[] = {12, 4};
    CHECK_EQ_INT(hd_redis_catch_up_bound(reads, both_paged, 3, positions, 2), 4);
    CHECK_EQ_INT(hd_redis_catch_up_bound(reads, none, 3, positions, 1), 12);
    uint64_t other_epoch[] = {0}; /* one whose last is of another epoch: nothing goes */
    CHECK_EQ_INT(hd_redis_catch_up_bound(reads, none, 3, other_epoch, 1), 0);
    for (size_t i = 0; i < 3; i++)
        hd_message_release(a[i]);
    for (size_t i = 0; i < 2; i++)
        hd_message_release(b[i]);
}

/* ---------------------------------------------------------------- GET /topics */

static hd_topic_summary summary(const char *name, size_t subscribers, size_t history)
{
    hd_topic_summary t = {.name_len = strlen(name)};
    memcpy(t.name, name, t.name_len);
    t.info.subscribers = subscribers;
    t.info.history_messages = history;
    if (history > 0)
        snprintf(t.info.last_id, sizeof(t.info.last_id), "0badf00d-%zu", history);
    return t;
}

static void test_topic_fill(void)
{
    hd_topic_info info = {.subscribers = 3};
    hd_redis_topic_stats stats = {.exists = true, .count = 2, .bytes = 10, .last = 42};
    hd_redis_topic_fill(&info, EPOCH, &stats);
    CHECK_EQ_INT(info.subscribers, 3); /* the node's own, untouched */
    CHECK_EQ_INT(info.history_messages, 2);
    CHECK_EQ_INT(info.history_bytes, 10 + 2 * sizeof(hd_message)); /* as hd_message_cost counts */
    CHECK_EQ_STR(info.last_id, "0badf00d-42");
    /* Every entry expired: nothing held, but the topic's newest id is still known. */
    stats = (hd_redis_topic_stats){.exists = true, .count = 0, .bytes = 0, .last = 42};
    hd_redis_topic_fill(&info, EPOCH, &stats);
    CHECK_EQ_INT(info.history_bytes, 0);
    CHECK_EQ_STR(info.last_id, "0badf00d-42");
    /* A meta of another epoch (or none) says nothing. */
    stats = (hd_redis_topic_stats){.exists = false, .count = 5, .bytes = 9, .last = 7};
    hd_redis_topic_fill(&info, EPOCH, &stats);
    CHECK_EQ_INT(info.history_messages, 0);
    CHECK_EQ_INT(info.history_bytes, 0);
    CHECK_EQ_STR(info.last_id, "");
}

static void check_names(const hd_topic_summary *out, size_t n, const char *const *want,
                        size_t want_n)
{
    CHECK_EQ_INT(n, want_n);
    for (size_t i = 0; i < n && i < want_n; i++)
        CHECK_EQ_MEM(out[i].name, out[i].name_len, want[i], strlen(want[i]));
}

static void test_topics_merge(void)
{
    /* The index: topics with history; local: this node's subscribed ones. */
    hd_topic_summary index[] = {summary("a", 0, 1), summary("b", 0, 2), summary("b.x", 0, 3),
                                summary("d", 0, 4)};
    hd_topic_summary local[] = {summary("a.0", 1, 0), summary("b", 2, 0), summary("c", 1, 0)};
    hd_topic_summary out[8];
    bool more;
    size_t n = hd_redis_topics_merge(index, 4, local, 3, 8, out, &more);
    static const char *const all[] = {"a", "a.0", "b", "b.x", "c", "d"};
    check_names(out, n, all, 6);
    CHECK(!more);
    /* A name on both sides: this node's subscribers, the cluster's history. */
    CHECK_EQ_INT(out[2].info.subscribers, 2);
    CHECK_EQ_INT(out[2].info.history_messages, 2);
    CHECK_EQ_STR(out[2].info.last_id, "0badf00d-2");
    CHECK_EQ_INT(out[0].info.subscribers, 0);
    CHECK_EQ_INT(out[1].info.subscribers, 1);
    CHECK_EQ_STR(out[1].info.last_id, "");

    /* Cut by the limit: more, whichever side is left. */
    n = hd_redis_topics_merge(index, 4, local, 3, 3, out, &more);
    check_names(out, n, all, 3);
    CHECK(more);
    n = hd_redis_topics_merge(index, 4, local, 3, 5, out, &more);
    check_names(out, n, all, 5);
    CHECK(more); /* d is left, on the index side */
    n = hd_redis_topics_merge(index, 3, local, 3, 5, out, &more);
    check_names(out, n, all, 5);
    CHECK(!more); /* exactly the limit */
    /* Only one side. */
    n = hd_redis_topics_merge(index, 0, local, 3, 2, out, &more);
    static const char *const locals[] = {"a.0", "b"};
    check_names(out, n, locals, 2);
    CHECK(more);
    n = hd_redis_topics_merge(index, 4, local, 0, 4, out, &more);
    static const char *const indexed[] = {"a", "b", "b.x", "d"};
    check_names(out, n, indexed, 4);
    CHECK(!more);
    n = hd_redis_topics_merge(index, 0, local, 0, 4, out, &more);
    CHECK_EQ_INT(n, 0);
    CHECK(!more);
}

static void check_range(const char *prefix, const char *after, const char *min, const char *max,
                        size_t max_len)
{
    char min_out[HD_TOPIC_NAME_MAX + 2], max_out[HD_TOPIC_NAME_MAX + 2];
    size_t min_len, got_max_len;
    hd_redis_topics_range(prefix, strlen(prefix), after, strlen(after), min_out, &min_len, max_out,
                          &got_max_len);
    CHECK_EQ_MEM(min_out, min_len, min, strlen(min));
    CHECK_EQ_MEM(max_out, got_max_len, max, max_len);
}

static void test_topics_range(void)
{
    check_range("", "", "-", "+", 1);
    check_range("", "b", "(b", "+", 1);
    check_range("chat.", "", "[chat.", "[chat.\xff", 7);
    /* after within the prefix's names, or before all of them (then the prefix starts it). */
    check_range("chat.", "chat.x", "(chat.x", "[chat.\xff", 7);
    check_range("chat.", "a", "[chat.", "[chat.\xff", 7);
    check_range("chat.", "chat", "[chat.", "[chat.\xff", 7);
    check_range("chat.", "chat.", "(chat.", "[chat.\xff", 7);
    /* after past every name of the prefix: an empty range (min above max). */
    check_range("chat.", "d", "(d", "[chat.\xff", 7);
    /* A name as long as any: the bounds still fit. */
    char longest[HD_TOPIC_NAME_MAX + 1];
    memset(longest, 'x', HD_TOPIC_NAME_MAX);
    longest[HD_TOPIC_NAME_MAX] = '\0';
    char min_out[HD_TOPIC_NAME_MAX + 2], max_out[HD_TOPIC_NAME_MAX + 2];
    size_t min_len, max_len;
    hd_redis_topics_range(longest, HD_TOPIC_NAME_MAX, longest, HD_TOPIC_NAME_MAX, min_out, &min_len,
                          max_out, &max_len);
    CHECK_EQ_INT(min_len, HD_TOPIC_NAME_MAX + 1);
    CHECK_EQ_INT(max_len, HD_TOPIC_NAME_MAX + 2);
}

/* ---------------------------------------------------------------- the hub's side */

static hd_hub *cluster_hub(void)
{
    hd_hub_options options = {
        .history_max_messages = 100,
        .history_max_bytes = 1 << 20,
        .epoch = 0x11111111,
        .cluster = true,
    };
    return hd_hub_new(&options);
}

typedef struct collected {
    uint64_t seqs[16];
    size_t n;
    size_t gaps;
} collected;

static void on_gap(void *ctx, const hd_gap *gap)
{
    (void)gap;
    ((collected *)ctx)->gaps++;
}

static bool on_message(void *ctx, hd_message *m)
{
    collected *c = ctx;
    c->seqs[c->n++] = m->seq;
    return true;
}

static collected read_all(hd_hub *hub, const char *topic)
{
    collected c = {0};
    size_t len = strlen(topic);
    hd_history_query q = {.topics = &topic, .topic_lens = &len, .topic_count = 1, .limit = 16};
    CHECK(hd_cursor_parse("earliest", 8, hd_hub_epoch(hub), &q.cursor));
    hd_history_visitor v = {.on_gap = on_gap, .on_message = on_message};
    hd_hub_read_history(hub, &q, &v, &c, NULL, NULL);
    return c;
}

static void test_ingest(void)
{
    hd_hub *hub = cluster_hub();
    CHECK(hd_hub_ingest(hub, msg("a", 3, EPOCH)));
    CHECK_EQ_INT(hd_hub_epoch(hub), EPOCH); /* the store's epoch is followed */
    CHECK(hd_hub_ingest(hub, msg("b", 5, EPOCH)));
    CHECK(!hd_hub_ingest(hub, msg("a", 3, EPOCH))); /* a duplicate */
    /* A message fetched late (a lost pub/sub one) is older than b's: the order stays seq order. */
    CHECK(hd_hub_ingest(hub, msg("a", 4, EPOCH)));
    collected c = read_all(hub, "a");
    CHECK_EQ_INT(c.n, 2);
    CHECK_EQ_INT(c.seqs[0], 3);
    CHECK_EQ_INT(c.seqs[1], 4);
    char id[HD_ID_MAX];
    hd_hub_newest_id(hub, id);
    CHECK_EQ_STR(id, "0badf00d-5");

    /* A cursor beyond what this node saw may have been issued by another: not refused here. */
    hd_cursor cursor;
    CHECK_EQ_INT(hd_hub_parse_cursor(hub, "0badf00d-99", 11, &cursor), HD_HUB_OK);
    CHECK(!cursor.foreign);
    CHECK_EQ_INT(hd_hub_parse_cursor(hub, "0badf00d-x", 10, &cursor), HD_HUB_BAD_CURSOR);

    /* What a publish's answer showed advances the hub's seq, never back. */
    hd_hub_advance(hub, EPOCH, 50);
    hd_hub_advance(hub, EPOCH, 20);
    hd_hub_newest_id(hub, id);
    CHECK_EQ_STR(id, "0badf00d-50");

    /* A new epoch: its seqs start over, so the mirror of the old one goes. */
    CHECK(hd_hub_ingest(hub, msg("a", 1, 0x22222222)));
    CHECK_EQ_INT(hd_hub_epoch(hub), 0x22222222);
    c = read_all(hub, "a");
    CHECK_EQ_INT(c.n, 1);
    CHECK_EQ_INT(c.seqs[0], 1);
    CHECK_EQ_INT(read_all(hub, "b").n, 0);
    hd_hub_stats stats;
    hd_hub_get_stats(hub, &stats);
    CHECK_EQ_INT(stats.topics, 1); /* b had neither history nor subscribers left */
    CHECK_EQ_INT(stats.history_messages, 1);
    hd_hub_free(hub);
}

static int delivered;
static uint64_t delivered_seq;

static void count_delivery(hd_subscriber *sub, hd_message *m)
{
    (void)sub;
    delivered++;
    delivered_seq = m->seq;
}

static char gap_text[128];

static void record_gap(hd_subscriber *sub, const hd_gap *gap)
{
    (void)sub;
    snprintf(gap_text, sizeof(gap_text), "%.*s %.*s %.*s after %d", (int)gap->topic_len, gap->topic,
             (int)gap->from_len, gap->from, (int)gap->to_len, gap->to, delivered);
}

static const hd_subscriber_ops counting_ops = {
    .deliver = count_delivery, .gap = record_gap, .transport = HD_TRANSPORT_SSE};

/* A subscriber made at seq 50 of one epoch gets seq 1 of the next: seqs compare within one. */
static void test_new_epoch_reaches_subscribers(void)
{
    hd_hub *hub = cluster_hub();
    hd_hub_advance(hub, EPOCH, 50);
    hd_subscriber sub = {0};
    hd_subscriber_init(&sub, &counting_ops);
    CHECK_EQ_INT(hd_hub_subscribe(hub, &sub, "a", 1), HD_HUB_OK);
    CHECK(hd_hub_ingest(hub, msg("a", 40, EPOCH))); /* published before it subscribed */
    CHECK(hd_hub_ingest(hub, msg("a", 51, EPOCH)));
    while (hd_hub_deliver_pending(hub, 1 << 20))
        ;
    CHECK_EQ_INT(delivered, 1);
    CHECK_EQ_INT(delivered_seq, 51);
    CHECK_EQ_STR(gap_text, "");
    CHECK(hd_hub_ingest(hub, msg("a", 1, 0x22222222)));
    while (hd_hub_deliver_pending(hub, 1 << 20))
        ;
    CHECK_EQ_INT(delivered, 2);
    CHECK_EQ_INT(delivered_seq, 1);
    /* Told first: what it saw belongs to the old epoch. */
    CHECK_EQ_STR(gap_text, "a 0badf00d-51 22222222-0 after 1");
    hd_hub_unsubscribe_all(hub, &sub);
    hd_hub_free(hub);
}

/* A covered read of topic after cursor text (NULL: none): whether it was answered, and how. */
static bool read_covered(hd_hub *hub, const char *topic, const char *cursor, int64_t now_ms,
                         collected *c, uint64_t *cut)
{
    *c = (collected){0};
    size_t len = strlen(topic);
    hd_history_query q = {
        .topics = &topic, .topic_lens = &len, .topic_count = 1, .limit = 16, .may_lag = true};
    if (cursor != NULL)
        CHECK(hd_cursor_parse(cursor, strlen(cursor), hd_hub_epoch(hub), &q.cursor));
    hd_history_visitor v = {.on_gap = on_gap, .on_message = on_message};
    bool more;
    uint32_t epoch;
    bool answered = hd_hub_read_covered(hub, &q, &v, c, now_ms, &more, &epoch, cut);
    CHECK(!answered || (epoch == hd_hub_epoch(hub) && c->gaps == 0));
    return answered;
}

/* What the hub answers from its own history in cluster mode, and what it leaves to the store. */
static void test_read_covered(void)
{
    hd_hub_options options = {
        .history_max_messages = 3,
        .history_max_bytes = 1 << 20,
        .history_ttl_s = 10,
        .epoch = 0x11111111,
        .cluster = true,
    };
    hd_hub *hub = hd_hub_new(&options);
    collected c;
    uint64_t cut;
    /* Covered from 2 (the seq it was positioned at): 4 and 6 came over pub/sub. */
    hd_hub_advance(hub, EPOCH, 2);
    CHECK(hd_hub_ingest_live(hub, msg("a", 4, EPOCH), 2));
    CHECK(hd_hub_ingest_live(hub, msg("a", 6, EPOCH), 2));
    CHECK(read_covered(hub, "a", "0badf00d-2", 5000, &c, &cut));
    CHECK_EQ_INT(c.n, 2);
    CHECK_EQ_INT(c.seqs[1], 6);
    CHECK_EQ_INT(cut, 6);
    CHECK(read_covered(hub, "a", "0badf00d-6", 5000, &c, &cut) && c.n == 0 && cut == 6);
    CHECK(read_covered(hub, "a", NULL, 5000, &c, &cut) && cut == 6); /* no cursor: the cut */
    /* Before the record, beyond what arrived, another epoch, "earliest": the store's. */
    CHECK(!read_covered(hub, "a", "0badf00d-1", 5000, &c, &cut));
    CHECK(!read_covered(hub, "a", "0badf00d-7", 5000, &c, &cut));
    CHECK(!read_covered(hub, "a", "22222222-6", 5000, &c, &cut));
    CHECK(!read_covered(hub, "a", "earliest", 5000, &c, &cut));
    CHECK(!read_covered(hub, "b", "0badf00d-6", 5000, &c, &cut)); /* not followed */
    /* A message of another topic not taken (a duplicate) still moves the live position. */
    hd_hub_pass_live(hub, EPOCH, 8);
    hd_hub_advance(hub, EPOCH, 8);
    CHECK(read_covered(hub, "a", "0badf00d-6", 5000, &c, &cut) && cut == 8);
    /* An id the node knows of but has not received (a publish's answer): the store's. */
    hd_hub_advance(hub, EPOCH, 9);
    CHECK(!read_covered(hub, "a", "0badf00d-6", 5000, &c, &cut));
    CHECK(hd_hub_ingest_live(hub, msg("a", 9, EPOCH), 2));
    CHECK(read_covered(hub, "a", "0badf00d-6", 5000, &c, &cut) && c.n == 1 && cut == 9);
    /* Only a read live delivery follows. */
    size_t len = 1;
    const char *topic = "a";
    hd_history_query q = {.topics = &topic, .topic_lens = &len, .topic_count = 1, .limit = 16};
    hd_history_visitor v = {.on_gap = on_gap, .on_message = on_message};
    bool more;
    uint32_t epoch;
    CHECK(!hd_hub_read_covered(hub, &q, &v, &c, 5000, &more, &epoch, &cut));
    /* Trimmed to 3 (6, 9, 10): from 4, the newest evicted, at the edge; not before it. */
    CHECK(hd_hub_ingest_live(hub, msg("a", 10, EPOCH), 2));
    CHECK(read_covered(hub, "a", "0badf00d-4", 5000, &c, &cut) && c.n == 3);
    CHECK(!read_covered(hub, "a", "0badf00d-3", 5000, &c, &cut));
    /* Expired by history.ttl_s (messages of time 1000): the store's. */
    CHECK(!read_covered(hub, "a", "0badf00d-9", 11000, &c, &cut));
    CHECK(read_covered(hub, "a", "0badf00d-10", 11000, &c, &cut) && c.n == 0);
    /* The engine takes coverage back; a message not taken drops it too. */
    hd_hub_cover(hub, "a", 1, EPOCH, HD_HUB_UNCOVERED);
    CHECK(!read_covered(hub, "a", "0badf00d-10", 5000, &c, &cut));
    hd_hub_cover(hub, "a", 1, EPOCH, 9);
    CHECK(read_covered(hub, "a", "0badf00d-9", 5000, &c, &cut) && c.n == 1);
    CHECK(!hd_hub_ingest_live(hub, msg("a", 10, EPOCH), 9));
    CHECK(!read_covered(hub, "a", "0badf00d-10", 5000, &c, &cut));
    hd_hub_cover(hub, "a", 1, EPOCH, 9);
    hd_hub_uncover_all(hub);
    CHECK(!read_covered(hub, "a", "0badf00d-10", 5000, &c, &cut));
    /* The engine stops following a topic only while nobody subscribes to it here. */
    hd_hub_cover(hub, "a", 1, EPOCH, 9);
    hd_subscriber sub = {0};
    hd_subscriber_init(&sub, &counting_ops);
    CHECK_EQ_INT(hd_hub_subscribe(hub, &sub, "a", 1), HD_HUB_OK);
    CHECK(!hd_hub_uncover_unused(hub, "a", 1));
    CHECK(read_covered(hub, "a", "0badf00d-10", 5000, &c, &cut));
    hd_hub_unsubscribe_all(hub, &sub);
    CHECK(hd_hub_uncover_unused(hub, "a", 1));
    CHECK(!read_covered(hub, "a", "0badf00d-10", 5000, &c, &cut));
    CHECK(hd_hub_uncover_unused(hub, "zz", 2)); /* unknown: nobody on it */
    /* A new epoch forgets every topic's coverage and the live position. */
    hd_hub_cover(hub, "a", 1, EPOCH, 9);
    hd_hub_advance(hub, 0x22222222, 1);
    hd_hub_cover(hub, "a", 1, EPOCH, 0); /* of the old epoch: ignored */
    CHECK(!read_covered(hub, "a", NULL, 5000, &c, &cut));
    hd_hub_free(hub);
}

/* A poll that waits is woken by what is newer than its read; a catch-up never repeats its cursor.
 */
static void test_move_seen(void)
{
    hd_hub *hub = cluster_hub();
    hd_hub_advance(hub, EPOCH, 50);
    hd_subscriber sub = {0};
    hd_subscriber_init(&sub, &counting_ops);
    CHECK_EQ_INT(hd_hub_subscribe(hub, &sub, "a", 1), HD_HUB_OK);
    delivered = 0;
    hd_subscriber_move_seen(&sub, "a", 1, EPOCH, 45, false);
    hd_subscriber_move_seen(&sub, "a", 1, EPOCH, 47, true);
    hd_subscriber_move_seen(&sub, "b", 1, EPOCH, 49, true); /* not subscribed: nothing */
    CHECK(hd_hub_ingest(hub, msg("a", 46, EPOCH)));         /* seen: skipped */
    CHECK(hd_hub_ingest(hub, msg("a", 48, EPOCH))); /* after what it saw, before the hub's 50 */
    while (hd_hub_deliver_pending(hub, 1 << 20))
        ;
    CHECK_EQ_INT(delivered, 1);
    CHECK_EQ_INT(delivered_seq, 48);
    hd_subscriber_move_seen(&sub, "a", 1, 0x22222222, 9, true); /* another epoch: not forward */
    CHECK(hd_hub_ingest(hub, msg("a", 49, EPOCH)));
    while (hd_hub_deliver_pending(hub, 1 << 20))
        ;
    CHECK_EQ_INT(delivered, 2);
    hd_hub_unsubscribe_all(hub, &sub);
    hd_hub_free(hub);
}

int main(void)
{
    RUN_TEST(test_payload_parse);
    RUN_TEST(test_epoch_parse);
    RUN_TEST(test_read_gap);
    RUN_TEST(test_merge);
    RUN_TEST(test_catch_up_bound);
    RUN_TEST(test_topic_fill);
    RUN_TEST(test_topics_merge);
    RUN_TEST(test_topics_range);
    RUN_TEST(test_ingest);
    RUN_TEST(test_new_epoch_reaches_subscribers);
    RUN_TEST(test_read_covered);
    RUN_TEST(test_move_seen);
    return test_summary();
}
