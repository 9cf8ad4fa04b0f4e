#include "net/ip_count.h"

#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"

#include <openssl/rand.h>

typedef struct entry {
    hd_ip ip;
    uint32_t count;
    struct entry *next;
} entry;

struct hd_ip_count {
    entry **buckets;
    size_t bucket_count; /* a power of two */
    size_t size;
    uint64_t seed; /* so that clients cannot aim at one bucket */
};

static uint64_t hash_ip(const hd_ip_count *table, const hd_ip *ip)
{
    uint64_t h = table->seed ^ 0xcbf29ce484222325ull;
    for (size_t i = 0; i < sizeof(ip->bytes); i++)
        h = (h ^ ip->bytes[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

hd_ip_count *hd_ip_count_new(void)
{
    hd_ip_count *table = hd_calloc(1, sizeof(*table));
    table->bucket_count = 64;
    table->buckets = hd_calloc(table->bucket_count, sizeof(*table->buckets));
    if (RAND_bytes((unsigned char *)&table->seed, sizeof(table->seed)) != 1)
        abort();
    return table;
}

void hd_ip_count_free(hd_ip_count *table)
{
    for (size_t i = 0; i < table->bucket_count; i++) {
        while (table->buckets[i] != NULL) {
            entry *e = table->buckets[i];
            table->buckets[i] = e->next;
            free(e);
        }
    }
    free(table->buckets);
    free(table);
}

static void grow(hd_ip_count *table)
{
    size_t count = table->bucket_count * 2;
    entry **buckets = hd_calloc(count, sizeof(*buckets));
    for (size_t i = 0; i < table->bucket_count; i++) {
        while (table->buckets[i] != NULL) {
            entry *e = table->buckets[i];
            table->buckets[i] = e->next;
            size_t b = hash_ip(table, &e->ip) & (count - 1);
            e->next = buckets[b];
            buckets[b] = e;
        }
    }
    free(table->buckets);
    table->buckets = buckets;
    table->bucket_count = count;
}

static entry **find_slot(hd_ip_count *table, const hd_ip *ip)
{
    entry **slot = &table->buckets[hash_ip(table, ip) & (table->bucket_count - 1)];
    while (*slot != NULL && memcmp(&(*slot)->ip, ip, sizeof(*ip)) != 0)
        slot = &(*slot)->next;
    return slot;
}

uint32_t hd_ip_count_add(hd_ip_count *table, const hd_ip *ip)
{
    entry **slot = find_slot(table, ip);
    if (*slot == NULL) {
        if (table->size >= table->bucket_count) {
            grow(table);
            slot = find_slot(table, ip);
        }
        *slot = hd_calloc(1, sizeof(**slot));
        (*slot)->ip = *ip;
        table->size++;
    }
    return ++(*slot)->count;
}

void hd_ip_count_remove(hd_ip_count *table, const hd_ip *ip)
{
    entry **slot = find_slot(table, ip);
    if (*slot == NULL)
        return;
    if (--(*slot)->count == 0) {
        entry *e = *slot;
        *slot = e->next;
        free(e);
        table->size--;
    }
}
