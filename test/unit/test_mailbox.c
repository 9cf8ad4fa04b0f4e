#include "herald/mailbox.h"

#include <errno.h>
#include <stdint.h>
#include <time.h>

#include "test.h"

#define ITEM(n) ((void *)(uintptr_t)(n))
#define NUMBER(item) ((uintptr_t)(item))

typedef struct wakeups {
    hd_mailbox *mailbox;
    int count;
    int lock_held; /* times the lock was found held by the caller */
} wakeups;

static void on_notify(void *ctx)
{
    wakeups *w = ctx;
    w->count++;
    /* The poster holds the lock: a second taker would have to wait. */
    if (pthread_mutex_trylock(w->mailbox->lock) == EBUSY)
        w->lock_held++;
    else
        pthread_mutex_unlock(w->mailbox->lock);
}

static void test_order_and_one_wakeup_per_burst(void)
{
    hd_mailbox mb;
    hd_mailbox_init(&mb, NULL);
    wakeups w = {.mailbox = &mb};
    hd_mailbox_set_notify(&mb, on_notify, &w);

    void *out[8];
    bool more = true;
    CHECK_EQ_INT(hd_mailbox_take(&mb, out, 8, &more), 0);
    CHECK(!more);

    for (uintptr_t i = 1; i <= 5; i++)
        hd_mailbox_post(&mb, ITEM(i));
    CHECK_EQ_INT(w.count, 1);
    CHECK_EQ_INT(w.lock_held, 1);

    CHECK_EQ_INT(hd_mailbox_take(&mb, out, 2, &more), 2);
    CHECK(more);
    CHECK_EQ_INT(NUMBER(out[0]), 1);
    CHECK_EQ_INT(NUMBER(out[1]), 2);
    /* Not empty yet: posting more wakes no one. */
    hd_mailbox_post(&mb, ITEM(6));
    CHECK_EQ_INT(w.count, 1);
    CHECK_EQ_INT(hd_mailbox_take(&mb, out, 8, &more), 4);
    CHECK(!more);
    for (size_t i = 0; i < 4; i++)
        CHECK_EQ_INT(NUMBER(out[i]), i + 3);

    /* Emptied: the next post is a new burst. */
    hd_mailbox_post(&mb, ITEM(7));
    CHECK_EQ_INT(w.count, 2);

    /* Removed: no wake-up, but the item is queued. */
    hd_mailbox_set_notify(&mb, NULL, NULL);
    CHECK_EQ_INT(hd_mailbox_take(&mb, out, 8, NULL), 1);
    hd_mailbox_post(&mb, ITEM(8));
    CHECK_EQ_INT(w.count, 2);
    CHECK_EQ_INT(hd_mailbox_take(&mb, out, 8, NULL), 1);
    CHECK_EQ_INT(NUMBER(out[0]), 8);
    hd_mailbox_destroy(&mb);
}

/* Growing, and reusing what was taken, keep the order across the queue's moves. */
static void test_growth_keeps_order(void)
{
    hd_mailbox mb;
    hd_mailbox_init(&mb, NULL);
    uintptr_t posted = 0, taken = 0;
    void *out[7];
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 11; i++)
            hd_mailbox_post(&mb, ITEM(++posted));
        size_t n = hd_mailbox_take(&mb, out, 7, NULL);
        for (size_t i = 0; i < n; i++)
            CHECK_EQ_INT(NUMBER(out[i]), ++taken);
    }
    bool more = true;
    while (more) {
        size_t n = hd_mailbox_take(&mb, out, 7, &more);
        for (size_t i = 0; i < n; i++)
            CHECK_EQ_INT(NUMBER(out[i]), ++taken);
    }
    CHECK_EQ_INT(taken, posted);
    hd_mailbox_destroy(&mb);
}

