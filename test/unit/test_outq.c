/*
 * Tests for src/net/outq.c, with no socket: the queue hands out views for a
 * gathered write and is told how much the socket took. Covered: byte
 * accounting through push, write and release; a partial write that leaves
 * only the buffer it cut short in flight; dropping what is not started
 * (the slow-consumer path) while the buffer in flight stays; the ring
 * growing and wrapping; and every reference given back. The TLS seal is
 * tested with a real session in test_tls.c.
 */
#include "net/outq.h"

#include "test.h"

static hd_buf *text(const char *s)
{
    return hd_buf_copy(s, strlen(s));
}

/* Pushes a reference to buf and keeps the caller's, so a test can see when the queue lets go. */
static void push_kept(hd_outq *q, hd_buf *buf)
{
    hd_outq_push(q, hd_buf_retain(buf));
}

/* Queues three buffers (keeping a reference to each) and starts one gathered write of them. */
static void start_three(hd_outq *q, hd_buf *const three[3])
{
    uv_buf_t bufs[8];
    for (int i = 0; i < 3; i++)
        push_kept(q, three[i]);
    CHECK_EQ_INT(hd_outq_start(q, bufs, 8), 3);
}

/* The socket took everything it was given (written bytes): nothing stays in flight. */
static uint64_t took_all(hd_outq *q, size_t written)
{
    uv_buf_t rest;
    uint64_t released = 0;
    CHECK(!hd_outq_took(q, written, &rest, &released));
    CHECK_EQ_INT(q->in_flight, 0);
    return released;
}

/* The socket cut the write short after written bytes: one buffer stays in flight, with that rest.
 */
static uint64_t took_cut(hd_outq *q, size_t written, const char *rest_expected)
{
    uv_buf_t rest;
    uint64_t released = 0;
    CHECK(hd_outq_took(q, written, &rest, &released));
    CHECK_EQ_MEM(rest.base, rest.len, rest_expected, strlen(rest_expected));
    CHECK_EQ_INT(q->in_flight, 1);
    return released;
}

static void release_three(hd_buf *const three[3])
{
    for (int i = 0; i < 3; i++)
        hd_buf_release(three[i]);
}

static void test_push_and_write_all(void)
{
    hd_outq q = {0};
    hd_buf *a = text("hello "), *b = text("world");
    push_kept(&q, a);
    push_kept(&q, b);
    CHECK_EQ_INT(q.count, 2);
    CHECK_EQ_INT(q.bytes, 11);
    CHECK_EQ_INT(a->refs, 2);

    uv_buf_t bufs[8];
    CHECK_EQ_INT(hd_outq_start(&q, bufs, 8), 2);
    CHECK_EQ_INT(q.in_flight, 2);
    CHECK_EQ_MEM(bufs[0].base, bufs[0].len, "hello ", 6);
    CHECK_EQ_MEM(bufs[1].base, bufs[1].len, "world", 5);

    CHECK_EQ_INT(took_all(&q, 11), 11);
    CHECK_EQ_INT(q.count, 0);
    CHECK_EQ_INT(q.bytes, 0);
    CHECK_EQ_INT(a->refs, 1);
    CHECK_EQ_INT(b->refs, 1);
    hd_buf_release(a);
    hd_buf_release(b);
    hd_outq_free(&q);
}

static void test_batch_takes_at_most_max(void)
{
    hd_outq q = {0};
    for (int i = 0; i < 5; i++)
        hd_outq_push(&q, text("x"));
    uv_buf_t bufs[2];
    CHECK_EQ_INT(hd_outq_start(&q, bufs, 2), 2);
    CHECK_EQ_INT(took_all(&q, 2), 2);
    CHECK_EQ_INT(q.count, 3);
    CHECK_EQ_INT(q.bytes, 3);
    hd_outq_free(&q);
    CHECK_EQ_INT(q.count, 0);
}

/* The socket took the first buffer and part of the second: only that one stays in flight. */
static void test_partial_write(void)
{
    hd_outq q = {0};
    hd_buf *three[3] = {text("abc"), text("defgh"), text("ij")}, *a = three[0], *b = three[1];
    start_three(&q, three);

    CHECK_EQ_INT(took_cut(&q, 5, "fgh"), 3);
    CHECK_EQ_INT(q.count, 2);
    CHECK_EQ_INT(q.bytes, 7); /* the whole of the buffer in flight, and the one behind it */
    CHECK_EQ_INT(a->refs, 1);
    CHECK_EQ_INT(b->refs, 2);

    /* Its write completes: released, and the next start begins behind it. */
    CHECK_EQ_INT(hd_outq_finish(&q), 5);
    CHECK_EQ_INT(q.in_flight, 0);
    CHECK_EQ_INT(q.bytes, 2);
    CHECK_EQ_INT(b->refs, 1);
    uv_buf_t bufs[8];
    CHECK_EQ_INT(hd_outq_start(&q, bufs, 8), 1);
    CHECK_EQ_MEM(bufs[0].base, bufs[0].len, "ij", 2);
    CHECK_EQ_INT(hd_outq_finish(&q), 2);
    CHECK_EQ_INT(q.count, 0);
    release_three(three);
    hd_outq_free(&q);
}

