/*
 * Intrusive doubly linked lists (in the spirit of libuv's queue.h): the node
 * lives inside its owner, reached with hd_container_of, so linking and
 * unlinking never allocate. A list head is a node whose next/prev point to
 * itself when empty. An unlinked node also points to itself, so
 * hd_list_unlink() is idempotent.
 */
#ifndef HERALD_LIST_H
#define HERALD_LIST_H

#include <stdbool.h>
#include <stddef.h>

#define hd_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef struct hd_list {
    struct hd_list *next;
    struct hd_list *prev;
} hd_list;

static inline void hd_list_init(hd_list *head)
{
    head->next = head;
    head->prev = head;
}

static inline bool hd_list_empty(const hd_list *head)
{
    return head->next == head;
}

static inline bool hd_list_linked(const hd_list *node)
{
    return node->next != node;
}

static inline void hd_list_insert_tail(hd_list *head, hd_list *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

static inline void hd_list_unlink(hd_list *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->next = node;
    node->prev = node;
}

#define hd_list_foreach_safe(pos, tmp, head)                                                       \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                               \
         (pos) = (tmp), (tmp) = (pos)->next)

#endif