/* The owner's lock: posts and the peek/consume pair run under it. */
static void test_shared_lock(void)
{
    pthread_mutex_t lock;
    pthread_mutex_init(&lock, NULL);
    hd_mailbox mb;
    hd_mailbox_init(&mb, &lock);
    CHECK(mb.lock == &lock);
    wakeups w = {.mailbox = &mb};
    hd_mailbox_set_notify(&mb, on_notify, &w);

    pthread_mutex_lock(&lock);
    hd_mailbox_post_locked(&mb, ITEM(1));
    hd_mailbox_post_locked(&mb, ITEM(2));
    hd_mailbox_post_locked(&mb, ITEM(3));
    size_t count;
    void *const *items = hd_mailbox_peek_locked(&mb, &count);
    CHECK_EQ_INT(count, 3);
    CHECK_EQ_INT(NUMBER(items[0]), 1);
    CHECK_EQ_INT(NUMBER(items[2]), 3);
    hd_mailbox_consume_locked(&mb, 2);
    items = hd_mailbox_peek_locked(&mb, &count);
    CHECK_EQ_INT(count, 1);
    CHECK_EQ_INT(NUMBER(items[0]), 3);
    hd_mailbox_consume_locked(&mb, 1);
    hd_mailbox_peek_locked(&mb, &count);
    CHECK_EQ_INT(count, 0);
    pthread_mutex_unlock(&lock);

    CHECK_EQ_INT(w.count, 1);
    CHECK_EQ_INT(w.lock_held, 1);
    hd_mailbox_destroy(&mb);
    pthread_mutex_destroy(&lock);
}

/* ---------------------------------------------------------------- several producers */

#define PRODUCERS 4
#define PER_PRODUCER 20000

/* A consumer that sleeps until woken, as a worker's loop does. */
typedef struct consumer {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool woken;
} consumer;

static void wake_consumer(void *ctx)
{
    consumer *c = ctx;
    pthread_mutex_lock(&c->lock);
    c->woken = true;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

typedef struct producer {
    hd_mailbox *mailbox;
    uintptr_t id;
} producer;

static void *produce(void *arg)
{
    producer *p = arg;
    for (uintptr_t i = 1; i <= PER_PRODUCER; i++)
        hd_mailbox_post(p->mailbox, ITEM(p->id << 32 | i));
    return NULL;
}

/* Waits up to 10 s for a wake-up; false if none came (a lost wake-up would hang a worker). */
static bool wait_woken(consumer *c)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&c->lock);
    int rc = 0;
    while (!c->woken && rc == 0)
        rc = pthread_cond_timedwait(&c->cond, &c->lock, &deadline);
    bool woken = c->woken;
    c->woken = false;
    pthread_mutex_unlock(&c->lock);
    return woken;
}

static void test_producers_on_threads(void)
{
    hd_mailbox mb;
    hd_mailbox_init(&mb, NULL);
    consumer c = {.woken = false};
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.cond, NULL);
    hd_mailbox_set_notify(&mb, wake_consumer, &c);

    producer producers[PRODUCERS];
    pthread_t threads[PRODUCERS];
    for (uintptr_t i = 0; i < PRODUCERS; i++) {
        producers[i] = (producer){.mailbox = &mb, .id = i};
        pthread_create(&threads[i], NULL, produce, &producers[i]);
    }

    /* Each producer's items arrive in its order, all of them, once. */
    uintptr_t last[PRODUCERS] = {0};
    size_t total = 0;
    bool lost_wakeup = false;
    void *out[256];
    while (total < PRODUCERS * PER_PRODUCER) {
        if (!wait_woken(&c)) {
            lost_wakeup = true;
            break;
        }
        /* Like a worker: everything there is, until the queue is empty again. */
        bool more = true;
        while (more) {
            size_t n = hd_mailbox_take(&mb, out, 256, &more);
            for (size_t i = 0; i < n; i++) {
                uintptr_t id = NUMBER(out[i]) >> 32, seq = NUMBER(out[i]) & 0xffffffffu;
                CHECK(id < PRODUCERS);
                if (id < PRODUCERS) {
                    CHECK_EQ_INT(seq, last[id] + 1);
                    last[id] = seq;
                }
            }
            total += n;
        }
    }
    CHECK(!lost_wakeup);
    CHECK_EQ_INT(total, PRODUCERS * PER_PRODUCER);
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(threads[i], NULL);
    hd_mailbox_destroy(&mb);
    pthread_cond_destroy(&c.cond);
    pthread_mutex_destroy(&c.lock);
}

int main(void)
{
    RUN_TEST(test_order_and_one_wakeup_per_burst);
    RUN_TEST(test_growth_keeps_order);
    RUN_TEST(test_shared_lock);
    RUN_TEST(test_producers_on_threads);
    return test_summary();
}