/*
 * Nothing taken (EAGAIN): the first buffer is cut short at its start, but
 * an empty one before it counts as written.
 */
static void test_nothing_written(void)
{
    hd_outq q = {0};
    hd_outq_push(&q, hd_buf_copy("", 0));
    hd_outq_push(&q, text("abc"));
    hd_outq_push(&q, text("de"));
    uv_buf_t bufs[8];
    hd_outq_start(&q, bufs, 8);
    CHECK_EQ_INT(took_cut(&q, 0, "abc"), 0);
    CHECK_EQ_INT(q.count, 2);
    hd_outq_free(&q);
}

/* A slow consumer: what is not started goes back at once, the buffer in progress is finished. */
static void test_drop_unstarted(void)
{
    hd_outq q = {0};
    hd_buf *three[3] = {text("frame-1"), text("frame-2"), text("frame-3")};
    hd_buf *a = three[0], *b = three[1], *c = three[2];
    start_three(&q, three);
    CHECK_EQ_INT(took_cut(&q, 2, "ame-1"), 0);

    hd_outq_drop_unstarted(&q);
    CHECK_EQ_INT(q.count, 1);
    CHECK_EQ_INT(q.bytes, 7);
    CHECK_EQ_INT(a->refs, 2);
    CHECK_EQ_INT(b->refs, 1);
    CHECK_EQ_INT(c->refs, 1);

    /* The last word queues behind the frame in progress. */
    hd_outq_push(&q, text("bye"));
    CHECK_EQ_INT(q.bytes, 10);
    CHECK_EQ_INT(hd_outq_finish(&q), 7);
    CHECK_EQ_INT(a->refs, 1);
    uv_buf_t bufs[8];
    CHECK_EQ_INT(hd_outq_start(&q, bufs, 8), 1);
    CHECK_EQ_MEM(bufs[0].base, bufs[0].len, "bye", 3);
    hd_outq_finish(&q);
    CHECK_EQ_INT(q.bytes, 0);

    /* With nothing in flight, everything goes. */
    push_kept(&q, b);
    push_kept(&q, c);
    hd_outq_drop_unstarted(&q);
    CHECK_EQ_INT(q.count, 0);
    CHECK_EQ_INT(q.bytes, 0);
    CHECK_EQ_INT(b->refs, 1);
    release_three(three);
    hd_outq_free(&q);
}

/* Growing past the first capacity while the ring has wrapped keeps the order. */
static void test_ring_grows_in_order(void)
{
    hd_outq q = {0};
    char s[2] = "a";
    uv_buf_t bufs[64];
    for (int i = 0; i < 3; i++) {
        s[0] = (char)('a' + i);
        hd_outq_push(&q, text(s));
    }
    /* Two written: the head moves on, and the next pushes wrap round the first ring of four. */
    hd_outq_start(&q, bufs, 2);
    CHECK_EQ_INT(took_all(&q, 2), 2);
    for (int i = 3; i < 20; i++) {
        s[0] = (char)('a' + i);
        hd_outq_push(&q, text(s));
    }
    CHECK_EQ_INT(q.count, 18);
    CHECK_EQ_INT(q.bytes, 18);
    size_t n = hd_outq_start(&q, bufs, 64);
    CHECK_EQ_INT(n, 18);
    char order[19] = {0};
    for (size_t i = 0; i < n; i++)
        order[i] = bufs[i].base[0];
    CHECK_EQ_STR(order, "cdefghijklmnopqrst");
    CHECK_EQ_INT(took_all(&q, 18), 18);
    hd_outq_free(&q);
}

int main(void)
{
    RUN_TEST(test_push_and_write_all);
    RUN_TEST(test_batch_takes_at_most_max);
    RUN_TEST(test_partial_write);
    RUN_TEST(test_nothing_written);
    RUN_TEST(test_drop_unstarted);
    RUN_TEST(test_ring_grows_in_order);
    return test_summary();
}
