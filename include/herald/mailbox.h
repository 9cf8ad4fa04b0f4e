/*
 * Mailboxes: a worker's queue of items that any thread may post, which the
 * worker takes in the order they were posted, with a wake-up when the queue
 * goes from empty to non-empty.
 *
 * The hub queues each worker's share of a publish in one (the messages its
 * subscribers are owed); an engine that runs its own thread can queue the
 * completions it owes a worker in another, so that they run on the worker's
 * thread.
 *
 * Items are pointers the mailbox does not interpret: what posting one hands
 * over (a reference, ownership) is the owner's convention, and so is
 * releasing what is still queued when the mailbox is destroyed.
 *
 * Locking: one mutex guards a mailbox, held around every call. It is the
 * mailbox's own unless the owner passes one at init that its producers
 * already hold when they post. The hub does: it posts under its registry
 * lock, which is what keeps every worker's queue in seq order, so fan-out
 * takes no second lock. Functions named *_locked expect the lock held; the
 * others take it.
 *
 * Wake-ups: notify(ctx) is called by the posting thread, with the lock
 * held, when the queue goes from empty to non-empty; once per such
 * transition, however many items follow before the consumer takes them
 * (e.g. uv_async_send on the worker's loop). It must not call back into the
 * mailbox. After hd_mailbox_set_notify(NULL) returns, it is never called
 * again: a worker that stops is not woken afterwards.
 *
 * Bounds: the queue grows (doubling) as long as producers outrun the
 * consumer; what bounds it is what bounds the producers (a publish is
 * bounded by the size limits of its request, and each worker drains its
 * queue in slices between socket writes).
 */
#ifndef HERALD_MAILBOX_H
#define HERALD_MAILBOX_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct hd_mailbox {
    pthread_mutex_t *lock; /* &own_lock, or the owner's */
    pthread_mutex_t own_lock;
    void **items; /* queued from head to len: a contiguous run, oldest first */
    size_t head;
    size_t len;
    size_t cap;
    void (*notify)(void *ctx);
    void *notify_ctx;
} hd_mailbox;

/* lock: the mutex that guards the mailbox, when its producers hold one already; NULL: its own. */
void hd_mailbox_init(hd_mailbox *mb, pthread_mutex_t *lock);
/* Frees the queue itself; the owner takes (and releases) what is still queued first. */
void hd_mailbox_destroy(hd_mailbox *mb);

/* Sets (or, with NULL, removes) the wake-up. Takes the lock. */
void hd_mailbox_set_notify(hd_mailbox *mb, void (*notify)(void *ctx), void *ctx);

/* Queues item last, waking the consumer if the queue was empty. */
void hd_mailbox_post(hd_mailbox *mb, void *item);
void hd_mailbox_post_locked(hd_mailbox *mb, void *item);

/*
 * The queued items, oldest first, as one array of *count (0: none), for the
 * consumer to choose how many to take; valid while the lock stays held and
 * nothing is posted.
 */
void *const *hd_mailbox_peek_locked(const hd_mailbox *mb, size_t *count);
/* Removes the count oldest items (at most what hd_mailbox_peek_locked said). */
void hd_mailbox_consume_locked(hd_mailbox *mb, size_t count);
/*
 * Takes up to max of the oldest items into out; returns how many, and *more
 * (if non-NULL) says whether any are left.
 */
size_t hd_mailbox_take(hd_mailbox *mb, void **out, size_t max, bool *more);

#endif
