#include "herald/mailbox.h"

#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"

#define MIN_ITEMS 64

void hd_mailbox_init(hd_mailbox *mb, pthread_mutex_t *lock)
{
    memset(mb, 0, sizeof(*mb));
    pthread_mutex_init(&mb->own_lock, NULL);
    mb->lock = lock != NULL ? lock : &mb->own_lock;
}

void hd_mailbox_destroy(hd_mailbox *mb)
{
    free(mb->items);
    mb->items = NULL;
    mb->head = mb->len = mb->cap = 0;
    pthread_mutex_destroy(&mb->own_lock);
}

void hd_mailbox_set_notify(hd_mailbox *mb, void (*notify)(void *ctx), void *ctx)
{
    pthread_mutex_lock(mb->lock);
    mb->notify = notify;
    mb->notify_ctx = ctx;
    pthread_mutex_unlock(mb->lock);
}

void hd_mailbox_post_locked(hd_mailbox *mb, void *item)
{
    if (mb->len == mb->cap && mb->head > 0) {
        /* Reuse the room of what was taken before growing. */
        mb->len -= mb->head;
        memmove(mb->items, mb->items + mb->head, mb->len * sizeof(*mb->items));
        mb->head = 0;
    }
    if (mb->len == mb->cap) {
        mb->cap = mb->cap ? mb->cap * 2 : MIN_ITEMS;
        mb->items = hd_realloc(mb->items, mb->cap * sizeof(*mb->items));
    }
    mb->items[mb->len++] = item;
    if (mb->len - mb->head == 1 && mb->notify != NULL)
        mb->notify(mb->notify_ctx);
}

void hd_mailbox_post(hd_mailbox *mb, void *item)
{
    pthread_mutex_lock(mb->lock);
    hd_mailbox_post_locked(mb, item);
    pthread_mutex_unlock(mb->lock);
}

void *const *hd_mailbox_peek_locked(const hd_mailbox *mb, size_t *count)
{
    *count = mb->len - mb->head;
    return mb->items != NULL ? mb->items + mb->head : NULL;
}

void hd_mailbox_consume_locked(hd_mailbox *mb, size_t count)
{
    mb->head += count;
    /* Emptied: the next post starts from the front, without moving anything. */
    if (mb->head == mb->len)
        mb->head = mb->len = 0;
}

size_t hd_mailbox_take(hd_mailbox *mb, void **out, size_t max, bool *more)
{
    pthread_mutex_lock(mb->lock);
    size_t queued;
    void *const *items = hd_mailbox_peek_locked(mb, &queued);
    size_t count = queued < max ? queued : max;
    if (count > 0) {
        memcpy(out, items, count * sizeof(*out));
        hd_mailbox_consume_locked(mb, count);
    }
    if (more != NULL)
        *more = queued > count;
    pthread_mutex_unlock(mb->lock);
    return count;
}
